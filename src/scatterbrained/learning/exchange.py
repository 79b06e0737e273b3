"""Sharing and merging weights: gossip, synchronous rounds and the centralized star.

An :class:`Exchange` belongs to one :class:`~scatterbrained.learning.learner.Learner` and
works on its model. At each sync point :meth:`Exchange.run` shares and merges once as the
namespace's mode and topology say; :meth:`Exchange.serve_pass` is the same for a node that
only serves. Nothing waits on one peer without a timeout; a peer that leaves is dropped from
every wait (:meth:`Exchange.wake` makes waits re-check who is still there).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from .._tasks import Pulse
from ..errors import WireError
from ..federation.aggregation import Contribution
from ..federation.rounds import StoredUpdate, UpdateStore
from ..peers import PeerRecord
from ..types import OperatingMode
from ..wire.codec import check_specs
from ..wire.limits import check_all_finite
from ..wire.messages import ModelUpdate
from .seeding import SeedLedger

if TYPE_CHECKING:
    from .learner import Learner

__all__ = ["Arrays", "Exchange", "all_finite"]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]

#: The round number a centre waits for: any update at all (clients count their own rounds).
ANY_ROUND = -(2**62)


class Exchange:
    """The federation side of a learner: who to push to, what to wait for, what to merge.

    Args:
        learner: the learner whose model is shared and merged into.
    """

    def __init__(self, learner: Learner) -> None:
        self.learner = learner
        self.ns = learner.ns
        self.options = learner.options
        self.store = UpdateStore(max_age_s=learner.options.max_staleness_s)
        self.lock = asyncio.Lock()
        self.arrival = Pulse()
        self.global_round = -1
        self.global_source: str | None = None  # the centre whose rounds global_round counts
        self.seeds = SeedLedger()  # what this node sent as a SEEDING centre

    # ------------------------------------------------------------------ who

    def neighbours(self) -> tuple[list[str], list[str]]:
        """(targets, sources): out-neighbours that receive, in-neighbours that send."""
        me = self.ns.node.id
        members = set(self.ns._members)
        nb = self.ns.topology.neighbours(me, members | {me}, epoch=self.learner.version)
        if self.options.pairing:
            from ..federation.privacy import PairingRule

            nb = PairingRule().split(me, nb, self.learner.version)
        targets, sources = [], []
        for peer in sorted(members):
            mode = self.ns.peer_mode(peer)
            if mode is None:
                continue
            if peer in nb.out and mode.receives:
                targets.append(peer)
            if peer in nb.inbound and mode.sends:
                sources.append(peer)
        return targets, sources

    def center(self) -> str | None:
        """The centre of a synchronous centralized topology (e.g. ``Star``), else ``None``."""
        if not self.options.sync:
            return None
        me = self.ns.node.id
        center: str | None = self.ns.topology.center(set(self.ns._members) | {me})
        return center

    def members_that_send(self) -> list[str]:
        """Members (sorted by id) whose announced mode sends weights."""
        return [p for p in sorted(self.ns._members) if self.still_sends(p)]

    def members_that_receive(self) -> list[str]:
        """Members (sorted by id) whose announced mode receives weights."""
        return [
            p
            for p in sorted(self.ns._members)
            if (m := self.ns.peer_mode(p)) is not None and m.receives
        ]

    def still_sends(self, peer: str) -> bool:
        """True while ``peer`` is a member whose announced mode sends weights."""
        mode = self.ns.peer_mode(peer) if peer in self.ns._members else None
        return mode is not None and mode.sends

    # ------------------------------------------------------------------ one exchange

    async def run(self, trained: bool) -> list[str]:
        """Share and merge once; return the ids merged from. Bumps the learner's version."""
        learner = self.learner
        async with self.lock:
            merged: list[str] = []
            if self.ns.mode is not OperatingMode.OFFLINE and learner.adapter is not None:
                center = self.center()
                if center is not None:
                    merged = await self._central_round(center, trained)
                else:
                    merged = await self._gossip_round()
            learner.version += 1
            learner.publish()
            return merged

    async def _gossip_round(self) -> list[str]:
        learner = self.learner
        assert learner.adapter is not None
        mode = self.ns.mode
        round_ = learner.version
        local = learner.adapter.get_arrays()
        targets, sources = self.neighbours()
        if mode.sends and targets:
            await self.push(targets, self.outgoing(local), round_)
        if not mode.receives or not sources:
            return []
        if self.options.sync:
            await self.wait_for(sources, round_, self.options.round_timeout)
            if not self._quorum(self.store.senders_with_round(sources, round_), sources):
                return []
            updates = self.finite(self.store.take_round(sources, round_, time.monotonic()))
            # A node that fell behind (restart, pause) adopts the round its neighbours are in.
            learner.version = max([learner.version, *(u.round for u in updates)])
        else:
            if self.options.gossip_wait > 0:
                await self.wait_for(sources, round_, self.options.gossip_wait)
            updates = self.finite(self.store.take_fresh(sources, time.monotonic()))
        return self.merge(local, updates)

    async def _central_round(self, center: str, trained: bool) -> list[str]:
        """Centralized FedAvg: the centre aggregates, the clients adopt its model."""
        adapter = self.learner.adapter
        assert adapter is not None
        mode = self.ns.mode
        if center == self.ns.node.id:
            return await self.aggregate_as_center(trained)
        if center not in self.ns._members:
            logger.info("namespace %s: centre %s absent; training alone", self.ns.name, center)
            return []
        center_mode = self.ns.peer_mode(center)
        aggregates = center_mode is not None and center_mode.receives
        if mode.sends and aggregates:
            await self.push([center], self.outgoing(adapter.get_arrays()), self.learner.version)
        if not mode.receives:
            return []
        # A centre that does not aggregate (SEEDING) sends its model when it changes: take a
        # new one if it came, but do not wait for a round result that is never computed.
        deadline = time.monotonic() + (self.options.round_timeout if aggregates else 0.0)
        while True:
            # A seeding centre's model is current until it sends a newer one: no age bound.
            now = time.monotonic()
            taken = self.store.take_fresh([center], now, any_age=not aggregates)
            updates = [u for u in self.finite(taken) if u.round > self.global_round]
            if updates:
                adapter.set_arrays(updates[-1].arrays)
                self.global_round = updates[-1].round
                self.global_source = center
                return [center]
            if not await self.arrival.wait_until(deadline) or not self.still_sends(center):
                if aggregates:
                    logger.info(
                        "namespace %s: no global model from %s in time", self.ns.name, center
                    )
                return []

    async def aggregate_as_center(self, trained: bool) -> list[str]:
        """One round at the centre: wait for client updates, aggregate, send the result back.

        Args:
            trained: the centre trained since the last round (its own weights count as one
                contribution); a centre that only serves aggregates the clients' alone.

        Returns:
            The clients merged from (empty when the round had too few updates).
        """
        adapter = self.learner.adapter
        assert adapter is not None
        senders = self.members_that_send() if self.ns.mode.receives else []
        await self.wait_for(senders, ANY_ROUND, self.options.round_timeout)
        if not self._quorum(self.store.senders_with_round(senders, ANY_ROUND), senders):
            return []
        updates = self.finite(self.store.take_fresh(senders, time.monotonic()))
        if not updates and not trained:
            return []
        contributions = [Contribution(u.arrays, u.samples, u.sender) for u in updates]
        if trained or not updates:
            own = self._own_contribution(adapter.get_arrays())
            adapter.set_arrays(self.ns.aggregator(own, contributions))
        else:
            adapter.set_arrays(self.ns.aggregator(contributions[0], contributions[1:]))
        # Rounds follow the (checkpointed) version, so clients that synced from this centre
        # or saw it before a restart never wait for round numbers it already used.
        self.global_round = max(self.global_round + 1, self.learner.version)
        receivers = self.members_that_receive()
        if self.ns.mode.sends and receivers:
            await self.push(receivers, adapter.get_arrays(), self.global_round)
        return [u.sender for u in updates]

    def _quorum(self, arrived: set[str], expected: list[str]) -> bool:
        """True when a synchronous round has the ``min_peers`` updates it needs to merge."""
        needed = min(self.options.min_peers, len(expected))
        if len(arrived) >= needed:
            return True
        logger.info(
            "namespace %s: round has %d of the %d updates min_peers asks for; not merging",
            self.ns.name,
            len(arrived),
            needed,
        )
        return False

    # ------------------------------------------------------------------ merge

    def finite(self, updates: list[StoredUpdate]) -> list[StoredUpdate]:
        """Drop (and count) updates holding NaN or infinity.

        Values are validated here, right before an update is merged or adopted, not when it
        is decoded: an update superseded by a fresher one before use is never scanned, and
        the scan stays off the receive path.
        """
        usable = []
        for update in updates:
            if all_finite(update.arrays):
                usable.append(update)
            else:
                self.ns.node.stats.dropped["non_finite"] += 1
                logger.warning(
                    "namespace %s: dropped non-finite weights from %s", self.ns.name, update.sender
                )
        return usable

    def merge(self, local: Arrays, updates: list[StoredUpdate]) -> list[str]:
        """Aggregate ``local`` with ``updates`` into the model; return the senders merged."""
        if not updates:
            return []
        adapter = self.learner.adapter
        assert adapter is not None
        others = [Contribution(u.arrays, u.samples, u.sender) for u in updates]
        adapter.set_arrays(self.ns.aggregator(self._own_contribution(local), others))
        return [u.sender for u in updates]

    def _own_contribution(self, local: Arrays) -> Contribution:
        return Contribution(local, max(self.learner.local_samples, 0), self.ns.node.id)

    # ------------------------------------------------------------------ push and wait

    def outgoing(self, local: Arrays) -> Arrays:
        """What is sent for ``local``: the weights, or their privatized form."""
        privacy = self.options.privacy
        if privacy is None:
            return local
        reference = self.learner.reference if self.learner.reference is not None else local
        return dict(privacy.apply(local, reference))

    async def push(self, targets: list[str], arrays: Arrays, round_: int) -> list[str]:
        """Send ``arrays`` as this node's update for ``round_`` to every target still here.

        Returns:
            The targets the transport accepted it for (queued to their connection).
        """
        update = ModelUpdate(
            version=self.learner.version,
            samples=max(self.learner.local_samples, 0),
            mode=self.ns.mode.value,
            arrays=arrays,
            round=round_,
        )
        records = [r for p in targets if (r := self.ns.node.peers.get(p)) is not None]
        sent = await asyncio.gather(*(self.ns._send(r, update) for r in records))
        return [r.id for r, ok in zip(records, sent, strict=True) if ok]

    async def wait_for(self, sources: list[str], round_: int, timeout: float) -> None:
        """Wait until every present source has an update for ``round_`` (at most ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while True:
            present = [s for s in sources if self.still_sends(s)]
            have = self.store.senders_with_round(present, round_)
            if len(have) == len(present):
                return
            if not await self.arrival.wait_until(deadline):
                logger.info(
                    "namespace %s: round %d timed out with %d of %d peers",
                    self.ns.name,
                    round_,
                    len(have),
                    len(present),
                )
                return

    def wake(self) -> None:
        """Make every wait re-check its condition (an update came, membership changed)."""
        self.arrival.fire()

    # ------------------------------------------------------------------ inbound

    def accept(self, record: PeerRecord, update: ModelUpdate, now: float) -> str | None:
        """Store a peer's weights for merging; return a drop reason or ``None``."""
        if not self.ns.mode.receives:
            return "mode"
        try:
            sender_mode = OperatingMode.parse(update.mode)
        except ValueError:
            return "sender_mode"
        announced = record.mode_in(self.ns.name)
        if not sender_mode.sends or announced is None or not announced.sends:
            return "sender_mode"
        adapter = self.learner.adapter
        if adapter is None:
            return "no_model"
        try:
            check_specs(update.arrays, adapter.array_specs())
        except WireError:
            return "specs"
        round_ = update.round if update.round >= 0 else update.version
        stored = StoredUpdate(record.id, round_, max(update.samples, 0), update.arrays, now)
        if not self.store.offer(stored):
            return "stale"
        self.wake()
        return None

    def forget(self, peer_id: str) -> None:
        """Forget a peer's updates and round numbers (it left, or restarted with a new session).

        What was merged from it is forgotten too: if it comes back with a new session its
        versions start over, and they must not be refused as stale. A centre that left or
        restarted counts its global rounds afresh.
        """
        self.store.reset_sender(peer_id)
        self.seeds.forget(peer_id)
        if peer_id == self.global_source:
            self.global_source, self.global_round = None, -1


def all_finite(arrays: Mapping[str, np.ndarray]) -> bool:
    """True when no float array holds NaN or infinity."""
    try:
        for name, array in arrays.items():
            check_all_finite(array, name)
    except WireError:
        return False
    return True
