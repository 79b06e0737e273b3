"""run_simulation: seeded in-memory runs are reproducible (with and without faults); summaries.

The in-memory backend trains all nodes in lockstep epochs with synchronous rounds, so the same
seed must give exactly the same accuracies, merges and events, run after run.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scatterbrained.sim.config import FaultEvent, SimConfig
from scatterbrained.sim.inprocess import settle
from scatterbrained.sim.runner import RunResult, default_out, run_simulation, summarize
from scatterbrained.types import OperatingMode

SETUP = {
    "nodes": 8,
    "epochs": 5,
    "dataset": "digits",
    "topology": "ring",
    "aggregator": "fedavg",
    "sync": True,
    "backend": "memory",
    "lr": 0.05,
    "batch_size": 16,
    "hidden": 128,
    "seed": 11,
}
KILL_AND_RESTART = (FaultEvent(2, 3, "kill"), FaultEvent(3, 3, "restart"))


def run(out: Path, **changes: Any) -> RunResult:
    return run_simulation(SimConfig.from_mapping({**SETUP, "out": str(out), **changes}))


def accuracies(result: RunResult) -> dict[str, list[float | None]]:
    """Per node, its accuracy in every epoch (in order)."""
    per_node: dict[str, list[float | None]] = {}
    for row in sorted(result.metrics, key=lambda r: (r["node"], r["epoch"])):
        per_node.setdefault(row["node"], []).append(row["accuracy"])
    return per_node


def read_metrics(out: Path) -> list[dict[str, Any]]:
    lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def trace(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What must repeat exactly: who, when, accuracy, loss, mode, merges, event, bytes."""
    keys = ("node", "epoch", "accuracy", "loss", "mode", "merged_from", "event", "bytes_sent")
    return sorted(tuple(str(row[k]) for k in keys) for row in rows)


@pytest.mark.timeout(180)
def test_same_seed_gives_the_same_metrics(tmp_path: Path, torch_ready: None) -> None:
    epochs_seen: list[int] = []
    first = run_simulation(
        SimConfig.from_mapping({**SETUP, "out": str(tmp_path / "a")}),
        on_epoch=lambda epoch, rows: epochs_seen.append(epoch),
    )
    second = run(tmp_path / "b")
    other_seed = run(tmp_path / "c", seed=12)

    assert epochs_seen == [1, 2, 3, 4, 5]
    assert len(first.metrics) == 8 * 5
    assert all(acc is not None for accs in accuracies(first).values() for acc in accs)
    assert accuracies(first) == accuracies(second)
    assert trace(read_metrics(tmp_path / "a")) == trace(read_metrics(tmp_path / "b"))
    assert first.summary["mean_accuracy"] == second.summary["mean_accuracy"]
    assert accuracies(other_seed) != accuracies(first)  # the comparison can tell runs apart


@pytest.mark.timeout(180)
def test_same_seed_with_kill_and_restart_gives_the_same_metrics(
    tmp_path: Path, torch_ready: None
) -> None:
    first = run(tmp_path / "a", faults=KILL_AND_RESTART)
    second = run(tmp_path / "b", faults=KILL_AND_RESTART)

    node3 = accuracies(first)["n003"]
    assert node3[2] is None and node3[3] is not None  # dead in epoch 3, back in epoch 4
    events = [(e["node"], e["epoch"], e["event"]) for e in first.summary["events"]]
    assert events == [("n003", 3, "killed"), ("n003", 4, "restarted")]
    assert accuracies(first) == accuracies(second)
    assert trace(first.metrics) == trace(second.metrics)


# ---------------------------------------------------------------------------- summaries


def row(node: str, epoch: int, accuracy: float | None, **extra: Any) -> dict[str, Any]:
    return {"node": node, "epoch": epoch, "accuracy": accuracy, "bytes_sent": 10, **extra}


@pytest.mark.timeout(10)
def test_summarize_uses_the_final_epoch_of_nodes_alive_at_the_end() -> None:
    config = SimConfig(nodes=3, epochs=2, topology="star")
    rows = [
        row("n000", 1, 0.1),
        row("n001", 1, 0.2),
        row("n002", 1, 0.3),
        row("n000", 2, 0.5),
        row("n001", 2, 0.9),
        row("n002", 2, None, event="killed"),
    ]

    summary = summarize(config, rows, wall_s=1.23456, centralized=0.95, local_only=[0.4, 0.6])

    assert summary["nodes"] == 3 and summary["nodes_finished"] == 2
    assert summary["mean_accuracy"] == pytest.approx(0.7)
    assert (summary["min_accuracy"], summary["max_accuracy"]) == (0.5, 0.9)
    assert summary["centralized_accuracy"] == 0.95
    assert summary["local_only_mean_accuracy"] == pytest.approx(0.5)
    assert summary["wall_s"] == 1.235 and summary["bytes_total"] == 60
    assert summary["events"] == [{"node": "n002", "epoch": 2, "event": "killed"}]
    assert summary["topology"] == "star" and summary["backend"] == "memory"


@pytest.mark.timeout(10)
def test_summarize_reports_the_consensus_of_free_running_nodes_apart() -> None:
    config = SimConfig(nodes=1, epochs=1)

    summary = summarize(config, [row("n000", 1, 0.5, final_accuracy=0.8)], wall_s=0.0)

    assert summary["mean_accuracy"] == 0.5  # each node's model after its last epoch
    assert summary["final_consensus_accuracy"] == 0.8
    assert "local_only_mean_accuracy" not in summary


@pytest.mark.timeout(10)
def test_summarize_with_nobody_alive() -> None:
    summary = summarize(SimConfig(nodes=1, epochs=1), [row("n000", 1, None)], wall_s=0.0)

    assert summary["mean_accuracy"] is None and summary["nodes_finished"] == 0


@pytest.mark.timeout(10)
def test_default_out_never_reuses_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("scatterbrained.sim.runner.time.strftime", lambda _fmt: "20250101-120000")
    first = default_out(tmp_path)
    first.mkdir()

    second = default_out(tmp_path)

    assert first == tmp_path / "20250101-120000"
    assert second == tmp_path / "20250101-120000-2"


# ---------------------------------------------------------------------------- settling


FAKE_MODES: dict[str, OperatingMode] = {}


def fake_node(
    node_id: str,
    mode: OperatingMode,
    sees: set[str],
    paused: bool = False,
    neighbours: set[str] | None = None,
) -> Any:
    """Just what ``settle`` reads of a SimNode: id, alive, active and the namespace's view
    (``neighbours``: whom it keeps sessions with when they are scoped; default everybody)."""
    peers = [SimpleNamespace(id=p) for p in sees]
    ns = SimpleNamespace(mode=mode, peers=peers, version=0)
    ns.wanted_sessions = lambda: neighbours  # None: sessions with everybody
    ns.roster = SimpleNamespace(settled=True)
    # every node sees each peer's true mode (settle also compares modes) at version 0
    FAKE_MODES[node_id] = mode
    ns.peer_mode = FAKE_MODES.get
    ns.peer_version = lambda peer_id: 0
    return SimpleNamespace(id=node_id, alive=True, active=not paused, ns=ns)


@pytest.mark.timeout(10)
def test_settle_does_not_wait_for_the_view_of_an_offline_or_paused_node() -> None:
    nodes = [
        fake_node("a", OperatingMode.PEER, {"b"}),
        fake_node("b", OperatingMode.SEEDING, {"a"}),
        fake_node("c", OperatingMode.OFFLINE, set()),  # silent: sees nobody
        fake_node("d", OperatingMode.OFFLINE, set(), paused=True),
    ]

    assert asyncio.run(settle(nodes, timeout=0.5)) is True


@pytest.mark.timeout(10)
def test_with_sessions_scoped_to_neighbours_settle_waits_for_the_neighbours_only() -> None:
    ring = [
        fake_node("a", OperatingMode.PEER, {"b"}, neighbours={"b"}),
        fake_node("b", OperatingMode.PEER, {"a", "c"}, neighbours={"a", "c"}),
        fake_node("c", OperatingMode.PEER, {"b"}, neighbours={"b"}),
    ]
    missing = [*ring[:2], fake_node("c", OperatingMode.PEER, set(), neighbours={"b"})]

    assert asyncio.run(settle(ring, timeout=0.5)) is True
    assert asyncio.run(settle(missing, timeout=0.2)) is False


@pytest.mark.timeout(10)
def test_settle_waits_while_an_active_node_misses_a_peer() -> None:
    nodes = [fake_node("a", OperatingMode.PEER, {"b"}), fake_node("b", OperatingMode.PEER, set())]

    assert asyncio.run(settle(nodes, timeout=0.2)) is False
