"""Small helpers of the ZeroMQ transport: addresses, settings, socket futures, frame metadata."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import zmq

from ..errors import ConfigurationError
from .base import Frame

__all__ = [
    "bracketed",
    "check_settings",
    "frames_nbytes",
    "milliseconds",
    "parse_tcp_address",
    "peer_address",
    "settle",
    "user_id",
]

logger = logging.getLogger(__name__)


def parse_tcp_address(address: str) -> tuple[str, int] | None:
    """Return ``(host, port)`` of ``tcp://host:port``, or ``None`` when malformed.

    Only ``tcp://`` is accepted (never ``inproc://`` or ``ipc://``, which would reach this
    process's own endpoints); IPv6 hosts are written in brackets.
    """
    if not isinstance(address, str) or not address.startswith("tcp://"):
        return None
    host, sep, port_text = address[len("tcp://") :].rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or host == "*" or any(c in host for c in "/;@[] \t"):
        return None
    return host, int(port_text)


def bracketed(host: str) -> str:
    """``host`` as it goes in an endpoint: IPv6 addresses in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def milliseconds(seconds: float) -> int:
    """Seconds as the whole milliseconds socket options take (at least 1)."""
    return max(1, round(seconds * 1000))


def frames_nbytes(frames: Sequence[Frame]) -> int:
    """Total size of a multipart message in bytes."""
    return sum(memoryview(frame).nbytes for frame in frames)


async def settle(future: asyncio.Future[Any], timeout: float | None) -> bool:
    """Wait for a socket future; True when it succeeded, False when it timed out or failed.

    The caller's own cancellation propagates (and cancels ``future``); the future being
    cancelled because its socket was closed does not.
    """
    if not future.done():
        try:
            await asyncio.wait({future}, timeout=timeout)
        finally:
            if not future.done():
                future.cancel()
    if future.cancelled():
        return False
    exc = future.exception()
    if exc is None:
        return True
    if isinstance(exc, zmq.ZMQError):
        logger.debug("socket operation failed: %s", exc)
        return False
    raise exc


def peer_address(frame: zmq.Frame) -> str | None:
    """The remote IP address of the connection ``frame`` arrived on (ZMQ "Peer-Address")."""
    try:
        value = frame.get("Peer-Address")
    except (zmq.ZMQError, UnicodeDecodeError):
        return None
    return value if isinstance(value, str) and value else None


def user_id(frame: zmq.Frame) -> str | None:
    """The CurveZMQ public key (Z85, 40 characters) ZAP authenticated, or ``None``."""
    try:
        value = frame.get("User-Id")
    except zmq.ZMQError:
        return None
    return value if isinstance(value, str) and len(value) == 40 else None


def check_settings(
    host: str, port: int | None, max_frame_bytes: int, send_hwm: int, recv_hwm: int
) -> None:
    """Validate the transport's constructor arguments.

    Raises:
        ConfigurationError: a host that is not a string, a port outside 0..65535, a frame
            limit or high-water mark below 1.
    """
    if not isinstance(host, str) or not host:
        raise ConfigurationError(f"host must be an interface name or IP, got {host!r}")
    if port is not None and not 0 <= port < 65536:
        raise ConfigurationError(f"port must be in 0..65535 (0/None: any free port), got {port}")
    if max_frame_bytes < 1:
        raise ConfigurationError(f"max_frame_bytes must be >= 1, got {max_frame_bytes}")
    for name, value in (("send_hwm", send_hwm), ("recv_hwm", recv_hwm)):
        if value < 1:
            raise ConfigurationError(f"{name} must be >= 1 message, got {value}")
