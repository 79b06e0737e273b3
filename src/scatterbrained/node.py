"""The node: one transport, one discovery, many namespaces.

A :class:`Node` owns the sockets and background loops of one participant and routes what
arrives to its namespaces. Everything it starts, it stops on ``__aexit__``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._tasks import TaskSet
from .discovery.base import Beacon, Discovery, DiscoveryScope, scope_from_env
from .errors import ConfigurationError, SecurityError, WireError
from .events import Event, EventBus, MessageDropped, MessageReceived, MessageSent
from .membership import Membership, parse_bootstrap
from .namespace import GOODBYE_TIMEOUT, Namespace
from .outbox import Outbox
from .peers import PeerRecord, PeerTable, split_address
from .stats import NodeStats
from .transport.base import Envelope, Transport
from .types import OperatingMode
from .wire.codec import Limits, decode, encode
from .wire.messages import Bye, Hello, Message, NamespaceInfo
from .wire.schema import MAX_NAMESPACES

if TYPE_CHECKING:
    from .adapters.architecture import FactoryRegistry
    from .transport.security import KeyPair

__all__ = ["Node"]

logger = logging.getLogger(__name__)

#: Hosts that mean "every interface": such a node advertises no host (peers use the address
#: its packets come from).
_WILDCARD_HOSTS = ("", "0.0.0.0", "*", "::")
#: Seconds between two re-advertisements caused by model version changes (mode and
#: namespace changes are announced at once).
ANNOUNCE_INTERVAL_S = 0.5


class Node:
    """A participant of one or more federations.

    Args:
        id: unique node id; a random one (``node-<hex>``) by default.
        host: interface to bind the inbound socket to (``"0.0.0.0"`` = all).
        port: TCP port; a free one by default.
        discovery: a :class:`~scatterbrained.discovery.base.Discovery`; by default UDP
            beacons in ``discovery_scope``.
        transport: a :class:`~scatterbrained.transport.base.Transport`; by default ZeroMQ.
        bootstrap: addresses ``tcp://host:port`` of peers to contact directly (for networks
            without broadcast). With keys, append the peer's public key:
            ``tcp://host:port#<Z85 public key>``.
        keys: this node's CurveZMQ key pair; enables encryption and authentication.
        allowed_keys: public keys (Z85) of the peers allowed to connect (required with keys).
        discovery_scope: ``"lan"``, ``"loopback"`` or ``"off"``; default from the
            ``SCATTERBRAINED_DISCOVERY`` environment variable, else ``"lan"``.
        advertise_host: host others should use to reach this node (default: the bound host,
            or for a wildcard bind the address peers see packets come from).
        limits: wire limits for decoding (frame sizes and counts). By default decoding does
            not scan values for NaN/inf: the namespace does, right before it merges or adopts
            weights, so an update superseded before use is never scanned.
        peer_timeout: seconds without a beacon or message after which a peer is gone
            (default: the discovery's timeout, 5 s for UDP, so a vanished peer leaves
            ``ns.peers`` within at most twice that).
        heartbeat_interval: seconds between Hellos to peers that discovery does not refresh.
        factories: model factories used to rebuild ``"factory"`` architectures in
            ``sync_model``.
        mode: the starting behaviour of this node's namespaces (``OperatingMode`` or its
            name; default ``PEER``); a namespace's own ``mode=`` wins.
        require_keys: refuse to start without ``keys`` (for deployments where an
            unauthenticated node must never join by mistake; see the README's threat model).

    Raises:
        ConfigurationError: inconsistent arguments (e.g. keys without allowed_keys, or
            ``require_keys`` without keys), or ``mode`` names no mode.
    """

    def __init__(
        self,
        id: str | None = None,
        host: str = "0.0.0.0",
        port: int | None = None,
        *,
        discovery: Discovery | None = None,
        transport: Transport | None = None,
        bootstrap: Iterable[str] | None = None,
        keys: KeyPair | None = None,
        allowed_keys: Iterable[str] | None = None,
        discovery_scope: str | DiscoveryScope | None = None,
        advertise_host: str | None = None,
        limits: Limits | None = None,
        peer_timeout: float | None = None,
        heartbeat_interval: float = 1.0,
        factories: FactoryRegistry | None = None,
        mode: OperatingMode | str = OperatingMode.PEER,
        require_keys: bool = False,
    ) -> None:
        if require_keys and keys is None:
            raise ConfigurationError(
                "require_keys=True but no keys were given: pass keys=sb.KeyPair.load(path) "
                "(make one with `scatterbrained keys generate PATH`) and allowed_keys=[...]"
            )
        if keys is None and allowed_keys is not None:
            raise ConfigurationError("allowed_keys needs keys=KeyPair(...) for this node too")
        if keys is not None and allowed_keys is None and transport is None:
            raise ConfigurationError(
                "keys given without allowed_keys: pass allowed_keys=[peer public keys] "
                "(an empty list refuses everyone)"
            )
        if heartbeat_interval <= 0:
            raise ConfigurationError(f"heartbeat_interval must be > 0 s, got {heartbeat_interval}")
        try:
            self._default_mode = OperatingMode.parse(mode)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self.id = id or f"node-{uuid.uuid4().hex[:12]}"
        self._host = host
        self._port = port
        self._keys = keys
        self._allowed_keys = list(allowed_keys) if allowed_keys is not None else None
        self._scope = DiscoveryScope(discovery_scope) if discovery_scope else None
        self._advertise_host = advertise_host
        self._transport_arg = transport
        self._discovery_arg = discovery
        self._transport: Transport | None = None
        self._discovery: Discovery | None = None
        # Values (NaN/inf) are validated by the namespace right before weights are merged or
        # adopted; decoding validates everything else. See Exchange.finite (learning/exchange.py).
        self._limits = limits or Limits(check_finite=False)
        self._peer_timeout_arg = peer_timeout
        self.heartbeat_interval = heartbeat_interval
        self.factories = factories
        self.session = time.time_ns()
        self.bus = EventBus()
        self.stats = NodeStats()
        self.bus.subscribe(self.stats.apply)
        self.peers = PeerTable()
        self._seq = 0
        self._namespaces: dict[str, Namespace] = {}
        self._tasks = TaskSet(f"node {self.id}")
        self._outbox: Outbox | None = None
        self._beacon_handle: asyncio.TimerHandle | None = None
        self._last_beacon = -1e9
        self._membership = Membership(
            self,
            self.peers,
            bootstrap=[parse_bootstrap(a) for a in (bootstrap or ())],
            allowed_keys=self._allowed_keys,
            authenticated=keys is not None,
        )
        self._started = False
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind the transport, start discovery and the background loops.

        Raises:
            TransportError: the port cannot be bound.
            SecurityError: keys are configured but authentication is not enforced.
            DiscoveryError: discovery sockets cannot be opened.
        """
        if self._started:
            return
        self._transport = self._transport_arg or self._default_transport()
        await self._transport.start()
        try:
            self._discovery = self._discovery_arg or self._default_discovery()
            await self._discovery.start()
        except BaseException:
            await self._transport.close()
            raise
        self._started = True
        self._outbox = Outbox(self._transport_send, self.spawn)
        self._tasks.spawn(self._receive_loop(), "receive")
        self._tasks.spawn(self._discovery_loop(), "discovery")
        self._tasks.spawn(self._maintenance_loop(), "maintenance")
        self._membership.announce()
        logger.info("node %s listening on %s", self.id, self.address)

    async def close(self) -> None:
        """Leave every namespace, stop the loops and close all sockets. Idempotent."""
        if not self._started or self._closing:
            return
        self._closing = True
        for ns in list(self._namespaces.values()):
            await ns.close()
        greeted = [r for r in self.peers.records() if r.greeted]
        await asyncio.gather(
            *(self.send_to_peer(r, "", Bye("node closing"), GOODBYE_TIMEOUT) for r in greeted),
            return_exceptions=True,
        )
        self._started = False
        await self._shut_down()
        logger.info("node %s closed", self.id)

    async def abort(self) -> None:
        """Stop at once without saying goodbye, as a crash would (used by simulations).

        Peers notice only by timeout. Idempotent.
        """
        if not self._started or self._closing:
            return
        self._closing = True
        self._started = False
        for ns in list(self._namespaces.values()):
            await ns.abort()
        self._namespaces.clear()
        await self._shut_down()
        logger.info("node %s aborted", self.id)

    async def _shut_down(self) -> None:
        if self._beacon_handle is not None:
            self._beacon_handle.cancel()
            self._beacon_handle = None
        await self._tasks.close()
        assert self._discovery is not None and self._transport is not None
        self._discovery.announce(None)
        await self._discovery.close()
        await self._transport.close()

    def _default_transport(self) -> Transport:
        from .transport.zmq import ZmqTransport

        return ZmqTransport(
            self._host,
            self._port,
            keys=self._keys,
            allowed_keys=self._allowed_keys,
            advertise_host=self._advertise_host,
        )

    def _default_discovery(self) -> Discovery:
        scope = self._scope or scope_from_env(DiscoveryScope.LAN)
        if scope is DiscoveryScope.OFF:
            from .discovery.null import NullDiscovery

            return NullDiscovery()
        from .discovery.udp import UdpDiscovery

        return UdpDiscovery(scope=scope)

    # ------------------------------------------------------------------ properties

    @property
    def transport(self) -> Transport:
        """The running transport.

        Raises:
            RuntimeError: the node is not started (use ``async with Node() as node``).
        """
        if self._transport is None:
            raise RuntimeError("the node is not started; use `async with sb.Node() as node:`")
        return self._transport

    @property
    def address(self) -> str:
        """The address peers use to reach this node, ``tcp://host:port``."""
        return self.transport.address

    @property
    def public_key(self) -> str | None:
        """This node's public key (Z85) when keys are configured."""
        return self._keys.public if self._keys is not None else None

    @property
    def peer_timeout(self) -> float:
        """Seconds without any sign of life after which a peer is dropped."""
        if self._peer_timeout_arg is not None:
            return self._peer_timeout_arg
        return self._discovery.peer_timeout if self._discovery is not None else 5.0

    @property
    def discovery(self) -> Discovery | None:
        """The running discovery (``None`` before ``start``)."""
        return self._discovery

    @property
    def namespaces(self) -> Mapping[str, Namespace]:
        """The namespaces this node is in, by name."""
        return dict(self._namespaces)

    def namespace(
        self,
        name: str,
        model: Any = None,
        create_optimizer: Any = None,
        **options: Any,
    ) -> Namespace:
        """Create the namespace ``name`` on this node (enter it with ``async with``).

        Args:
            name: the federation's name; nodes with the same name federate.
            model: the model to train and share (``None`` for a node that will
                ``sync_model()``).
            create_optimizer: ``model -> optimizer`` (PyTorch; default Adam), e.g.
                ``lambda model: torch.optim.AdamW(model.parameters())``.
            **options: see :class:`~scatterbrained.namespace.Namespace`.

        Raises:
            ConfigurationError: the name is empty, too long, already joined, or an option is
                invalid.
        """
        if not name or len(name) > 256:
            raise ConfigurationError(f"namespace name must be 1..256 characters, got {name!r}")
        if name in self._namespaces:
            raise ConfigurationError(f"node {self.id} is already in namespace {name!r}")
        if len(self._namespaces) >= MAX_NAMESPACES:
            raise ConfigurationError(
                f"node {self.id} is in {len(self._namespaces)} namespaces, the most one node "
                "may join; leave one first or use another node"
            )
        return Namespace(self, name, model, create_optimizer, **options)

    @property
    def default_mode(self) -> OperatingMode:
        """The starting mode of this node's namespaces (``mode=`` of the constructor)."""
        return self._default_mode

    # ------------------------------------------------------------------ events

    def events(self, maxsize: int = 4096) -> AsyncIterator[Event]:
        """Iterate over this node's events from now on (see :mod:`scatterbrained.events`).

        Raises:
            RuntimeError: too many concurrent streams (256).
        """
        return self.bus.stream(None, maxsize)

    def subscribe(self, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event of this node; returns an unsubscriber."""
        return self.bus.subscribe(callback)

    # ------------------------------------------------------------------ host of namespaces

    def peer(self, peer_id: str) -> PeerRecord | None:
        """The record of a known peer, or ``None``."""
        return self.peers.get(peer_id)

    def register_namespace(self, ns: Namespace) -> None:
        """Route ``ns``'s messages to it and announce it (called by ``Namespace.open``).

        Raises:
            ConfigurationError: the node is already in a namespace of that name.
        """
        if ns.name in self._namespaces:
            raise ConfigurationError(f"node {self.id} is already in namespace {ns.name!r}")
        self._namespaces[ns.name] = ns
        for record in self.peers.records():
            ns.update_member(record)
        self.announce_now()

    def unregister_namespace(self, ns: Namespace) -> None:
        """Stop routing to ``ns`` and announce that it left (called by ``Namespace.close``)."""
        self._namespaces.pop(ns.name, None)
        self.announce_now()

    def announce_now(self) -> None:
        """Tell discovery and the greeted peers this node's namespaces, modes and versions."""
        if not self._started or self._closing:
            return
        if self._beacon_handle is not None:
            self._beacon_handle.cancel()
            self._beacon_handle = None
        self._last_beacon = time.monotonic()
        self._membership.tell_peers()

    def announce_version_soon(self) -> None:
        """Refresh the discovery beacon (a model version changed), at most once per
        :data:`ANNOUNCE_INTERVAL_S` (trailing).

        Only the beacon: a version alone is not worth a Hello to every peer (O(N^2) messages
        in a federation of N); peers take it from beacons, updates and the next Hellos.
        """
        if not self._started or self._closing or self._beacon_handle is not None:
            return
        wait = self._last_beacon + ANNOUNCE_INTERVAL_S - time.monotonic()
        if wait <= 0:
            self._announce_beacon()
            return
        loop = asyncio.get_running_loop()
        self._beacon_handle = loop.call_later(wait, self._announce_beacon)

    def _announce_beacon(self) -> None:
        self._beacon_handle = None
        if not self._started or self._closing:
            return
        self._last_beacon = time.monotonic()
        self._membership.announce()

    def beacons(self) -> list[Beacon]:
        """Discovery's candidates now (hints; empty before start)."""
        return self._discovery.candidates() if self._discovery is not None else []

    def wanted_sessions(self) -> set[str] | None:
        """The ids this node wants sessions with: ``None`` (everybody) unless every
        namespace keeps sessions with its topology neighbours only (large federations)."""
        wanted: set[str] = set()
        for ns in self._namespaces.values():
            sessions = ns.wanted_sessions()
            if sessions is None:
                return None
            wanted |= sessions
        return wanted

    def namespace_infos(self) -> tuple[NamespaceInfo, ...]:
        """The namespaces this node shows to others (OFFLINE ones are silent)."""
        return tuple(
            NamespaceInfo(ns.name, ns.mode.value, ns.version, ns.learner.state.has_model)
            for ns in self._namespaces.values()
            if ns.mode is not OperatingMode.OFFLINE
        )

    def advertised_address(self) -> tuple[str, int]:
        """(host, port) peers should use; host ``""`` means "where my packets come from"."""
        _, port = split_address(self.transport.address)
        if self._advertise_host:
            return self._advertise_host, port
        if self._transport_arg is None and self._host in _WILDCARD_HOSTS:
            return "", port
        host, _ = split_address(self.transport.address)
        return host, port

    def member_changed(self, record: PeerRecord, namespaces: set[str] | None) -> None:
        """Re-evaluate ``record`` in ``namespaces`` (``None``: every namespace)."""
        for ns in list(self._namespaces.values()):
            if namespaces is None or ns.name in namespaces:
                ns.update_member(record)

    def peer_restarted(self, peer_id: str) -> None:
        """A peer came back with a new session: every namespace forgets its rounds."""
        for ns in list(self._namespaces.values()):
            ns.peer_restarted(peer_id)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> bool:
        """Run ``coro`` in this node's task group (cancelled on close); False once stopped."""
        if not self._started:
            coro.close()
            return False
        self._tasks.spawn(coro, name)
        return True

    def forget_address(self, address: str) -> None:
        """Drop what is queued for ``address`` and close the outgoing connection to it."""
        if self._outbox is not None:
            self._outbox.forget(address)
        if self._transport is not None:
            self._transport.forget(address)

    def drop(self, reason: str, detail: str = "") -> None:
        """Count a refused message (``reason`` is a short tag) on the event stream."""
        self.bus.emit(MessageDropped(self.id, "", reason, detail))
        logger.debug("node %s dropped a message: %s %s", self.id, reason, detail)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def send_to_peer(
        self, record: PeerRecord, namespace: str, body: Any, timeout: float | None = None
    ) -> int:
        """Send ``body`` in ``namespace`` to ``record``; the bytes sent (0 = not delivered).

        ``timeout`` bounds the wait while the peer's queue is full (default: the
        transport's). Never raises for network reasons.
        """
        return await self.send_to_address(
            record.address, namespace, body, server_key=record.public_key, timeout=timeout
        )

    def post(
        self,
        address: str,
        namespace: str,
        body: Any,
        *,
        server_key: str | None,
        timeout: float | None = None,
    ) -> asyncio.Future[int]:
        """Queue ``body`` for ``address`` now; the future gives the bytes sent (0 = not).

        Posting is synchronous, so messages reach each address in the order they were
        posted (see :mod:`scatterbrained.outbox`). Never raises for network reasons.

        Raises:
            WireError: ``body`` cannot be encoded (a bug of the caller, not of the network).
        """
        result: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if not self._started or self._outbox is None:
            result.set_result(0)
            return result
        message = Message(self.id, namespace, self.session, self._next_seq(), body)
        frames = encode(message)
        nbytes = sum(memoryview(f).nbytes for f in frames)
        queued = self._outbox.post(address, frames, nbytes, server_key, timeout)

        def done(future: asyncio.Future[bool]) -> None:
            delivered = not future.cancelled() and future.result()
            if delivered:
                self.bus.emit(MessageSent(self.id, namespace, address, nbytes))
            if not result.done():
                result.set_result(nbytes if delivered else 0)

        queued.add_done_callback(done)
        return result

    async def send_to_address(
        self,
        address: str,
        namespace: str,
        body: Any,
        *,
        server_key: str | None,
        timeout: float | None = None,
    ) -> int:
        """Send ``body`` to ``address``; the bytes sent (0 = not delivered). Never raises.

        Raises:
            WireError: ``body`` cannot be encoded (a bug of the caller, not of the network).
        """
        return await self.post(address, namespace, body, server_key=server_key, timeout=timeout)

    async def _transport_send(
        self, address: str, frames: list[Any], server_key: str | None, timeout: float | None
    ) -> bool:
        try:
            return await self.transport.send(
                address, frames, server_key=server_key, timeout=timeout
            )
        except SecurityError:
            logger.debug("no public key known for %s; not sending", address)
            return False

    # ------------------------------------------------------------------ loops

    async def _receive_loop(self) -> None:
        transport = self.transport
        while True:
            envelope = await transport.recv()
            try:
                self._on_envelope(envelope)
            except Exception:  # a bug must not stop the node
                logger.exception("node %s: error handling a message", self.id)
                self.stats.dropped["internal"] += 1
            # Release the frames before waiting: holding a model-sized message while idle
            # doubles memory and makes the next receive fault in fresh pages.
            del envelope

    async def _discovery_loop(self) -> None:
        assert self._discovery is not None
        while True:
            event = await self._discovery.next_event()
            if event.kind.value == "lost":
                self._membership.beacons_stopped(event.beacon.node_id, time.monotonic())
            else:
                self._membership.greet(event.beacon, time.monotonic())

    async def _maintenance_loop(self) -> None:
        period = min(0.5, self.heartbeat_interval / 2)
        while True:
            await asyncio.sleep(period)
            self._membership.tick(time.monotonic())

    # ------------------------------------------------------------------ inbound

    def _on_envelope(self, envelope: Envelope) -> None:
        self.bus.emit(MessageReceived(self.id, "", envelope.nbytes))
        try:
            message = decode(envelope.frames, self._limits)
        except WireError as exc:
            self.drop(exc.reason, exc.detail)
            return
        if message.sender == self.id:
            self.drop("self")
            return
        if not self._membership.admit(message, envelope):
            return
        body = message.body
        if isinstance(body, Hello):
            self._membership.on_hello(message, body, envelope)
        elif isinstance(body, Bye):
            self._membership.on_bye(message)
        else:
            self._on_namespace_message(message, envelope.nbytes)

    def _on_namespace_message(self, message: Message, nbytes: int) -> None:
        record = self.peers.get(message.sender)
        if record is None or not record.greeted:
            self.drop("unknown_peer", message.sender)
            return
        record.last_seen = time.monotonic()
        ns = self._namespaces.get(message.namespace)
        if ns is None:
            self.drop("namespace", message.namespace)
            return
        reason = ns.deliver(record, message, nbytes)
        if reason is not None:
            self.drop(reason, f"{message.sender} in {message.namespace}")
