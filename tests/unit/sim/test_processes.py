"""The process backend without processes: its fault plan, gate protocol and file protocol.

The fault plan is checked against the in-process backend's ``apply_faults`` run on stand-in
nodes; the worker's side of a gate runs against a runner played by the test (it writes
``gate.json`` as the real one does); rows are read while workers append, files written
atomically.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from scatterbrained.sim import inprocess
from scatterbrained.sim.config import FaultEvent, SimConfig
from scatterbrained.sim.processes import _Run, plan_faults, read_metric_rows
from scatterbrained.sim.worker import (
    CATCH_UP,
    FAULTS,
    GO,
    FileLink,
    Gate,
    RunnerGone,
    _append,
    gate_path,
    read_json,
    wait_path,
    write_atomically,
)
from scatterbrained.types import OperatingMode

pytestmark = pytest.mark.timeout(30)


# ------------------------------------------------------------------ the fault plan


class StandIn:
    """Just enough of ``inprocess.SimNode`` for ``apply_faults``."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.id = f"n{index:03d}"
        self.paused = False
        self.started = True

    @property
    def alive(self) -> bool:
        return self.started

    @property
    def active(self) -> bool:
        return self.started and not self.paused

    async def kill(self) -> None:
        self.started, self.paused = False, False

    async def start(self) -> None:
        self.started = True

    def pause(self) -> None:
        if self.active:
            self.paused = True

    def resume(self) -> None:
        if self.alive and self.paused:
            self.paused = False

    async def catch_up(self) -> bool:
        return True


def in_process_timeline(
    config: SimConfig, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[tuple[int, int], str], list[list[str]]]:
    """Events (node, row epoch) and each node's state per epoch, as ``apply_faults`` makes them.

    Its ``settle`` only waits for the views to agree and decides nothing: it is left out.
    """

    async def settled(*args: Any, **kwargs: Any) -> bool:
        return True

    monkeypatch.setattr(inprocess, "settle", settled)

    async def run() -> tuple[dict[tuple[int, int], str], list[list[str]]]:
        nodes = [StandIn(i) for i in range(config.nodes)]
        churn = random.Random(config.seed + 7919)
        pending: dict[int, int] = {}
        marks: dict[tuple[int, int], str] = {}
        states: list[list[str]] = [[] for _ in nodes]
        for epoch in range(1, config.epochs + 1):
            exp = SimpleNamespace(config=config)
            events = await inprocess.apply_faults(nodes, epoch - 1, exp, churn, pending)
            marks.update({(i, epoch): e for i, e in events.items()})
            for node in nodes:
                state = "paused" if node.paused else "alive" if node.alive else "dead"
                states[node.index].append(state)
        return marks, states

    return asyncio.run(run())


PLANS = {
    "kill 2, restart 5": [FaultEvent(2, 1, "kill"), FaultEvent(5, 1, "restart")],
    "pause 2, resume 4": [FaultEvent(2, 1, "pause"), FaultEvent(4, 1, "resume")],
    "before training": [FaultEvent(0, 0, "kill"), FaultEvent(0, 0, "restart")],
    "no-ops": [
        FaultEvent(1, 2, "restart"),  # alive: nothing to restart
        FaultEvent(1, 2, "resume"),  # not paused
        FaultEvent(3, 0, "kill"),
        FaultEvent(4, 0, "kill"),  # already dead
        FaultEvent(4, 0, "pause"),  # dead
    ],
    "paused, then killed": [FaultEvent(1, 1, "pause"), FaultEvent(3, 1, "kill")],
    "same epoch, listed order": [FaultEvent(2, 1, "pause"), FaultEvent(2, 1, "resume")],
    "restart at the end": [FaultEvent(5, 2, "kill"), FaultEvent(8, 2, "restart")],
}


@pytest.mark.parametrize("name", list(PLANS))
def test_fault_plan_matches_the_in_process_backend(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SimConfig(nodes=3, epochs=8, faults=tuple(PLANS[name]))

    plan = plan_faults(config)
    marks, states = in_process_timeline(config, monkeypatch)

    assert plan.events() == marks
    assert [plan.status(i) for i in range(3)] == states


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_fault_plan_draws_the_same_churn_as_the_in_process_backend(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SimConfig(nodes=5, epochs=12, churn_rate=0.2, seed=seed)

    plan = plan_faults(config)
    marks, states = in_process_timeline(config, monkeypatch)

    assert plan.events() == marks
    assert [plan.status(i) for i in range(5)] == states
    assert any(e == "killed" for e in marks.values())


def test_a_node_killed_at_2_and_restarted_at_5_misses_epochs_3_to_5() -> None:
    config = SimConfig(nodes=3, epochs=7, faults=tuple(PLANS["kill 2, restart 5"]))

    plan = plan_faults(config)

    assert plan.status(1) == ["alive", "alive", "dead", "dead", "dead", "alive", "alive"]
    assert plan.events() == {(1, 3): "killed", (1, 6): "restarted"}


def test_gates_are_the_start_and_the_fault_epochs_in_gossip() -> None:
    config = SimConfig(epochs=8, sync=False, faults=tuple(PLANS["kill 2, restart 5"]))

    assert plan_faults(config).gates == (0, 2, 5)


def test_synchronous_rounds_gate_every_epoch() -> None:
    assert plan_faults(SimConfig(epochs=4, sync=True)).gates == (0, 1, 2, 3)


def test_rows_a_node_did_not_train_say_dead_or_paused(tmp_path: Path) -> None:
    faults = (FaultEvent(1, 1, "kill"), FaultEvent(1, 2, "pause"))
    run = _Run(SimConfig(nodes=3, epochs=3, faults=faults), tmp_path, None)

    rows = {r["node"]: r for r in run.rows_at(2)}

    assert rows["n001"]["alive"] is False
    assert rows["n001"]["event"] == "killed"
    assert rows["n002"]["alive"] is True
    assert rows["n002"]["mode"] == "offline"
    assert rows["n002"]["train_loss"] is None
    assert rows["n002"]["event"] == "paused"


def test_instructions_to_different_workers_at_one_gate_do_not_cancel(tmp_path: Path) -> None:
    run = _Run(SimConfig(nodes=3, epochs=4), tmp_path, None)
    run._publish(2, FAULTS)

    run._instruct(2, resume="n001")
    run._instruct(2, pause="n002")
    first = read_json(gate_path(tmp_path))
    run._instruct(2, resume="n002")
    second = read_json(gate_path(tmp_path))
    run._publish(3, FAULTS)

    assert first is not None and (first["pause"], first["resume"]) == (["n002"], ["n001"])
    assert second is not None and (second["pause"], second["resume"]) == ([], ["n001", "n002"])
    assert run.gate["pause"] == run.gate["resume"] == []  # a new gate starts with no word


# ------------------------------------------------------------------ a worker at a gate


class FakeNamespace:
    """What ``Gate`` uses of a namespace: id, peers and how they look, mode, ``sync_model``."""

    def __init__(self) -> None:
        self.node = SimpleNamespace(id="n001")
        self.peers = [SimpleNamespace(id="n000")]
        self.mode = OperatingMode.PEER
        self.version = 7
        self.synced = 0

    def peer_mode(self, peer: str) -> OperatingMode:
        return OperatingMode.SEEDING

    def peer_version(self, peer: str) -> int:
        return 5

    async def sync_model(self, timeout: float | None = None) -> None:
        self.synced += 1


def publish(out: Path, epoch: int, phase: int, **lists: list[str]) -> None:
    gate = {"epoch": epoch, "phase": phase, "pause": [], "resume": [], "catch_up": []}
    write_atomically(gate_path(out), json.dumps({**gate, **lists}))


async def until_reported(out: Path, epoch: int, stage: str) -> dict[str, Any]:
    for _ in range(200):
        report = read_json(wait_path(out, "n001"))
        if report is not None and (report["epoch"], report["stage"]) == (epoch, stage):
            return report
        await asyncio.sleep(0.01)
    raise AssertionError(f"never reported {stage} at {epoch}: {report}")


def test_a_worker_waits_at_its_gate_until_it_opens(tmp_path: Path) -> None:
    (tmp_path / "nodes").mkdir()
    ns = FakeNamespace()

    async def scenario() -> tuple[int, dict[str, Any], bool]:
        publish(tmp_path, 0, GO)  # the last gate: not this one
        passage = asyncio.create_task(Gate(FileLink(tmp_path, "n001"), ns, "peer").passage(2))
        report = await until_reported(tmp_path, 2, "arrived")
        publish(tmp_path, 2, FAULTS)
        await asyncio.sleep(0.1)
        waiting = not passage.done()
        publish(tmp_path, 2, GO)
        return await passage, report, waiting

    epoch, report, waited = asyncio.run(scenario())

    assert epoch == 2
    assert waited
    assert report["peers"] == {"n000": ["seeding", 5]}
    assert (report["mode"], report["version"]) == ("peer", 7)
    assert ns.synced == 0


def test_a_paused_worker_goes_offline_and_comes_back_at_the_resume_epoch(tmp_path: Path) -> None:
    (tmp_path / "nodes").mkdir()
    ns = FakeNamespace()

    async def scenario() -> tuple[int, list[str]]:
        modes = []
        passage = asyncio.create_task(Gate(FileLink(tmp_path, "n001"), ns, "peer").passage(2))
        await until_reported(tmp_path, 2, "arrived")
        publish(tmp_path, 2, FAULTS, pause=["n001"])
        await until_reported(tmp_path, 2, "paused")
        modes.append(ns.mode.value)
        publish(tmp_path, 2, GO, pause=["n001"])  # the others go on; it stays
        publish(tmp_path, 3, GO)
        publish(tmp_path, 4, FAULTS)
        await asyncio.sleep(0.1)
        assert not passage.done()
        publish(tmp_path, 4, FAULTS, resume=["n001"])
        await until_reported(tmp_path, 4, "arrived")
        modes.append(ns.mode.value)
        publish(tmp_path, 4, CATCH_UP, resume=["n001"], catch_up=["n001"])
        await until_reported(tmp_path, 4, "caught_up")
        publish(tmp_path, 4, GO)
        return await passage, modes

    epoch, modes = asyncio.run(scenario())

    assert epoch == 4  # it trains epoch 5 next, like the others
    assert modes == ["offline", "peer"]
    assert ns.synced == 1


def test_a_waiting_worker_gives_up_when_the_run_stops(tmp_path: Path) -> None:
    (tmp_path / "nodes").mkdir()

    async def scenario() -> None:
        gate = Gate(FileLink(tmp_path, "n001"), FakeNamespace(), "peer")
        passage = asyncio.create_task(gate.passage(0))
        await until_reported(tmp_path, 0, "arrived")
        (tmp_path / "stop").touch()
        await passage

    with pytest.raises(RunnerGone):
        asyncio.run(scenario())


def test_a_waiting_worker_gives_up_when_its_runner_is_gone(tmp_path: Path) -> None:
    (tmp_path / "nodes").mkdir()
    gone = -1  # no process has this id: the runner died, the worker was handed to another

    with pytest.raises(RunnerGone):
        gate = Gate(FileLink(tmp_path, "n001", runner=gone), FakeNamespace(), "peer")
        asyncio.run(gate.passage(0))


# ------------------------------------------------------------------ files


def row(epoch: int) -> dict[str, object]:
    return {"node": "n000", "epoch": epoch, "accuracy": 0.5, "merged_from": ["n001", "n002"]}


def test_missing_file_has_no_rows(tmp_path: Path) -> None:
    assert read_metric_rows(tmp_path / "absent.jsonl") == []


def test_a_half_written_last_line_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "n000.jsonl"
    whole = json.dumps(row(1)) + "\n"
    path.write_text(whole + json.dumps(row(2))[:40], encoding="utf-8")

    rows = read_metric_rows(path)

    assert [r["epoch"] for r in rows] == [1]


def test_a_broken_line_is_skipped_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "n000.jsonl"
    cut = json.dumps(row(2))[:30]
    path.write_text(f"{json.dumps(row(1))}\n{cut}\n{json.dumps(row(3))}\n", encoding="utf-8")

    rows = read_metric_rows(path)

    assert [r["epoch"] for r in rows] == [1, 3]
    assert "does not parse" in caplog.text


def test_append_closes_off_a_line_cut_by_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "n000.jsonl"
    path.write_text(json.dumps(row(1)) + "\n" + json.dumps(row(2))[:25], encoding="utf-8")

    _append(path, row(3))

    assert [r["epoch"] for r in read_metric_rows(path)] == [1, 3]


def test_rows_read_during_concurrent_appends_are_always_whole(tmp_path: Path) -> None:
    path = tmp_path / "n000.jsonl"
    done = threading.Event()

    def writer() -> None:
        for epoch in range(1, 301):
            _append(path, row(epoch))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        epochs = [r["epoch"] for r in read_metric_rows(path)]
        assert epochs == list(range(1, len(epochs) + 1))
    thread.join(timeout=10)

    assert len(read_metric_rows(path)) == 300


def test_atomic_write_replaces_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "n000.final.json"
    path.write_text('{"accuracy": 0.1}', encoding="utf-8")

    write_atomically(path, json.dumps({"accuracy": 0.9}))

    assert json.loads(path.read_text(encoding="utf-8")) == {"accuracy": 0.9}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["n000.final.json"]
