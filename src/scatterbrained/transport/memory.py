"""In-process twin of the ZeroMQ transport, for unit tests and fast simulation.

Transports attached to one :class:`MemoryNetwork` reach each other by address
(``tcp://memory:<n>``). The network can delay messages, drop a seeded random fraction, and cut
links between groups of addresses (:meth:`MemoryNetwork.partition`). Frames are copied into
``bytes`` once on send (so senders may reuse their buffers, as with ZeroMQ) and delivered as
read-only memoryviews.

CurveZMQ is simulated: a transport with keys accepts only senders that have keys, named its
public key as ``server_key``, and pass its allow-list; :attr:`Envelope.peer_key` is then the
sender's public key. A transport without keys accepts only senders without keys.

``send`` follows the contract of :class:`~scatterbrained.transport.base.Transport` (the same
contract tests run against both twins):

* nobody at the address (never started or closed), a cut link, or a refused key: ``False``
  at once (ZeroMQ, which cannot know, waits the timeout), counted in ``stats.send_dropped``
  and in ``network.stats`` (``lost``, ``partitioned``, ``refused``);
* a full receiver queue: ``send`` waits up to the timeout for room, as ZeroMQ does, and
  returns ``False`` (``stats.send_dropped``, ``network.stats.overflow``) if none came;
* a random drop (``drop_rate``), a frame over the receiver's ``max_frame_bytes``, or a
  receiver that is gone or full when a delayed message lands: ``True`` (the message was on
  its way), counted in ``network.stats`` only.
"""

from __future__ import annotations

import asyncio
import collections
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import NoReturn

from ..errors import ConfigurationError, SecurityError, TransportError
from .base import DEFAULT_MAX_FRAME_BYTES, Envelope, Frame, TransportStats
from .security import KeyedEndpoint, KeyPair, KeyPolicy
from .zmq_support import parse_tcp_address

__all__ = ["MemoryNetwork", "MemoryNetworkStats", "MemoryTransport"]

#: Seconds ``send`` waits for room in a full queue by default (as ``ZmqTransport``).
DEFAULT_SEND_TIMEOUT = 5.0


@dataclass
class MemoryNetworkStats:
    """What happened to messages on a :class:`MemoryNetwork` (monotonic counters).

    Attributes:
        delivered: messages put in a receiver's queue.
        lost: messages to an address nobody holds (never started, or closed).
        dropped: messages dropped at random (``drop_rate``).
        partitioned: messages across a cut link.
        refused: messages whose (simulated) authentication failed.
        overflow: messages dropped because the receiver's queue was full.
        oversized: messages dropped because a frame exceeded the receiver's
            ``max_frame_bytes``.
    """

    delivered: int = 0
    lost: int = 0
    dropped: int = 0
    partitioned: int = 0
    refused: int = 0
    overflow: int = 0
    oversized: int = 0


class MemoryNetwork:
    """The hub that in-memory transports share.

    Args:
        delay: seconds every message spends in flight (``0`` delivers during ``send``).
        drop_rate: probability in ``[0, 1]`` that a message is silently lost.
        seed: seed of the random drops, for reproducible runs.

    ``delay`` and ``drop_rate`` are plain attributes and may be changed at any time.

    Raises:
        ConfigurationError: ``delay`` is negative or ``drop_rate`` is outside ``[0, 1]``.
    """

    def __init__(self, delay: float = 0.0, drop_rate: float = 0.0, seed: int | None = None) -> None:
        if not delay >= 0:
            raise ConfigurationError(f"delay must be >= 0 seconds, got {delay!r}")
        if not 0.0 <= drop_rate <= 1.0:
            raise ConfigurationError(f"drop_rate must be in [0, 1], got {drop_rate!r}")
        self.delay = delay
        self.drop_rate = drop_rate
        self.stats = MemoryNetworkStats()
        self._rng = random.Random(seed)
        self._transports: dict[str, MemoryTransport] = {}
        self._cuts: list[tuple[frozenset[str], frozenset[str]]] = []
        self._next_port = 1

    @property
    def addresses(self) -> frozenset[str]:
        """Addresses of the transports currently attached."""
        return frozenset(self._transports)

    def partition(self, group_a: Iterable[str], group_b: Iterable[str]) -> None:
        """Cut every link between an address of ``group_a`` and one of ``group_b`` (both ways).

        Cuts add up until :meth:`heal`. Messages already in flight are checked on arrival.
        """
        self._cuts.append((frozenset(group_a), frozenset(group_b)))

    def heal(self) -> None:
        """Remove every cut made by :meth:`partition`."""
        self._cuts.clear()

    def is_cut(self, source: str, destination: str) -> bool:
        """True when a partition separates ``source`` from ``destination``."""
        return any(
            (source in a and destination in b) or (source in b and destination in a)
            for a, b in self._cuts
        )

    def _attach(self, transport: MemoryTransport, host: str, port: int | None) -> int:
        if port is None or port == 0:
            while f"tcp://{host}:{self._next_port}" in self._transports:
                self._next_port += 1
            port = self._next_port
            self._next_port += 1
        address = f"tcp://{host}:{port}"
        if address in self._transports:
            raise TransportError(
                f"cannot bind {address}: address already in use on this MemoryNetwork; pick "
                "another port or pass port=None"
            )
        self._transports[address] = transport
        return port

    def _detach(self, address: str) -> None:
        self._transports.pop(address, None)

    def _reachable(
        self, source: MemoryTransport, source_address: str, address: str, server_key: str | None
    ) -> tuple[MemoryTransport | None, str | None]:
        """The receiver at ``address`` and the sender's key it sees, or ``(None, None)``.

        A missing receiver, a cut link and a refused key are counted in :attr:`stats`.
        """
        receiver = self._transports.get(address)
        if receiver is None:
            self.stats.lost += 1
            return None, None
        if self.is_cut(source_address, address):
            self.stats.partitioned += 1
            return None, None
        accepted, peer_key = receiver._authenticate(source.public_key, server_key)
        if not accepted:
            self.stats.refused += 1
            return None, None
        return receiver, peer_key

    def _drop_at_random(self) -> bool:
        if self.drop_rate > 0 and self._rng.random() < self.drop_rate:
            self.stats.dropped += 1
            return True
        return False

    def _land(
        self,
        source: MemoryTransport,
        source_address: str,
        address: str,
        frames: list[bytes],
        server_key: str | None,
    ) -> None:
        """A delayed message arrives: check the route again, then queue it or count why not."""
        receiver, peer_key = self._reachable(source, source_address, address, server_key)
        if receiver is None:
            return
        envelope = receiver._accept(frames, peer_key, source._host)
        if envelope is None:
            return
        if receiver._offer(envelope):
            self.stats.delivered += 1
        else:
            self.stats.overflow += 1


class MemoryTransport(KeyedEndpoint):
    """A :class:`~scatterbrained.transport.base.Transport` that lives in a MemoryNetwork.

    Args:
        network: the hub shared with the peers.
        host: host part of the address (``tcp://<host>:<port>``); also what receivers see as
            :attr:`Envelope.peer_host`.
        port: port to take; ``None`` or ``0`` takes the next free number.
        keys: this endpoint's key pair (enables the CurveZMQ simulation).
        allowed_keys: sender keys accepted (needs ``keys``); ``None`` accepts any key.
        recv_hwm: messages held in the inbound queue; senders wait while it is full.
        max_frame_bytes: largest inbound frame in bytes; messages with a larger frame are
            dropped on arrival (``network.stats.oversized``).
        send_timeout: seconds ``send`` waits for room in a full queue by default.

    Raises:
        ConfigurationError: ``recv_hwm`` or ``max_frame_bytes`` < 1, ``send_timeout`` <= 0,
            or ``allowed_keys`` without ``keys``.
        SecurityError: a key is malformed.
    """

    def __init__(
        self,
        network: MemoryNetwork,
        host: str = "memory",
        port: int | None = None,
        *,
        keys: KeyPair | None = None,
        allowed_keys: Iterable[str] | None = None,
        recv_hwm: int = 1000,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        send_timeout: float = DEFAULT_SEND_TIMEOUT,
    ) -> None:
        if recv_hwm < 1:
            raise ConfigurationError(f"recv_hwm must be >= 1 message, got {recv_hwm}")
        if max_frame_bytes < 1:
            raise ConfigurationError(f"max_frame_bytes must be >= 1, got {max_frame_bytes}")
        if not send_timeout > 0:
            raise ConfigurationError(f"send_timeout must be > 0 seconds, got {send_timeout!r}")
        if allowed_keys is not None and keys is None:
            raise ConfigurationError("allowed_keys needs keys: pass keys=KeyPair.generate()")
        self._network = network
        self._host = host
        self._port = port
        self._keys = keys
        self._policy = KeyPolicy(None if allowed_keys is None else set(allowed_keys))
        self._recv_hwm = recv_hwm
        self._max_frame_bytes = max_frame_bytes
        self._send_timeout = float(send_timeout)
        self._inbox: collections.deque[Envelope] = collections.deque()
        self._stats = TransportStats()
        self._bound_port: int | None = None
        self._closed = False
        # Wake-ups, created only while someone waits and replaced once set (broadcast):
        self._arrival: asyncio.Event | None = None  # a message arrived, or closed
        self._room: asyncio.Event | None = None  # a message left the inbox, or closed
        self._closing = asyncio.Event()  # set by close (ends this transport's sends)
        self._forgot: asyncio.Event | None = None  # forget() was called
        self._forgotten: dict[str, int] = {}  # address -> forget() calls so far

    @property
    def network(self) -> MemoryNetwork:
        """The hub this transport is attached to."""
        return self._network

    @property
    def address(self) -> str:
        """This transport's address, ``tcp://<host>:<port>`` (between start and close).

        Raises:
            TransportError: the transport is not started, or closed.
        """
        if self._bound_port is None:
            self._raise_not_open()
        return f"tcp://{self._host}:{self._bound_port}"

    @property
    def bound_port(self) -> int | None:
        """The port taken on the network (``None`` before start and after close)."""
        return self._bound_port

    @property
    def stats(self) -> TransportStats:
        """Message and byte counters (same meaning as for the ZeroMQ transport)."""
        return self._stats

    async def start(self) -> None:
        """Attach to the network under this transport's address. Idempotent while started.

        Raises:
            TransportError: the address is taken, or the transport was closed.
        """
        if self._closed:
            raise TransportError("this transport is closed; create a new MemoryTransport")
        if self._bound_port is None:
            self._bound_port = self._network._attach(self, self._host, self._port)

    async def close(self) -> None:
        """Detach from the network and discard queued messages. Idempotent.

        A pending :meth:`recv` raises ``TransportError``; a pending :meth:`send` returns
        ``False``.
        """
        if self._closed:
            return
        if self._bound_port is not None:
            self._network._detach(self.address)
        self._closed = True
        self._bound_port = None
        self._inbox.clear()
        self._closing.set()
        self._wake_receivers()
        self._wake_senders()

    async def __aenter__(self) -> MemoryTransport:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(
        self,
        address: str,
        frames: Sequence[Frame],
        *,
        server_key: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Copy ``frames`` once and route them to ``address``.

        Args:
            address: the peer's address, ``tcp://host:port``.
            frames: the frames (copied: the caller may reuse its buffers).
            server_key: the peer's public key (Z85); required when keys are configured.
            timeout: seconds to wait for room while the receiver's queue is full; ``None``
                uses ``send_timeout``.

        Returns:
            ``True`` when queued (or in flight with a delay, or dropped at random);
            ``False`` when nobody holds ``address``, the link is cut, the receiver refuses
            our key, its queue stayed full for ``timeout``, the address is malformed, or
            ``address`` was forgotten or this transport closed while waiting.

        Raises:
            TransportError: not started or closed, or ``frames`` is empty.
            SecurityError: keys are configured and ``server_key`` is missing.
        """
        source_address = self._require_open()
        if not frames:
            raise TransportError("cannot send an empty message: pass at least one frame")
        if self._keys is not None and server_key is None:
            raise SecurityError(
                f"sending to {address} needs the peer's public key (server_key=...) "
                "because this transport uses keys"
            )
        if parse_tcp_address(address) is None:
            extra = self._stats.extra
            extra["send_bad_address"] = extra.get("send_bad_address", 0) + 1
            return False
        copies = [memoryview(frame).tobytes() for frame in frames]
        wait = self._send_timeout if timeout is None else max(0.0, timeout)
        if not await self._route(source_address, address, copies, server_key, wait):
            self._stats.send_dropped += 1
            return False
        self._stats.messages_out += 1
        self._stats.bytes_out += sum(len(c) for c in copies)
        return True

    async def recv(self) -> Envelope:
        """Wait for and return the next inbound message (cancellable, loses nothing).

        Raises:
            TransportError: not started or closed, or closed while waiting.
        """
        self._require_open()
        while not self._inbox:
            if self._arrival is None:
                self._arrival = asyncio.Event()
            await self._arrival.wait()
            if self._closed:
                raise TransportError("the transport was closed while receiving")
        envelope = self._inbox.popleft()
        self._wake_senders()
        self._stats.messages_in += 1
        self._stats.bytes_in += envelope.nbytes
        return envelope

    def forget(self, address: str) -> None:
        """End sends to ``address`` still waiting for room (they return ``False``).

        There is no connection to close in memory; the next send routes afresh.
        """
        self._forgotten[address] = self._forgotten.get(address, 0) + 1
        if self._forgot is not None:
            self._forgot.set()
            self._forgot = None

    # ----------------------------------------------------------------- internals

    async def _route(
        self,
        source_address: str,
        address: str,
        frames: list[bytes],
        server_key: str | None,
        wait: float,
    ) -> bool:
        network = self._network
        receiver, peer_key = network._reachable(self, source_address, address, server_key)
        if receiver is None:
            return False
        if network._drop_at_random():
            return True
        if network.delay > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(
                network.delay, network._land, self, source_address, address, frames, server_key
            )
            return True
        envelope = receiver._accept(frames, peer_key, self._host)
        if envelope is None:
            return True  # oversized: dropped by the receiver, as libzmq does
        if receiver._offer(envelope):
            network.stats.delivered += 1
            return True
        if await self._wait_for_room(receiver, address, envelope, wait):
            network.stats.delivered += 1
            return True
        network.stats.overflow += 1
        return False

    async def _wait_for_room(
        self, receiver: MemoryTransport, address: str, envelope: Envelope, wait: float
    ) -> bool:
        """Offer ``envelope`` again each time the receiver's inbox shrinks, for ``wait`` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        forgotten = self._forgotten.get(address, 0)
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed or receiver._closed:
                return False
            if receiver._room is None:
                receiver._room = asyncio.Event()
            if self._forgot is None:
                self._forgot = asyncio.Event()
            waiters = [
                asyncio.ensure_future(event.wait())
                for event in (receiver._room, self._forgot, self._closing)
            ]
            try:
                await asyncio.wait(waiters, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            if self._closed or self._forgotten.get(address, 0) != forgotten:
                return False
            if receiver._closed or self._network._transports.get(address) is not receiver:
                return False
            if receiver._offer(envelope):
                return True

    def _accept(self, frames: list[bytes], peer_key: str | None, host: str) -> Envelope | None:
        """The envelope for ``frames``, or ``None`` (counted) when a frame is too large."""
        if any(len(frame) > self._max_frame_bytes for frame in frames):
            self._network.stats.oversized += 1
            return None
        return Envelope([memoryview(f) for f in frames], peer_key, host)

    def _offer(self, envelope: Envelope) -> bool:
        """Queue ``envelope`` unless closed or full; wake a waiting receiver."""
        if self._closed or len(self._inbox) >= self._recv_hwm:
            return False
        self._inbox.append(envelope)
        self._wake_receivers()
        return True

    def _wake_receivers(self) -> None:
        if self._arrival is not None:
            self._arrival.set()
            self._arrival = None

    def _wake_senders(self) -> None:
        if self._room is not None:
            self._room.set()
            self._room = None

    def _require_open(self) -> str:
        if self._bound_port is None:
            self._raise_not_open()
        return f"tcp://{self._host}:{self._bound_port}"

    def _raise_not_open(self) -> NoReturn:
        state = "closed" if self._closed else "not started"
        raise TransportError(f"the transport is {state}; use 'async with transport:'")

    def _authenticate(
        self, sender_key: str | None, server_key: str | None
    ) -> tuple[bool, str | None]:
        """Simulate the CURVE handshake plus ZAP check; return (accepted, peer_key)."""
        if self._keys is None:
            return sender_key is None, None
        if sender_key is None or server_key != self._keys.public:
            return False, None
        if not self._policy.accepts(sender_key):
            return False, None
        return True, sender_key
