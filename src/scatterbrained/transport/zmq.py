"""ZeroMQ transport: one ROUTER socket in, a capped pool of DEALERs out, optional CurveZMQ.

Outgoing connections are opened lazily, one per peer address sent to, at most
``max_connections`` at once (the least recently used is closed past it), so no number of
peers or forged candidates exhausts libzmq's sockets, and opening one never raises.

Every transport owns its own ``zmq.asyncio.Context`` (terminated on close), so the ZAP
authentication endpoint, which libzmq keeps per context, belongs to this transport alone.

Queues are bounded. ZeroMQ's high-water marks count whole multipart messages per connection
(libzmq 4.x), not bytes: memory held for one peer is at most ``hwm`` times the size of the
messages queued, and each inbound frame is at most ``max_frame_bytes`` (libzmq drops the
connection of a peer that sends a larger frame; the peer reconnects by itself).

Outgoing DEALERs use ``ZMQ_IMMEDIATE``: nothing is queued for a peer that is not connected,
so :meth:`ZmqTransport.send` to an unreachable peer waits at most the send timeout and
returns ``False`` instead of filling memory. A send that times out also closes that peer's
connection (discarding what was queued for it); the next send dials afresh. This matters with
CurveZMQ: libzmq never redials after the server refused the client's key, so a peer that
allow-lists us later is reached again only through a new connection.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Iterable, Sequence
from types import TracebackType

import zmq
import zmq.asyncio

from ..errors import ConfigurationError, SecurityError, TransportError
from .base import DEFAULT_MAX_FRAME_BYTES, Envelope, Frame, TransportStats
from .security import (
    MAX_REPORTED_KEYS,
    KeyedEndpoint,
    KeyPair,
    KeyPolicy,
    ZapHandler,
    check_authentication_enforced,
    validate_key,
)
from .zmq_support import (
    bracketed,
    check_settings,
    frames_nbytes,
    milliseconds,
    parse_tcp_address,
    peer_address,
    settle,
    user_id,
)

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_RECV_HWM",
    "DEFAULT_SEND_HWM",
    "ZmqTransport",
    "parse_tcp_address",
]

#: Outgoing connections kept open at once (libzmq allows 1,023 sockets per context by
#: default); past it the least recently used one is closed and re-opened when needed.
DEFAULT_MAX_CONNECTIONS = 256
#: Consecutive timed-out CURVE sends to one address before the "refused?" hint is logged.
_HINT_AFTER_FAILURES = 3
#: Addresses whose failure streak is tracked (the table starts over past it).
_MAX_FAILING_ADDRESSES = 1024

logger = logging.getLogger(__name__)

#: Messages queued per outgoing peer connection before ``send`` waits.
DEFAULT_SEND_HWM = 32
#: Messages queued per inbound peer connection before that peer is slowed down.
DEFAULT_RECV_HWM = 64

_WILDCARD_HOSTS = frozenset({"0.0.0.0", "*", "::"})
_ZAP_DOMAIN = b"scatterbrained"
_DEALER_MAX_INBOUND = 1024  # DEALERs never read; a peer writing to them is cut off.


class ZmqTransport(KeyedEndpoint):
    """The real transport over ZeroMQ TCP sockets.

    Args:
        host: interface to bind (``"0.0.0.0"`` for all IPv4 interfaces).
        port: TCP port to bind; ``None`` or ``0`` picks a free one (see :attr:`bound_port`).
        keys: this node's CurveZMQ key pair; enables encryption and authentication.
        allowed_keys: client public keys allowed to connect (needs ``keys``); ``None``
            accepts any key that completes the CURVE handshake (still encrypted, and the
            key is reported as :attr:`Envelope.peer_key`). Change later with
            :meth:`allow_key` / :meth:`deny_key`.
        max_frame_bytes: largest inbound frame in bytes; a peer sending more is disconnected.
        send_hwm: messages queued per outgoing peer connection.
        recv_hwm: messages queued per inbound peer connection.
        send_timeout: seconds ``send`` waits while a peer's queue is full (or it is not
            connected) before dropping the message.
        heartbeat_ivl: seconds between ZMTP heartbeats.
        heartbeat_timeout: seconds without traffic after which a connection is dropped.
        reconnect_ivl: first reconnection delay in seconds.
        reconnect_ivl_max: longest reconnection delay in seconds (exponential back-off).
        advertise_host: host put in :attr:`address` (what peers should dial); defaults to
            ``host``, or ``127.0.0.1`` when ``host`` is a wildcard.
        max_connections: outgoing connections kept open at once (1..1000); past it the
            least recently used one is closed (and re-opened on its next send), so no number
            of peers or forged candidates exhausts libzmq's sockets.

    Raises:
        ConfigurationError: a number is out of range, or ``allowed_keys`` without ``keys``.
        SecurityError: a key is malformed.
    """

    def __init__(
        self,
        host: str = "0.0.0.0",
        port: int | None = None,
        *,
        keys: KeyPair | None = None,
        allowed_keys: Iterable[str] | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        send_hwm: int = DEFAULT_SEND_HWM,
        recv_hwm: int = DEFAULT_RECV_HWM,
        send_timeout: float = 5.0,
        heartbeat_ivl: float = 1.0,
        heartbeat_timeout: float = 3.0,
        reconnect_ivl: float = 0.1,
        reconnect_ivl_max: float = 5.0,
        advertise_host: str | None = None,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        check_settings(host, port, max_frame_bytes, send_hwm, recv_hwm)
        if not 1 <= max_connections <= 1000:
            raise ConfigurationError(
                f"max_connections must be 1..1000 (libzmq's socket limit), got {max_connections!r}"
            )
        for name, value in (
            ("send_timeout", send_timeout),
            ("heartbeat_ivl", heartbeat_ivl),
            ("heartbeat_timeout", heartbeat_timeout),
            ("reconnect_ivl", reconnect_ivl),
            ("reconnect_ivl_max", reconnect_ivl_max),
        ):
            if not value > 0:
                raise ConfigurationError(f"{name} must be > 0 seconds, got {value!r}")
        if allowed_keys is not None and keys is None:
            raise ConfigurationError(
                "allowed_keys needs keys: pass keys=KeyPair.generate() (or KeyPair.load(path))"
            )
        self._host = host
        self._port = port or 0
        self._keys = keys
        self._policy = KeyPolicy(None if allowed_keys is None else set(allowed_keys))
        self._max_frame_bytes = max_frame_bytes
        self._send_hwm = send_hwm
        self._recv_hwm = recv_hwm
        self._send_timeout = send_timeout
        self._heartbeat = (milliseconds(heartbeat_ivl), milliseconds(heartbeat_timeout))
        self._reconnect = (
            milliseconds(reconnect_ivl),
            milliseconds(max(reconnect_ivl, reconnect_ivl_max)),
        )
        self._advertise_host = advertise_host
        self._stats = TransportStats()
        self._context: zmq.asyncio.Context | None = None
        self._router: zmq.asyncio.Socket | None = None
        self._zap: ZapHandler | None = None
        self._dealers: dict[str, tuple[zmq.asyncio.Socket, str | None]] = {}
        self._hinted: set[str] = set()  # addresses told about in _hint_refused
        self._failed_in_a_row: dict[str, int] = {}
        self._max_connections = max_connections  # CURVE sends that timed out, per address
        self._held: collections.deque[list[zmq.Frame]] = collections.deque()
        self._bound_port: int | None = None
        self._closed = False

    # ----------------------------------------------------------------- properties

    @property
    def address(self) -> str:
        """The address peers should dial, ``tcp://host:port``.

        Raises:
            TransportError: the transport is not started.
        """
        port = self._require_port()
        host = self._advertise_host or (
            self._host if self._host not in _WILDCARD_HOSTS else "127.0.0.1"
        )
        return f"tcp://{bracketed(host)}:{port}"

    @property
    def host(self) -> str:
        """The interface the inbound socket binds to."""
        return self._host

    @property
    def bound_port(self) -> int | None:
        """The TCP port actually bound (``None`` before start and after close)."""
        return self._bound_port

    @property
    def stats(self) -> TransportStats:
        """Message and byte counters (``extra`` holds drop reasons)."""
        return self._stats

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Bind the inbound ROUTER (after starting the ZAP handler when keys are configured).

        With keys, a self-check then dials the socket with an unknown key and requires it to
        be refused. Calling ``start`` on a started transport does nothing.

        Raises:
            TransportError: the address cannot be bound, or the transport was closed.
            SecurityError: keys are configured but authentication is not enforced.
        """
        if self._closed:
            raise TransportError("this transport is closed; create a new ZmqTransport")
        if self._router is not None:
            return
        self._context = zmq.asyncio.Context()
        # Every socket of this context lingers 0 by default, so even a transport that is
        # garbage-collected without close() (a crashed test, a forgotten node) can never
        # block the interpreter in the context's termination.
        self._context.setsockopt(zmq.LINGER, 0)
        try:
            if self._keys is not None:
                self._zap = self._start_zap_handler()
            self._router = self._bind_router()
            if self._keys is not None:
                await check_authentication_enforced(
                    self._context, self._self_check_address(), self._keys.public, self._policy
                )
        except BaseException:
            await self._release()
            raise
        logger.debug("transport bound at %s", self.address)

    async def close(self) -> None:
        """Close all sockets (linger 0) and terminate the context. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._release()

    async def __aenter__(self) -> ZmqTransport:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------- messaging

    async def send(
        self,
        address: str,
        frames: Sequence[Frame],
        *,
        server_key: str | None = None,
        timeout: float | None = None,
    ) -> bool:
        """Queue one multipart message for the peer at ``address`` (zero-copy).

        Never raises for an unreachable, slow or malformed peer: such messages are dropped,
        counted (``stats.send_dropped`` or ``stats.extra``) and ``False`` is returned.

        Args:
            address: the peer's inbound address, ``tcp://host:port``.
            frames: the frames; the caller must not mutate them afterwards.
            server_key: the peer's public key (Z85); required when keys are configured.
            timeout: seconds to wait for room in the peer's queue; ``None`` uses
                ``send_timeout``.

        Returns:
            ``True`` when queued, ``False`` when dropped.

        Raises:
            TransportError: not started or closed, or ``frames`` is empty.
            SecurityError: keys are configured and ``server_key`` is missing.
        """
        self._require_router()
        if not frames:
            raise TransportError("cannot send an empty message: pass at least one frame")
        if self._keys is not None and server_key is None:
            raise SecurityError(
                f"sending to {address} needs the peer's public key (server_key=...) "
                "because this transport uses CurveZMQ keys"
            )
        sock = self._dealer_for(address, server_key)
        if sock is None:
            return False
        wait = self._send_timeout if timeout is None else max(0.0, timeout)
        sending = asyncio.ensure_future(sock.send_multipart(list(frames), copy=False))
        if not await settle(sending, wait):
            self._stats.send_dropped += 1
            logger.debug("dropped a message to %s: queue full or not connected", address)
            self._discard_dealer(address, sock)
            if server_key is not None:
                self._hint_refused(address)
            return False
        self._failed_in_a_row.pop(address, None)
        self._stats.messages_out += 1
        self._stats.bytes_out += frames_nbytes(frames)
        return True

    async def recv(self) -> Envelope:
        """Wait for and return the next inbound message.

        Cancellable without loss: a message that arrived just as the caller was cancelled is
        kept for the next call.

        Raises:
            TransportError: not started or closed, or closed while waiting.
        """
        while True:
            router = self._require_router()
            if self._held:
                frames = self._held.popleft()
            else:
                future = asyncio.ensure_future(router.recv_multipart(copy=False))
                try:
                    received = await settle(future, None)
                except asyncio.CancelledError:
                    self._hold_if_received(future)
                    raise
                if not received:
                    raise TransportError("the transport was closed while receiving")
                frames = future.result()
            envelope = self._envelope_from(frames)
            if envelope is not None:
                return envelope

    def forget(self, address: str) -> None:
        """Close the outgoing connection to ``address`` if any (linger 0)."""
        entry = self._dealers.pop(address, None)
        if entry is not None:
            entry[0].close(linger=0)

    # ----------------------------------------------------------------- internals

    def _hold_if_received(self, future: asyncio.Future[list[zmq.Frame]]) -> None:
        """Keep a message whose receive completed although the caller was cancelled."""
        if future.done() and not future.cancelled() and future.exception() is None:
            self._held.append(future.result())

    def _count(self, reason: str) -> None:
        self._stats.extra[reason] = self._stats.extra.get(reason, 0) + 1

    def _require_port(self) -> int:
        if self._bound_port is None:
            state = "closed" if self._closed else "not started"
            raise TransportError(f"the transport is {state}; use 'async with transport:'")
        return self._bound_port

    def _require_router(self) -> zmq.asyncio.Socket:
        if self._router is None:
            state = "closed" if self._closed else "not started"
            raise TransportError(f"the transport is {state}; use 'async with transport:'")
        return self._router

    def _start_zap_handler(self) -> ZapHandler | None:
        assert self._context is not None
        handler = ZapHandler(self._context, self._policy)
        handler.start()
        return handler

    def _configure(self, sock: zmq.asyncio.Socket, send_hwm: int, recv_hwm: int) -> None:
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, send_hwm)
        sock.setsockopt(zmq.RCVHWM, recv_hwm)
        sock.setsockopt(zmq.HEARTBEAT_IVL, self._heartbeat[0])
        sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, self._heartbeat[1])
        sock.setsockopt(zmq.HEARTBEAT_TTL, self._heartbeat[1])
        sock.setsockopt(zmq.RECONNECT_IVL, self._reconnect[0])
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, self._reconnect[1])

    def _bind_router(self) -> zmq.asyncio.Socket:
        assert self._context is not None
        sock = self._context.socket(zmq.ROUTER)
        self._configure(sock, self._send_hwm, self._recv_hwm)
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_frame_bytes)
        if ":" in self._host:
            sock.setsockopt(zmq.IPV6, 1)
        if self._keys is not None:
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._keys.secret.encode("ascii"))
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self._keys.public.encode("ascii"))
            sock.setsockopt(zmq.ZAP_DOMAIN, _ZAP_DOMAIN)
        endpoint = f"tcp://{bracketed(self._host)}:{self._port}"
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise TransportError(
                f"cannot bind {endpoint}: {exc.strerror}; pick another port or pass port=None "
                "for a free one"
            ) from exc
        last = sock.getsockopt(zmq.LAST_ENDPOINT)
        self._bound_port = int(bytes(last).decode("ascii").rstrip("\x00").rpartition(":")[2])
        return sock

    def _new_dealer(self, server_key: str | None, keys: KeyPair | None) -> zmq.asyncio.Socket:
        assert self._context is not None
        sock = self._context.socket(zmq.DEALER)
        self._configure(sock, self._send_hwm, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, _DEALER_MAX_INBOUND)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.IPV6, 1)
        if keys is not None and server_key is not None:
            sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret.encode("ascii"))
            sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public.encode("ascii"))
            sock.setsockopt(zmq.CURVE_SERVERKEY, server_key.encode("ascii"))
        return sock

    def _dealer_for(self, address: str, server_key: str | None) -> zmq.asyncio.Socket | None:
        if self._keys is None:
            server_key = None
        entry = self._dealers.pop(address, None)
        if entry is not None:
            if entry[1] == server_key:
                self._dealers[address] = entry  # now the most recently used
                return entry[0]
            entry[0].close(linger=0)  # the peer came back with another key
        if parse_tcp_address(address) is None:
            self._count("send_bad_address")
            logger.warning("not sending to %.80r: expected tcp://host:port", address)
            return None
        if server_key is not None:
            try:
                server_key = validate_key(server_key, what="peer's public key")
            except SecurityError as exc:
                self._count("send_bad_key")
                logger.warning("not sending to %s: %s", address, exc)
                return None
        while len(self._dealers) >= self._max_connections:  # close the least recently used
            oldest = next(iter(self._dealers))
            self._dealers.pop(oldest)[0].close(linger=0)
            self._count("connection_evicted")
        try:
            sock = self._new_dealer(server_key, self._keys)
        except zmq.ZMQError as exc:  # e.g. "Too many open files": never raise into callers
            self._count("send_no_socket")
            logger.warning("cannot open a connection to %.80r: %s", address, exc)
            return None
        try:
            sock.connect(address)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            self._count("send_bad_address")
            logger.warning("cannot connect to %.80r: %s", address, exc)
            return None
        self._dealers[address] = (sock, server_key)
        return sock

    def _hint_refused(self, address: str) -> None:
        """Tell the operator, once per address, that a CURVE peer may refuse our key.

        With ``IMMEDIATE`` a message waits for a completed handshake, so CURVE sends that
        keep timing out (:data:`_HINT_AFTER_FAILURES` in a row) mean the peer is down,
        overloaded, or refused this node's key; only the last needs the operator, and only
        they can tell. At most
        :data:`MAX_REPORTED_KEYS` addresses are remembered.
        """
        failed = self._failed_in_a_row.get(address, 0) + 1
        if len(self._failed_in_a_row) >= _MAX_FAILING_ADDRESSES:
            self._failed_in_a_row.clear()
        self._failed_in_a_row[address] = failed
        if failed < _HINT_AFTER_FAILURES:  # one slow handshake is not a refusal
            return
        if address in self._hinted or len(self._hinted) >= MAX_REPORTED_KEYS:
            return
        self._hinted.add(address)
        assert self._keys is not None
        logger.warning(
            "could not deliver to %s over CurveZMQ: the peer is down, busy, or does not "
            "accept this node's public key %s; if it is up, ask its operator to allow it "
            "(--allow '%s' on the command line, allowed_keys=[...] in sb.Node)",
            address,
            self._keys.public,
            self._keys.public,
        )

    def _discard_dealer(self, address: str, sock: zmq.asyncio.Socket) -> None:
        """Close ``sock`` if it is still the connection to ``address``.

        libzmq never redials after a refused CURVE handshake, so a connection that could
        not take a message within the timeout is replaced by a fresh one on the next send.
        """
        entry = self._dealers.get(address)
        if entry is not None and entry[0] is sock:
            self.forget(address)

    def _envelope_from(self, frames: list[zmq.Frame]) -> Envelope | None:
        if len(frames) < 2:
            self._count("recv_malformed")
            return None
        payload = frames[1:]  # frames[0] is the routing id ROUTER prepends
        peer_key: str | None = None
        if self._keys is not None:
            peer_key = user_id(payload[0])
            if peer_key is None:
                self._count("recv_unauthenticated")
                logger.warning("dropped a message without an authenticated key")
                return None
            if not self._policy.accepts(peer_key):
                self._count("recv_refused")
                return None
        views = [memoryview(frame.buffer).toreadonly() for frame in payload]
        envelope = Envelope(frames=views, peer_key=peer_key, peer_host=peer_address(payload[0]))
        self._stats.messages_in += 1
        self._stats.bytes_in += envelope.nbytes
        return envelope

    def _self_check_address(self) -> str:
        port = self._require_port()
        if self._host in ("::",):
            return f"tcp://[::1]:{port}"
        host = "127.0.0.1" if self._host in _WILDCARD_HOSTS else self._host
        return f"tcp://{bracketed(host)}:{port}"

    async def _release(self) -> None:
        self._held.clear()
        for sock, _ in self._dealers.values():
            sock.close(linger=0)
        self._dealers.clear()
        if self._router is not None:
            self._router.close(linger=0)
            self._router = None
        if self._zap is not None:
            await self._zap.stop()
            self._zap = None
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None
        self._bound_port = None
