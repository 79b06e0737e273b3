"""The raw-payload inbox of a namespace: what ``ns.recv()`` returns, bounded in count and bytes."""

from __future__ import annotations

import time
from collections import deque

from ._tasks import Pulse
from .errors import ConfigurationError, PeerTimeoutError, ScatterbrainedError
from .types import Identity

__all__ = ["RawInbox"]


class RawInbox:
    """A bounded FIFO of raw payloads, with a cancellation-safe timed ``get``.

    Args:
        max_messages: payloads kept until ``recv`` takes them; more are dropped.
        max_bytes: total bytes kept; a payload that would exceed it is dropped.

    Raises:
        ConfigurationError: a bound is not positive.
    """

    def __init__(self, max_messages: int = 1024, max_bytes: int = 16 * 2**20) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ConfigurationError(
                f"recv queue bounds must be >= 1, got {max_messages} messages / {max_bytes} B"
            )
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._items: deque[tuple[Identity, list[bytes], int]] = deque()
        self._bytes = 0
        self._arrived = Pulse()
        #: Payloads dropped because a bound was reached.
        self.dropped = 0
        self._closed = False

    def close(self) -> None:
        """No more payloads: a waiting and every later ``get`` raises (after the queued ones)."""
        self._closed = True
        self._arrived.fire()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    def put(self, sender: Identity, payload: list[bytes]) -> bool:
        """Keep a payload; False (and counted) when a bound is reached."""
        size = sum(len(p) for p in payload)
        if len(self._items) >= self.max_messages or self._bytes + size > self.max_bytes:
            self.dropped += 1
            return False
        self._items.append((sender, payload, size))
        self._bytes += size
        self._arrived.fire()
        return True

    async def get(self, timeout: float | None, namespace: str) -> tuple[Identity, list[bytes]]:
        """The oldest payload, waiting at most ``timeout`` seconds (``None``: until one comes).

        Raises:
            PeerTimeoutError: nothing arrived in time.
            ScatterbrainedError: the namespace was closed.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._items:
            if self._closed:
                raise ScatterbrainedError(f"namespace {namespace!r} was closed")
            if not await self._arrived.wait_until(deadline):
                raise PeerTimeoutError(f"namespace {namespace!r}: no payload within {timeout} s")
        sender, payload, size = self._items.popleft()
        self._bytes -= size
        return sender, payload
