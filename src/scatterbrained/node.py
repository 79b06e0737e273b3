"""The node: one transport, one discovery, many namespaces.

A :class:`Node` owns the sockets and background loops of one participant and routes what
arrives to its namespaces. Everything it starts, it stops on ``__aexit__``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._tasks import TaskSet
from .discovery.base import Beacon, Discovery, DiscoveryScope, NamespaceAd, scope_from_env
from .errors import ConfigurationError, SecurityError, WireError
from .peers import PeerRecord, PeerTable, ReplayGuard, split_address
from .transport.base import Envelope, Transport
from .types import OperatingMode
from .wire.codec import Limits, decode, encode
from .wire.messages import Bye, Hello, Message, NamespaceInfo

if TYPE_CHECKING:
    from .adapters.architecture import FactoryRegistry
    from .namespace import Namespace
    from .transport.security import KeyPair

__all__ = ["Node", "NodeStats"]

logger = logging.getLogger(__name__)

_WILDCARD_HOSTS = ("", "0.0.0.0", "*", "::")
#: Seconds a goodbye may wait for a peer's queue: a gone peer must not delay shutdown.
GOODBYE_TIMEOUT = 0.5


@dataclass
class NodeStats:
    """Traffic counters of a node (monotonically increasing).

    Attributes:
        messages_in: multipart messages received (valid or not).
        bytes_in: bytes received.
        messages_out: messages sent.
        bytes_out: bytes sent.
        dropped: messages dropped, by reason (``"header"``, ``"replay"``, ``"mode"``, ...).
    """

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    @property
    def dropped_total(self) -> int:
        """Total number of dropped messages."""
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot."""
        return {
            "messages_in": self.messages_in,
            "bytes_in": self.bytes_in,
            "messages_out": self.messages_out,
            "bytes_out": self.bytes_out,
            "dropped": dict(self.dropped),
        }


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

    Raises:
        ConfigurationError: inconsistent arguments (e.g. keys without allowed_keys).
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
    ) -> None:
        if keys is None and allowed_keys is not None:
            raise ConfigurationError("allowed_keys needs keys=KeyPair(...) for this node too")
        if keys is not None and allowed_keys is None and transport is None:
            raise ConfigurationError(
                "keys given without allowed_keys: pass allowed_keys=[peer public keys] "
                "(an empty list refuses everyone)"
            )
        if heartbeat_interval <= 0:
            raise ConfigurationError(f"heartbeat_interval must be > 0 s, got {heartbeat_interval}")
        self.id = id or f"node-{uuid.uuid4().hex[:12]}"
        self._host = host
        self._port = port
        self._keys = keys
        self._allowed_keys = list(allowed_keys) if allowed_keys is not None else None
        self._bootstrap = [_parse_bootstrap(a) for a in (bootstrap or ())]
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
        self.stats = NodeStats()
        self.peers = PeerTable()
        self._replay = ReplayGuard()
        self._seq = 0
        self._namespaces: dict[str, Namespace] = {}
        self._tasks = TaskSet(f"node {self.id}")
        self._hello_sent: dict[str, float] = {}
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
        self._tasks.spawn(self._receive_loop(), "receive")
        self._tasks.spawn(self._discovery_loop(), "discovery")
        self._tasks.spawn(self._maintenance_loop(), "maintenance")
        self._announce()
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
            *(self._send_record(r, "", Bye("node closing"), GOODBYE_TIMEOUT) for r in greeted),
            return_exceptions=True,
        )
        self._started = False
        await self._tasks.close()
        assert self._discovery is not None and self._transport is not None
        self._discovery.announce(None)
        await self._discovery.close()
        await self._transport.close()
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
            ns._open = False
            await ns.learner.close()
        self._namespaces.clear()
        await self._tasks.close()
        assert self._discovery is not None and self._transport is not None
        self._discovery.announce(None)
        await self._discovery.close()
        await self._transport.close()
        logger.info("node %s aborted", self.id)

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
            create_optimizer: ``params -> optimizer`` (PyTorch; default Adam).
            **options: see :class:`~scatterbrained.namespace.Namespace`.

        Raises:
            ConfigurationError: the name is empty, too long, already joined, or an option is
                invalid.
        """
        from .namespace import Namespace

        if not name or len(name) > 256:
            raise ConfigurationError(f"namespace name must be 1..256 characters, got {name!r}")
        if name in self._namespaces:
            raise ConfigurationError(f"node {self.id} is already in namespace {name!r}")
        return Namespace(self, name, model, create_optimizer, **options)

    # ------------------------------------------------------------------ used by Namespace

    def _register(self, ns: Namespace) -> None:
        if ns.name in self._namespaces:
            raise ConfigurationError(f"node {self.id} is already in namespace {ns.name!r}")
        self._namespaces[ns.name] = ns
        for record in self.peers.records():
            ns._update_member(record)
        self._mode_changed()

    def _unregister(self, ns: Namespace) -> None:
        self._namespaces.pop(ns.name, None)
        self._mode_changed()

    def _mode_changed(self) -> None:
        """Tell discovery and known peers what namespaces/modes this node is in now."""
        if not self._started or self._closing:
            return
        self._announce()
        hello = self._hello(want_reply=False)
        for record in self.peers.records():
            if record.greeted:
                self._tasks.spawn(self._send_record(record, "", hello), "hello")

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def _send_record(
        self, record: PeerRecord, namespace: str, body: Any, timeout: float | None = None
    ) -> int:
        """Send ``body`` in ``namespace`` to ``record``; return the bytes sent (0 = dropped).

        ``timeout`` bounds the wait while the peer's queue is full (default: the transport's).
        """
        return await self._send_to_address(
            record.address, namespace, body, server_key=record.public_key, timeout=timeout
        )

    async def _send_to_address(
        self,
        address: str,
        namespace: str,
        body: Any,
        *,
        server_key: str | None,
        timeout: float | None = None,
    ) -> int:
        if not self._started:
            return 0
        message = Message(self.id, namespace, self.session, self._next_seq(), body)
        frames = encode(message)
        try:
            sent = await self.transport.send(
                address, frames, server_key=server_key, timeout=timeout
            )
        except SecurityError:
            logger.debug("no public key known for %s; not sending", address)
            return 0
        if not sent:
            return 0
        nbytes = sum(memoryview(f).nbytes for f in frames)
        self.stats.messages_out += 1
        self.stats.bytes_out += nbytes
        return nbytes

    # ------------------------------------------------------------------ hello / beacons

    def _advertised_host(self) -> str:
        if self._advertise_host:
            return self._advertise_host
        if self._transport_arg is None and self._host in _WILDCARD_HOSTS:
            return ""  # peers fill in the address our packets come from
        host, _ = split_address(self.transport.address)
        return host

    def _namespace_infos(self) -> tuple[NamespaceInfo, ...]:
        return tuple(
            NamespaceInfo(ns.name, ns.mode.value, ns.version)
            for ns in self._namespaces.values()
            if ns.mode is not OperatingMode.OFFLINE
        )

    def _hello(self, want_reply: bool) -> Hello:
        _, port = split_address(self.transport.address)
        return Hello(
            address=f"tcp://{self._advertised_host()}:{port}",
            namespaces=self._namespace_infos(),
            public_key=self.public_key,
            want_reply=want_reply,
        )

    def _announce(self) -> None:
        assert self._discovery is not None
        infos = self._namespace_infos()
        if not infos:
            self._discovery.announce(None)
            return
        _, port = split_address(self.transport.address)
        self._discovery.announce(
            Beacon(
                node_id=self.id,
                host=self._advertised_host(),
                port=port,
                namespaces=tuple(NamespaceAd(i.name, i.mode, i.version) for i in infos),
                public_key=self.public_key,
                session=self.session,
            )
        )

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
                self._beacons_stopped(event.beacon.node_id, time.monotonic())
            else:
                self._greet_candidate(event.beacon, time.monotonic())

    def _beacons_stopped(self, peer_id: str, now: float) -> None:
        """Back-date ``peer_id``'s last sign of life to when discovery last heard it.

        While its beacons came, the maintenance loop kept ``last_seen`` fresh, so counting
        ``peer_timeout`` from the LOST event would keep a crashed peer for about two timeouts.
        The peer is left at least two heartbeat intervals: heartbeats (Hello, want_reply)
        probe it meanwhile, and a peer that answers stays.
        """
        record = self.peers.get(peer_id)
        if record is None or self._discovery is None:
            return
        left = max(2 * self.heartbeat_interval, self.peer_timeout - self._discovery.peer_timeout)
        record.last_seen = min(record.last_seen, now - self.peer_timeout + left)

    async def _maintenance_loop(self) -> None:
        assert self._discovery is not None
        period = min(0.5, self.heartbeat_interval / 2)
        while True:
            await asyncio.sleep(period)
            now = time.monotonic()
            for beacon in self._discovery.candidates():
                record = self.peers.get(beacon.node_id)
                if record is not None and record.greeted:
                    record.last_seen = now
                else:
                    self._greet_candidate(beacon, now)
            self._heartbeat(now)
            for record in self.peers.expired(now, self.peer_timeout):
                self._drop_peer(record.id, "timeout")

    def _greet_candidate(self, beacon: Beacon, now: float) -> None:
        """Say Hello to a node seen in discovery if it shares a namespace with us.

        Namespaces this node is OFFLINE in do not count: OFFLINE is silent.
        """
        if beacon.node_id == self.id:
            return
        active = {info.name for info in self._namespace_infos()}
        if not {ad.name for ad in beacon.namespaces} & active:
            return
        if self._allowed_keys is not None and beacon.public_key not in self._allowed_keys:
            self.stats.dropped["beacon_key"] += 1
            return
        if now - self._hello_sent.get(beacon.node_id, -1e9) < self.heartbeat_interval:
            return
        self._hello_sent[beacon.node_id] = now
        if len(self._hello_sent) > 4 * len(self.peers) + 1024:
            self._hello_sent.clear()
        address = f"tcp://{beacon.host or '127.0.0.1'}:{beacon.port}"
        self._tasks.spawn(
            self._send_to_address(
                address, "", self._hello(want_reply=True), server_key=beacon.public_key
            ),
            "greet",
        )

    def _heartbeat(self, now: float) -> None:
        """Hello to peers discovery does not refresh, and to bootstrap addresses."""
        hello = self._hello(want_reply=True)
        if not hello.namespaces:
            return
        for record in self.peers.records():
            if (
                now - record.last_seen > self.heartbeat_interval
                and now - self._hello_sent.get(record.id, -1e9) >= self.heartbeat_interval
            ):
                self._hello_sent[record.id] = now
                self._tasks.spawn(self._send_record(record, "", hello), "heartbeat")
        if not self._bootstrap:  # the address set costs O(peers) per tick: skip it if unused
            return
        known = {r.address for r in self.peers.records()}
        for address, key in self._bootstrap:
            if address not in known:
                self._tasks.spawn(
                    self._send_to_address(address, "", hello, server_key=key), "bootstrap"
                )

    def _drop_peer(self, peer_id: str, reason: str) -> None:
        record = self.peers.remove(peer_id)
        if record is None:
            return
        logger.info("node %s: peer %s gone (%s)", self.id, peer_id, reason)
        record.namespaces = {}
        for ns in self._namespaces.values():
            ns._update_member(record)
        if self._transport is not None:
            self._transport.forget(record.address)

    # ------------------------------------------------------------------ inbound

    def _drop(self, reason: str, detail: str = "") -> None:
        self.stats.dropped[reason] += 1
        logger.debug("node %s dropped a message: %s %s", self.id, reason, detail)

    def _on_envelope(self, envelope: Envelope) -> None:
        self.stats.messages_in += 1
        self.stats.bytes_in += envelope.nbytes
        try:
            message = decode(envelope.frames, self._limits)
        except WireError as exc:
            self._drop(exc.reason, exc.detail)
            return
        if message.sender == self.id:
            self._drop("self")
            return
        if not self._check_identity(message, envelope.peer_key):
            return
        if not self._replay.accept(message.sender, message.session, message.seq):
            self._drop("replay", message.sender)
            return
        body = message.body
        if isinstance(body, Hello):
            self._on_hello(message, body, envelope)
        elif isinstance(body, Bye):
            self._on_bye(message)
        else:
            self._on_namespace_message(message, envelope.nbytes)

    def _check_identity(self, message: Message, peer_key: str | None) -> bool:
        """With keys, the authenticated key decides who sent a message, not its header."""
        if self._keys is None:
            return True
        if peer_key is None:
            self._drop("unauthenticated")
            return False
        if isinstance(message.body, Hello):
            if message.body.public_key != peer_key:
                self._drop("key_mismatch", message.sender)
                return False
            if not self.peers.bind_key(peer_key, message.sender):
                self._drop("identity", message.sender)
                return False
            return True
        if self.peers.bound_id(peer_key) != message.sender:
            self._drop("identity", message.sender)
            return False
        return True

    def _resolve_host(
        self, peer_id: str, advertised: str, source: str | None
    ) -> tuple[str, int] | None:
        """Where to reach a peer that said Hello.

        A wildcard-bound peer advertises no host: use the address its beacons or this very
        message came from, then what we knew, and only then loopback.
        """
        try:
            host, port = split_address(advertised)
        except ValueError:
            return None
        if not host and self._discovery is not None:
            for beacon in self._discovery.candidates():
                if beacon.node_id == peer_id and beacon.host:
                    return beacon.host, port
        if not host:
            record = self.peers.get(peer_id)
            known = record.host if record is not None else ""
            host = source or known or "127.0.0.1"
        return host, port

    def _on_hello(self, message: Message, hello: Hello, envelope: Envelope) -> None:
        now = time.monotonic()
        resolved = self._resolve_host(message.sender, hello.address, envelope.peer_host)
        if resolved is None:
            self._drop("address", hello.address)
            return
        record = self.peers.get(message.sender)
        if record is not None and message.session > record.session and record.greeted:
            logger.info("node %s: peer %s restarted", self.id, message.sender)
            for ns in self._namespaces.values():
                ns.learner.peer_restarted(message.sender)
        record = self.peers.upsert(message.sender, resolved[0], resolved[1], now)
        if record is None:
            self._drop("peer_table_full", message.sender)
            return
        if self._keys is not None:
            record.public_key = envelope.peer_key
        changed = self.peers.apply_hello(record, hello, message.session)
        for ns in self._namespaces.values():
            if ns.name in changed or ns.name in record.namespaces:
                ns._update_member(record)
        if hello.want_reply and self._namespace_infos():
            self._tasks.spawn(self._send_record(record, "", self._hello(False)), "hello-reply")

    def _on_bye(self, message: Message) -> None:
        record = self.peers.get(message.sender)
        if record is None:
            return
        if message.namespace:
            record.namespaces.pop(message.namespace, None)
            ns = self._namespaces.get(message.namespace)
            if ns is not None:
                ns._update_member(record)
        else:
            self._drop_peer(message.sender, "bye")

    def _on_namespace_message(self, message: Message, nbytes: int) -> None:
        record = self.peers.get(message.sender)
        if record is None or not record.greeted:
            self._drop("unknown_peer", message.sender)
            return
        record.last_seen = time.monotonic()
        ns = self._namespaces.get(message.namespace)
        if ns is None:
            self._drop("namespace", message.namespace)
            return
        reason = ns._deliver(record, message, nbytes)
        if reason is not None:
            self._drop(reason, f"{message.sender} in {message.namespace}")


def _parse_bootstrap(entry: str) -> tuple[str, str | None]:
    """Parse ``tcp://host:port`` or ``tcp://host:port#KEY`` into (address, key)."""
    address, _, key = entry.partition("#")
    try:
        host, port = split_address(address)
    except ValueError as exc:
        raise ConfigurationError(f"bootstrap entry {entry!r}: {exc}") from None
    if not host:
        raise ConfigurationError(
            f"bootstrap entry {entry!r} needs a host, e.g. tcp://10.0.0.5:5555"
        )
    return f"tcp://{host}:{port}", key or None
