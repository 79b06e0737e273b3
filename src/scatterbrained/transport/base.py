"""The transport Protocol: bytes between peers.

A transport owns one inbound endpoint (for ZeroMQ, a ROUTER socket bound to ``address``) and
one outgoing connection per peer address. It moves multipart messages (lists of frames) and
knows nothing about their meaning. Implementations: :mod:`.zmq` (real) and :mod:`.memory`
(in-process twin for unit tests and simulation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, runtime_checkable

__all__ = ["Envelope", "Frame", "Transport", "TransportStats"]

#: A frame to send: anything exposing the buffer protocol (bytes, memoryview, numpy array).
Frame = bytes | bytearray | memoryview


@dataclass(frozen=True)
class Envelope:
    """One received multipart message.

    Attributes:
        frames: the message's frames, in order, as received (read-only buffers).
        peer_key: the sender's authenticated CurveZMQ public key (Z85 text) when keys are
            configured, else ``None``. This, never a field inside the message, is who sent it.
        peer_host: the IP address the message came from, when the transport knows it (used
            to reach a peer that advertises a wildcard address).
    """

    frames: list[memoryview]
    peer_key: str | None = None
    peer_host: str | None = None

    @property
    def nbytes(self) -> int:
        """Total size of all frames in bytes."""
        return sum(f.nbytes for f in self.frames)


@dataclass
class TransportStats:
    """Counters kept by a transport (all monotonically increasing).

    Attributes:
        messages_out: multipart messages handed to the network.
        bytes_out: payload bytes handed to the network.
        messages_in: multipart messages received.
        bytes_in: payload bytes received.
        send_dropped: outgoing messages dropped because the peer's queue stayed full for the
            send timeout (the peer is slow or gone).
    """

    messages_out: int = 0
    bytes_out: int = 0
    messages_in: int = 0
    bytes_in: int = 0
    send_dropped: int = 0
    extra: dict[str, int] = field(default_factory=dict)


@runtime_checkable
class Transport(Protocol):
    """Moves multipart messages between nodes.

    Lifecycle: ``async with transport:`` binds the inbound endpoint (``start``) and closes
    every socket with linger 0 on exit (``close``).
    """

    @property
    def address(self) -> str:
        """The bound inbound address, ``tcp://host:port`` (valid after start)."""
        ...

    @property
    def public_key(self) -> str | None:
        """This endpoint's CurveZMQ public key (Z85), or ``None`` without keys."""
        ...

    @property
    def stats(self) -> TransportStats:
        """Message and byte counters."""
        ...

    async def start(self) -> None:
        """Bind the inbound endpoint.

        Raises:
            TransportError: the address cannot be bound.
            SecurityError: keys are configured but authentication is not enforced.
        """
        ...

    async def close(self) -> None:
        """Close all sockets (linger 0); pending messages are discarded. Idempotent."""
        ...

    async def send(
        self,
        address: str,
        frames: Sequence[Frame],
        *,
        server_key: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Queue one multipart message for the peer at ``address``.

        Connects on first use (and reconnects with back-off by itself). Frames are sent
        zero-copy where possible: the caller must not mutate them afterwards.

        Args:
            address: the peer's inbound address, ``tcp://host:port``.
            frames: the frames of the message.
            server_key: the peer's public key (Z85), required when keys are configured.
            timeout: seconds to wait while the peer's queue is full; ``None`` uses the
                transport's default. Never waits forever.

        Returns:
            ``True`` when queued, ``False`` when dropped because the queue stayed full.
        """
        ...

    async def recv(self) -> Envelope:
        """Wait for and return the next inbound message (cancellable)."""
        ...

    def forget(self, address: str) -> None:
        """Close the outgoing connection to ``address`` if any (the peer left)."""
        ...

    async def __aenter__(self) -> Transport: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
