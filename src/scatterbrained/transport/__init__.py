"""Transport layer: moves multipart messages (lists of frames) between nodes.

:class:`ZmqTransport` is the real one (ZeroMQ ROUTER in, DEALER per peer out, optional
CurveZMQ); :class:`MemoryTransport` on a :class:`MemoryNetwork` is its in-process twin.
"""

from __future__ import annotations

from .base import Envelope, Frame, Transport, TransportStats
from .memory import MemoryNetwork, MemoryNetworkStats, MemoryTransport
from .security import KeyPair, KeyPolicy, load_public_key, validate_key
from .zmq import DEFAULT_MAX_FRAME_BYTES, ZmqTransport, parse_tcp_address

__all__ = [
    "DEFAULT_MAX_FRAME_BYTES",
    "Envelope",
    "Frame",
    "KeyPair",
    "KeyPolicy",
    "MemoryNetwork",
    "MemoryNetworkStats",
    "MemoryTransport",
    "Transport",
    "TransportStats",
    "ZmqTransport",
    "load_public_key",
    "parse_tcp_address",
    "validate_key",
]
