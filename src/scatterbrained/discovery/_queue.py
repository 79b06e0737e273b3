"""The bounded event queue behind ``next_event`` of every discovery."""

from __future__ import annotations

import asyncio
import collections

from ..errors import DiscoveryError
from .base import DiscoveryEvent

__all__ = ["EventQueue"]


class EventQueue:
    """A FIFO of discovery events that drops its oldest event when full.

    ``get`` is cancellation-safe (an event is taken only when it is returned) and raises
    :class:`~scatterbrained.errors.DiscoveryError` once the queue is closed, waking any
    waiter, so nothing waits forever on a closed discovery.

    Args:
        maxsize: most events held (>= 1).
        owner: names the discovery in error messages.
    """

    def __init__(self, maxsize: int, owner: str) -> None:
        self._maxsize = maxsize
        self._owner = owner
        self._events: collections.deque[DiscoveryEvent] = collections.deque()
        self._arrival: asyncio.Event | None = None  # created while someone waits
        self._closed = False

    def __len__(self) -> int:
        return len(self._events)

    def push(self, event: DiscoveryEvent) -> bool:
        """Append ``event``; returns ``True`` when the oldest event was dropped for room.

        Does nothing once closed.
        """
        if self._closed:
            return False
        dropped = len(self._events) >= self._maxsize
        if dropped:
            self._events.popleft()
        self._events.append(event)
        self._wake()
        return dropped

    def pop_nowait(self) -> DiscoveryEvent | None:
        """The oldest event, or ``None`` when there is none."""
        return self._events.popleft() if self._events else None

    async def get(self) -> DiscoveryEvent:
        """Wait for and return the oldest event (cancellable, loses nothing).

        Raises:
            DiscoveryError: the queue is closed, or was closed while waiting.
        """
        while not self._events:
            if self._closed:
                raise DiscoveryError(f"this {self._owner} is closed; no more events")
            if self._arrival is None:
                self._arrival = asyncio.Event()
            await self._arrival.wait()
        return self._events.popleft()

    def close(self) -> None:
        """Discard the buffered events and make every ``get`` raise. Idempotent."""
        self._closed = True
        self._events.clear()
        self._wake()

    def _wake(self) -> None:
        if self._arrival is not None:
            self._arrival.set()
            self._arrival = None
