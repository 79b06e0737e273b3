"""Discovery: who is out there (hints only; membership is decided by the node).

* :class:`UdpDiscovery`: UDP broadcast beacons, ``loopback`` or ``lan`` scope.
* :class:`MemoryDiscovery` with a shared :class:`MemoryDiscoveryHub`: the in-process twin.
* :class:`NullDiscovery`: finds nobody (scope ``off``, bootstrap lists only).
* :class:`CandidateTable`: the capped, expiring table both use.
* :func:`encode_beacon` / :func:`decode_beacon`: the beacon datagram format.

Bootstrap lists (networks where broadcast does not reach) are handled by the node, which
sends a hello over the transport to each listed address.
"""

from __future__ import annotations

from .base import (
    DISCOVERY_ENV,
    Beacon,
    Discovery,
    DiscoveryEvent,
    DiscoveryScope,
    EventKind,
    NamespaceAd,
    scope_from_env,
)
from .codec import MAGIC, MAX_DATAGRAM_BYTES, decode_beacon, encode_beacon
from .memory import MemoryDiscovery, MemoryDiscoveryHub
from .null import NullDiscovery
from .table import DEFAULT_CAPACITY, CandidateTable
from .udp import DEFAULT_PORT, LOOPBACK_BROADCAST, UdpDiscovery, lan_broadcast_addresses

__all__ = [
    "DEFAULT_CAPACITY",
    "DEFAULT_PORT",
    "DISCOVERY_ENV",
    "LOOPBACK_BROADCAST",
    "MAGIC",
    "MAX_DATAGRAM_BYTES",
    "Beacon",
    "CandidateTable",
    "Discovery",
    "DiscoveryEvent",
    "DiscoveryScope",
    "EventKind",
    "MemoryDiscovery",
    "MemoryDiscoveryHub",
    "NamespaceAd",
    "NullDiscovery",
    "UdpDiscovery",
    "decode_beacon",
    "encode_beacon",
    "lan_broadcast_addresses",
    "scope_from_env",
]
