"""64 nodes in one process: ``scatterbrained simulate`` on digits converges and writes a run folder.

One run (module fixture) of 64 in-memory nodes on a random 4-regular graph, IID shards of
~21 samples each, synchronous rounds, 15 epochs, with every per-node behaviour switched on:

* n001 SEEDING (sends, never receives), n002 LEECHING (receives, never sends),
  n003 OFFLINE (neither), n004 LEECHING under ``leech-until:samples=60`` (turns PEER once it
  has trained on 60 samples, in epoch 3);
* n005 killed after epoch 4 and restarted after epoch 6.

The tests then read the run folder the CLI wrote: config.json, metrics.jsonl, summary.json
and the two PNGs.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from scatterbrained.cli.main import main
from scatterbrained.sim.config import load_config
from scatterbrained.sim.experiment import Experiment

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NODES = 64
EPOCHS = 15
LEECH_UNTIL = 60
CONFIG = f"""
nodes = {NODES}
epochs = {EPOCHS}
dataset = "digits"
partition = "iid"
topology = "random-regular:k=4"
aggregator = "fedavg"
backend = "memory"
sync = true
lr = 0.05
batch_size = 16
hidden = 128
seed = 0
centralized = true
modes = {{ "1" = "seeding", "2" = "leeching", "3" = "offline", "4" = "leeching" }}
policies = {{ "4" = "leech-until:samples={LEECH_UNTIL}" }}
faults = [
  {{ epoch = 4, node = 5, action = "kill" }},
  {{ epoch = 6, node = 5, action = "restart" }},
]
"""


def squash(text: str) -> str:
    """``text`` without whitespace (rich wraps long lines at the console width)."""
    return "".join(text.split())


class Run:
    """What one ``scatterbrained simulate`` call left behind."""

    def __init__(self, toml: Path, out: Path, code: int, stdout: str, stderr: str) -> None:
        self.toml, self.out, self.code = toml, out, code
        self.stdout, self.stderr = stdout, stderr
        lines = (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        self.rows: list[dict[str, Any]] = [json.loads(line) for line in lines]
        self.summary: dict[str, Any] = json.loads((out / "summary.json").read_text("utf-8"))

    def epoch(self, epoch: int) -> dict[str, dict[str, Any]]:
        """Node id -> its row in ``epoch``."""
        return {r["node"]: r for r in self.rows if r["epoch"] == epoch}

    def modes_in(self, epoch: int, mode: str) -> set[str]:
        return {node for node, r in self.epoch(epoch).items() if r["mode"] == mode}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("memory64")
    toml = folder / "sim.toml"
    toml.write_text(CONFIG, encoding="utf-8")
    out = folder / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        code = main(["simulate", str(toml), "--out", str(out)])
    print(f"64-node simulation took {time.monotonic() - started:.1f} s")
    return Run(toml, out, code, stdout.getvalue(), stderr.getvalue())


def test_the_cli_run_finished_and_converged(run: Run) -> None:
    summary = run.summary

    assert run.code == 0, run.stderr
    assert "Summary" in run.stdout and squash(f"run folder: {run.out}") in squash(run.stdout)
    assert summary["nodes"] == NODES and summary["epochs"] == EPOCHS
    assert summary["nodes_finished"] == NODES  # n005 came back
    assert summary["mean_accuracy"] >= 0.8, summary  # chance is 0.1
    first_epoch = [r["accuracy"] for r in run.rows if r["epoch"] == 1]
    assert summary["mean_accuracy"] > sum(first_epoch) / len(first_epoch) + 0.2
    peers = [r["accuracy"] for r in run.epoch(EPOCHS).values() if r["mode"] == "peer"]
    assert min(peers) >= 0.7, sorted(peers)


def test_config_json_reads_back_as_the_same_config(run: Run) -> None:
    expected = load_config(run.toml).replace(out=str(run.out))

    assert load_config(run.out / "config.json") == expected


def test_metrics_have_one_full_line_per_node_and_epoch(run: Run) -> None:
    keys = {"node", "epoch", "alive", "event", "accuracy", "loss", "mode", "merged_from"}
    keys |= {"bytes_sent", "bytes_received", "wall_s", "peers"}

    assert len(run.rows) == NODES * EPOCHS
    assert {(r["node"], r["epoch"]) for r in run.rows} == {
        (f"n{i:03d}", e) for i in range(NODES) for e in range(1, EPOCHS + 1)
    }
    for row in run.rows:
        assert keys <= set(row), sorted(keys - set(row))
        assert row["wall_s"] >= 0 and row["bytes_sent"] >= 0
        if row["alive"]:
            assert 0.0 <= row["accuracy"] <= 1.0 and math.isfinite(row["loss"])


def test_summary_has_the_totals(run: Run) -> None:
    summary = run.summary
    finals = [r["accuracy"] for r in run.epoch(EPOCHS).values()]

    assert summary["min_accuracy"] == min(finals) and summary["max_accuracy"] == max(finals)
    assert summary["mean_accuracy"] == pytest.approx(sum(finals) / len(finals))
    assert 0.85 <= summary["centralized_accuracy"] <= 1.0
    assert summary["wall_s"] > 0
    assert summary["bytes_total"] == sum(r["bytes_sent"] for r in run.rows) > 0


@pytest.mark.parametrize("name", ["accuracy.png", "topology.png"])
def test_plots_are_valid_images(run: Run, name: str) -> None:
    import matplotlib.image

    path = run.out / name

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] >= 200 and image.shape[1] >= 200
    assert image.std() > 0  # not a blank canvas


def test_churn_is_visible_in_the_metrics(run: Run) -> None:
    n005 = {r["epoch"]: r for r in run.rows if r["node"] == "n005"}

    assert [(e, r["event"]) for e, r in n005.items() if r["event"]] == [
        (5, "killed"),
        (7, "restarted"),
    ]
    assert [e for e, r in n005.items() if not r["alive"]] == [5, 6]
    for epoch in (5, 6):
        assert n005[epoch]["accuracy"] is None
        assert not any("n005" in r["merged_from"] for r in run.epoch(epoch).values())
    assert n005[7]["accuracy"] > n005[4]["accuracy"]  # it caught up from a peer
    assert run.summary["events"] == [
        {"node": "n005", "epoch": 5, "event": "killed"},
        {"node": "n005", "epoch": 7, "event": "restarted"},
    ]
    churn = "churn: n005 killed before epoch 5, n005 restarted before epoch 7"
    assert squash(churn) in squash(run.stdout)


def test_seeding_node_never_merges_but_is_merged(run: Run) -> None:
    n001 = [r for r in run.rows if r["node"] == "n001"]

    assert {r["mode"] for r in n001} == {"seeding"}
    assert all(r["merged_from"] == [] and r["bytes_received"] == 0 for r in n001)
    assert any("n001" in r["merged_from"] for r in run.rows)


def test_nobody_merges_from_a_leeching_or_offline_node(run: Run) -> None:
    for epoch in range(1, EPOCHS + 1):
        silent = run.modes_in(epoch, "leeching") | run.modes_in(epoch, "offline")
        assert {"n002", "n003"} <= silent
        for node, row in run.epoch(epoch).items():
            assert not silent & set(row["merged_from"]), (epoch, node, row["merged_from"])
    n002 = [r for r in run.rows if r["node"] == "n002"]
    assert all(r["bytes_sent"] == 0 for r in n002)
    assert all(r["merged_from"] for r in n002)  # a leecher does receive


def test_offline_node_is_isolated(run: Run) -> None:
    n003 = [r for r in run.rows if r["node"] == "n003"]

    assert {r["mode"] for r in n003} == {"offline"}
    assert all(r["merged_from"] == [] for r in n003)
    assert all(r["bytes_sent"] == 0 and r["bytes_received"] == 0 for r in n003)
    assert not any("n003" in r["merged_from"] for r in run.rows)


def test_leech_until_policy_switches_at_the_threshold(run: Run) -> None:
    shard = len(Experiment.load(load_config(run.out / "config.json")).parts[4])
    switch_epoch = math.ceil(LEECH_UNTIL / shard)  # first epoch whose samples reach it
    n004 = {r["epoch"]: r for r in run.rows if r["node"] == "n004"}

    assert 1 < switch_epoch < EPOCHS
    # The policy decides at the end of an epoch's exchange: n004 sends from the next epoch.
    modes = [n004[e]["mode"] for e in range(1, EPOCHS + 1)]
    assert modes == ["leeching"] * switch_epoch + ["peer"] * (EPOCHS - switch_epoch)
    merged_from_n004 = {r["epoch"] for r in run.rows if "n004" in r["merged_from"]}
    assert merged_from_n004 and min(merged_from_n004) == switch_epoch + 1  # once it sends
