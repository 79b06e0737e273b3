"""scatterbrained: decentralized federated learning over ZeroMQ.

Compute nodes train on their own data and share model parameters (never data) with the peers
they choose. The topology, each node's sharing mode and the set of nodes may all change while
the network runs::

    import scatterbrained as sb

    async with sb.Node() as node:
        async with node.namespace("MyNetwork", model, create_optimizer) as ns:
            await ns.train(10, trainloader, validloader)
            await ns.serve()
"""

from __future__ import annotations

from . import aggregation, events, policies, topology
from .errors import (
    CheckpointError,
    ConfigurationError,
    DatasetNotFoundError,
    DiscoveryError,
    ModeError,
    ModelSyncError,
    PeerTimeoutError,
    ScatterbrainedError,
    SecurityError,
    TransportError,
    WireError,
)
from .history import EpochRecord, History
from .namespace import Namespace, PeerEvent
from .node import Node
from .stats import NodeStats
from .transport.security import KeyPair
from .types import Identity, OperatingMode

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "ConfigurationError",
    "DatasetNotFoundError",
    "DiscoveryError",
    "EpochRecord",
    "History",
    "Identity",
    "KeyPair",
    "ModeError",
    "ModelSyncError",
    "Namespace",
    "Node",
    "NodeStats",
    "OperatingMode",
    "PeerEvent",
    "PeerTimeoutError",
    "ScatterbrainedError",
    "SecurityError",
    "TransportError",
    "WireError",
    "__version__",
    "aggregation",
    "events",
    "policies",
    "topology",
]
