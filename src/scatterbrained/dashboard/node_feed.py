"""Feed the dashboard from one real node's namespace (``scatterbrained node --dashboard``).

The node sees itself and its peers: the page shows them (peers with the modes they
advertise, drawn linked to this node, a link lit when this node merged that peer's
weights), this node's accuracy, loss and bytes per epoch, and an event log of joins,
departures and mode switches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..events import EpochDone, Event, ModeSwitched, PeerJoined, PeerLeft
from ..history import metric_row
from .feed import Feed

__all__ = ["attach_namespace"]


def _members(ns: Any) -> dict[str, str | None]:
    modes: dict[str, str | None] = {ns.node_id: ns.mode.value}
    for peer in sorted(ns.peers):
        mode = ns.peer_mode(peer.id)
        modes[peer.id] = mode.value if mode is not None else None
    return modes


def _edges(me: str, members: dict[str, str | None]) -> list[list[str]]:
    others = [n for n in members if n != me]
    return [[a, b] for n in others for a, b in ((me, n), (n, me))]


def _row(me: str, record: Any) -> dict[str, Any]:
    return metric_row(me, record)


def attach_namespace(
    feed: Feed, ns: Any, *, title: str, epochs: int | None = None
) -> Callable[[], None]:
    """Publish ``ns``'s state to ``feed`` now and on every event; return the unsubscribe.

    Args:
        feed: the dashboard's feed (on the namespace's event loop).
        ns: an open :class:`~scatterbrained.namespace.Namespace`.
        title: the page's title line.
        epochs: the epochs planned (the curves' x range), or ``None``.
    """
    me = ns.node_id
    members = _members(ns)
    feed.publish(
        {
            "kind": "run",
            "nodes": list(members),
            "modes": members,
            "edges": _edges(me, members),
            "epochs": epochs,
            "title": title,
            "config": {},
        }
    )

    def on_event(event: Event) -> None:
        if isinstance(event, EpochDone):
            feed.publish(
                {"kind": "epoch", "epoch": event.record.epoch, "rows": [_row(me, event.record)]}
            )
            return
        if isinstance(event, PeerJoined | PeerLeft | ModeSwitched):
            now = _members(ns)
            feed.publish({"kind": "members", "nodes": now, "edges": _edges(me, now)})
            feed.publish({"kind": "log", "time": time.time(), "text": _describe(event)})

    unsubscribe: Callable[[], None] = ns.subscribe(on_event)
    return unsubscribe


def _describe(event: Event) -> str:
    if isinstance(event, PeerJoined):
        return f"{event.peer.id} joined"
    if isinstance(event, PeerLeft):
        return f"{event.peer.id} left"
    if isinstance(event, ModeSwitched):
        return f"{event.node} mode {event.old} -> {event.new} ({event.reason})"
    return type(event).__name__
