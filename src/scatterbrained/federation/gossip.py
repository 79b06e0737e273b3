"""Bookkeeping of received model updates for asynchronous gossip and synchronous rounds.

Both holders keep at most one update per sender (the freshest), so memory is bounded by the
number of peers whatever they send.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigurationError

__all__ = ["ReceivedUpdate", "RoundCollector", "UpdateBuffer", "UpdateBufferStats"]


@dataclass(frozen=True)
class ReceivedUpdate:
    """A validated model update from one peer.

    Attributes:
        sender: the peer's node id.
        version: the sender's model version (higher is fresher).
        samples: the sender's local sample count (the FedAvg weight).
        arrays: the sender's named arrays.
        received_at: local monotonic time of arrival, in seconds.
        round: the synchronous round it belongs to (``-1``: asynchronous gossip).
    """

    sender: str
    version: int
    samples: int
    arrays: Mapping[str, np.ndarray]
    received_at: float
    round: int = -1


def _fresher(new: ReceivedUpdate, old: ReceivedUpdate | None) -> bool:
    """Higher version wins; on equal versions, the later arrival wins."""
    return old is None or (new.version, new.received_at) > (old.version, old.received_at)


@dataclass
class UpdateBufferStats:
    """Counters of an :class:`UpdateBuffer`.

    Attributes:
        accepted: updates stored by :meth:`UpdateBuffer.offer` (including replacements).
        replaced: stored updates superseded by a fresher one before being taken.
        rejected_older: offered updates not fresher than the one already held.
        stale_by_age: updates discarded because older than ``max_age_s``.
        stale_by_version: updates discarded because ``max_version_lag`` behind.
        taken: updates handed out by :meth:`UpdateBuffer.take`.
    """

    accepted: int = 0
    replaced: int = 0
    rejected_older: int = 0
    stale_by_age: int = 0
    stale_by_version: int = 0
    taken: int = 0


class UpdateBuffer:
    """The freshest not-yet-merged update of each sender, for asynchronous gossip.

    Not thread-safe: use it from one thread (the event loop).

    Args:
        max_age_s: updates older than this (``now - received_at``, seconds) are stale;
            ``None``: no age limit.
        max_version_lag: updates whose version is more than this behind the local version
            are stale; ``None``: no lag limit.

    Raises:
        ConfigurationError: a limit is negative.
    """

    def __init__(self, max_age_s: float | None = 60.0, max_version_lag: int | None = None) -> None:
        if max_age_s is not None and not max_age_s >= 0:
            raise ConfigurationError(f"max_age_s must be None or >= 0 seconds, got {max_age_s!r}")
        if max_version_lag is not None and max_version_lag < 0:
            raise ConfigurationError(
                f"max_version_lag must be None or >= 0, got {max_version_lag!r}"
            )
        self.max_age_s = max_age_s
        self.max_version_lag = max_version_lag
        self.stats = UpdateBufferStats()
        self._held: dict[str, ReceivedUpdate] = {}

    def offer(self, update: ReceivedUpdate) -> bool:
        """Store ``update`` if it is fresher than the one held for its sender.

        Returns:
            ``True`` when stored, ``False`` when an update at least as fresh is held.
        """
        held = self._held.get(update.sender)
        if not _fresher(update, held):
            self.stats.rejected_older += 1
            return False
        if held is not None:
            self.stats.replaced += 1
        self._held[update.sender] = update
        self.stats.accepted += 1
        return True

    def _stale_reason(self, update: ReceivedUpdate, now: float, local_version: int) -> str | None:
        if self.max_age_s is not None and now - update.received_at > self.max_age_s:
            return "age"
        lag = local_version - update.version
        if self.max_version_lag is not None and lag > self.max_version_lag:
            return "version"
        return None

    def take(
        self, inbound: Collection[str], now: float, local_version: int
    ) -> list[ReceivedUpdate]:
        """Remove and return the fresh updates from ``inbound`` senders, sorted by sender.

        Stale updates (by age or version lag) of *any* sender are discarded and counted, so
        peers that vanished without :meth:`forget` do not pin memory past the age limit.
        Fresh updates from senders not in ``inbound`` stay held.

        Args:
            inbound: the senders this node merges from now (its in-neighbours).
            now: the current time, on the same clock as ``received_at`` (seconds).
            local_version: the local model version, for the version-lag limit.
        """
        inbound_set = set(inbound)
        fresh: list[ReceivedUpdate] = []
        for sender in sorted(self._held):
            update = self._held[sender]
            reason = self._stale_reason(update, now, local_version)
            if reason == "age":
                self.stats.stale_by_age += 1
            elif reason == "version":
                self.stats.stale_by_version += 1
            elif sender in inbound_set:
                fresh.append(update)
            else:
                continue
            del self._held[sender]
        self.stats.taken += len(fresh)
        return fresh

    def forget(self, sender: str) -> None:
        """Drop the update held for ``sender`` (e.g. when it left); no-op if none."""
        self._held.pop(sender, None)

    def clear(self) -> None:
        """Drop every held update."""
        self._held.clear()

    def senders(self) -> frozenset[str]:
        """The senders an update is held for."""
        return frozenset(self._held)

    def __len__(self) -> int:
        return len(self._held)

    def __repr__(self) -> str:
        return (
            f"UpdateBuffer(held={len(self._held)}, max_age_s={self.max_age_s!r}, "
            f"max_version_lag={self.max_version_lag!r})"
        )


class RoundCollector:
    """Collects one synchronous round's updates from an expected set of senders.

    Args:
        round: the round number; updates of other rounds are refused.
        expected: the senders this round waits for (others are refused).
        min_peers: the round is ready once this many expected senders delivered (>= 0),
            or once all expected senders delivered, whichever comes first.

    Raises:
        ConfigurationError: ``min_peers`` is negative.
    """

    def __init__(self, round: int, expected: Collection[str], min_peers: int) -> None:
        if min_peers < 0:
            raise ConfigurationError(f"min_peers must be >= 0, got {min_peers!r}")
        self.round = round
        self.expected = frozenset(expected)
        self.min_peers = min_peers
        self._received: dict[str, ReceivedUpdate] = {}

    def offer(self, update: ReceivedUpdate) -> bool:
        """Store ``update`` if it is of this round, from an expected sender, and fresher.

        Returns:
            ``True`` when stored.
        """
        if update.round != self.round or update.sender not in self.expected:
            return False
        if not _fresher(update, self._received.get(update.sender)):
            return False
        self._received[update.sender] = update
        return True

    @property
    def ready(self) -> bool:
        """``True`` when every expected sender delivered or at least ``min_peers`` did."""
        count = len(self._received)
        return count >= len(self.expected) or count >= self.min_peers

    @property
    def missing(self) -> frozenset[str]:
        """Expected senders that have not delivered yet."""
        return self.expected - self._received.keys()

    def updates(self) -> list[ReceivedUpdate]:
        """The collected updates, sorted by sender."""
        return [self._received[s] for s in sorted(self._received)]

    def __len__(self) -> int:
        return len(self._received)

    def __repr__(self) -> str:
        return (
            f"RoundCollector(round={self.round}, received={len(self._received)}/"
            f"{len(self.expected)}, min_peers={self.min_peers})"
        )
