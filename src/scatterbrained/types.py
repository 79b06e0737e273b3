"""Plain value types shared by every layer: peer identities and operating modes.

This module imports nothing from the rest of the package so that every layer (transport,
discovery, wire, federation) may depend on it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Identity", "OperatingMode"]


class OperatingMode(str, enum.Enum):
    """How a node shares parameters in one namespace.

    ========== ============= ================ =================
    mode       sends weights receives weights paper's word
    ========== ============= ================ =================
    PEER       yes           yes              read-and-write
    SEEDING    yes           no               write-only
    LEECHING   no            yes              read-only
    OFFLINE    no            no               blocking
    ========== ============= ================ =================

    Control traffic needed to serve (SEEDING) or request (LEECHING) a model stays allowed.
    OFFLINE is silent: not even discovery beacons name the namespace.
    """

    PEER = "peer"
    SEEDING = "seeding"
    LEECHING = "leeching"
    OFFLINE = "offline"

    @property
    def sends(self) -> bool:
        """True when this mode sends parameters and raw payloads."""
        return self in (OperatingMode.PEER, OperatingMode.SEEDING)

    @property
    def receives(self) -> bool:
        """True when this mode accepts (merges) parameters and raw payloads."""
        return self in (OperatingMode.PEER, OperatingMode.LEECHING)

    @classmethod
    def parse(cls, value: str | OperatingMode) -> OperatingMode:
        """Return the mode named by ``value`` (case-insensitive).

        Raises:
            ValueError: ``value`` names no mode; the message lists the valid names.
        """
        if isinstance(value, OperatingMode):
            return value
        try:
            return cls(str(value).lower())
        except ValueError:
            names = ", ".join(m.value for m in cls)
            raise ValueError(f"unknown operating mode {value!r}; expected one of {names}") from None


@dataclass(frozen=True, order=True)
class Identity:
    """A peer as seen from one namespace.

    Attributes:
        id: the peer's node id (unique in the network).
        namespace: the namespace in which this peer was met.
        host: the host or IP address of the peer's inbound socket.
        port: the TCP port of the peer's inbound socket.
    """

    id: str
    namespace: str
    host: str
    port: int

    @property
    def address(self) -> str:
        """The peer's transport address, ``tcp://host:port``."""
        return f"tcp://{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.id}@{self.host}:{self.port}/{self.namespace}"
