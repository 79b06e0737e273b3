"""The discovery Protocol: who is out there.

Discovery produces *hints* (beacons) about nodes and the namespaces they are in. Membership is
decided above, by the node (transport hello + peer filter). Implementations: :mod:`.udp`
(broadcast beacons, loopback or LAN scope), :mod:`.memory` (in-process twin) and :mod:`.null`
(finds nobody; for bootstrap lists). UDP and memory pass one contract test suite
(``tests/unit/discovery/test_contract.py``); what it checks is written down here.

The contract, in short:

* **Lifecycle.** ``start`` is idempotent; ``close`` is idempotent (also before ``start``),
  stops announcing, discards buffered events and makes ``next_event`` raise
  :class:`~scatterbrained.errors.DiscoveryError` (waking a pending one). A closed discovery
  cannot be started again.
* **Announce.** ``announce(beacon)`` may be called before or after ``start``; the others
  then list the beacon in ``candidates()`` (an empty host filled in with where it came
  from) and get a SEEN event; a change of address, key, namespaces or modes is an UPDATED
  event, a change of model versions only is silent, a new ``session`` is SEEN again.
  A node never lists itself.
* **Withdraw.** ``announce(None)`` stops announcing; the others report the node LOST about
  ``peer_timeout`` seconds later, unless it announces again before.
* **Close.** With UDP a closed node is like a silent one (LOST after ``peer_timeout``: only
  a timeout can tell). The memory twin knows a member closed and reports it LOST to the
  others at once (twin-specific, so simulations need no wall-clock timeout to see a crash).
* **Bounded.** At most ``capacity`` candidates are kept (beacons of further node ids are
  dropped and counted, never evicting known ones); at most ``queue_size`` events are
  buffered (the oldest is dropped and counted).
* **Cancellable.** Cancelling a pending ``next_event`` loses no event.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, runtime_checkable

from ..errors import ConfigurationError

__all__ = [
    "DISCOVERY_ENV",
    "Beacon",
    "Discovery",
    "DiscoveryEvent",
    "DiscoveryScope",
    "EventKind",
    "NamespaceAd",
    "scope_from_env",
]

#: Environment variable that selects the discovery scope: ``loopback``, ``lan`` or ``off``.
DISCOVERY_ENV = "SCATTERBRAINED_DISCOVERY"


class DiscoveryScope(str, enum.Enum):
    """Where beacons go.

    * ``LAN``: the broadcast address of each IPv4 interface's subnet (the default for users).
    * ``LOOPBACK``: 127.255.255.255 only; beacons never leave the machine (tests, CI, sims).
    * ``OFF``: no beacons at all (use a bootstrap list).
    """

    LAN = "lan"
    LOOPBACK = "loopback"
    OFF = "off"


def scope_from_env(default: DiscoveryScope = DiscoveryScope.LAN) -> DiscoveryScope:
    """Read the scope from ``SCATTERBRAINED_DISCOVERY``, or ``default`` when it is unset.

    Raises:
        ConfigurationError: the variable holds an unknown value.
    """
    raw = os.environ.get(DISCOVERY_ENV, "").strip().lower()
    if not raw:
        return default
    try:
        return DiscoveryScope(raw)
    except ValueError:
        raise ConfigurationError(
            f"{DISCOVERY_ENV}={raw!r} is not a discovery scope; expected one of loopback, lan, off"
        ) from None


@dataclass(frozen=True)
class NamespaceAd:
    """A namespace as advertised in a beacon.

    Attributes:
        name: namespace name.
        mode: the node's operating mode there (``OperatingMode`` value).
        version: the node's model version (rounds of merging done) there.
    """

    name: str
    mode: str
    version: int = 0


@dataclass(frozen=True)
class Beacon:
    """What a node announces about itself.

    Attributes:
        node_id: the node's id.
        host: the host of its inbound socket; empty means "the beacon's source address".
        port: the TCP port of its inbound socket.
        namespaces: the namespaces it is in (OFFLINE ones are never advertised).
        public_key: its CurveZMQ public key (Z85) when keys are configured.
        session: an id that changes each time the node starts (start time in ns).
    """

    node_id: str
    host: str
    port: int
    namespaces: tuple[NamespaceAd, ...] = ()
    public_key: str | None = None
    session: int = 0

    @property
    def address(self) -> str:
        """The node's inbound address, ``tcp://host:port``."""
        return f"tcp://{self.host}:{self.port}"


class EventKind(str, enum.Enum):
    """What happened to a candidate."""

    SEEN = "seen"  # first beacon from this node id (or a new session of it)
    UPDATED = "updated"  # its namespaces, modes or address changed
    LOST = "lost"  # no beacon for longer than the peer timeout (memory twin: or it closed)


@dataclass(frozen=True)
class DiscoveryEvent:
    """A change in the candidate table."""

    kind: EventKind
    beacon: Beacon


@runtime_checkable
class Discovery(Protocol):
    """Announces this node and reports others (``async with discovery:`` starts/stops it)."""

    @property
    def peer_timeout(self) -> float:
        """Seconds without a beacon after which a candidate is LOST."""
        ...

    def announce(self, beacon: Beacon | None) -> None:
        """Set what this node announces from now on; ``None`` makes it silent.

        Peers report a silent node LOST after :attr:`peer_timeout` seconds.

        Raises:
            ConfigurationError: the beacon does not fit one datagram or a field is out of
                bounds.
        """
        ...

    async def next_event(self) -> DiscoveryEvent:
        """Wait for and return the next change in the candidate table.

        Cancellable without losing an event.

        Raises:
            DiscoveryError: the discovery is closed, or was closed while waiting.
        """
        ...

    def candidates(self) -> list[Beacon]:
        """The live candidates (bounded by the table's capacity), own node excluded."""
        ...

    async def start(self) -> None:
        """Open sockets and start announcing/listening. Does nothing when started.

        Raises:
            DiscoveryError: the sockets cannot be opened, or the discovery was closed.
        """
        ...

    async def close(self) -> None:
        """Stop and close sockets; buffered events are discarded. Idempotent."""
        ...

    async def __aenter__(self) -> Discovery: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
