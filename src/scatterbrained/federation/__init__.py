"""Pure, synchronous federation logic over plain data (no I/O, no asyncio, no torch).

Topologies (who talks to whom), aggregators (how models merge), operating modes and the
policies that drive them, gossip/round bookkeeping, and privacy helpers.
"""

from __future__ import annotations

from .aggregation import (
    Aggregator,
    CenteredClipping,
    Contribution,
    FedAvg,
    Krum,
    Mean,
    Median,
    TrimmedMean,
    aggregator_from_spec,
)
from .modes import ModeController, ModeSwitch
from .policies import (
    AfterEpochs,
    AfterSeconds,
    FirstOf,
    FromCallable,
    LeechUntil,
    Policy,
    PolicyState,
    ValidationThreshold,
    after_epochs,
    as_policy,
    policy_from_spec,
)
from .privacy import ClipAndNoise, PairingRule
from .rounds import StoredUpdate, UpdateStore
from .topology import (
    FullyConnected,
    Graph,
    Grid,
    Neighbourhoods,
    Neighbours,
    RandomRegular,
    Ring,
    Star,
    Topology,
    topology_from_spec,
)

__all__ = [
    "AfterEpochs",
    "AfterSeconds",
    "Aggregator",
    "CenteredClipping",
    "ClipAndNoise",
    "Contribution",
    "FedAvg",
    "FirstOf",
    "FromCallable",
    "FullyConnected",
    "Graph",
    "Grid",
    "Krum",
    "LeechUntil",
    "Mean",
    "Median",
    "ModeController",
    "ModeSwitch",
    "Neighbourhoods",
    "Neighbours",
    "PairingRule",
    "Policy",
    "PolicyState",
    "RandomRegular",
    "Ring",
    "Star",
    "StoredUpdate",
    "Topology",
    "TrimmedMean",
    "UpdateStore",
    "ValidationThreshold",
    "after_epochs",
    "aggregator_from_spec",
    "as_policy",
    "policy_from_spec",
    "topology_from_spec",
]
