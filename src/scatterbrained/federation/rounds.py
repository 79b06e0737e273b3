"""Which received updates to merge, for asynchronous gossip and for synchronous rounds.

:class:`UpdateStore` keeps, per sender, the last few updates keyed by round (the sender's
model version when it sent). Gossip takes the freshest unseen update of each in-neighbour;
a synchronous round ``r`` takes exactly round ``r`` from each expected sender, so that a run
is reproducible however fast each node is. Pure and synchronous: the namespace feeds it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np

__all__ = ["StoredUpdate", "UpdateStore"]


@dataclass(frozen=True)
class StoredUpdate:
    """A peer's weights as received.

    Attributes:
        sender: the peer's node id.
        round: the sender's round (its model version when it sent the update).
        samples: training samples behind the weights.
        arrays: named weights (validated against the local model's specs).
        received_at: monotonic receive time in seconds.
    """

    sender: str
    round: int
    samples: int
    arrays: Mapping[str, np.ndarray]
    received_at: float


@dataclass
class UpdateStoreStats:
    """Counters of an :class:`UpdateStore`."""

    offered: int = 0
    stale: int = 0
    evicted: int = 0
    taken: int = 0


@dataclass
class UpdateStore:
    """Bounded per-sender store of received updates.

    Args:
        keep_rounds: rounds kept per sender (older ones are evicted); bounds memory to
            ``keep_rounds`` models per peer.
        max_age_s: updates older than this (seconds since receipt) are never merged;
            ``None`` disables the bound.
    """

    keep_rounds: int = 3
    max_age_s: float | None = 120.0
    stats: UpdateStoreStats = field(default_factory=UpdateStoreStats)
    _by_sender: dict[str, dict[int, StoredUpdate]] = field(default_factory=dict)
    _last_taken: dict[str, int] = field(default_factory=dict)

    def offer(self, update: StoredUpdate) -> bool:
        """Store an update; False when it is older than what was already merged from it."""
        self.stats.offered += 1
        if update.round <= self._last_taken.get(update.sender, -(2**62)):
            self.stats.stale += 1
            return False
        rounds = self._by_sender.setdefault(update.sender, {})
        rounds[update.round] = update
        while len(rounds) > self.keep_rounds:
            rounds.pop(min(rounds))
            self.stats.evicted += 1
        return True

    def forget(self, sender: str) -> None:
        """Drop everything stored from ``sender`` (it left)."""
        self._by_sender.pop(sender, None)

    def reset_sender(self, sender: str) -> None:
        """Forget what was merged from ``sender`` too (it restarted with a new session)."""
        self._by_sender.pop(sender, None)
        self._last_taken.pop(sender, None)

    def senders_with_round(self, senders: Collection[str], round: int) -> set[str]:
        """The senders among ``senders`` that have an update for ``round`` or later."""
        return {s for s in senders if any(r >= round for r in self._by_sender.get(s, {}))}

    def latest_round(self, senders: Collection[str]) -> int | None:
        """The newest round stored from any of ``senders``, or ``None`` when nothing is stored."""
        rounds = [r for s in senders for r in self._by_sender.get(s, {})]
        return max(rounds) if rounds else None

    def take_round(self, senders: Collection[str], round: int, now: float) -> list[StoredUpdate]:
        """Take, per sender, its update for exactly ``round`` (else the closest later one).

        Senders with nothing fresh for ``round`` are skipped. Taken updates and everything
        older from the same sender are removed. The result is sorted by sender.
        """
        chosen: list[StoredUpdate] = []
        for sender in sorted(senders):
            rounds = self._by_sender.get(sender, {})
            later = sorted(r for r in rounds if r >= round)
            if later:
                chosen.append(rounds[later[0]])
        return self._consume(chosen, now)

    def take_fresh(
        self, senders: Collection[str], now: float, *, any_age: bool = False
    ) -> list[StoredUpdate]:
        """Take, per sender, its freshest not-yet-merged update (asynchronous gossip).

        Args:
            senders: whose updates to take.
            now: the current ``time.monotonic()``, for the ``max_age_s`` bound.
            any_age: ignore ``max_age_s`` (for a model that stays current until replaced).
        """
        chosen = [
            rounds[max(rounds)]
            for sender in sorted(senders)
            if (rounds := self._by_sender.get(sender))
        ]
        return self._consume(chosen, now, any_age)

    def _consume(
        self, chosen: list[StoredUpdate], now: float, any_age: bool = False
    ) -> list[StoredUpdate]:
        fresh: list[StoredUpdate] = []
        for update in chosen:
            rounds = self._by_sender[update.sender]
            for r in [r for r in rounds if r <= update.round]:
                del rounds[r]
            self._last_taken[update.sender] = update.round
            too_old = self.max_age_s is not None and now - update.received_at > self.max_age_s
            if too_old and not any_age:
                self.stats.stale += 1
                continue
            fresh.append(update)
        self.stats.taken += len(fresh)
        return fresh

    def __len__(self) -> int:
        return sum(len(r) for r in self._by_sender.values())
