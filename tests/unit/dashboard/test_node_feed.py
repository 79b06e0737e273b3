"""attach_namespace: one real node's namespace as dashboard records."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scatterbrained.dashboard.feed import Feed
from scatterbrained.dashboard.node_feed import attach_namespace
from scatterbrained.events import EpochDone, Event, ModeSwitched, PeerJoined, UpdateReceived
from scatterbrained.history import EpochRecord
from scatterbrained.types import Identity, OperatingMode


class FakeNamespace:
    """What attach_namespace reads: id, name, mode, peers with modes, subscribe."""

    def __init__(self) -> None:
        self.node_id, self.name, self.mode = "me", "net", OperatingMode.PEER
        self.peers: set[Identity] = set()
        self.modes: dict[str, OperatingMode] = {}
        self.callbacks: list[Callable[[Event], Any]] = []

    def peer_mode(self, peer_id: str) -> OperatingMode | None:
        return self.modes.get(peer_id)

    def subscribe(self, callback: Callable[[Event], Any]) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def emit(self, event: Event) -> None:
        for callback in list(self.callbacks):
            callback(event)


def test_the_node_its_peers_epochs_and_mode_switches_become_records() -> None:
    feed, ns = Feed(), FakeNamespace()
    unsubscribe = attach_namespace(feed, ns, title="node me", epochs=3)
    peer = Identity("p1", "net", "127.0.0.1", 5000)
    ns.peers, ns.modes = {peer}, {"p1": OperatingMode.SEEDING}
    record = EpochRecord(1, 0.5, 0.4, 0.9, "peer", ("p1",), 10, 20, 32, 2, 1, 0.1)

    ns.emit(PeerJoined("me", "net", peer))
    ns.emit(EpochDone("me", "net", record))
    ns.emit(ModeSwitched("me", "net", "peer", "leeching", "policy"))
    ns.emit(UpdateReceived("me", "net", "p1", 1, 32))  # not shown
    unsubscribe()
    ns.emit(EpochDone("me", "net", record))  # after unsubscribing: ignored

    kinds = [r["kind"] for r in feed.replay()]
    assert kinds == ["run", "members", "log", "epoch", "members", "log"]
    run, members, joined, epoch, _, switched = feed.replay()
    assert run["nodes"] == ["me"] and run["epochs"] == 3 and run["title"] == "node me"
    assert members["nodes"] == {"me": "peer", "p1": "seeding"}
    assert members["edges"] == [["me", "p1"], ["p1", "me"]]
    assert joined["text"] == "p1 joined"
    row = epoch["rows"][0]
    assert (row["node"], row["accuracy"], row["loss"]) == ("me", 0.9, 0.4)
    assert row["merged_from"] == ["p1"]
    assert switched["text"] == "me mode peer -> leeching (policy)"
