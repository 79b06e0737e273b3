"""The pure decisions of a round: who to push to, who to wait for, which updates to merge.

:func:`exchange_neighbours` turns the topology and the members' modes into this node's
targets and sources, over the nodes that take part (those that send): a node that only
receives (no model yet, LEECHING) hangs off the graph of the senders and never cuts an edge
between two of them. :func:`has_quorum` is the ``min_peers`` rule of synchronous rounds.

:class:`UpdateStore` keeps, per sender, the last few updates keyed by round (the sender's
model version when it sent). Gossip takes the freshest unseen update of each in-neighbour;
a synchronous round ``r`` takes exactly round ``r`` from each expected sender, so that a run
is reproducible however fast each node is. Pure and synchronous: the namespace feeds it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from ..types import OperatingMode
from .privacy import PairingRule
from .topology import Topology

__all__ = [
    "KEEP_ROUNDS",
    "MAX_SENDER_BYTES",
    "MAX_STORE_BYTES",
    "MIN_KEEP_ROUNDS",
    "RESEND_AFTER_S",
    "SeedLedger",
    "StoredUpdate",
    "UpdateStore",
    "exchange_neighbours",
    "has_quorum",
]


def exchange_neighbours(
    me: str,
    my_mode: OperatingMode,
    peer_modes: Mapping[str, OperatingMode],
    topology: Topology,
    epoch: int,
    *,
    pairing: bool = False,
) -> tuple[list[str], list[str]]:
    """This node's targets (out-neighbours that receive) and sources (in-neighbours that send).

    The graph is drawn over the *senders* (members whose announced mode sends, plus this
    node if it sends). A node that only receives is placed into that graph one at a time,
    only to find who sends to it, so it never takes a place that would cut an edge between
    two senders (a newcomer or a LEECHING node in a ``Ring`` does not split the ring).

    Args:
        me: this node's id.
        my_mode: this node's effective mode (a node without a model does not send).
        peer_modes: each member's announced (effective) mode.
        topology: the namespace's topology.
        epoch: the round number the topology may use (e.g. ``RandomRegular`` redraws).
        pairing: apply the paper's pairing rule (never both directions with one partner).

    Returns:
        ``(targets, sources)``, each sorted by id.
    """
    senders = {p for p, m in peer_modes.items() if m.sends}
    receivers = {p for p, m in peer_modes.items() if m.receives}
    if my_mode.sends:
        nb = topology.neighbours(me, senders | {me}, epoch=epoch)
        if pairing:
            nb = PairingRule().split(me, nb, epoch)
        targets = set(nb.out) & receivers
        for peer in receivers - senders:  # receive-only members hang off the sender graph
            if peer in topology.neighbours(me, senders | {me, peer}, epoch=epoch).out:
                targets.add(peer)
        sources = set(nb.inbound) & senders
    else:
        nb = topology.neighbours(me, senders | {me}, epoch=epoch)
        targets, sources = set(), set(nb.inbound) & senders
    return sorted(targets), sorted(sources)


def has_quorum(arrived: Collection[str], expected: Collection[str], min_peers: int) -> bool:
    """True when a synchronous round has the updates it needs to merge.

    A round needs ``min_peers`` updates, or all expected ones when fewer are expected.
    """
    return len(arrived) >= min(min_peers, len(expected))


@dataclass(frozen=True)
class StoredUpdate:
    """A peer's weights as received.

    Attributes:
        sender: the peer's node id.
        round: the sender's round (its model version when it sent the update).
        samples: training samples behind the weights.
        arrays: named weights (validated against the local model's specs).
        received_at: monotonic receive time in seconds.
        weight: the push-sum weight it carries (0: none). When a fresher update is taken
            in place of older ones from the same sender, their weights add up in it, so
            push-sum's total weight is kept.
    """

    sender: str
    round: int
    samples: int
    arrays: Mapping[str, np.ndarray]
    received_at: float
    weight: float = 0.0


@dataclass
class UpdateStoreStats:
    """Counters of an :class:`UpdateStore`."""

    offered: int = 0
    stale: int = 0
    evicted: int = 0
    taken: int = 0


#: Rounds kept per sender (bytes permitting, see :data:`MAX_SENDER_BYTES`). On a directed
#: cycle nothing holds an upstream node back (it waits for its own in-neighbour, not for the
#: node it sends to), so it can run up to the cycle's length minus one rounds ahead; an
#: evicted round would be taken as a later one, and the node would skip round numbers its
#: own out-neighbours wait for (synchronous rounds) or mixing steps (consensus rounds).
KEEP_ROUNDS = 64
#: Bytes of updates kept per sender beyond the first :data:`MIN_KEEP_ROUNDS` rounds.
MAX_SENDER_BYTES = 64 * 2**20
#: Bytes of updates kept in all beyond the first :data:`MIN_KEEP_ROUNDS` rounds of each
#: sender (the sender holding the most rounds loses its oldest first).
MAX_STORE_BYTES = 256 * 2**20
#: Rounds always kept per sender, whatever their size.
MIN_KEEP_ROUNDS = 3


@dataclass
class UpdateStore:
    """Bounded per-sender store of received updates.

    Args:
        keep_rounds: rounds kept per sender (older ones are evicted first). Past
            :data:`MIN_KEEP_ROUNDS` of them, also no more than ``max_sender_bytes`` of arrays
            per sender and ``max_total_bytes`` in all: memory stays within
            ``MIN_KEEP_ROUNDS`` models per peer plus ``max_total_bytes``.
        max_age_s: updates older than this (seconds since receipt) are never merged;
            ``None`` disables the bound.
        max_sender_bytes: see ``keep_rounds``.
        max_total_bytes: see ``keep_rounds``.
    """

    keep_rounds: int = KEEP_ROUNDS
    max_age_s: float | None = 120.0
    max_sender_bytes: int = MAX_SENDER_BYTES
    max_total_bytes: int = MAX_STORE_BYTES
    stats: UpdateStoreStats = field(default_factory=UpdateStoreStats)
    _by_sender: dict[str, dict[int, StoredUpdate]] = field(default_factory=dict)
    _last_taken: dict[str, int] = field(default_factory=dict)
    _sizes: dict[str, int] = field(default_factory=dict)  # bytes stored per sender

    def offer(self, update: StoredUpdate) -> bool:
        """Store an update; False when it is older than what was already merged from it."""
        self.stats.offered += 1
        sender = update.sender
        if update.round <= self._last_taken.get(sender, -(2**62)):
            self.stats.stale += 1
            return False
        rounds = self._by_sender.setdefault(sender, {})
        self._drop(sender, update.round)  # a repeated round replaces the stored one
        rounds[update.round] = update
        self._sizes[sender] = self._sizes.get(sender, 0) + _size(update)
        while len(rounds) > self.keep_rounds or (
            len(rounds) > MIN_KEEP_ROUNDS and self._sizes[sender] > self.max_sender_bytes
        ):
            self._evict_oldest(sender)
        while self.stored_bytes() > self.max_total_bytes:
            deep = [s for s, r in self._by_sender.items() if len(r) > MIN_KEEP_ROUNDS]
            if not deep:
                break
            self._evict_oldest(max(deep, key=lambda s: len(self._by_sender[s])))
        return True

    def forget(self, sender: str) -> None:
        """Drop everything stored from ``sender`` (it left)."""
        self._by_sender.pop(sender, None)
        self._sizes.pop(sender, None)

    def reset_sender(self, sender: str) -> None:
        """Forget what was merged from ``sender`` too (it restarted with a new session)."""
        self.forget(sender)
        self._last_taken.pop(sender, None)

    def stored_bytes(self) -> int:
        """Bytes of arrays stored now, all senders together."""
        return sum(self._sizes.values())

    def _evict_oldest(self, sender: str) -> None:
        self._drop(sender, min(self._by_sender[sender]))
        self.stats.evicted += 1

    def _drop(self, sender: str, round_: int) -> None:
        removed = self._by_sender.get(sender, {}).pop(round_, None)
        if removed is not None:
            self._sizes[sender] -= _size(removed)

    def senders_with_round(self, senders: Collection[str], round: int) -> set[str]:
        """The senders among ``senders`` that have an update for ``round`` or later."""
        return {s for s in senders if any(r >= round for r in self._by_sender.get(s, {}))}

    def newest_round(self, sender: str) -> int | None:
        """The newest round stored or merged from ``sender``; ``None`` if it never sent."""
        rounds = list(self._by_sender.get(sender, {}))
        if sender in self._last_taken:
            rounds.append(self._last_taken[sender])
        return max(rounds) if rounds else None

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
            first = _first_from(rounds, round)
            if first is not None:
                chosen.append(rounds[first])
        return self._consume(chosen, now)

    def take_for_round(
        self, senders: Collection[str], round: int, now: float, *, max_lead: int
    ) -> list[StoredUpdate]:
        """Take, per sender, its update for ``round`` if it has one, else its closest later
        one, else (a sender behind) its freshest (asynchronous gossip); but the freshest
        when the sender's newest round is more than ``max_lead`` ahead of ``round``.

        A sender a few rounds ahead (on a one-way cycle nothing holds an upstream node back)
        keeps its later rounds here for the next exchanges, so none of its mixing steps is
        skipped; one further ahead is simply faster, and its freshest model is merged (the
        caller catches up with its round). Taken updates and everything older from the
        same sender are removed; the result is sorted by sender.
        """
        chosen: list[StoredUpdate] = []
        for sender in sorted(senders):
            rounds = self._by_sender.get(sender)
            if not rounds:
                continue
            newest, first = max(rounds), _first_from(rounds, round)
            pick = first if first is not None and newest - round <= max_lead else newest
            chosen.append(rounds[pick])
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
            skipped = sum(rounds[r].weight for r in rounds if r < update.round)
            if skipped:
                update = replace(update, weight=update.weight + skipped)
            for r in [r for r in rounds if r <= update.round]:
                self._drop(update.sender, r)
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


def _first_from(rounds: Mapping[int, StoredUpdate], round_: int) -> int | None:
    """The earliest stored round at or after ``round_`` (``None``: none that late)."""
    return min((r for r in rounds if r >= round_), default=None)


def _size(update: StoredUpdate) -> int:
    return sum(int(np.asarray(a).nbytes) for a in update.arrays.values())


#: Seconds after each delivered send of a version before the next copy (then no more).
RESEND_AFTER_S = (1.0, 4.0, 16.0)


@dataclass
class _Sent:
    version: int
    at: float
    copies: int = 0


class SeedLedger:
    """What a seeding centre sent to whom, and the round number of its current version."""

    def __init__(self) -> None:
        self._sent: dict[str, _Sent] = {}
        self._version = -1
        self._round = -1

    def round_for(self, version: int, global_round: int) -> int:
        """The round a version is sent as: fixed per version, after every earlier round."""
        if version != self._version:
            self._version, self._round = version, max(global_round + 1, version)
        return self._round

    def due(self, peer: str, version: int, now: float) -> bool:
        """True when ``peer`` should be sent ``version`` now (``now`` in monotonic seconds)."""
        sent = self._sent.get(peer)
        if sent is None or sent.version != version:
            return True
        return sent.copies < len(RESEND_AFTER_S) and now - sent.at >= RESEND_AFTER_S[sent.copies]

    def delivered(self, peer: str, version: int, now: float) -> None:
        """Record a send of ``version`` to ``peer`` that the transport accepted."""
        sent = self._sent.get(peer)
        if sent is not None and sent.version == version:
            sent.at, sent.copies = now, sent.copies + 1
        else:
            self._sent[peer] = _Sent(version, now)

    def forget(self, peer: str) -> None:
        """``peer`` left or restarted: it is sent the current version again when back."""
        self._sent.pop(peer, None)
