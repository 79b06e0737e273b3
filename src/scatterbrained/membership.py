"""The peer protocol of a node: who is there, how to reach them, which namespaces they are in.

Discovery beacons are only hints. A node becomes a peer by a Hello over the transport
(authenticated with keys) that echoes the challenge this node sent to the address it claims
(:mod:`scatterbrained.challenge`), stays one while it shows signs of life (beacons, messages,
Hello replies to heartbeats), and leaves on Bye or after ``peer_timeout`` seconds of silence.
:class:`Membership` implements that for one :class:`~scatterbrained.node.Node`: greeting
discovered nodes, heartbeats, the Hello handshake, Bye, expiry, and the sender-identity check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any, Protocol

from .challenge import AddressChallenge, ReplyBudget
from .discovery.base import Beacon, Discovery, NamespaceAd
from .errors import ConfigurationError
from .peers import PeerRecord, PeerTable, ReplayGuard, split_address
from .transport.base import Envelope
from .wire.messages import Hello, Message, NamespaceInfo

__all__ = ["Membership", "MembershipHost", "parse_bootstrap"]

logger = logging.getLogger(__name__)

#: Distinct keyed peers a keyless node warns about (see Membership._hint_keys_needed).
MAX_HINTS = 64
#: Discovery candidates greeted per maintenance tick (the others wait for a later tick, so
#: a flood of forged beacons costs a bounded amount of work; new candidates are greeted at
#: once when discovery first reports them).
MAX_GREETINGS_PER_TICK = 32


class MembershipHost(Protocol):
    """What the peer protocol needs from its node (:class:`~scatterbrained.node.Node`).

    Attributes:
        id: this node's id.
        session: this node's session (its start time in nanoseconds).
        heartbeat_interval: seconds between Hellos to peers discovery does not refresh.
    """

    id: str
    session: int
    heartbeat_interval: float

    @property
    def public_key(self) -> str | None:
        """This node's public key (Z85), or ``None`` without keys."""
        ...

    @property
    def peer_timeout(self) -> float:
        """Seconds of silence after which a peer is gone."""
        ...

    @property
    def discovery(self) -> Discovery | None:
        """The running discovery."""
        ...

    def advertised_address(self) -> tuple[str, int]:
        """(host or ``""`` for "where my packets come from", port) peers should use."""
        ...

    def namespace_infos(self) -> tuple[NamespaceInfo, ...]:
        """The namespaces shown to others (name, advertised mode, version)."""
        ...

    def wanted_sessions(self) -> set[str] | None:
        """The ids this node wants sessions with, or ``None`` for everybody."""
        ...

    def member_changed(self, record: PeerRecord, namespaces: set[str] | None) -> None:
        """Re-evaluate ``record`` in the given namespaces (``None``: all of them)."""
        ...

    def peer_restarted(self, peer_id: str) -> None:
        """A peer came back with a new session."""
        ...

    def drop(self, reason: str, detail: str = "") -> None:
        """Count a refused message."""
        ...

    def post(
        self, address: str, namespace: str, body: Any, *, server_key: str | None
    ) -> asyncio.Future[int]:
        """Queue a body for an address now (in order); the future gives the bytes sent."""
        ...

    def forget_address(self, address: str) -> None:
        """Close the outgoing connection to ``address``."""
        ...


class Membership:
    """Peer bookkeeping of a node (its ``peers`` table is kept here up to date).

    Args:
        host: the node, through the few operations the peer protocol needs.
        peers: the node's peer table.
        bootstrap: ``(address, public key or None)`` pairs contacted directly.
        allowed_keys: public keys allowed to connect, or ``None`` without keys.
        authenticated: the transport authenticates senders (keys are configured): a
            message's sender is then the id bound to its authenticated key.
    """

    def __init__(
        self,
        host: MembershipHost,
        peers: PeerTable,
        bootstrap: list[tuple[str, str | None]],
        allowed_keys: list[str] | None,
        authenticated: bool,
    ) -> None:
        self.node = host
        self.peers = peers
        self.bootstrap = bootstrap
        self.allowed_keys = allowed_keys
        self.authenticated = authenticated
        self.replay = ReplayGuard()
        self._hello_sent: dict[str, float] = {}
        self._hinted: set[str] = set()  # keyed peers told about in _hint_keys_needed
        self.challenges = AddressChallenge()
        self._unverified_replies = ReplyBudget()

    # ------------------------------------------------------------------ what we announce

    def hello(self, want_reply: bool, to: str = "", record: PeerRecord | None = None) -> Hello:
        """This node's Hello (address, namespaces and modes, public key).

        Args:
            want_reply: ask for a Hello back.
            to: the address it is sent to (its challenge is made for that address).
            record: the recipient's record, whose last challenge the Hello echoes.
        """
        return self._addressed(self._own_hello(want_reply), to, record)

    def _own_hello(self, want_reply: bool) -> Hello:
        """This node's Hello, not yet addressed (no challenge, no echo)."""
        host, port = self.node.advertised_address()
        return Hello(
            address=f"tcp://{host}:{port}",
            namespaces=self.node.namespace_infos(),
            public_key=self.node.public_key,
            want_reply=want_reply,
        )

    def _addressed(self, hello: Hello, to: str, record: PeerRecord | None) -> Hello:
        """``hello`` with the challenge for address ``to`` and the echo for ``record``."""
        return dataclasses.replace(
            hello,
            challenge=self.challenges.cookie(to) if to else 0,
            echo=record.challenge_in if record is not None else 0,
        )

    def announce(self) -> None:
        """Update the discovery beacon (none while no namespace is visible)."""
        node = self.node
        assert node.discovery is not None
        infos = node.namespace_infos()
        if not infos:
            node.discovery.announce(None)
            return
        host, port = node.advertised_address()
        node.discovery.announce(
            Beacon(
                node_id=node.id,
                host=host,
                port=port,
                namespaces=tuple(NamespaceAd(i.name, i.mode, i.version) for i in infos),
                public_key=node.public_key,
                session=node.session,
            )
        )

    def tell_peers(self) -> None:
        """Announce, and send a Hello to every greeted peer (namespaces or modes changed)."""
        self.announce()
        hello = self._own_hello(want_reply=False)
        for record in self.peers.records():
            if record.greeted:
                self._send(record, self._addressed(hello, record.address, record))

    def _send(self, record: PeerRecord, body: Any) -> None:
        self.node.post(record.address, "", body, server_key=record.public_key)

    # ------------------------------------------------------------------ time-driven

    def beacons_stopped(self, peer_id: str, now: float) -> None:
        """Back-date ``peer_id``'s last sign of life to when discovery last heard it.

        While its beacons came, :meth:`tick` kept ``last_seen`` fresh, so counting
        ``peer_timeout`` from the LOST event would keep a crashed peer for about two timeouts.
        The peer is left at least two heartbeat intervals: heartbeats (Hello, want_reply)
        probe it meanwhile, and a peer that answers stays.
        """
        node = self.node
        record = self.peers.get(peer_id)
        if record is None or node.discovery is None:
            return
        left = max(2 * node.heartbeat_interval, node.peer_timeout - node.discovery.peer_timeout)
        record.last_seen = min(record.last_seen, now - node.peer_timeout + left)

    def tick(self, now: float) -> None:
        """One maintenance pass: refresh peers discovery still sees, greet new candidates,
        heartbeat the others, drop the silent ones."""
        node = self.node
        assert node.discovery is not None
        active = self._active_namespaces()
        wanted = node.wanted_sessions()  # None: everybody (sessions not scoped)
        greeted = 0
        for beacon in node.discovery.candidates():
            record = self.peers.get(beacon.node_id)
            if record is None or not record.greeted:
                if not _in_scope(beacon.node_id, wanted):
                    continue  # not a neighbour: no session (see roster.py)
                if greeted < MAX_GREETINGS_PER_TICK and self.greet(beacon, now, active):
                    greeted += 1
            elif beacon.session == record.session:
                # A beacon is a hint anyone can forge: with keys only authenticated traffic
                # (heartbeats included) keeps a peer alive; without, only its own session's.
                if not self.authenticated:
                    record.last_seen = now
                _hint_versions(record, beacon)  # a version change alone raises no event
        self._heartbeat(now)
        for record in self.peers.expired(now, node.peer_timeout):
            self.drop_peer(record.id, "timeout")

    def greet(self, beacon: Beacon, now: float, active: set[str] | None = None) -> bool:
        """Say Hello to a node seen in discovery if it shares a namespace with us.

        Namespaces this node is OFFLINE in do not count: OFFLINE is silent. At most one
        greeting per address per heartbeat interval, however many ids beacons put there. A
        peer greeted already (same session) gets no Hello: its changed beacon only updates
        the version hints (a Hello to every peer on every version change would cost O(N^2)
        messages per epoch).

        Args:
            beacon: the candidate's beacon.
            now: monotonic time (s).
            active: this node's visible namespaces, when the caller has them already.

        Returns:
            True when a Hello was posted.
        """
        node = self.node
        if beacon.node_id == node.id:
            return False
        record = self.peers.get(beacon.node_id)
        if record is not None and record.greeted and beacon.session == record.session:
            _hint_versions(record, beacon)  # a known peer's new version: a hint, no Hello
            return False
        if not _in_scope(beacon.node_id, node.wanted_sessions()):
            return False  # sessions scoped to topology neighbours (see roster.py)
        if active is None:
            active = self._active_namespaces()
        if not {ad.name for ad in beacon.namespaces} & active:
            return False
        if self.allowed_keys is not None and beacon.public_key not in self.allowed_keys:
            node.drop("beacon_key", beacon.node_id)
            return False
        if beacon.public_key and node.public_key is None:
            self._hint_keys_needed(beacon.node_id)
        address = f"tcp://{beacon.host or '127.0.0.1'}:{beacon.port}"
        if not self._hello_due(address, now):
            return False
        hello = self.hello(True, address, self.peers.get(beacon.node_id))
        node.post(address, "", hello, server_key=beacon.public_key)
        return True

    def _active_namespaces(self) -> set[str]:
        return {info.name for info in self.node.namespace_infos()}

    def _hint_keys_needed(self, peer_id: str) -> None:
        """Warn once per peer (at most :data:`MAX_HINTS`) that a keyed peer cannot be reached.

        A keyless node cannot complete a CurveZMQ handshake, and the keyed peer drops what it
        sends without a word; only this side can say why.
        """
        if peer_id in self._hinted or len(self._hinted) >= MAX_HINTS:
            return
        self._hinted.add(peer_id)
        logger.warning(
            "node %s uses CurveZMQ keys but this node has none, so they cannot talk: start this "
            "node with keys (sb.Node(keys=..., allowed_keys=[...]) or --keys/--allow) and have "
            "its public key allowed there",
            peer_id[:64],
        )

    def _heartbeat(self, now: float) -> None:
        """Hello to peers discovery does not refresh, a challenge to (a bounded number of)
        peers not verified yet, and a Hello to bootstrap addresses."""
        node = self.node
        hello = self._own_hello(want_reply=True)
        if not hello.namespaces:
            return
        probes = 0
        for record in self.peers.records():
            if record.greeted:
                silent = now - record.last_seen > node.heartbeat_interval
                if silent and self._hello_due(record.id, now):
                    self._send(record, self._addressed(hello, record.address, record))
            elif probes < MAX_GREETINGS_PER_TICK and self._hello_due(record.address, now):
                probes += 1  # claimed an address by Hello: it must answer there to count
                self._send(record, self._addressed(hello, record.address, record))
        if not self.bootstrap:  # the address set costs O(peers) per tick: skip it if unused
            return
        known = {r.address for r in self.peers.records() if r.greeted}
        for address, key in self.bootstrap:
            if address not in known:
                node.post(address, "", self._addressed(hello, address, None), server_key=key)

    def _hello_due(self, peer_id: str, now: float) -> bool:
        """True (and noted) when ``peer_id`` (an id or an address) got no Hello from us for a
        heartbeat interval.

        The table is bounded: past 4 entries per peer (+1024) it starts over, which at worst
        lets one early Hello through.
        """
        if now - self._hello_sent.get(peer_id, -1e9) < self.node.heartbeat_interval:
            return False
        self._hello_sent[peer_id] = now
        if len(self._hello_sent) > 4 * len(self.peers) + 1024:
            self._hello_sent.clear()
        return True

    def drop_peer(self, peer_id: str, reason: str) -> None:
        """Forget a peer: it leaves every namespace, its connection is closed."""
        node = self.node
        record = self.peers.remove(peer_id)
        self.replay.forget(peer_id)
        if record is None:
            return
        logger.info("node %s: peer %s gone (%s)", node.id, peer_id, reason)
        record.namespaces = {}
        node.member_changed(record, None)
        node.forget_address(record.address)

    # ------------------------------------------------------------------ inbound

    def admit(self, message: Message, envelope: Envelope) -> bool:
        """Decide whether a decoded message is from who it says and new; count it if not.

        With keys, the authenticated key decides who sent a message, not its header: an id
        belongs to the first key that proved it while its record lives. Without keys (an
        unauthenticated network, see the README's threat model) a live peer's record is
        never taken over by another session: that waits until the record expired. Then the
        replay guard (without keys it forgets a sender that had nothing accepted for a peer
        timeout, so a forged sequence number locks nobody out for good).
        """
        if self.authenticated:
            admitted = self._authenticated_sender(message, envelope.peer_key)
        else:
            admitted = self._same_session(message)
        if not admitted:
            return False
        reset = None if self.authenticated else self.node.peer_timeout
        if not self.replay.accept(
            message.sender, message.session, message.seq, time.monotonic(), reset
        ):
            self.node.drop("replay", message.sender)
            return False
        return True

    def _authenticated_sender(self, message: Message, peer_key: str | None) -> bool:
        drop = self.node.drop
        if peer_key is None:
            drop("unauthenticated")
            return False
        if isinstance(message.body, Hello):
            if message.body.public_key != peer_key:
                drop("key_mismatch", message.sender)
                return False
            if not self.peers.may_bind(peer_key, message.sender):
                drop("identity", message.sender)
                return False
            return True
        if self.peers.bound_id(peer_key) != message.sender:
            drop("identity", message.sender)
            return False
        return True

    def _same_session(self, message: Message) -> bool:
        """Without keys: a live record speaks only for the session that created it."""
        record = self.peers.get(message.sender)
        if record is None or not record.greeted or message.session == record.session:
            return True
        self.node.drop("identity", message.sender)
        return False

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
            record = self.peers.get(peer_id)
            known = record.host if record is not None else ""
            host = source or known or "127.0.0.1"
        return host, port

    def on_hello(self, message: Message, hello: Hello, envelope: Envelope) -> None:
        """Add or refresh the sender; reply when asked. An unusable Hello is dropped, counted."""
        node = self.node
        now = time.monotonic()
        resolved = self.resolve_host(message.sender, hello.address, envelope.peer_host)
        if resolved is None:
            node.drop("address", hello.address)
            return
        record = self.peers.get(message.sender)
        if record is not None and message.session > record.session and record.greeted:
            logger.info("node %s: peer %s restarted", node.id, message.sender)
            node.peer_restarted(message.sender)
        record = self.peers.upsert(message.sender, resolved[0], resolved[1], now)
        if record is None:
            node.drop("peer_table_full", message.sender)
            return
        if self.authenticated:
            assert envelope.peer_key is not None  # admitted
            self.peers.bind_key(envelope.peer_key, message.sender)
            record.public_key = envelope.peer_key
        changed = self.peers.apply_hello(record, hello, message.session)
        if not record.greeted and self.challenges.verifies(hello.echo, record.address):
            record.greeted = True  # it receives at the address it claims
        if hello.want_reply and node.namespace_infos():
            self._reply(record, now)  # before anything a new member triggers, in order
        node.member_changed(record, changed | set(record.namespaces))

    def _reply(self, record: PeerRecord, now: float) -> None:
        """Answer a Hello; to an unverified sender within a budget, asking once per
        heartbeat interval for the Hello that completes the handshake."""
        want = False
        if not record.greeted:
            if not self._unverified_replies.take(now, self.node.heartbeat_interval):
                self.node.drop("hello_budget", record.id)
                return
            want = self._hello_due(f"verify {record.id}", now)
        self._send(record, self.hello(want, record.address, record))

    def on_bye(self, message: Message) -> None:
        """The sender left one namespace (``message.namespace``) or the whole network."""
        record = self.peers.get(message.sender)
        if record is None:
            return
        if message.namespace:
            record.namespaces.pop(message.namespace, None)
            self.node.member_changed(record, {message.namespace})
        else:
            self.drop_peer(message.sender, "bye")


def _in_scope(peer_id: str, wanted: set[str] | None) -> bool:
    """True when ``peer_id`` may be greeted (``wanted`` is ``None``: everybody may)."""
    return wanted is None or peer_id in wanted


def _hint_versions(record: PeerRecord, beacon: Beacon) -> None:
    """Note the model versions a greeted peer's own beacon advertises (hints only)."""
    for ad in beacon.namespaces:
        record.hint_version(ad.name, ad.version)


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
