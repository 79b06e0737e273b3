"""live.jsonl: written while a simulation goes, the same rows as metrics.jsonl; never fatal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scatterbrained.federation.topology import topology_from_spec
from scatterbrained.sim.config import FaultEvent, SimConfig
from scatterbrained.sim.live import LIVE_FILE, LiveLog, topology_edges
from scatterbrained.sim.runner import run_simulation


@pytest.mark.timeout(180)
def test_a_run_writes_its_live_log_as_it_goes(tmp_path: Path, torch_ready: None) -> None:
    config = SimConfig(
        nodes=3,
        epochs=2,
        train_limit=300,
        test_limit=100,
        topology="ring",
        modes={"2": "seeding"},
        faults=(FaultEvent(1, 1, "kill"),),
        out=str(tmp_path),
    )
    lines_at_epoch: list[int] = []

    def count_lines(epoch: int, rows: list[dict[str, object]]) -> None:
        lines_at_epoch.append(len((tmp_path / LIVE_FILE).read_text().splitlines()))

    result = run_simulation(config, on_epoch=count_lines)

    records = [json.loads(line) for line in (tmp_path / LIVE_FILE).read_text().splitlines()]
    assert [r["kind"] for r in records] == ["run", "epoch", "epoch", "end"]
    assert lines_at_epoch == [2, 3]  # each epoch is in the log before on_epoch sees it
    run = records[0]
    assert run["nodes"] == ["n000", "n001", "n002"]
    assert run["modes"] == {"n000": "peer", "n001": "peer", "n002": "seeding"}
    assert run["epochs"] == 2 and run["config"]["topology"] == "ring"
    assert ["n000", "n001"] in run["edges"]
    assert [row for r in records[1:3] for row in r["rows"]] == result.metrics
    assert ["n000", "n001"] not in records[2]["edges"]  # n001 was killed after epoch 1
    assert records[3]["summary"] == result.summary


def test_a_failed_write_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = LiveLog(tmp_path / "missing-folder" / LIVE_FILE)

    log.start(["a"], {"a": "peer"}, [], epochs=1, title="t", config={})
    log.epoch(1, [], [])
    log.end({})

    assert [r.message for r in caplog.records if "live log" in r.message] == [
        f"live log {log.path} stopped (the run goes on): "
        f"[Errno 2] No such file or directory: '{log.path}'"
    ]


def test_topology_edges_are_sorted_pairs_or_nothing() -> None:
    class Broken:
        def edges(self, members: object, epoch: int = 0) -> set[tuple[str, str]]:
            raise RuntimeError("no")

    ring = topology_from_spec("ring")

    assert topology_edges(ring, ["a", "b"], 0) == [["a", "b"], ["b", "a"]]
    assert topology_edges(Broken(), ["a"], 0) == []  # type: ignore[arg-type]
