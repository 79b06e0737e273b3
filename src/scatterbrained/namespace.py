"""A namespace: one federation as seen from one node.

The namespace holds the membership (who else is in the namespace), enforces the node's
operating mode on everything it sends and accepts, and exposes the raw community
(``peers``, ``wait_for_peers``, ``send_to``, ``recv``, events). Learning
(``train``/``serve``/``sync_model``) lives in :mod:`scatterbrained.learning`, which reaches
the namespace only through the :class:`~scatterbrained.learning.port.FederationPort` it
implements here. The namespace reaches its node only through :class:`NamespaceHost`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from ._tasks import Pulse
from .discovery.base import Beacon
from .errors import ConfigurationError, ModeError, PeerTimeoutError, ScatterbrainedError
from .events import EpochDone, Event, EventBus, ModelChanged, ModeSwitched, PeerJoined, PeerLeft
from .export.feed import EpochFeed
from .federation.modes import ModeController, ModeSwitch
from .federation.policies import Policy, PolicyState, as_policy
from .history import History
from .inbox import RawInbox
from .learning import Learner, LearningOptions
from .peers import PeerRecord
from .roster import Roster
from .types import Identity, OperatingMode
from .wire.messages import (
    Bye,
    Message,
    ModelOffer,
    ModelRequest,
    ModelUnavailable,
    ModelUpdate,
    Raw,
)

if TYPE_CHECKING:
    from .adapters.architecture import FactoryRegistry
    from .export.base import MetricsLogger

__all__ = ["Namespace", "NamespaceHost", "PeerEvent"]

logger = logging.getLogger(__name__)

PeerFilter = Callable[[Identity], bool]


class NamespaceHost(Protocol):
    """What a namespace needs from its node (:class:`~scatterbrained.node.Node` implements it)."""

    id: str
    factories: FactoryRegistry | None
    bus: EventBus

    @property
    def default_mode(self) -> OperatingMode:
        """The starting mode of namespaces that do not choose one."""
        ...

    def peer(self, peer_id: str) -> PeerRecord | None:
        """The record of a known peer."""
        ...

    async def send_to_peer(
        self, record: PeerRecord, namespace: str, body: Any, timeout: float | None = None
    ) -> int:
        """Send a body to a peer; bytes sent, 0 when not delivered (never raises)."""
        ...

    def post(
        self,
        address: str,
        namespace: str,
        body: Any,
        *,
        server_key: str | None,
        timeout: float | None = None,
    ) -> asyncio.Future[int]:
        """Queue a body for an address now (in order); the future gives the bytes sent."""
        ...

    def register_namespace(self, ns: Namespace) -> None:
        """Route this namespace's messages to it and announce it."""
        ...

    def unregister_namespace(self, ns: Namespace) -> None:
        """Stop routing to it and announce that it left."""
        ...

    def announce_now(self) -> None:
        """Tell discovery and the peers this node's namespaces, modes and versions now."""
        ...

    def announce_version_soon(self) -> None:
        """Refresh the discovery beacon only, rate-limited (a model version changed)."""
        ...

    def beacons(self) -> list[Beacon]:
        """Discovery's candidates now (hints: ids, addresses, namespaces and modes)."""
        ...


class PeerEvent:
    """A peer joined or left the namespace.

    Attributes:
        kind: ``"joined"`` or ``"left"``.
        peer: the peer's identity.
    """

    __slots__ = ("kind", "peer")

    def __init__(self, kind: str, peer: Identity) -> None:
        self.kind = kind
        self.peer = peer

    def __repr__(self) -> str:
        return f"PeerEvent({self.kind!r}, {self.peer})"


def _peer_event(event: Event) -> PeerEvent | None:
    if isinstance(event, PeerJoined):
        return PeerEvent("joined", event.peer)
    if isinstance(event, PeerLeft):
        return PeerEvent("left", event.peer)
    return None


#: Seconds a goodbye may wait for a peer's queue: a gone peer must not delay shutdown.
GOODBYE_TIMEOUT = 0.5


class Namespace:
    """One node's membership in one federation (create with ``node.namespace(...)``).

    Every option is also an attribute that may be changed while the namespace runs.

    Args:
        node: the owning node.
        name: the namespace name.
        model: the model (PyTorch ``nn.Module``, scikit-learn linear model, or a
            ``ModelAdapter``); ``None`` for a node that will ``sync_model()``.
        create_optimizer: ``model -> optimizer`` (PyTorch; default Adam, lr 1e-3), e.g.
            ``lambda model: torch.optim.AdamW(model.parameters())``.
        topology: who sends to whom (default ``FullyConnected()``).
        mode: initial ``OperatingMode`` (default: the node's ``mode``, itself ``PEER`` by
            default).
        policy: a policy (or ``(PolicyState) -> mode`` callable) that switches the mode.
        aggregator: how received weights are merged (default sample-weighted ``FedAvg()``).
        loss: the loss function (inferred from the targets when ``None``).
        peer_filter: ``Identity -> bool``; peers for which it is False are ignored.
        recv_queue_size: raw payloads kept for ``recv`` (more are dropped and counted).
        recv_queue_bytes: bytes of raw payloads kept for ``recv`` (default 16 MiB).
        **learning: see :class:`~scatterbrained.learning.LearningOptions` (``sync``,
            ``round_timeout``, ``min_peers``, ``share_every``, ``privacy``, ``pairing``,
            ``checkpoint_dir``, ``example_input``, ``factory``, ...).

    Raises:
        ConfigurationError: an option is invalid or unknown.
    """

    def __init__(
        self,
        node: NamespaceHost,
        name: str,
        model: Any = None,
        create_optimizer: Any = None,
        *,
        topology: Any = None,
        mode: OperatingMode | str | None = None,
        policy: Policy | Callable[[PolicyState], Any] | None = None,
        aggregator: Any = None,
        loss: Any = None,
        peer_filter: PeerFilter | None = None,
        recv_queue_size: int = 1024,
        recv_queue_bytes: int = 16 * 2**20,
        **learning: Any,
    ) -> None:
        from .federation.aggregation import FedAvg
        from .federation.topology import FullyConnected

        self.node = node
        self.node_id = node.id
        self.name = name
        try:
            initial = OperatingMode.parse(mode if mode is not None else node.default_mode)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._modes = ModeController(initial, as_policy(policy) if policy is not None else None)
        self.topology = topology if topology is not None else FullyConnected()
        self.aggregator = aggregator if aggregator is not None else FedAvg()
        self.peer_filter = peer_filter
        self.history = History()
        self._members: dict[str, Identity] = {}
        self._membership = Pulse()  # fired on every change
        self._raw = RawInbox(recv_queue_size, recv_queue_bytes)
        self.bytes_sent = 0
        self.bytes_received = 0
        self._open = False
        self._closed = False
        self._announced_has_model = False  # what peers were last told (see emit)
        self._loop: asyncio.AbstractEventLoop | None = None
        options = LearningOptions.from_kwargs(learning)
        #: Whom this node keeps sessions with here (see :mod:`scatterbrained.roster`).
        self.roster = Roster(node.id, name, options.sessions)
        self.learner = Learner(self, model, create_optimizer, loss, options)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Namespace:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Join the namespace: register with the node and announce it."""
        if self._open:
            return
        await self.learner.open()
        self._loop = asyncio.get_running_loop()
        self.apply_policy(self.learner.policy_state())  # e.g. LeechUntil starts LEECHING
        self._announced_has_model = self.learner.state.has_model
        self.node.register_namespace(self)
        self._open = True
        logger.info("node %s joined namespace %s as %s", self.node_id, self.name, self.mode.value)

    async def close(self) -> None:
        """Leave the namespace: say Bye to the members and stop background work. Idempotent."""
        if not self._open:
            return
        self._open = False
        self._wake_waiters()
        await self.learner.close()
        records = [r for i in list(self._members) if (r := self.node.peer(i)) is not None]
        await asyncio.gather(
            *(
                self.node.send_to_peer(r, self.name, Bye("leaving"), GOODBYE_TIMEOUT)
                for r in records
            ),
            return_exceptions=True,
        )
        self.node.unregister_namespace(self)
        for peer in list(self._members.values()):
            self.emit(PeerLeft(self.node_id, self.name, peer))
        self._members.clear()

    async def abort(self) -> None:
        """Stop at once without goodbyes (a crash, for simulations). Idempotent."""
        self._open = False
        self._wake_waiters()
        await self.learner.close()

    def _wake_waiters(self) -> None:
        """Closed: every waiting ``wait_for_peers``, ``recv`` and ``serve`` ends now."""
        self._closed = True
        self._membership.fire()
        self._raw.close()
        self.learner.wake()

    def _check_open(self) -> None:
        if self._closed:
            raise ScatterbrainedError(
                f"namespace {self.name!r} was closed; open a new one with node.namespace()"
            )

    @property
    def is_open(self) -> bool:
        """True between ``open`` and ``close``."""
        return self._open

    # ------------------------------------------------------------------ events

    def emit(self, event: Event) -> None:
        """Put ``event`` on the node's stream and keep this namespace's views up to date."""
        if isinstance(event, EpochDone):
            self.history.append(event.record)
        elif isinstance(event, ModelChanged) and self._open:
            self._announce_model_change()
        self.node.bus.emit(event)

    def _announce_model_change(self) -> None:
        """Re-advertise after a model change: at once when this namespace just got its first
        model, so peers learn it sends weights before its first update reaches them (the
        outbox keeps posts to one peer in order); later versions only in the discovery beacon,
        rate-limited (peers see them as hints, see ``PeerRecord.version_hints``)."""
        has_model = self.learner.state.has_model
        if has_model != self._announced_has_model:
            self._announced_has_model = has_model
            self.node.announce_now()
        else:
            self.node.announce_version_soon()

    def events(self, maxsize: int = 4096) -> AsyncIterator[Event]:
        """Iterate over this namespace's events from now on (see :mod:`scatterbrained.events`)."""
        return self.node.bus.stream(lambda e: e.namespace == self.name, maxsize)

    def subscribe(self, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` for each of this namespace's events; returns an unsubscriber."""

        def filtered(event: Event) -> None:
            if event.namespace == self.name:
                callback(event)

        return self.node.bus.subscribe(filtered)

    def on_peer_change(self, callback: Callable[[PeerEvent], Any]) -> Callable[[], None]:
        """Call ``callback(PeerEvent)`` whenever a peer joins or leaves; returns an unsubscriber."""

        def on_event(event: Event) -> None:
            peer_event = _peer_event(event)
            if peer_event is not None:
                callback(peer_event)

        return self.subscribe(on_event)

    async def peer_events(self, maxsize: int = 256) -> AsyncIterator[PeerEvent]:
        """Iterate over peer join/leave events from now on (oldest dropped past ``maxsize``)."""

        def accept(event: Event) -> bool:
            return event.namespace == self.name and isinstance(event, (PeerJoined, PeerLeft))

        stream = self.node.bus.stream(accept, maxsize)
        try:
            async for event in stream:
                peer_event = _peer_event(event)
                if peer_event is not None:
                    yield peer_event
        finally:
            await stream.aclose()

    # ------------------------------------------------------------------ mode

    @property
    def mode(self) -> OperatingMode:
        """The current operating mode; assign an ``OperatingMode`` (or its name) to change it.

        Raises (on assignment):
            ConfigurationError: the value names no mode.
        """
        return self._modes.mode

    @mode.setter
    def mode(self, value: OperatingMode | str) -> None:
        try:
            new = OperatingMode.parse(value)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop or self._loop is None:
            self.set_mode(new, "set by hand")
        else:  # from the training thread (a step hook, a loader): apply on the event loop
            self._loop.call_soon_threadsafe(self.set_mode, new, "set by hand")

    def set_mode(self, mode: OperatingMode, reason: str) -> None:
        """Switch the mode by hand (``reason`` is recorded); announced at once."""
        self._switched(self._modes.set_manual(mode, reason))

    def apply_policy(self, state: PolicyState) -> str | None:
        """Let the policy decide; return ``"old->new (reason)"`` when it switched."""
        switch = self._modes.evaluate(state)
        self._switched(switch)
        if switch is None:
            return None
        return f"{switch.old.value}->{switch.new.value} ({switch.reason})"

    def _switched(self, switch: ModeSwitch | None) -> None:
        if switch is None:
            return
        self.emit(
            ModeSwitched(self.node_id, self.name, switch.old.value, switch.new.value, switch.reason)
        )
        if self._open:
            self.node.announce_now()
        self.learner.wake()

    @property
    def mode_history(self) -> list[Any]:
        """Every mode switch so far (``ModeSwitch`` records)."""
        return list(self._modes.history)

    @property
    def policy(self) -> Policy | None:
        """The mode policy, or ``None``; assign a policy or callable to replace it."""
        return self._modes.policy

    @policy.setter
    def policy(self, value: Policy | Callable[[PolicyState], Any] | None) -> None:
        self._modes.policy = as_policy(value) if value is not None else None

    # ------------------------------------------------------------------ model access

    @property
    def factories(self) -> FactoryRegistry | None:
        """The node's model factories (for ``factory`` architectures)."""
        return self.node.factories

    @property
    def model(self) -> Any:
        """The model trained and shared here (``None`` until set or ``sync_model``)."""
        return self.learner.model

    @property
    def version(self) -> int:
        """The model version: it moves with every change of the weights."""
        return self.learner.version

    @property
    def epochs_done(self) -> int:
        """Local epochs trained so far (restored from a checkpoint after a restart)."""
        return self.learner.epochs_done

    async def train(
        self,
        epochs: int,
        trainloader: Any,
        validloader: Any = None,
        *,
        loggers: Sequence[MetricsLogger] = (),
        **kw: Any,
    ) -> History:
        """Train locally for ``epochs`` epochs while federating; see ``Learner.train``.

        Args:
            epochs: local epochs to run now.
            trainloader: iterable of ``(inputs, targets)`` batches.
            validloader: optional iterable of batches evaluated after each epoch.
            loggers: metrics loggers (``scatterbrained.export.TensorBoardLogger``,
                ``MLflowLogger``, ...) that receive each epoch's record, in a background
                thread; their failures are logged, never raised. They are flushed when
                ``train`` returns and stay open (close them yourself, e.g. with ``with``).
            **kw: further options of ``Learner.train`` (``share_every``).

        Returns:
            The history of every epoch trained in this namespace so far.
        """
        if not loggers:
            await self.learner.train(epochs, trainloader, validloader, **kw)
            return self.history
        async with EpochFeed(loggers) as feed:
            unsubscribe = self.subscribe(feed.on_event)
            try:
                await self.learner.train(epochs, trainloader, validloader, **kw)
            finally:
                unsubscribe()
        return self.history

    async def serve(self, duration: float | None = None) -> None:
        """Keep sharing, merging and serving the model; see ``Learner.serve``.

        Returns when ``duration`` passed or the namespace was closed.
        """
        await self.learner.serve(duration, lambda: self._closed)

    async def sync_model(self, timeout: float | None = None) -> Any:
        """Download the model from a peer; see ``ModelSharing.sync_model``."""
        return await self.learner.sync_model(timeout)

    async def checkpoint(self, path: str | Path) -> Path:
        """Save weights, optimizer state, epoch and mode atomically to ``path``."""
        return await self.learner.checkpoint(path)

    async def restore(self, path: str | Path) -> None:
        """Load what :meth:`checkpoint` saved (all or nothing; the mode is announced)."""
        await self.learner.restore(path)

    def traffic(self) -> tuple[int, int]:
        """Bytes (sent, received) in this namespace so far."""
        return self.bytes_sent, self.bytes_received

    # ------------------------------------------------------------------ membership

    @property
    def peers(self) -> set[Identity]:
        """The peers currently in this namespace (not including this node)."""
        return set(self._members.values())

    def peer_count(self) -> int:
        """How many peers are in the namespace now."""
        return len(self._members)

    def peer_mode(self, peer_id: str) -> OperatingMode | None:
        """The mode ``peer_id`` last announced here, or ``None`` if it is not a member."""
        record = self.node.peer(peer_id) if peer_id in self._members else None
        return record.mode_in(self.name) if record is not None else None

    def roster_modes(self) -> Mapping[str, OperatingMode]:
        """The modes the topology is drawn over: the members', and with sessions scoped to
        neighbours (:mod:`scatterbrained.roster`) also the other nodes discovery reports."""
        self._refresh_roster()
        return self.roster.modes(self.peer_modes())

    def wanted_sessions(self) -> frozenset[str] | None:
        """Whom this node greets here: ``None`` for everybody, else (sessions scoped to
        topology neighbours, see :mod:`scatterbrained.roster`) their ids."""
        self._refresh_roster()
        return self.roster.scope()

    def _refresh_roster(self) -> None:
        now = time.monotonic()
        if self.roster.due(now):
            members = self.peer_modes()
            exchange = self.learner.exchange
            self.roster.refresh(now, self.node.beacons(), members, exchange.session_peers)

    def peer_modes(self) -> Mapping[str, OperatingMode]:
        """Each member's mode as far as weights go (a member without a model sends none)."""
        modes = {}
        for peer in self._members:
            record = self.node.peer(peer)
            mode = record.weights_mode_in(self.name) if record is not None else None
            if mode is not None:
                modes[peer] = mode
        return modes

    def peer_version(self, peer_id: str) -> int | None:
        """The model version ``peer_id`` last announced here, or ``None``."""
        record = self.node.peer(peer_id) if peer_id in self._members else None
        return record.version_in(self.name) if record is not None else None

    def peer_has_model(self, peer_id: str) -> bool:
        """True when member ``peer_id`` announced a model here (it can use weights sent)."""
        record = self.node.peer(peer_id) if peer_id in self._members else None
        info = record.namespaces.get(self.name) if record is not None else None
        return info is not None and info.has_model

    def _is_member(self, record: PeerRecord) -> bool:
        if not record.greeted:  # not verified at its address yet (see challenge.py)
            return False
        mode = record.mode_in(self.name)
        if mode is None or mode is OperatingMode.OFFLINE:
            return False
        if self.peer_filter is None:
            return True
        try:
            return bool(self.peer_filter(record.identity(self.name)))
        except Exception:
            logger.exception("peer_filter raised for %s; treating it as excluded", record.id)
            return False

    def update_member(self, record: PeerRecord) -> None:
        """Re-evaluate whether ``record`` is a member (called by the node)."""
        before = self._members.get(record.id)
        now = record.identity(self.name) if self._is_member(record) else None
        if before != now:
            if before is not None:
                del self._members[record.id]
                self.learner.peer_left(record.id)
                self.emit(PeerLeft(self.node_id, self.name, before))
            if now is not None:
                self._members[record.id] = now
                self.emit(PeerJoined(self.node_id, self.name, now))
            self._membership.fire()
        self.learner.wake()  # a mode may have changed: waits re-check their senders
        self.learner.sharing.peers_changed()

    def peer_restarted(self, peer_id: str) -> None:
        """A member came back with a new session (called by the node)."""
        self.learner.peer_restarted(peer_id)

    async def wait_for_peers(
        self,
        n: int | Collection[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> set[Identity]:
        """Wait until ``n`` peers (an int) or the peers with the given ids are present.

        Args:
            n: how many peers (default 1), or a collection of node ids that must all be here.
            timeout: seconds to wait; ``None`` waits until cancelled.

        Returns:
            The peers present when the condition held.

        Raises:
            PeerTimeoutError: the condition did not hold within ``timeout``; the message says
                who is here.
        """
        wanted_ids = None if n is None or isinstance(n, int) else set(n)
        count = 1 if n is None else n if isinstance(n, int) else 0
        deadline = None if timeout is None else time.monotonic() + timeout

        def satisfied() -> bool:
            if wanted_ids is not None:
                return wanted_ids <= set(self._members)
            return len(self._members) >= count

        while not satisfied():
            self._check_open()
            if not await self._membership.wait_until(deadline):
                want = sorted(wanted_ids) if wanted_ids is not None else f"{count} peer(s)"
                raise PeerTimeoutError(
                    f"namespace {self.name!r}: waited {timeout} s for {want}, "
                    f"present: {sorted(self._members) or 'nobody'}; check that the peers run, "
                    "share this namespace name and the discovery scope"
                )
        return self.peers

    # ------------------------------------------------------------------ raw payloads

    def post(self, peer: str, body: Any) -> asyncio.Future[bool] | None:
        """Queue a message body for member ``peer`` now; the future says whether the
        transport took it (``None`` when ``peer`` is not a member). Never raises."""
        record = self.node.peer(peer) if peer in self._members else None
        if record is None:
            return None
        posted = self.node.post(record.address, self.name, body, server_key=record.public_key)
        result: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def done(future: asyncio.Future[int]) -> None:
            sent = 0 if future.cancelled() else future.result()
            self.bytes_sent += sent
            if not result.done():
                result.set_result(sent > 0)

        posted.add_done_callback(done)
        return result

    async def send(self, peer: str, body: Any) -> bool:
        """Send a message body to member ``peer`` (the learning code's way out; never raises)."""
        posted = self.post(peer, body)
        return posted is not None and await posted

    async def send_to(self, peer: Identity | str, *payload: bytes) -> bool:
        """Send raw frames to one peer of this namespace.

        Returns:
            True when queued, False when dropped because the peer's queue stayed full.

        Raises:
            ModeError: the mode does not send (LEECHING or OFFLINE).
            ConfigurationError: ``peer`` is not a member of the namespace.
        """
        if not self.mode.sends:
            raise ModeError(
                f"namespace {self.name!r} is {self.mode.value}: it does not send payloads; "
                "set ns.mode to PEER or SEEDING to send"
            )
        peer_id = peer.id if isinstance(peer, Identity) else peer
        if peer_id not in self._members:
            raise ConfigurationError(
                f"{peer_id!r} is not a peer in namespace {self.name!r} "
                f"(present: {sorted(self._members) or 'nobody'}); use ns.wait_for_peers() first"
            )
        return await self.send(peer_id, Raw(tuple(payload)))

    async def recv(self, timeout: float | None = None) -> tuple[Identity, list[bytes]]:
        """Wait for the next raw payload sent to this node in this namespace.

        Raises:
            PeerTimeoutError: nothing arrived within ``timeout`` seconds.
        """
        return await self._raw.get(timeout, self.name)  # raises once the namespace closed

    @property
    def dropped_raw(self) -> int:
        """Raw payloads dropped because the ``recv`` queue was full (count or bytes)."""
        return self._raw.dropped

    # ------------------------------------------------------------------ inbound

    def deliver(self, record: PeerRecord, message: Message, nbytes: int) -> str | None:
        """Handle a message for this namespace (called by the node); a drop reason or ``None``."""
        if record.id not in self._members:
            return "not_member"
        if self.mode is OperatingMode.OFFLINE:
            return "mode"
        self.bytes_received += nbytes
        body = message.body
        if isinstance(body, Raw):
            if not self.mode.receives:
                return "mode"
            payload = [bytes(p) for p in body.payload]
            return None if self._raw.put(self._members[record.id], payload) else "queue_full"
        if isinstance(body, ModelUpdate):
            record.hint_version(self.name, body.version)
            self.learner.on_update(record.id, record.weights_mode_in(self.name), body)
            return None  # counted by the learner (UpdateReceived / UpdateDropped)
        if isinstance(body, ModelRequest):
            return self.learner.on_request(record.id, body)
        if isinstance(body, (ModelOffer, ModelUnavailable)):
            return self.learner.on_offer(record.id, body)
        return "kind"
