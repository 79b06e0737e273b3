"""Who a node keeps sessions with in a namespace: everybody, or its topology neighbours.

A session (the Hello handshake, a peer record, heartbeats) with every other node costs
O(N^2) messages in a federation of N nodes, although on a sparse topology (a ring, a random
k-regular graph, a grid) a node exchanges weights with a handful of them. In a large
federation a node therefore greets only the nodes it will exchange with: its neighbours in the
topology drawn over the namespace's *roster*, the members it has sessions with plus the nodes
discovery reports in the namespace (their beacons' ids and modes). Every node draws the same
graph from the same roster, so wanting is mutual, and a node that greets anyway (it counts
this one as a neighbour) is answered as always.

``sessions`` (a namespace option) chooses: ``"all"`` (sessions with everybody), ``"neighbours"``
(with topology neighbours only) or ``"auto"`` (the default: everybody up to
:data:`FULL_SESSIONS_MAX` nodes in the roster, neighbours only past it). With
``"neighbours"``, ``ns.peers`` lists the neighbours (and the nodes that greeted this one),
not the whole federation.

The roster's beacons are unauthenticated hints: they only decide whom to greet and where
this node sits in the graph; weights are still exchanged with members only (greeted and
verified, see :mod:`scatterbrained.challenge`). The wanted set is recomputed only once the
roster held still for one refresh (:data:`REFRESH_S`), so a federation that is still
starting does not redraw its graph for every newcomer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from .discovery.base import Beacon
from .errors import ConfigurationError
from .types import OperatingMode

__all__ = ["FULL_SESSIONS_MAX", "REFRESH_S", "SESSIONS", "Roster"]

#: With ``sessions="auto"``, the largest roster with sessions with everybody.
FULL_SESSIONS_MAX = 64
#: Seconds between roster refreshes (a refresh reads every beacon: O(N)).
REFRESH_S = 0.5
#: Roster size up to which it is re-read every :data:`REFRESH_S` (larger ones less often).
ROSTER_PER_REFRESH = 250
#: The values of the ``sessions`` namespace option.
SESSIONS = ("auto", "all", "neighbours")

Modes = Mapping[str, OperatingMode]
_MODES = {mode.value: mode for mode in OperatingMode}


def check_sessions(value: object) -> str:
    """Validate the ``sessions`` option.

    Raises:
        ConfigurationError: not one of :data:`SESSIONS`.
    """
    if value not in SESSIONS:
        raise ConfigurationError(
            f"sessions must be one of {', '.join(map(repr, SESSIONS))}, got {value!r}"
        )
    return str(value)


class Roster:
    """The roster of one namespace of one node, and whom the node wants sessions with.

    Args:
        me: this node's id.
        namespace: the namespace's name.
        sessions: ``"auto"``, ``"all"`` or ``"neighbours"`` (see the module docstring).
    """

    def __init__(self, me: str, namespace: str, sessions: str = "auto") -> None:
        self.me = me
        self.namespace = namespace
        self.sessions = check_sessions(sessions)
        #: True when sessions are kept with topology neighbours only (now).
        self.scoped = sessions == "neighbours"
        self._advertised: dict[str, OperatingMode] = {}
        self._wanted: frozenset[str] = frozenset()
        self._drawn_for: frozenset[str] | None = None  # the roster the wanted set is for
        self._seen: frozenset[str] | None = None  # the roster at the last refresh
        self._refreshed_at = float("-inf")

    @property
    def wanted(self) -> frozenset[str]:
        """The ids to greet when sessions are scoped (drawn at the last settled refresh)."""
        return self._wanted

    @property
    def settled(self) -> bool:
        """True when the wanted set is drawn for the roster as it is now."""
        return not self.scoped or self._drawn_for == self._seen

    def due(self, now: float) -> bool:
        """True when :meth:`refresh` would re-read the roster at ``now`` (every
        :data:`REFRESH_S`, and less often in large rosters: each read is O(N))."""
        size = len(self._seen) if self._seen is not None else 0
        return now - self._refreshed_at >= REFRESH_S * max(1.0, size / ROSTER_PER_REFRESH)

    def refresh(
        self,
        now: float,
        beacons: Iterable[Beacon],
        members: Modes,
        neighbours: Callable[[Modes], Iterable[str]],
    ) -> None:
        """Re-read the roster (at most once per :data:`REFRESH_S`) and, once it held still
        for one refresh, redraw whom to greet.

        Args:
            now: monotonic time (s).
            beacons: discovery's candidates (hints).
            members: the members' modes (sessions this node has).
            neighbours: this node's neighbours in the topology over a roster's modes.
        """
        if not self.due(now):
            return
        self._refreshed_at = now
        self._advertised = self._read(beacons)
        ids = frozenset(self._advertised) | frozenset(members)
        self.scoped = self.sessions == "neighbours" or (
            self.sessions == "auto" and len(ids) > FULL_SESSIONS_MAX
        )
        still = ids == self._seen
        self._seen = ids
        if self.scoped and still and ids != self._drawn_for:
            self._drawn_for = ids
            self._wanted = frozenset(neighbours(self.modes(members)))

    def _read(self, beacons: Iterable[Beacon]) -> dict[str, OperatingMode]:
        advertised: dict[str, OperatingMode] = {}
        for beacon in beacons:
            for ad in beacon.namespaces:
                if ad.name != self.namespace:
                    continue
                mode = _MODES.get(ad.mode)
                if mode is not None and mode is not OperatingMode.OFFLINE:
                    advertised[beacon.node_id] = mode
                break
        advertised.pop(self.me, None)
        return advertised

    def modes(self, members: Modes) -> dict[str, OperatingMode]:
        """The modes the topology is drawn over: the members', and with scoped sessions
        also the nodes discovery reports (a member's own word wins)."""
        if not self.scoped:
            return dict(members)
        return {**self._advertised, **members}

    def scope(self) -> frozenset[str] | None:
        """Whom to greet: ``None`` for everybody (not scoped), else the wanted ids."""
        return self._wanted if self.scoped else None

    def wants(self, peer_id: str) -> bool:
        """True when this node should greet ``peer_id`` (always, unless scoped)."""
        return not self.scoped or peer_id in self._wanted
