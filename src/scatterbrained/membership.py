"""The peer protocol of a node: who is there, how to reach them, which namespaces they are in.

Discovery beacons are only hints. A node becomes a peer by a Hello over the transport
(authenticated with keys), stays one while it shows signs of life (beacons, messages, Hello
replies to heartbeats), and leaves on Bye or after ``peer_timeout`` seconds of silence.
:class:`Membership` implements that for one :class:`~scatterbrained.node.Node`: greeting
discovered nodes, heartbeats, the Hello handshake, Bye, expiry, and the sender-identity check.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from .discovery.base import Beacon, NamespaceAd
from .errors import ConfigurationError
from .peers import split_address
from .transport.base import Envelope
from .types import OperatingMode
from .wire.messages import Hello, Message, NamespaceInfo

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Membership", "parse_bootstrap"]

logger = logging.getLogger(__name__)

_WILDCARD_HOSTS = ("", "0.0.0.0", "*", "::")


class Membership:
    """Peer bookkeeping of a node (its ``peers`` table is kept here up to date).

    Args:
        node: the node whose peers these are.
        bootstrap: ``(address, public key or None)`` pairs contacted directly.
        allowed_keys: public keys allowed to connect, or ``None`` without keys.
        authenticated: the transport authenticates senders (keys are configured): a
            message's sender is then the id bound to its authenticated key.
    """

    def __init__(
        self,
        node: Node,
        bootstrap: list[tuple[str, str | None]],
        allowed_keys: list[str] | None,
        authenticated: bool,
    ) -> None:
        self.node = node
        self.bootstrap = bootstrap
        self.allowed_keys = allowed_keys
        self.authenticated = authenticated
        self._hello_sent: dict[str, float] = {}

    # ------------------------------------------------------------------ what we announce

    def advertised_host(self) -> str:
        """The host peers should use, or ``""`` for "the address my packets come from"."""
        node = self.node
        if node._advertise_host:
            return node._advertise_host
        if node._transport_arg is None and node._host in _WILDCARD_HOSTS:
            return ""
        host, _ = split_address(node.transport.address)
        return host

    def namespace_infos(self) -> tuple[NamespaceInfo, ...]:
        """The namespaces this node shows to others (OFFLINE ones are silent)."""
        return tuple(
            NamespaceInfo(ns.name, ns.mode.value, ns.version)
            for ns in self.node._namespaces.values()
            if ns.mode is not OperatingMode.OFFLINE
        )

    def hello(self, want_reply: bool) -> Hello:
        """This node's Hello (address, namespaces and modes, public key)."""
        _, port = split_address(self.node.transport.address)
        return Hello(
            address=f"tcp://{self.advertised_host()}:{port}",
            namespaces=self.namespace_infos(),
            public_key=self.node.public_key,
            want_reply=want_reply,
        )

    def announce(self) -> None:
        """Update the discovery beacon (none while no namespace is visible)."""
        node = self.node
        assert node.discovery is not None
        infos = self.namespace_infos()
        if not infos:
            node.discovery.announce(None)
            return
        _, port = split_address(node.transport.address)
        node.discovery.announce(
            Beacon(
                node_id=node.id,
                host=self.advertised_host(),
                port=port,
                namespaces=tuple(NamespaceAd(i.name, i.mode, i.version) for i in infos),
                public_key=node.public_key,
                session=node.session,
            )
        )

    def tell_peers(self) -> None:
        """Announce, and send a Hello to every greeted peer (namespaces or modes changed)."""
        self.announce()
        hello = self.hello(want_reply=False)
        for record in self.node.peers.records():
            if record.greeted:
                self.node._tasks.spawn(self.node._send_record(record, "", hello), "hello")

    # ------------------------------------------------------------------ time-driven

    def beacons_stopped(self, peer_id: str, now: float) -> None:
        """Back-date ``peer_id``'s last sign of life to when discovery last heard it.

        While its beacons came, :meth:`tick` kept ``last_seen`` fresh, so counting
        ``peer_timeout`` from the LOST event would keep a crashed peer for about two timeouts.
        The peer is left at least two heartbeat intervals: heartbeats (Hello, want_reply)
        probe it meanwhile, and a peer that answers stays.
        """
        node = self.node
        record = node.peers.get(peer_id)
        if record is None or node.discovery is None:
            return
        left = max(2 * node.heartbeat_interval, node.peer_timeout - node.discovery.peer_timeout)
        record.last_seen = min(record.last_seen, now - node.peer_timeout + left)

    def tick(self, now: float) -> None:
        """One maintenance pass: refresh peers discovery still sees, greet new candidates,
        heartbeat the others, drop the silent ones."""
        node = self.node
        assert node.discovery is not None
        for beacon in node.discovery.candidates():
            record = node.peers.get(beacon.node_id)
            if record is not None and record.greeted:
                record.last_seen = now
            else:
                self.greet(beacon, now)
        self._heartbeat(now)
        for record in node.peers.expired(now, node.peer_timeout):
            self.drop_peer(record.id, "timeout")

    def greet(self, beacon: Beacon, now: float) -> None:
        """Say Hello to a node seen in discovery if it shares a namespace with us.

        Namespaces this node is OFFLINE in do not count: OFFLINE is silent. At most one
        greeting per node per heartbeat interval.
        """
        node = self.node
        if beacon.node_id == node.id:
            return
        active = {info.name for info in self.namespace_infos()}
        if not {ad.name for ad in beacon.namespaces} & active:
            return
        if self.allowed_keys is not None and beacon.public_key not in self.allowed_keys:
            node.stats.dropped["beacon_key"] += 1
            return
        if not self._hello_due(beacon.node_id, now):
            return
        address = f"tcp://{beacon.host or '127.0.0.1'}:{beacon.port}"
        hello = self.hello(want_reply=True)
        greeting = node._send_to_address(address, "", hello, server_key=beacon.public_key)
        node._tasks.spawn(greeting, "greet")

    def _heartbeat(self, now: float) -> None:
        """Hello to peers discovery does not refresh, and to bootstrap addresses."""
        node = self.node
        hello = self.hello(want_reply=True)
        if not hello.namespaces:
            return
        for record in node.peers.records():
            if now - record.last_seen > node.heartbeat_interval and self._hello_due(record.id, now):
                node._tasks.spawn(node._send_record(record, "", hello), "heartbeat")
        if not self.bootstrap:  # the address set costs O(peers) per tick: skip it if unused
            return
        known = {r.address for r in node.peers.records()}
        for address, key in self.bootstrap:
            if address not in known:
                contact = node._send_to_address(address, "", hello, server_key=key)
                node._tasks.spawn(contact, "bootstrap")

    def _hello_due(self, peer_id: str, now: float) -> bool:
        """True (and noted) when ``peer_id`` got no Hello from us for a heartbeat interval.

        The table is bounded: past 4 entries per peer (+1024) it starts over, which at worst
        lets one early Hello through.
        """
        if now - self._hello_sent.get(peer_id, -1e9) < self.node.heartbeat_interval:
            return False
        self._hello_sent[peer_id] = now
        if len(self._hello_sent) > 4 * len(self.node.peers) + 1024:
            self._hello_sent.clear()
        return True

    def drop_peer(self, peer_id: str, reason: str) -> None:
        """Forget a peer: it leaves every namespace, its connection is closed."""
        node = self.node
        record = node.peers.remove(peer_id)
        if record is None:
            return
        logger.info("node %s: peer %s gone (%s)", node.id, peer_id, reason)
        record.namespaces = {}
        for ns in node._namespaces.values():
            ns._update_member(record)
        if node._transport is not None:
            node._transport.forget(record.address)

    # ------------------------------------------------------------------ inbound

    def check_identity(self, message: Message, peer_key: str | None) -> bool:
        """With keys, the authenticated key decides who sent a message, not its header.

        Returns:
            True when the sender is who it says; else the message is dropped and counted.
        """
        if not self.authenticated:
            return True
        drop = self.node._drop
        if peer_key is None:
            drop("unauthenticated")
            return False
        peers = self.node.peers
        if isinstance(message.body, Hello):
            if message.body.public_key != peer_key:
                drop("key_mismatch", message.sender)
                return False
            if not peers.bind_key(peer_key, message.sender):
                drop("identity", message.sender)
                return False
            return True
        if peers.bound_id(peer_key) != message.sender:
            drop("identity", message.sender)
            return False
        return True

    def resolve_host(
        self, peer_id: str, advertised: str, source: str | None
    ) -> tuple[str, int] | None:
        """Where to reach a peer that said Hello; ``None`` for an unusable address.

        A wildcard-bound peer advertises no host: use the address its beacons or this very
        message came from, then what we knew, and only then loopback.
        """
        node = self.node
        try:
            host, port = split_address(advertised)
        except ValueError:
            return None
        if not host and node.discovery is not None:
            for beacon in node.discovery.candidates():
                if beacon.node_id == peer_id and beacon.host:
                    return beacon.host, port
        if not host:
            record = node.peers.get(peer_id)
            known = record.host if record is not None else ""
            host = source or known or "127.0.0.1"
        return host, port

    def on_hello(self, message: Message, hello: Hello, envelope: Envelope) -> None:
        """Add or refresh the sender; reply when asked. An unusable Hello is dropped, counted."""
        node = self.node
        now = time.monotonic()
        resolved = self.resolve_host(message.sender, hello.address, envelope.peer_host)
        if resolved is None:
            node._drop("address", hello.address)
            return
        record = node.peers.get(message.sender)
        if record is not None and message.session > record.session and record.greeted:
            logger.info("node %s: peer %s restarted", node.id, message.sender)
            for ns in node._namespaces.values():
                ns.learner.peer_restarted(message.sender)
        record = node.peers.upsert(message.sender, resolved[0], resolved[1], now)
        if record is None:
            node._drop("peer_table_full", message.sender)
            return
        if self.authenticated:
            record.public_key = envelope.peer_key
        changed = node.peers.apply_hello(record, hello, message.session)
        for ns in node._namespaces.values():
            if ns.name in changed or ns.name in record.namespaces:
                ns._update_member(record)
        if hello.want_reply and self.namespace_infos():
            reply = node._send_record(record, "", self.hello(False))
            node._tasks.spawn(reply, "hello-reply")

    def on_bye(self, message: Message) -> None:
        """The sender left one namespace (``message.namespace``) or the whole network."""
        node = self.node
        record = node.peers.get(message.sender)
        if record is None:
            return
        if message.namespace:
            record.namespaces.pop(message.namespace, None)
            ns = node._namespaces.get(message.namespace)
            if ns is not None:
                ns._update_member(record)
        else:
            self.drop_peer(message.sender, "bye")


def parse_bootstrap(entry: str) -> tuple[str, str | None]:
    """Parse ``tcp://host:port`` or ``tcp://host:port#KEY`` into (address, key).

    Raises:
        ConfigurationError: the entry is not an address with a host and a port.
    """
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
