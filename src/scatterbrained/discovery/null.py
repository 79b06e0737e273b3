"""A discovery that finds nobody: used for scope ``off`` (bootstrap lists only)."""

from __future__ import annotations

from types import TracebackType

from ..errors import DiscoveryError
from ._queue import EventQueue
from .base import Beacon, DiscoveryEvent

__all__ = ["NullDiscovery"]


class NullDiscovery:
    """Implements the Discovery Protocol by doing nothing: no sockets, no beacons, no events.

    Args:
        peer_timeout: what :attr:`peer_timeout` reports (seconds).
    """

    def __init__(self, peer_timeout: float = 5.0) -> None:
        self._peer_timeout = peer_timeout
        self._events = EventQueue(1, "NullDiscovery")  # never fed: only close wakes it
        self._closed = False

    @property
    def peer_timeout(self) -> float:
        """Seconds without contact after which a peer is considered gone."""
        return self._peer_timeout

    def announce(self, beacon: Beacon | None) -> None:
        """Ignore the beacon (nothing is ever sent)."""

    async def next_event(self) -> DiscoveryEvent:
        """Wait until cancelled or closed: there are never events.

        Raises:
            DiscoveryError: this discovery is closed, or was closed while waiting.
        """
        return await self._events.get()

    def candidates(self) -> list[Beacon]:
        """Always empty."""
        return []

    async def start(self) -> None:
        """Nothing to start.

        Raises:
            DiscoveryError: this instance was closed.
        """
        if self._closed:
            raise DiscoveryError("this NullDiscovery was closed; create a new one to restart")

    async def close(self) -> None:
        """Make :meth:`next_event` raise from now on. Idempotent."""
        self._closed = True
        self._events.close()

    async def __aenter__(self) -> NullDiscovery:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
