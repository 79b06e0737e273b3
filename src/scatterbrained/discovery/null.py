"""A discovery that finds nobody: used for scope ``off`` (bootstrap lists only)."""

from __future__ import annotations

import asyncio
from types import TracebackType

from .base import Beacon, DiscoveryEvent

__all__ = ["NullDiscovery"]


class NullDiscovery:
    """Implements the Discovery Protocol by doing nothing: no sockets, no beacons, no events."""

    def __init__(self, peer_timeout: float = 5.0) -> None:
        self._peer_timeout = peer_timeout
        self._never: asyncio.Event | None = None

    @property
    def peer_timeout(self) -> float:
        """Seconds without contact after which a peer is considered gone."""
        return self._peer_timeout

    def announce(self, beacon: Beacon | None) -> None:
        """Ignore the beacon (nothing is ever sent)."""

    async def next_event(self) -> DiscoveryEvent:
        """Wait forever (until cancelled): there are never events."""
        if self._never is None:
            self._never = asyncio.Event()
        await self._never.wait()
        raise AssertionError("unreachable")  # pragma: no cover

    def candidates(self) -> list[Beacon]:
        """Always empty."""
        return []

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to close."""

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
