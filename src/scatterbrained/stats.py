"""Traffic counters of a node: messages and bytes in and out, drops by reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .events import Event, MessageDropped, MessageReceived, MessageSent, UpdateDropped

__all__ = ["NodeStats"]


@dataclass
class NodeStats:
    """Traffic counters of a node (monotonically increasing): a view over its event stream.

    The node subscribes :meth:`apply` to its :class:`~scatterbrained.events.EventBus`, so
    every count is the number of the matching events.

    Attributes:
        messages_in: multipart messages received (valid or not).
        bytes_in: bytes received.
        messages_out: messages sent.
        bytes_out: bytes sent.
        dropped: messages dropped, by reason (``"header"``, ``"replay"``, ``"mode"``, ...).
    """

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    dropped: Counter[str] = field(default_factory=Counter)

    def apply(self, event: Event) -> None:
        """Count one event (messages in/out, drops by reason)."""
        if isinstance(event, MessageReceived):
            self.messages_in += 1
            self.bytes_in += event.nbytes
        elif isinstance(event, MessageSent):
            self.messages_out += 1
            self.bytes_out += event.nbytes
        elif isinstance(event, (MessageDropped, UpdateDropped)):
            self.dropped[event.reason] += 1

    @property
    def dropped_total(self) -> int:
        """Total number of dropped messages."""
        return sum(self.dropped.values())

    def as_dict(self) -> dict[str, Any]:
        """A JSON-serialisable snapshot."""
        return {
            "messages_in": self.messages_in,
            "bytes_in": self.bytes_in,
            "messages_out": self.messages_out,
            "bytes_out": self.bytes_out,
            "dropped": dict(self.dropped),
        }
