"""The exchange toolkit that every round protocol is built from: who, push, wait, take, merge.

An :class:`Exchange` belongs to one learner. It holds what arrives (an
:class:`~scatterbrained.federation.rounds.UpdateStore`), the round counter of this node, and
the small operations the protocols of :mod:`.protocols` combine: :meth:`Exchange.neighbours`,
:meth:`Exchange.push`, :meth:`Exchange.wait_for`, :meth:`Exchange.finite` and
:meth:`Exchange.merge`. It reaches the namespace only through the
:class:`~.port.FederationPort` and changes the model only through
:class:`~.model_state.ModelState`. Nothing waits on one peer without a deadline; a peer that
leaves is dropped from every wait (:meth:`Exchange.wake`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial

import numpy as np

from .._tasks import Pulse
from ..errors import WireError
from ..events import Merged, RoundTimedOut, UpdateDropped, UpdateReceived
from ..federation.aggregation import Contribution, aggregate
from ..federation.consensus import consensus_steps
from ..federation.rounds import (
    SeedLedger,
    StoredUpdate,
    UpdateStore,
    exchange_neighbours,
    has_quorum,
)
from ..learning_options import LearningOptions
from ..types import OperatingMode
from ..wire.codec import check_specs
from ..wire.limits import check_all_finite
from ..wire.messages import ModelUpdate
from .model_state import MERGE_TOLERANCE, Arrays, ModelState
from .pacing import MAX_WAIT_S, STALENESS, GossipPacer
from .port import FederationPort
from .push_sum import PushSum, wants_push_sum

__all__ = ["Arrays", "Exchange", "all_finite"]

logger = logging.getLogger(__name__)

#: The round number a centre waits for: any update at all (clients count their own rounds).
ANY_ROUND = -(2**62)
#: Seconds a push waits for the transport to take an update for every target (a healthy
#: peer takes it in milliseconds; a silent one is left to its own queue).
PUSH_WAIT_S = 0.1


class Exchange:
    """The federation side of a learner.

    Args:
        port: the namespace, as the learning code sees it.
        state: the model state that merges change.
        options: the namespace's learning options.

    Attributes:
        round: this node's round counter: one per sync point; synchronous rounds are numbered
            by it (a node that fell behind adopts the round its neighbours are in).
        global_round: the last round of a centre's model adopted (star clients).
        global_source: the centre whose rounds ``global_round`` counts.
    """

    def __init__(self, port: FederationPort, state: ModelState, options: LearningOptions) -> None:
        self.port = port
        self.state = state
        self.options = options
        self.store = UpdateStore(max_age_s=options.max_staleness_s)
        self.pacer = GossipPacer(options.gossip_wait)
        self.lock = asyncio.Lock()
        self.arrival = Pulse()
        self.round = 0
        self.global_round = -1
        self.global_source: str | None = None
        #: This node's push-sum weight (used on directed topologies, see :mod:`.push_sum`).
        self.push_sum = PushSum()
        self._push_sum_for: tuple[frozenset[str], bool] | None = None
        #: The weights at the start of this epoch (the privacy mechanism's reference).
        self.reference: Arrays | None = None
        #: Per target, the model version last pushed to it (a serving node pushes only
        #: versions a target has not had). Bounded by the members: forgotten on leave.
        self.pushed: dict[str, int] = {}
        #: What this node sent as a SEEDING centre.
        self.seeds = SeedLedger()
        #: Privatized models made so far (each a release of the privacy mechanism).
        self.releases = 0

    # ------------------------------------------------------------------ who

    def effective_mode(self) -> OperatingMode:
        """This node's mode as far as weights go: a node without a model sends nothing."""
        mode = self.port.mode
        if self.state.has_model or not mode.sends:
            return mode
        return OperatingMode.LEECHING if mode.receives else OperatingMode.OFFLINE

    def neighbours(self) -> tuple[list[str], list[str]]:
        """(targets, sources): out-neighbours that receive, in-neighbours that send."""
        members = self.port.peer_modes()
        roster = self.port.roster_modes()
        targets, sources = exchange_neighbours(
            self.port.node_id,
            self.effective_mode(),
            roster,
            self.port.topology,
            self.round,
            pairing=self.options.pairing,
        )
        if len(roster) == len(members):  # sessions with everybody: the roster is the members
            return targets, sources
        return [t for t in targets if t in members], [s for s in sources if s in members]

    def session_peers(self, roster: Mapping[str, OperatingMode]) -> set[str]:
        """The nodes of ``roster`` this node exchanges with, in either direction, now or as
        a sender (what :mod:`scatterbrained.roster` greets when sessions are scoped)."""
        me = self.port.node_id
        targets, sources = exchange_neighbours(
            me, self.effective_mode(), roster, self.port.topology, self.round,
            pairing=self.options.pairing,
        )  # fmt: skip
        everyone = set(roster) | {me}
        drawn = self.port.topology.neighbours(me, everyone, epoch=self.round)
        return set(targets) | set(sources) | set(drawn.out) | set(drawn.inbound)

    def uses_push_sum(self) -> bool:
        """True when peers' exchanges use push-sum now (``options.push_sum``; by default on
        directed topologies with the default aggregator). Cached per membership."""
        members = frozenset(self.port.peer_modes()) | {self.port.node_id}
        if self._push_sum_for is None or self._push_sum_for[0] != members:
            wanted = wants_push_sum(
                self.options.push_sum, self.port.topology, self.port.aggregator, members
            )
            self._push_sum_for = (members, wanted)
        return self._push_sum_for[1]

    def consensus_steps(self, limit: int) -> int:
        """Mixing steps that bring the members that send to near consensus (at most
        ``limit``; see :func:`~scatterbrained.federation.consensus.consensus_steps`).

        0 when this node does not take part in mixing (it neither sends nor receives, or
        has no model), when it is alone, and under a centre (a synchronous ``Star``:
        every client adopts the centre's model, which is consensus already).
        """
        mode = self.effective_mode()
        if self.center() is not None or not (mode.sends or mode.receives):
            return 0
        members = set(self.members_that_send()) | {self.port.node_id}
        return consensus_steps(self.port.topology, members, self.round, limit=limit)

    def center(self) -> str | None:
        """The centre of a synchronous centralized topology (e.g. ``Star``), else ``None``."""
        if not self.options.sync:
            return None
        members = set(self.port.roster_modes()) | {self.port.node_id}
        center: str | None = self.port.topology.center(members)
        return center

    def members_that_send(self) -> list[str]:
        """Members (sorted by id) whose announced mode sends weights."""
        return sorted(p for p, m in self.port.peer_modes().items() if m.sends)

    def members_that_receive(self) -> list[str]:
        """Members (sorted by id) whose announced mode receives weights."""
        return sorted(p for p, m in self.port.peer_modes().items() if m.receives)

    def still_sends(self, peer: str) -> bool:
        """True while ``peer`` is a member whose announced mode sends weights."""
        mode = self.port.peer_modes().get(peer)
        return mode is not None and mode.sends

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
                self.port.emit(
                    UpdateDropped(self.port.node_id, self.port.name, update.sender, "non_finite")
                )
                logger.warning(
                    "namespace %s: dropped non-finite weights from %s",
                    self.port.name,
                    update.sender,
                )
        return usable

    def merge(self, updates: list[StoredUpdate], round_: int) -> list[str]:
        """Aggregate the model with ``updates``; return the senders the aggregator used.

        A result within :data:`~.model_state.MERGE_TOLERANCE` of the published weights is no
        change (the version stays and nothing will be pushed for it).
        """
        if not updates:
            return []
        offered = tuple(u.sender for u in updates)
        if self.uses_push_sum():
            cap = float(self.port.peer_count() + 1)  # no honest share exceeds the total
            weighted = [(u.arrays, min(u.weight, cap)) for u in updates]
            arrays: Arrays = self.push_sum.merge(self.state.current(), weighted)
            used = offered
        else:
            own = self.own_contribution(self.state.current())
            others = [Contribution(u.arrays, u.samples, u.sender) for u in updates]
            result = aggregate(self.port.aggregator, own, others)
            arrays, used = result.arrays, tuple(result.used)
        changed = self.state.commit("merge", arrays, tolerance=MERGE_TOLERANCE)
        self.port.emit(Merged(self.port.node_id, self.port.name, round_, offered, used, changed))
        return list(used)

    def own_contribution(self, local: Arrays) -> Contribution:
        """This node's weights as one contribution (weighted by its last epoch's samples)."""
        return Contribution(local, max(self.state.local_samples, 0), self.port.node_id)

    def quorum(self, arrived: set[str], expected: list[str]) -> bool:
        """True when a synchronous round has the ``min_peers`` updates it needs to merge."""
        if has_quorum(arrived, expected, self.options.min_peers):
            return True
        logger.info(
            "namespace %s: round has %d of the updates min_peers=%d asks for; not merging",
            self.port.name,
            len(arrived),
            self.options.min_peers,
        )
        return False

    # ------------------------------------------------------------------ push and wait

    def outgoing(self, local: Arrays) -> Arrays:
        """What is sent for ``local``: the weights, or their privatized form."""
        privacy = self.options.privacy
        if privacy is None:
            return local
        reference = self.reference if self.reference is not None else local
        self.releases += 1  # every privatized model sent spends privacy
        return dict(privacy.apply(local, reference))

    async def push(
        self,
        targets: list[str],
        arrays: Arrays,
        round_: int,
        on_delivered: Callable[[str], None] | None = None,
        *,
        push_sum: bool = False,
    ) -> list[str]:
        """Send ``arrays`` as this node's update for ``round_`` to every target.

        Posts to every target at once (in order per peer) and waits at most
        :data:`PUSH_WAIT_S` for the transport to take them: a slow or silent peer delays
        only its own queue, never the exchange. A target that announced no model yet is
        skipped (it would drop the weights); it is pushed to once it announces one. A target
        counts as pushed this version from the post on (so serving does not post it twice),
        and again as not pushed if the transport gives up on it.

        Args:
            targets: the members to send to.
            arrays: the weights.
            round_: the sender's round number (``-1``: order by version).
            on_delivered: called with each peer the transport took the update for, when it
                does (also after this call returned).
            push_sum: send a share of this node's push-sum weight with the update (a share
                the transport gives up on is taken back).

        Returns:
            The targets the transport took it for within the wait.
        """
        receivers = [peer for peer in targets if self.port.peer_has_model(peer)]
        share = self.push_sum.share(len(receivers)) if push_sum else 0.0
        update = ModelUpdate(
            version=self.state.version,
            samples=max(self.state.local_samples, 0),
            mode=self.effective_mode().value,
            arrays=arrays,
            round=round_,
            weight=share,
        )
        posted: dict[str, asyncio.Future[bool]] = {}
        for peer in receivers:
            future = self.port.post(peer, update)
            if future is None:
                self.push_sum.give_back(share)
                continue
            posted[peer] = future
            self.pushed[peer] = update.version
            future.add_done_callback(
                partial(self._settled, peer, update.version, share, on_delivered)
            )
        if posted:
            await asyncio.wait(posted.values(), timeout=PUSH_WAIT_S)
        return [p for p, f in posted.items() if f.done() and not f.cancelled() and f.result()]

    def _settled(
        self,
        peer: str,
        version: int,
        share: float,
        on_delivered: Callable[[str], None] | None,
        future: asyncio.Future[bool],
    ) -> None:
        if not future.cancelled() and future.result():
            if on_delivered is not None:
                on_delivered(peer)
            return
        self.push_sum.give_back(share)  # not delivered: the weight stays here
        if self.pushed.get(peer) == version:
            del self.pushed[peer]  # not taken: the next serving pass tries again

    async def wait_gossip(self, sources: list[str], round_: int) -> None:
        """Wait for ``round_`` from the sources that keep up, within the pacer's bound."""
        bound = self.pacer.bound()
        if bound <= 0:
            return
        newest = {s: self.store.newest_round(s) for s in sources}
        waited = [s for s in sources if self.pacer.keeps_up(s, newest[s], round_)]
        heard = {s: round_ - STALENESS for s in waited if newest[s] is not None}
        if self.pacer.fixed is None and heard:  # stale-synchronous: nobody far behind
            await self._wait_rounds(heard, MAX_WAIT_S)
        # The same round from those heard from; anything at all from a newcomer.
        needs = {s: round_ if newest[s] is not None else ANY_ROUND for s in waited}
        started = time.monotonic()
        complete = await self._wait_rounds(needs, bound, unseen=True)
        self.pacer.observe(time.monotonic() - started, complete)

    async def _wait_rounds(
        self, needs: dict[str, int], timeout: float, *, unseen: bool = False
    ) -> bool:
        """Wait until each present source has sent an update of at least its round in
        ``needs`` (at most ``timeout`` s); True when they all had. ``unseen``: one not
        merged yet (else one merged already counts: the source got that far)."""
        deadline = time.monotonic() + timeout
        while True:
            sending = set(self.members_that_send())  # once per check, not once per source
            missing = [
                s
                for s, r in needs.items()
                if s in sending
                and not (self.store.senders_with_round([s], r) if unseen else self._sent(s, r))
            ]
            if not missing:
                return True
            if not await self.arrival.wait_until(deadline):
                return False

    def _sent(self, source: str, round_: int) -> bool:
        newest = self.store.newest_round(source)
        return newest is not None and newest >= round_

    async def wait_for(self, sources: list[str], round_: int, timeout: float) -> None:
        """Wait until every present source has an update for ``round_`` (at most ``timeout``
        s); emit ``RoundTimedOut`` and log when some did not come."""
        if await self._wait_rounds(dict.fromkeys(sources, round_), timeout, unseen=True):
            return
        present = [s for s in sources if self.still_sends(s)]
        have = self.store.senders_with_round(present, round_)
        self.port.emit(
            RoundTimedOut(
                self.port.node_id, self.port.name, round_, tuple(present), tuple(sorted(have))
            )
        )
        logger.info(
            "namespace %s: round %d timed out with %d of %d peers",
            self.port.name,
            round_,
            len(have),
            len(present),
        )

    def wake(self) -> None:
        """Make every wait re-check its condition (an update came, membership changed)."""
        self.arrival.fire()

    # ------------------------------------------------------------------ inbound

    def accept(
        self, sender: str, announced: OperatingMode | None, update: ModelUpdate
    ) -> str | None:
        """Store a peer's weights for merging; return a drop reason or ``None``."""
        reason = self._refusal(announced, update)
        if reason is None:
            round_ = update.round if update.round >= 0 else update.version
            stored = StoredUpdate(
                sender,
                round_,
                max(update.samples, 0),
                update.arrays,
                time.monotonic(),
                update.weight,
            )
            if self.store.offer(stored):
                self.port.emit(
                    UpdateReceived(
                        self.port.node_id, self.port.name, sender, round_, stored.samples
                    )
                )
                self.wake()
                return None
            reason = "stale"
        self.port.emit(UpdateDropped(self.port.node_id, self.port.name, sender, reason))
        return reason

    def _refusal(self, announced: OperatingMode | None, update: ModelUpdate) -> str | None:
        if not self.port.mode.receives:
            return "mode"
        try:
            sender_mode = OperatingMode.parse(update.mode)
        except ValueError:
            return "sender_mode"
        if not sender_mode.sends or announced is None or not announced.sends:
            return "sender_mode"
        specs = self.state.specs()
        if specs is None:
            return "no_model"
        try:
            check_specs(update.arrays, specs)
        except WireError:
            return "specs"
        return None

    def forget(self, peer_id: str) -> None:
        """Forget a peer's updates and round numbers (it left, or restarted with a new session).

        What was merged from it is forgotten too: if it comes back with a new session its
        versions start over, and they must not be refused as stale. A centre that left or
        restarted counts its global rounds afresh.
        """
        self.store.reset_sender(peer_id)
        self.pacer.forget(peer_id)
        self.pushed.pop(peer_id, None)
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
