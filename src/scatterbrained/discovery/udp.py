"""UDP broadcast discovery: beacons to 127.255.255.255 (loopback) or to each subnet (LAN).

Every node binds one UDP socket to ``("", port)`` with ``SO_REUSEADDR`` (plus ``SO_REUSEPORT``
where the platform has it, which BSD/macOS need for a shared port) and ``SO_BROADCAST``. The
kernel delivers a *broadcast* datagram to every socket bound to the port (unlike unicast, which
goes to only one of them), so any number of nodes on one host hear every beacon; this is checked
by the unit tests with several receivers.

Scopes (see :class:`~.base.DiscoveryScope`):

* ``LOOPBACK``: beacons go to 127.255.255.255 only and never leave the machine; beacons
  from other hosts (the socket hears LAN broadcasts too) are dropped.
* ``LAN``: beacons go to the broadcast address of each IPv4 interface that is up, has a
  broadcast address and is not loopback (read with the ``SIOCGIFBRDADDR`` ioctl), and to
  127.255.255.255 so nodes on the same host find each other. The limited broadcast address
  255.255.255.255 is never used.
* ``OFF``: no socket, nothing sent, no events.

IPv4 only. Each interface contributes its primary IPv4 address's broadcast address.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import ipaddress
import logging
import random
import socket
import struct
import sys
import time
from collections.abc import Sequence
from types import TracebackType

from .._tasks import TaskSet
from ..errors import ConfigurationError, DiscoveryError, WireError
from ._queue import EventQueue
from .base import Beacon, DiscoveryEvent, DiscoveryScope, scope_from_env
from .codec import decode_beacon, encode_beacon
from .table import DEFAULT_CAPACITY, CandidateTable

__all__ = [
    "DEFAULT_PORT",
    "LOOPBACK_BROADCAST",
    "UdpDiscovery",
    "lan_broadcast_addresses",
]

logger = logging.getLogger(__name__)

#: The documented default UDP port of scatterbrained beacons.
DEFAULT_PORT = 47474
#: The loopback network's broadcast address; datagrams to it never leave the host.
LOOPBACK_BROADCAST = "127.255.255.255"

_IFF_UP, _IFF_BROADCAST, _IFF_LOOPBACK = 0x1, 0x2, 0x8
# (SIOCGIFFLAGS, SIOCGIFBRDADDR) per platform; struct ifreq is 16 name bytes + a sockaddr.
_IOCTLS = {"linux": (0x8913, 0x8919), "darwin": (0xC0206911, 0xC0206923)}
_IOCTLS["freebsd"] = _IOCTLS["darwin"]
_LAN_REFRESH_S = 10.0  # how long the list of interface broadcast addresses is reused
_UNSPECIFIED_HOSTS = frozenset({"", "0.0.0.0"})


def _usable_broadcast(address: str) -> bool:
    ip = ipaddress.IPv4Address(address)
    limited = ip == ipaddress.IPv4Address("255.255.255.255")
    return not (limited or ip.is_unspecified or ip.is_loopback or ip.is_multicast)


def _interface_broadcast(fd: int, name: str, ioctls: tuple[int, int]) -> str | None:
    import fcntl  # POSIX only; imported here so the module loads everywhere

    request = struct.pack("256s", name.encode()[:15])
    try:
        (flags,) = struct.unpack_from("H", fcntl.ioctl(fd, ioctls[0], request), 16)
        if not flags & _IFF_UP or not flags & _IFF_BROADCAST or flags & _IFF_LOOPBACK:
            return None
        address = socket.inet_ntoa(fcntl.ioctl(fd, ioctls[1], request)[20:24])
    except OSError:  # no such interface, or no IPv4 address on it
        return None
    return address if _usable_broadcast(address) else None


def lan_broadcast_addresses(interfaces: Sequence[str] | None = None) -> list[str]:
    """The subnet broadcast addresses of this host's IPv4 interfaces (reads only; sends nothing).

    Args:
        interfaces: interface names to consider; ``None`` means all of them.

    Returns:
        Distinct broadcast addresses of interfaces that are up, broadcast-capable and not
        loopback, in interface order. Never 255.255.255.255. Empty on platforms where
        interfaces cannot be read (only Linux, macOS and FreeBSD are supported).
    """
    platform = next((p for p in _IOCTLS if sys.platform.startswith(p)), None)
    if platform is None:
        logger.warning("cannot list interface broadcast addresses on %s", sys.platform)
        return []
    try:
        names = [name for _, name in socket.if_nameindex()] if interfaces is None else interfaces
    except OSError as exc:
        logger.warning("cannot list network interfaces: %s", exc)
        return []
    found: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            address = _interface_broadcast(probe.fileno(), name, _IOCTLS[platform])
            if address is not None and address not in found:
                found.append(address)
    return found


class _BeaconProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: UdpDiscovery) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self._owner._on_datagram(data, str(addr[0]))

    def error_received(self, exc: Exception) -> None:
        self._owner._stats["send_errors"] += 1
        logger.debug("discovery socket error: %s", exc)


class UdpDiscovery:
    """Broadcast beacons over UDP and report the nodes heard.

    Args:
        port: UDP port every node of the network uses (default :data:`DEFAULT_PORT`).
        scope: where beacons go; ``None`` reads ``SCATTERBRAINED_DISCOVERY`` (default LAN).
        interval: seconds between beacons (each jittered by +-10%).
        peer_timeout: seconds without a beacon after which a candidate is LOST; must exceed
            ``interval`` (a few intervals is sensible).
        capacity: most candidates kept; beacons from new node ids beyond it are dropped.
        interfaces: LAN scope only: interface names to broadcast on (``None``: all).
        queue_size: most events buffered for :meth:`next_event`; the oldest is dropped
            (and counted as ``dropped_queue_full``) when full.

    Raises:
        ConfigurationError: an argument is out of range, or the environment variable holds an
            unknown scope.
    """

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        *,
        scope: DiscoveryScope | None = None,
        interval: float = 1.0,
        peer_timeout: float = 5.0,
        capacity: int = DEFAULT_CAPACITY,
        interfaces: Sequence[str] | None = None,
        queue_size: int = 1024,
    ) -> None:
        if not 1 <= port <= 65535:
            raise ConfigurationError(f"UDP discovery port must be in 1..65535, got {port!r}")
        if not interval > 0 or not peer_timeout > interval:
            raise ConfigurationError(
                f"need 0 < interval < peer_timeout (seconds), got interval={interval!r}, "
                f"peer_timeout={peer_timeout!r}; use e.g. interval=1.0, peer_timeout=5.0"
            )
        if queue_size < 1:
            raise ConfigurationError(f"queue_size must be >= 1 events, got {queue_size!r}")
        self._port = port
        self._scope = scope_from_env(DiscoveryScope.LAN) if scope is None else scope
        self._interval = float(interval)
        self._interfaces = None if interfaces is None else tuple(interfaces)
        self._table = CandidateTable(peer_timeout=peer_timeout, capacity=capacity)
        self._events = EventQueue(queue_size, "UdpDiscovery")
        self._stats: collections.Counter[str] = collections.Counter()
        self._datagram: bytes | None = None
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks = TaskSet(f"udp-discovery:{port}")
        self._wake: asyncio.Event | None = None
        self._lan_targets: list[str] | None = None  # None: not read yet
        self._lan_checked_at = -float("inf")
        self._last_send = -float("inf")
        self._started = False
        self._closed = False

    @property
    def port(self) -> int:
        """The UDP port beacons are sent to and received on."""
        return self._port

    @property
    def scope(self) -> DiscoveryScope:
        """Where beacons go (resolved at construction)."""
        return self._scope

    @property
    def peer_timeout(self) -> float:
        """Seconds without a beacon after which a candidate is LOST."""
        return self._table.peer_timeout

    @property
    def stats(self) -> dict[str, int]:
        """Counters: ``received``, ``sent``, ``send_errors``, ``dropped_<reason>``, ``ignored_own``.

        Drop reasons: ``too_large``, ``bad_magic``, ``malformed``, ``bad_mode``,
        ``duplicate_namespace`` (bad datagrams), ``not_loopback`` (a datagram from another host
        in loopback scope), ``internal``, ``table_full``, ``stale_session``, ``queue_full``.
        """
        merged = self._stats + self._table.stats
        return {"received": 0, "sent": 0, **merged}

    @property
    def targets(self) -> list[str]:
        """The broadcast addresses beacons are sent to now (empty when OFF)."""
        if self._scope is DiscoveryScope.OFF:
            return []
        if self._scope is DiscoveryScope.LOOPBACK:
            return [LOOPBACK_BROADCAST]
        now = time.monotonic()
        if now - self._lan_checked_at >= _LAN_REFRESH_S:
            self._lan_checked_at = now
            found = lan_broadcast_addresses(self._interfaces)
            if not found and self._lan_targets != []:
                logger.warning("LAN discovery: no broadcast-capable interface; loopback only")
            self._lan_targets = found
        return [*(self._lan_targets or []), LOOPBACK_BROADCAST]

    def announce(self, beacon: Beacon | None) -> None:
        """Set what this node announces from now on; ``None`` makes it silent.

        A change of content is also sent at once (at most every ``interval / 4`` seconds).
        Call it from the event loop's thread.

        Raises:
            ConfigurationError: the beacon does not fit one datagram or a field is out of
                bounds (see :func:`~.codec.encode_beacon`).
        """
        if beacon is None:
            self._datagram = None
            return
        datagram = encode_beacon(beacon)
        self._table.own_id = beacon.node_id
        changed = datagram != self._datagram
        self._datagram = datagram
        if changed and self._wake is not None:
            self._wake.set()

    async def next_event(self) -> DiscoveryEvent:
        """Wait for and return the next SEEN / UPDATED / LOST event (cancellable).

        A node that closes is not told apart from one that went silent: it is LOST after
        :attr:`peer_timeout` seconds.

        Raises:
            DiscoveryError: this discovery is closed, or was closed while waiting.
        """
        return await self._events.get()

    def candidates(self) -> list[Beacon]:
        """The live candidates (at most ``capacity``), own node excluded."""
        return self._table.candidates()

    async def start(self) -> None:
        """Bind the socket and start the beacon task (no-op when OFF or already started).

        Raises:
            DiscoveryError: the socket cannot be bound, or this instance was closed.
        """
        if self._closed:
            raise DiscoveryError("this UdpDiscovery was closed; create a new one to restart")
        if self._started:
            return
        self._started = True
        if self._scope is DiscoveryScope.OFF:
            logger.info("UDP discovery is off: no beacons sent or heard")
            return
        sock = self._open_socket()
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _BeaconProtocol(self), sock=sock
            )
        except OSError as exc:
            sock.close()
            raise DiscoveryError(f"cannot use UDP discovery socket: {exc}") from exc
        self._transport = transport
        self._wake = asyncio.Event()
        self._tasks.spawn(self._run(), "beacons")
        logger.info("UDP discovery on port %d, scope %s", self._port, self._scope.value)

    async def close(self) -> None:
        """Stop the beacon task and close the socket. Idempotent.

        Buffered events are discarded and :meth:`next_event` raises from now on.
        """
        if self._closed:
            return
        self._closed = True
        self._events.close()
        await self._tasks.close()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    async def __aenter__(self) -> UdpDiscovery:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _open_socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                with contextlib.suppress(OSError):  # declared but unsupported by this kernel
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setblocking(False)
            sock.bind(("", self._port))
        except OSError as exc:
            sock.close()
            raise DiscoveryError(
                f"cannot bind UDP discovery socket to port {self._port}: {exc}; another "
                "program may hold it without SO_REUSEADDR, choose another port"
            ) from exc
        return sock

    async def _run(self) -> None:
        assert self._wake is not None
        min_gap = self._interval / 4
        while True:
            self._send_beacon()
            for event in self._table.expire(time.monotonic()):
                self._push(event)
            timeout = self._interval * random.uniform(0.9, 1.1)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()
            delay = self._last_send + min_gap - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def _send_beacon(self) -> None:
        datagram, transport = self._datagram, self._transport
        if datagram is None or transport is None:
            return
        for target in self.targets:
            try:
                transport.sendto(datagram, (target, self._port))
                self._stats["sent"] += 1
            except OSError as exc:
                self._stats["send_errors"] += 1
                logger.debug("beacon to %s failed: %s", target, exc)
        self._last_send = time.monotonic()

    def _on_datagram(self, data: bytes, source: str) -> None:
        self._stats["received"] += 1
        if self._scope is DiscoveryScope.LOOPBACK and not source.startswith("127."):
            self._stats["dropped_not_loopback"] += 1  # the socket also hears LAN broadcasts
            return
        try:
            beacon = decode_beacon(data)
        except WireError as exc:
            self._stats[f"dropped_{exc.reason}"] += 1
            logger.debug("dropped datagram from %s: %s", source, exc)
            return
        except Exception:  # a decoder bug must not reach the event loop
            self._stats["dropped_internal"] += 1
            logger.exception("unexpected error decoding a datagram from %s", source)
            return
        if beacon.host in _UNSPECIFIED_HOSTS:
            beacon = dataclasses.replace(beacon, host=source)
        event = self._table.observe(beacon, time.monotonic())
        if event is not None:
            self._push(event)

    def _push(self, event: DiscoveryEvent) -> None:
        if self._events.push(event):
            self._stats["dropped_queue_full"] += 1
