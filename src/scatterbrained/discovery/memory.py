"""In-process discovery twin: the same semantics as :mod:`.udp`, without sockets.

A :class:`MemoryDiscoveryHub` holds the latest beacon of every member, ordered by a revision
number. Each :class:`MemoryDiscovery` polls the hub every ``interval`` and reads only the
entries changed since its last poll, so a tick costs O(changes), not O(members): hundreds of
nodes in one process stay cheap.

A member that goes silent (``announce(None)``) is reported LOST by the others
``peer_timeout`` seconds later, as a node whose UDP beacons stop would be; a member that
announces again before then is never reported LOST. A member that *closes* (a node closing
or crashing, :meth:`~scatterbrained.node.Node.abort` included) is reported LOST to every other
member at once, during its ``close()``: the hub knows, so simulations need not wait out a
wall-clock timeout to notice a crash. That is the one place the twin knows more than UDP.

Announced beacons pass through the UDP codec (:func:`~.codec.encode_beacon`), so what the
twin accepts is exactly what UDP discovery accepts.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable
from types import TracebackType

from .._tasks import TaskSet
from ..errors import ConfigurationError, DiscoveryError
from ._queue import EventQueue
from .base import Beacon, DiscoveryEvent
from .codec import decode_beacon, encode_beacon
from .table import DEFAULT_CAPACITY, CandidateTable

__all__ = ["MemoryDiscovery", "MemoryDiscoveryHub"]


@dataclasses.dataclass(frozen=True)
class _HubEntry:
    member: int
    beacon: Beacon
    withdrawn_at: float | None  # None while the member announces this beacon
    revision: int
    closed: bool = False  # the member left the hub (its discovery was closed)


class MemoryDiscoveryHub:
    """The shared medium of :class:`MemoryDiscovery` instances (one per simulated network).

    Args:
        clock: seconds on a monotonic clock; pass a fake clock to drive time in tests and
            simulations (then call :meth:`MemoryDiscovery.tick` yourself).
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._entries: collections.OrderedDict[int, _HubEntry] = collections.OrderedDict()
        self._seen_revision: dict[int, int] = {}  # member -> last revision it polled
        self._departure_listeners: dict[int, Callable[[Beacon], None]] = {}
        self._revision = 0
        self._next_member = 0
        self._tombstones = 0

    @property
    def revision(self) -> int:
        """Increases by one with every published change."""
        return self._revision

    def __len__(self) -> int:
        """Number of members announcing now."""
        return len(self._entries) - self._tombstones

    def join(self, on_departure: Callable[[Beacon], None] | None = None) -> int:
        """Register a new member; returns its key.

        Args:
            on_departure: called with the last beacon of every *other* member that leaves
                (synchronously, from :meth:`leave`), while this member is registered.
        """
        self._next_member += 1
        self._seen_revision[self._next_member] = self._revision
        if on_departure is not None:
            self._departure_listeners[self._next_member] = on_departure
        return self._next_member

    def leave(self, member: int) -> None:
        """Withdraw ``member``'s beacon, unregister it and tell the other members at once."""
        self._seen_revision.pop(member, None)
        self._departure_listeners.pop(member, None)
        old = self._entries.get(member)
        if old is None or old.closed:
            return
        if old.withdrawn_at is None:
            self._tombstones += 1
        withdrawn_at = self.clock() if old.withdrawn_at is None else old.withdrawn_at
        self._revision += 1
        self._entries[member] = _HubEntry(member, old.beacon, withdrawn_at, self._revision, True)
        self._entries.move_to_end(member)
        self._prune_tombstones()
        for listener in list(self._departure_listeners.values()):
            listener(old.beacon)

    def publish(self, member: int, beacon: Beacon | None) -> None:
        """Set ``member``'s beacon; ``None`` withdraws it (a no-op when nothing is announced)."""
        old = self._entries.get(member)
        if old is not None and old.closed:
            return
        if beacon is None:
            if old is None or old.withdrawn_at is not None:
                return
            self._tombstones += 1
            entry = _HubEntry(member, old.beacon, self.clock(), self._revision + 1)
        else:
            if old is not None and old.withdrawn_at is None and old.beacon == beacon:
                return
            if old is not None and old.withdrawn_at is not None:
                self._tombstones -= 1
            entry = _HubEntry(member, beacon, None, self._revision + 1)
        self._revision += 1
        self._entries[member] = entry
        self._entries.move_to_end(member)
        self._prune_tombstones()

    def changes_since(self, member: int, revision: int) -> list[_HubEntry]:
        """Entries changed after ``revision`` (oldest first); records that ``member`` saw them."""
        changed: list[_HubEntry] = []
        for entry in reversed(self._entries.values()):
            if entry.revision <= revision:
                break
            changed.append(entry)
        if member in self._seen_revision:
            self._seen_revision[member] = self._revision
        changed.reverse()
        return changed

    def _prune_tombstones(self) -> None:
        """Drop withdrawals every member has polled past (checked when they pile up)."""
        if self._tombstones <= 64 + len(self):
            return
        oldest_seen = min(self._seen_revision.values(), default=self._revision)
        for member, entry in list(self._entries.items()):
            if entry.withdrawn_at is not None and entry.revision <= oldest_seen:
                del self._entries[member]
                self._tombstones -= 1


class MemoryDiscovery:
    """Discovery through a :class:`MemoryDiscoveryHub`; implements the ``Discovery`` Protocol.

    Args:
        hub: the shared hub of the simulated network.
        interval: seconds between polls of the hub.
        peer_timeout: seconds after a member goes silent until it is LOST (> 0); a member
            that closes is LOST at once.
        capacity: most candidates kept; members beyond it are ignored until room frees up.
        queue_size: most events buffered for :meth:`next_event`; the oldest is dropped (and
            counted as ``dropped_queue_full``) when full.
        source_host: the host filled into beacons whose host is empty (UDP would use the
            datagram's source address).

    Raises:
        ConfigurationError: an argument is out of range.
    """

    def __init__(
        self,
        hub: MemoryDiscoveryHub,
        *,
        interval: float = 0.1,
        peer_timeout: float = 5.0,
        capacity: int = DEFAULT_CAPACITY,
        queue_size: int = 1024,
        source_host: str = "127.0.0.1",
    ) -> None:
        if not interval > 0 or queue_size < 1:
            raise ConfigurationError(
                f"need interval > 0 seconds and queue_size >= 1, got {interval!r}, {queue_size!r}"
            )
        self._hub = hub
        self._interval = float(interval)
        self._source_host = source_host
        self._table = CandidateTable(peer_timeout=peer_timeout, capacity=capacity)
        self._events = EventQueue(queue_size, "MemoryDiscovery")
        self._stats: collections.Counter[str] = collections.Counter()
        # node id -> (time its LOST is due, session of the beacon withdrawn)
        self._pending_lost: dict[str, tuple[float, int]] = {}
        self._beacon: Beacon | None = None
        self._member: int | None = None
        self._revision = 0
        self._resync = True  # read every hub entry at the next tick
        self._overflowed = False  # the table dropped a member for want of room
        self._tasks = TaskSet("memory-discovery")
        self._closed = False

    @property
    def peer_timeout(self) -> float:
        """Seconds without a beacon after which a candidate is LOST."""
        return self._table.peer_timeout

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``received``, ``sent``, ``dropped_<reason>``, ``ignored_own``."""
        return {"received": 0, "sent": 0, **(self._stats + self._table.stats)}

    def announce(self, beacon: Beacon | None) -> None:
        """Set what this node announces from now on; ``None`` makes it silent.

        Raises:
            ConfigurationError: the beacon would not fit one UDP datagram or a field is out of
                bounds (see :func:`~.codec.encode_beacon`).
        """
        if beacon is not None:
            beacon = decode_beacon(encode_beacon(beacon))
            self._table.own_id = beacon.node_id
        self._beacon = beacon
        if self._member is not None:
            self._hub.publish(self._member, beacon)
            if beacon is not None:
                self._stats["sent"] += 1

    async def next_event(self) -> DiscoveryEvent:
        """Wait for and return the next SEEN / UPDATED / LOST event (cancellable).

        Raises:
            DiscoveryError: this discovery is closed, or was closed while waiting.
        """
        return await self._events.get()

    def candidates(self) -> list[Beacon]:
        """The live candidates (at most ``capacity``), own node excluded."""
        return self._table.candidates()

    async def start(self) -> None:
        """Join the hub, publish the current beacon and start polling (no-op when started).

        Raises:
            DiscoveryError: this instance was closed.
        """
        if self._closed:
            raise DiscoveryError("this MemoryDiscovery was closed; create a new one to restart")
        if self._member is not None:
            return
        self._member = self._hub.join(self._on_departure)
        self.announce(self._beacon)
        self.tick()
        self._tasks.spawn(self._run(), f"poll:{self._member}")

    async def close(self) -> None:
        """Stop polling and leave the hub: the other members report this node LOST at once.

        Buffered events are discarded and :meth:`next_event` raises from now on. Idempotent.
        """
        if self._closed:
            return
        self._closed = True
        self._events.close()
        await self._tasks.close()
        if self._member is not None:
            self._hub.leave(self._member)

    async def __aenter__(self) -> MemoryDiscovery:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def tick(self) -> None:
        """Read the hub's changes and report due LOST events now.

        The background task calls this every ``interval``; simulators with a fake hub clock
        may call it directly. Does nothing before :meth:`start` and after :meth:`close`.
        """
        if self._member is None or self._closed:
            return
        now = self._hub.clock()
        since = 0 if self._resync else self._revision
        self._resync = False
        self._revision = self._hub.revision
        dropped_before = self._table.stats["dropped_table_full"]
        for entry in self._hub.changes_since(self._member, since):
            if entry.member != self._member:
                self._apply(entry, now)
        if self._table.stats["dropped_table_full"] > dropped_before:
            self._overflowed = True
        due = [node_id for node_id, (deadline, _) in self._pending_lost.items() if deadline < now]
        for node_id in due:
            _, session = self._pending_lost.pop(node_id)
            self._lose(node_id, session)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.tick()

    def _on_departure(self, beacon: Beacon) -> None:
        """Another member closed: report it LOST now (the hub calls this from ``leave``)."""
        if self._closed:
            return
        self._pending_lost.pop(beacon.node_id, None)
        self._lose(beacon.node_id, beacon.session)

    def _lose(self, node_id: str, session: int) -> None:
        """Remove ``node_id`` and push LOST, unless a newer session of it is known."""
        known = self._table.get(node_id)
        if known is None or known.session > session:
            return
        event = self._table.remove(node_id)
        if event is not None:
            self._push(event)
            if self._overflowed:  # room freed: members dropped earlier may fit now
                self._resync, self._overflowed = True, False

    def _apply(self, entry: _HubEntry, now: float) -> None:
        node_id = entry.beacon.node_id
        if entry.closed:
            self._pending_lost.pop(node_id, None)
            self._lose(node_id, entry.beacon.session)
            return
        if entry.withdrawn_at is not None:
            if node_id in self._table:
                deadline = entry.withdrawn_at + self._table.peer_timeout
                self._pending_lost[node_id] = (deadline, entry.beacon.session)
            return
        self._stats["received"] += 1
        beacon = entry.beacon
        if not beacon.host:
            beacon = dataclasses.replace(beacon, host=self._source_host)
        self._pending_lost.pop(node_id, None)
        event = self._table.observe(beacon, now)
        if event is not None:
            self._push(event)

    def _push(self, event: DiscoveryEvent) -> None:
        if self._events.push(event):
            self._stats["dropped_queue_full"] += 1
