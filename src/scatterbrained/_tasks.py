"""Concurrency helpers: a task group (Python 3.10 has no ``asyncio.TaskGroup``) and a pulse."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import Any

__all__ = ["Pulse", "TaskSet"]

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
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def fire(self) -> None:
        """Wake every current waiter."""
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self) -> None:
        """Wait for the next :meth:`fire` (no timeout: wrap it in one)."""
        await self._event.wait()

    async def wait_until(self, deadline: float) -> bool:
        """Wait for the next :meth:`fire` until ``deadline`` (``time.monotonic()`` seconds).

        Returns:
            True when woken, False when the deadline passed first.
        """
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait_for(self._event.wait(), remaining)
        except asyncio.TimeoutError:
            return False
        return True
