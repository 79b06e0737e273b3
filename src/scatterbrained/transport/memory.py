"""In-process twin of the ZeroMQ transport, for unit tests and fast simulation.

Transports attached to one :class:`MemoryNetwork` reach each other by address
(``tcp://memory:<n>``). The network can delay messages, drop a seeded random fraction, and cut
links between groups of addresses (:meth:`MemoryNetwork.partition`). Frames are copied into
``bytes`` once on send (so senders may reuse their buffers, as with ZeroMQ) and delivered as
read-only memoryviews.

CurveZMQ is simulated: a transport with keys accepts only senders that have keys, named its
public key as ``server_key``, and pass its allow-list; :attr:`Envelope.peer_key` is then the
sender's public key. A transport without keys accepts only senders without keys.

Unlike ZeroMQ the twin never waits: when the receiver's queue is full at delivery, the message
is dropped (``send`` returns ``False`` and counts ``stats.send_dropped`` when delivery is
immediate; with a delay it is counted in ``network.stats.overflow``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType

from ..errors import ConfigurationError, SecurityError, TransportError
from .base import Envelope, Frame, TransportStats
from .security import KeyedEndpoint, KeyPair, KeyPolicy

__all__ = ["MemoryNetwork", "MemoryNetworkStats", "MemoryTransport"]


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
    """

    delivered: int = 0
    lost: int = 0
    dropped: int = 0
    partitioned: int = 0
    refused: int = 0
    overflow: int = 0


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

    def _transmit(
        self, source: MemoryTransport, address: str, frames: list[bytes], server_key: str | None
    ) -> bool:
        """Route one message; False only when an immediate delivery found the queue full."""
        if self.drop_rate > 0 and self._rng.random() < self.drop_rate:
            self.stats.dropped += 1
            return True
        if self.delay > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(self.delay, self._deliver, source, address, frames, server_key)
            return True
        return self._deliver(source, address, frames, server_key)

    def _deliver(
        self, source: MemoryTransport, address: str, frames: list[bytes], server_key: str | None
    ) -> bool:
        receiver = self._transports.get(address)
        if receiver is None:
            self.stats.lost += 1
            return True
        if self.is_cut(source.address, address):
            self.stats.partitioned += 1
            return True
        accepted, peer_key = receiver._authenticate(source.public_key, server_key)
        if not accepted:
            self.stats.refused += 1
            return True
        if not receiver._enqueue(Envelope([memoryview(f) for f in frames], peer_key)):
            self.stats.overflow += 1
            return False
        self.stats.delivered += 1
        return True


class MemoryTransport(KeyedEndpoint):
    """A :class:`~scatterbrained.transport.base.Transport` that lives in a MemoryNetwork.

    Args:
        network: the hub shared with the peers.
        host: host part of the address (``tcp://<host>:<port>``).
        port: port to take; ``None`` or ``0`` takes the next free number.
        keys: this endpoint's key pair (enables the CurveZMQ simulation).
        allowed_keys: sender keys accepted (needs ``keys``); ``None`` accepts any key.
        recv_hwm: messages held in the inbound queue before new ones are dropped.

    Raises:
        ConfigurationError: ``recv_hwm`` < 1, or ``allowed_keys`` without ``keys``.
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
    ) -> None:
        if recv_hwm < 1:
            raise ConfigurationError(f"recv_hwm must be >= 1 message, got {recv_hwm}")
        if allowed_keys is not None and keys is None:
            raise ConfigurationError("allowed_keys needs keys: pass keys=KeyPair.generate()")
        self._network = network
        self._host = host
        self._port = port
        self._keys = keys
        self._policy = KeyPolicy(None if allowed_keys is None else set(allowed_keys))
        self._queue: asyncio.Queue[Envelope] = asyncio.Queue(maxsize=recv_hwm)
        self._stats = TransportStats()
        self._bound_port: int | None = None
        self._closed = asyncio.Event()

    @property
    def network(self) -> MemoryNetwork:
        """The hub this transport is attached to."""
        return self._network

    @property
    def address(self) -> str:
        """This transport's address, ``tcp://<host>:<port>``.

        Raises:
            TransportError: the transport is not started.
        """
        if self._bound_port is None:
            raise TransportError("the transport is not started; use 'async with transport:'")
        return f"tcp://{self._host}:{self._bound_port}"

    @property
    def bound_port(self) -> int | None:
        """The port taken on the network (``None`` before start)."""
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
        if self._closed.is_set():
            raise TransportError("this transport is closed; create a new MemoryTransport")
        if self._bound_port is None:
            self._bound_port = self._network._attach(self, self._host, self._port)

    async def close(self) -> None:
        """Detach from the network and discard queued messages. Idempotent."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._bound_port is not None:
            self._network._detach(self.address)
        while not self._queue.empty():
            self._queue.get_nowait()

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
        """Copy ``frames`` once and route them to ``address`` (``timeout`` is ignored).

        Returns:
            ``False`` only when delivery was immediate and the receiver's queue was full;
            messages to unknown addresses, cut links or refused keys are counted in
            ``network.stats`` and reported as ``True``, as ZeroMQ would have queued them.

        Raises:
            TransportError: not started or closed, or ``frames`` is empty.
            SecurityError: keys are configured and ``server_key`` is missing.
        """
        self._require_open()
        if not frames:
            raise TransportError("cannot send an empty message: pass at least one frame")
        if self._keys is not None and server_key is None:
            raise SecurityError(
                f"sending to {address} needs the peer's public key (server_key=...) "
                "because this transport uses keys"
            )
        copies = [memoryview(frame).tobytes() for frame in frames]
        if not self._network._transmit(self, address, copies, server_key):
            self._stats.send_dropped += 1
            return False
        self._stats.messages_out += 1
        self._stats.bytes_out += sum(len(c) for c in copies)
        return True

    async def recv(self) -> Envelope:
        """Wait for and return the next inbound message (cancellable).

        Raises:
            TransportError: not started, or closed while waiting.
        """
        self._require_open()
        if not self._queue.empty():
            return self._received(self._queue.get_nowait())
        getter = asyncio.ensure_future(self._queue.get())
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await asyncio.wait({getter, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (getter, closing):
                if not waiter.done():
                    waiter.cancel()
        if not getter.done() or getter.cancelled():
            raise TransportError("the transport was closed while receiving")
        return self._received(getter.result())

    def forget(self, address: str) -> None:
        """Nothing to close in memory; present for the Protocol."""

    def _received(self, envelope: Envelope) -> Envelope:
        self._stats.messages_in += 1
        self._stats.bytes_in += envelope.nbytes
        return envelope

    def _require_open(self) -> None:
        if self._closed.is_set() or self._bound_port is None:
            state = "closed" if self._closed.is_set() else "not started"
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

    def _enqueue(self, envelope: Envelope) -> bool:
        if self._closed.is_set():
            return False
        try:
            self._queue.put_nowait(envelope)
        except asyncio.QueueFull:
            return False
        return True
