"""The namespace as the learning code sees it: a small Protocol, nothing more.

Learning code (training, round protocols, model sharing, checkpoints) uses a namespace only
through :class:`FederationPort`; :class:`~scatterbrained.namespace.Namespace` implements it.
Tests can hand the learning code a fake port.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..events import Event
from ..history import History
from ..types import OperatingMode

if TYPE_CHECKING:
    from ..adapters.architecture import FactoryRegistry
    from ..federation.aggregation import Aggregator
    from ..federation.topology import Topology

__all__ = ["FederationPort"]


class FederationPort(Protocol):
    """What a learner needs from its namespace.

    Attributes:
        node_id: this node's id.
        name: the namespace's name.
        history: the per-epoch records (a view over ``EpochDone`` events).
    """

    node_id: str
    name: str
    history: History

    @property
    def mode(self) -> OperatingMode:
        """This node's operating mode in the namespace."""
        ...

    @property
    def topology(self) -> Topology:
        """The namespace's topology now."""
        ...

    @property
    def aggregator(self) -> Aggregator:
        """The namespace's aggregator now."""
        ...

    @property
    def factories(self) -> FactoryRegistry | None:
        """The model factories for rebuilding a ``factory`` architecture."""
        ...

    def peer_modes(self) -> Mapping[str, OperatingMode]:
        """Each member's announced (effective) mode, by id."""
        ...

    def roster_modes(self) -> Mapping[str, OperatingMode]:
        """The modes the topology is drawn over: the members', plus, when sessions are kept
        with neighbours only, the other nodes discovery reports (see ``roster``)."""
        ...

    def peer_mode(self, peer: str) -> OperatingMode | None:
        """The mode ``peer`` announced (whether or not it has a model), or ``None``."""
        ...

    def peer_version(self, peer: str) -> int | None:
        """The model version ``peer`` announced, or ``None`` when it is not a member."""
        ...

    def peer_has_model(self, peer: str) -> bool:
        """True when member ``peer`` announced that it has a model (it can take weights)."""
        ...

    def peer_count(self) -> int:
        """How many members the namespace has now."""
        ...

    def post(self, peer: str, body: Any) -> asyncio.Future[bool] | None:
        """Queue a body for member ``peer`` now, in order; ``None`` when it is not a member.

        The future says whether the transport took it; a caller that must not be held up by
        a slow peer waits for it only as long as it wants (never raises).
        """
        ...

    async def send(self, peer: str, body: Any) -> bool:
        """Send a message body to member ``peer``; True when queued (never raises)."""
        ...

    def emit(self, event: Event) -> None:
        """Put an event on the node's stream."""
        ...

    def set_mode(self, mode: OperatingMode, reason: str) -> None:
        """Switch this node's mode (announced to the peers; emits ``ModeSwitched``)."""
        ...

    def apply_policy(self, state: Any) -> str | None:
        """Let the mode policy decide; return ``"old->new (reason)"`` when it switched."""
        ...
