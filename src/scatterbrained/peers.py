"""The node's table of known peers: addresses, namespaces, liveness, keys and replay state.

Pure bookkeeping, no I/O: the node feeds it what arrives and asks it who is alive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .types import Identity, OperatingMode
from .wire.messages import Hello, NamespaceInfo

__all__ = ["PeerRecord", "PeerTable", "ReplayGuard", "split_address"]


def split_address(address: str) -> tuple[str, int]:
    """Split ``tcp://host:port`` into ``(host, port)``; the host may be empty.

    Raises:
        ValueError: the address is not ``tcp://host:port`` with a port in 1..65535.
    """
    if not address.startswith("tcp://"):
        raise ValueError(f"expected an address like tcp://host:port, got {address!r}")
    host, sep, port_text = address[len("tcp://") :].rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected an address like tcp://host:port, got {address!r}")
    return host.strip("[]"), int(port_text)


@dataclass
class PeerRecord:
    """What the node knows about one peer.

    Attributes:
        id: the peer's node id.
        host: host of its inbound socket.
        port: port of its inbound socket.
        public_key: its CurveZMQ public key (Z85) or ``None``.
        session: its current session id.
        namespaces: namespace name -> what it told us (mode, model version), from its Hello.
        version_hints: namespace name -> a newer model version seen since in its beacons
            (same session) or updates. Hints only rank peers for ``sync_model``; a version
            change alone is not worth a Hello to every peer (that would be O(N^2) messages).
        last_seen: monotonic time of the last sign of life (seconds).
        greeted: True once it proved it receives at its address: a Hello from it echoed
            the challenge this node sent there (see :class:`~scatterbrained.wire.Hello`).
            Only greeted peers are namespace members, get weights, answers or heartbeats.
        challenge_in: the last challenge it sent us (echoed in our Hellos to it).
    """

    id: str
    host: str
    port: int
    public_key: str | None = None
    session: int = 0
    namespaces: dict[str, NamespaceInfo] = field(default_factory=dict)
    version_hints: dict[str, int] = field(default_factory=dict)
    last_seen: float = 0.0
    greeted: bool = False
    challenge_in: int = 0

    @property
    def address(self) -> str:
        """The peer's inbound address, ``tcp://host:port``."""
        return f"tcp://{self.host}:{self.port}"

    def identity(self, namespace: str) -> Identity:
        """The peer as an :class:`Identity` in ``namespace``."""
        return Identity(self.id, namespace, self.host, self.port)

    def version_in(self, namespace: str) -> int | None:
        """The newest model version known for ``namespace`` (Hello or hint), or ``None``."""
        info = self.namespaces.get(namespace)
        if info is None:
            return None
        return max(info.version, self.version_hints.get(namespace, -1))

    def hint_version(self, namespace: str, version: int) -> None:
        """Note a version seen in a beacon or an update (only for namespaces it is in)."""
        if namespace in self.namespaces and version > self.version_hints.get(namespace, -1):
            self.version_hints[namespace] = version

    def weights_mode_in(self, namespace: str) -> OperatingMode | None:
        """The peer's mode as far as weights go: without a model it sends none."""
        mode = self.mode_in(namespace)
        info = self.namespaces.get(namespace)
        if mode is None or info is None or info.has_model or not mode.sends:
            return mode
        return OperatingMode.LEECHING if mode.receives else OperatingMode.OFFLINE

    def mode_in(self, namespace: str) -> OperatingMode | None:
        """The peer's mode in ``namespace`` as last told, or ``None`` if it is not there."""
        info = self.namespaces.get(namespace)
        if info is None:
            return None
        try:
            return OperatingMode.parse(info.mode)
        except ValueError:
            return None


class ReplayGuard:
    """Rejects replayed or reordered-old messages using (session, seq) per sender.

    A sender's session id is its start time in nanoseconds, so a restarted sender has a larger
    session; anything from an older session, or a sequence number not larger than the last
    accepted one in the current session, is a replay.

    Without keys anyone can forge a sender's (session, seq), so a forged jump ahead could
    make every later message of the real sender look like a replay. ``reset_after`` bounds
    that: once nothing from a sender was accepted for that many seconds while its messages
    keep coming, its state starts over. With keys (authenticated senders) leave it ``None``.

    Args:
        capacity: senders remembered (the oldest is forgotten past it).
    """

    def __init__(self, capacity: int = 65536) -> None:
        self._last: dict[str, tuple[int, int, float]] = {}
        self._capacity = capacity

    def accept(
        self,
        sender: str,
        session: int,
        seq: int,
        now: float = 0.0,
        reset_after: float | None = None,
    ) -> bool:
        """Return True and remember (session, seq) when it is new; False for a replay.

        Args:
            sender: the sender's node id.
            session: the message's session.
            seq: its sequence number within the session.
            now: monotonic time in seconds (only used with ``reset_after``).
            reset_after: seconds without an accepted message from ``sender`` after which its
                state is forgotten (for unauthenticated senders); ``None``: never.
        """
        last = self._last.get(sender)
        if last is not None:
            last_session, last_seq, accepted_at = last
            stale = reset_after is not None and now - accepted_at > reset_after
            replay = session < last_session or (session == last_session and seq <= last_seq)
            if replay and not stale:
                return False
        elif len(self._last) >= self._capacity:
            self._last.pop(next(iter(self._last)))
        self._last[sender] = (session, seq, now)
        return True

    def forget(self, sender: str) -> None:
        """Forget ``sender`` (it left or expired): its next session starts afresh."""
        self._last.pop(sender, None)


class PeerTable:
    """Known peers by id, plus the binding of authenticated keys to ids.

    Args:
        capacity: maximum number of peers kept; Hellos from further unknown ids are refused.
    """

    def __init__(self, capacity: int = 4096) -> None:
        self._peers: dict[str, PeerRecord] = {}
        self._key_to_id: dict[str, str] = {}
        self._id_to_key: dict[str, str] = {}
        self._capacity = capacity

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, peer_id: object) -> bool:
        return peer_id in self._peers

    def get(self, peer_id: str) -> PeerRecord | None:
        """The record of ``peer_id`` or ``None``."""
        return self._peers.get(peer_id)

    def records(self) -> list[PeerRecord]:
        """All records, sorted by id."""
        return [self._peers[k] for k in sorted(self._peers)]

    def bound_id(self, key: str) -> str | None:
        """The node id first authenticated with ``key``, or ``None``."""
        return self._key_to_id.get(key)

    def may_bind(self, key: str, peer_id: str) -> bool:
        """True when neither ``key`` nor ``peer_id`` is bound to something else."""
        return (
            self._key_to_id.get(key, peer_id) == peer_id
            and self._id_to_key.get(peer_id, key) == key
        )

    def bind_key(self, key: str, peer_id: str) -> bool:
        """Bind an authenticated key and a node id to each other, both ways.

        An id belongs to the first key that proved it while its record lives (the binding
        ends with :meth:`remove`); a key speaks for one id only.

        Returns:
            False (and nothing changes) when either is bound to something else.
        """
        if not self.may_bind(key, peer_id):
            return False
        self._key_to_id[key] = peer_id
        self._id_to_key[peer_id] = key
        return True

    def upsert(self, peer_id: str, host: str, port: int, now: float) -> PeerRecord | None:
        """Create or refresh the record of ``peer_id``; ``None`` when the table is full."""
        record = self._peers.get(peer_id)
        if record is None:
            if len(self._peers) >= self._capacity:
                return None
            record = PeerRecord(peer_id, host, port, last_seen=now)
            self._peers[peer_id] = record
        elif host and (host, port) != (record.host, record.port):
            record.host, record.port = host, port
            record.greeted = False  # a new address must answer a challenge again
        record.last_seen = max(record.last_seen, now)
        return record

    def apply_hello(self, record: PeerRecord, hello: Hello, session: int) -> set[str]:
        """Update a record from a Hello; return the namespaces whose state changed."""
        before = dict(record.namespaces)
        record.namespaces = {info.name: info for info in hello.namespaces}
        if session > record.session:
            record.version_hints.clear()  # a restart: its versions start over
        for name in [n for n in record.version_hints if n not in record.namespaces]:
            del record.version_hints[name]
        record.public_key = hello.public_key or record.public_key
        record.session = max(record.session, session)
        record.challenge_in = hello.challenge or record.challenge_in
        changed = {n for n in set(before) | set(record.namespaces) if n not in before}
        changed |= {n for n in before if n not in record.namespaces}
        changed |= {
            n
            for n in before
            if n in record.namespaces
            and (before[n].mode, before[n].has_model)
            != (record.namespaces[n].mode, record.namespaces[n].has_model)
        }
        return changed

    def touch(self, peer_id: str, now: float) -> None:
        """Record a sign of life from ``peer_id`` (no-op for unknown ids)."""
        record = self._peers.get(peer_id)
        if record is not None:
            record.last_seen = max(record.last_seen, now)

    def remove(self, peer_id: str) -> PeerRecord | None:
        """Forget ``peer_id`` (and its key binding) and return its record."""
        key = self._id_to_key.pop(peer_id, None)
        if key is not None:
            self._key_to_id.pop(key, None)
        return self._peers.pop(peer_id, None)

    def expired(self, now: float, timeout: float) -> list[PeerRecord]:
        """Records with no sign of life for more than ``timeout`` seconds."""
        return [r for r in self._peers.values() if now - r.last_seen > timeout]
