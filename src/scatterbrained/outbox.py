"""Per-peer outgoing queues: messages leave in the order they were posted, one peer never
stalls another, and every queue is bounded in messages and bytes.

A node posts every outgoing message to the :class:`Outbox` *synchronously* (the call
returns a future), so the order of posts is the order on the wire to each address: a Hello
reply posted by the receive loop always precedes a request that a coroutine posts later.
Each address with queued messages has one drain task that sends them one by one (each send
bounded by the transport's timeout); it ends when the queue is empty. A silent peer delays
only its own queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

__all__ = ["MAX_QUEUED_BYTES", "MAX_QUEUED_MESSAGES", "Outbox"]

logger = logging.getLogger(__name__)

#: Messages waiting for one address; more are refused (the post resolves to False).
MAX_QUEUED_MESSAGES = 64
#: Bytes waiting for one address (a few model updates).
MAX_QUEUED_BYTES = 512 * 2**20
#: Addresses with queued messages at once.
MAX_ADDRESSES = 8192

#: ``send(address, frames, server_key, timeout) -> delivered``.
SendFn = Callable[[str, list[Any], "str | None", "float | None"], Awaitable[bool]]


@dataclass
class _Queue:
    items: deque[tuple[list[Any], int, str | None, float | None, asyncio.Future[bool]]] = field(
        default_factory=deque
    )
    nbytes: int = 0
    draining: bool = False


class Outbox:
    """Ordered, bounded, per-address send queues.

    Args:
        send: the transport's send.
        spawn: starts a drain task in the node's task group; False when it cannot (closed).
    """

    def __init__(self, send: SendFn, spawn: Callable[[Coroutine[Any, Any, Any], str], bool]):
        self._send = send
        self._spawn = spawn
        self._queues: dict[str, _Queue] = {}
        #: Posts refused because a bound was reached.
        self.refused = 0

    def post(
        self,
        address: str,
        frames: list[Any],
        nbytes: int,
        server_key: str | None,
        timeout: float | None,
    ) -> asyncio.Future[bool]:
        """Queue ``frames`` for ``address``; the future says whether the transport took them."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(address)
        if queue is None:
            if len(self._queues) >= MAX_ADDRESSES:
                return self._refuse(future)
            queue = self._queues[address] = _Queue()
        if len(queue.items) >= MAX_QUEUED_MESSAGES or queue.nbytes + nbytes > MAX_QUEUED_BYTES:
            return self._refuse(future)
        queue.items.append((frames, nbytes, server_key, timeout, future))
        queue.nbytes += nbytes
        if not queue.draining:
            queue.draining = True
            if not self._spawn(self._drain(address, queue), "send"):
                queue.draining = False
                queue.items.pop()
                queue.nbytes -= nbytes
                if not queue.items:
                    del self._queues[address]
                return self._refuse(future)
        return future

    def _refuse(self, future: asyncio.Future[bool]) -> asyncio.Future[bool]:
        self.refused += 1
        future.set_result(False)
        return future

    async def _drain(self, address: str, queue: _Queue) -> None:
        try:
            while queue.items:
                frames, nbytes, key, timeout, future = queue.items[0]
                try:
                    delivered = await self._send(address, frames, key, timeout)
                except Exception as exc:  # a network failure is a failed send, never a crash
                    logger.debug("send to %s failed: %s", address, exc)
                    delivered = False
                if queue.items and queue.items[0][4] is future:
                    queue.items.popleft()
                    queue.nbytes -= nbytes
                if not future.done():
                    future.set_result(delivered)
        finally:
            queue.draining = False
            for *_, future in queue.items:  # cancelled (node closing): fail the rest
                if not future.done():
                    future.set_result(False)
            queue.items.clear()
            if self._queues.get(address) is queue:
                del self._queues[address]

    def forget(self, address: str) -> None:
        """Nothing more is sent to ``address`` (the queue's waiters get False)."""
        queue = self._queues.pop(address, None)
        if queue is None:
            return
        in_flight = [queue.items[0]] if queue.draining and queue.items else []
        for *_, future in list(queue.items)[len(in_flight) :]:
            if not future.done():
                future.set_result(False)
        queue.items = deque(in_flight)
        queue.nbytes = sum(item[1] for item in in_flight)
