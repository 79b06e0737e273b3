"""The candidate table: the latest beacon of each node heard, capped and expiring.

Pure and synchronous: the caller passes the time (seconds on any monotonic clock), so the
same table serves UDP discovery, the in-memory twin and simulations with a fake clock.
Beacons are hints, not trust: the table is capped, and when it is full beacons from unknown
node ids are dropped (and counted) rather than evicting known candidates.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from ..errors import ConfigurationError
from .base import Beacon, DiscoveryEvent, EventKind

__all__ = ["DEFAULT_CAPACITY", "CandidateTable"]

#: Default maximum number of candidates kept.
DEFAULT_CAPACITY = 1024


@dataclasses.dataclass
class _Entry:
    beacon: Beacon
    last_seen: float


def _versionless(beacon: Beacon) -> tuple[object, ...]:
    """What an UPDATED event is about: everything except the namespaces' model versions."""
    ads = tuple((ad.name, str(ad.mode)) for ad in beacon.namespaces)
    return (beacon.host, beacon.port, ads, beacon.public_key)


class CandidateTable:
    """Latest beacon per node id, with SEEN / UPDATED / LOST events.

    Args:
        peer_timeout: seconds without a beacon after which a candidate is LOST (> 0).
        capacity: most candidates kept (>= 1); beacons from new ids beyond it are dropped.
        own_id: this node's id; its own beacons are ignored. Settable later.

    Raises:
        ConfigurationError: ``peer_timeout`` or ``capacity`` is not positive.
    """

    def __init__(
        self,
        *,
        peer_timeout: float,
        capacity: int = DEFAULT_CAPACITY,
        own_id: str | None = None,
    ) -> None:
        if not peer_timeout > 0:
            raise ConfigurationError(f"peer_timeout must be > 0 seconds, got {peer_timeout!r}")
        if capacity < 1:
            raise ConfigurationError(f"capacity must be >= 1 candidates, got {capacity!r}")
        self.peer_timeout = float(peer_timeout)
        self.capacity = capacity
        self.own_id = own_id
        self._entries: dict[str, _Entry] = {}
        #: Counters: ``dropped_table_full``, ``dropped_stale_session``, ``ignored_own``.
        self.stats: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def get(self, node_id: str) -> Beacon | None:
        """The latest beacon of ``node_id``, or ``None`` when it is not a candidate."""
        entry = self._entries.get(node_id)
        return entry.beacon if entry is not None else None

    def candidates(self) -> list[Beacon]:
        """The latest beacon of every candidate, in the order they were first seen."""
        return [entry.beacon for entry in self._entries.values()]

    def observe(self, beacon: Beacon, now: float) -> DiscoveryEvent | None:
        """Record a beacon heard at time ``now`` (seconds).

        Returns:
            SEEN for a new node id or a newer session of a known one; UPDATED when its
            address, key, namespaces or modes changed; ``None`` when nothing that matters
            changed (a model-version-only change is stored silently), for this node's own
            beacons, for an older session than the one known, and when the table is full.
        """
        if beacon.node_id == self.own_id:
            self.stats["ignored_own"] += 1
            return None
        entry = self._entries.get(beacon.node_id)
        if entry is None:
            if len(self._entries) >= self.capacity:
                self.stats["dropped_table_full"] += 1
                return None
            self._entries[beacon.node_id] = _Entry(beacon, now)
            return DiscoveryEvent(EventKind.SEEN, beacon)
        known = entry.beacon
        if beacon.session < known.session:
            self.stats["dropped_stale_session"] += 1
            return None
        entry.last_seen = now
        entry.beacon = beacon
        if beacon.session > known.session:
            return DiscoveryEvent(EventKind.SEEN, beacon)
        if _versionless(beacon) != _versionless(known):
            return DiscoveryEvent(EventKind.UPDATED, beacon)
        return None

    def remove(self, node_id: str) -> DiscoveryEvent | None:
        """Forget ``node_id`` now; returns its LOST event, or ``None`` when it was unknown."""
        entry = self._entries.pop(node_id, None)
        return DiscoveryEvent(EventKind.LOST, entry.beacon) if entry is not None else None

    def expire(self, now: float) -> list[DiscoveryEvent]:
        """Remove candidates not heard for more than ``peer_timeout`` seconds before ``now``.

        Returns:
            One LOST event (carrying the last beacon) per removed candidate.
        """
        deadline = now - self.peer_timeout
        gone = [node_id for node_id, e in self._entries.items() if e.last_seen < deadline]
        return [
            DiscoveryEvent(EventKind.LOST, self._entries.pop(node_id).beacon) for node_id in gone
        ]

    def clear(self) -> None:
        """Forget every candidate (no events)."""
        self._entries.clear()
