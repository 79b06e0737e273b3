"""The transport Protocol: bytes between peers.

A transport owns one inbound endpoint (for ZeroMQ, a ROUTER socket bound to ``address``) and
one outgoing connection per peer address. It moves multipart messages (lists of frames) and
knows nothing about their meaning. Implementations: :mod:`.zmq` (real) and :mod:`.memory`
(in-process twin for unit tests and simulation). Both pass one contract test suite
(``tests/unit/transport/test_contract.py``); what it checks is written down here.

The contract, in short:

* **Lifecycle.** ``start`` binds (idempotent while started); ``close`` is idempotent, may be
  called before ``start``, discards queued messages, wakes a pending ``recv`` with
  :class:`~scatterbrained.errors.TransportError` and makes a pending ``send`` return
  ``False``. A closed transport cannot be started again. ``address`` is valid only between
  ``start`` and ``close``.
* **Send never raises for the peer's sake.** It raises only for the caller's mistakes (not
  started or closed, no frames, no ``server_key`` while keys are configured) and otherwise
  answers ``True`` (queued to a connected peer) or ``False`` (not queued within the timeout:
  nobody at the address, the peer refused our key, its queue stayed full, the address is
  malformed, the connection was forgotten or the transport closed meanwhile). It returns
  within about ``timeout`` seconds; sooner when the answer is known sooner.
* **``True`` is not a receipt.** A queued message can still be lost: the peer crashes, the
  link drops it, or a frame exceeds the receiver's ``max_frame_bytes`` (the receiver drops
  it and stays up).
* **Frames arrive intact**: same count, order and bytes (zero-length frames included), as
  read-only buffers; messages from one sender to one receiver arrive in the order sent.
* **Receive is cancellable**: cancelling a pending ``recv`` (for example with
  :func:`asyncio.wait_for`) loses no message and leaves the transport usable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, runtime_checkable

__all__ = ["DEFAULT_MAX_FRAME_BYTES", "Envelope", "Frame", "Transport", "TransportStats"]

#: A frame to send: anything exposing the buffer protocol (bytes, memoryview, numpy array).
Frame = bytes | bytearray | memoryview

#: Largest inbound frame a transport accepts by default, in bytes (256 MiB).
DEFAULT_MAX_FRAME_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class Envelope:
    """One received multipart message.

    Attributes:
        frames: the message's frames, in order, as received (read-only buffers).
        peer_key: the sender's authenticated CurveZMQ public key (Z85 text) when keys are
            configured, else ``None``. This, never a field inside the message, is who sent it.
        peer_host: the host the message came from (for ZeroMQ the IP address of the
            connection; for the memory twin the host part of the sender's address), or
            ``None`` when unknown. Used to reach a peer that advertises a wildcard address.
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
        messages_out: multipart messages handed to the network (``send`` returned ``True``).
        bytes_out: payload bytes of those messages.
        messages_in: multipart messages received (returned by ``recv``).
        bytes_in: payload bytes of those messages.
        send_dropped: outgoing messages ``send`` answered ``False`` for, because the peer
            was unreachable, refused us, or its queue stayed full for the send timeout.
        extra: other drop reasons by name, e.g. ``send_bad_address`` (a malformed address,
            refused without dialling).
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
        """The bound inbound address, ``tcp://host:port``.

        Valid from ``start`` until ``close``; distinct for every started transport.

        Raises:
            TransportError: the transport is not started, or closed.
        """
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
        """Bind the inbound endpoint. Does nothing when already started.

        Raises:
            TransportError: the address cannot be bound, or the transport was closed.
            SecurityError: keys are configured but authentication is not enforced.
        """
        ...

    async def close(self) -> None:
        """Close all sockets (linger 0). Idempotent, and allowed before ``start``.

        Queued inbound messages are discarded, a pending :meth:`recv` raises
        ``TransportError`` and a pending :meth:`send` returns ``False``.
        """
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
        zero-copy where possible: the caller must not mutate them afterwards. Never raises
        because of the peer: an unreachable, slow, refusing or malformed peer gives
        ``False``.

        Args:
            address: the peer's inbound address, ``tcp://host:port``.
            frames: the frames of the message (at least one; zero-length frames are kept).
            server_key: the peer's public key (Z85), required when keys are configured.
            timeout: seconds to wait for the peer to take the message (connected, room in
                its queue); ``None`` uses the transport's default. Never waits forever:
                the call returns within about ``timeout`` seconds.

        Returns:
            ``True`` when queued for a connected peer (not a delivery receipt). ``False``
            when not queued within the timeout: nobody at ``address``, our key refused,
            the peer's queue stayed full, a malformed address (counted in
            ``stats.extra["send_bad_address"]``, not dialled), or the connection was
            forgotten or the transport closed meanwhile. Every other ``False`` counts one
            ``stats.send_dropped``.

        Raises:
            TransportError: not started or closed, or ``frames`` is empty.
            SecurityError: keys are configured and ``server_key`` is missing.
        """
        ...

    async def recv(self) -> Envelope:
        """Wait for and return the next inbound message.

        Cancellable: a cancelled ``recv`` (e.g. under :func:`asyncio.wait_for`) loses no
        message and leaves the transport usable.

        Raises:
            TransportError: not started or closed, or closed while waiting.
        """
        ...

    def forget(self, address: str) -> None:
        """Close the outgoing connection to ``address`` if any (the peer left).

        Harmless for an address never used. A send to ``address`` still waiting returns
        ``False``; the next send connects afresh.
        """
        ...

    async def __aenter__(self) -> Transport: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
