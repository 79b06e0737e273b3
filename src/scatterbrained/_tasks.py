"""Concurrency helpers: a task group (Python 3.10 has no ``asyncio.TaskGroup``) and a pulse."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

__all__ = ["Pulse", "TaskSet", "wait_future"]

logger = logging.getLogger(__name__)


class TaskSet:
    """Owns background tasks: starts them, logs their crashes, cancels and awaits them on close.

    A task that raises is logged at ERROR level with its name; it does not take the others
    down (a node must survive a bug in one loop long enough to shut down cleanly).
    """

    def __init__(self, owner: str) -> None:
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Start ``coro`` as a task named ``name`` owned by this set.

        Raises:
            RuntimeError: the set is already closed.
        """
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._owner}: cannot start task {name!r} after close")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._on_done)
        return task

    def _on_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            logger.error("background task %s crashed", task.get_name(), exc_info=exc)

    async def close(self) -> None:
        """Cancel every task and wait for them to finish. Idempotent."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()


class Pulse:
    """A broadcast wake-up: every coroutine waiting when :meth:`fire` is called wakes once.

    Unlike a bare :class:`asyncio.Event`, a pulse never stays set: waiters re-check their own
    condition after each wake-up, and a later waiter waits for the next pulse. Loop-bound like
    every asyncio primitive: fire and wait on the same event loop.

    Waiting never nests ``asyncio.wait_for`` (which on Python 3.11 can swallow a cancellation
    that arrives while the inner wait completes): a wait is one future and one timer, so a
    cancellation of the waiter always propagates.
    """

    def __init__(self) -> None:
        self._waiters: set[asyncio.Future[bool]] = set()

    def fire(self) -> None:
        """Wake every current waiter."""
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(True)

    async def wait(self) -> None:
        """Wait for the next :meth:`fire` (no timeout: see :meth:`wait_until`)."""
        await self.wait_until(None)

    async def wait_until(self, deadline: float | None) -> bool:
        """Wait for the next :meth:`fire` until ``deadline`` (``time.monotonic()`` seconds).

        Args:
            deadline: when to give up; ``None`` waits for the next fire however long.

        Returns:
            True when woken, False when the deadline passed first.
        """
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.add(waiter)
        timer = None
        if remaining is not None:
            timer = loop.call_later(remaining, _resolve, waiter, False)
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiters.discard(waiter)


def _resolve(waiter: asyncio.Future[bool], value: bool) -> None:
    if not waiter.done():
        waiter.set_result(value)


async def wait_future(future: asyncio.Future[Any], deadline: float | None) -> bool:
    """Wait until ``future`` is done or ``deadline`` (``time.monotonic()``) passes.

    One deadline, no nested ``asyncio.wait_for``: cancelling the caller cancels only the
    wait, never ``future`` (the caller owns it).

    Returns:
        True when the future is done, False at the deadline.
    """
    if future.done():
        return True
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    done, _ = await asyncio.wait({future}, timeout=timeout)
    return bool(done)
