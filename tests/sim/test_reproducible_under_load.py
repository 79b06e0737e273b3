"""A seeded in-memory run gives identical metrics on an idle and on a loaded machine.

The in-memory simulator decides nothing by wall-clock time (crashes are reported at once,
rounds wait for every live neighbour), so two runs of one seeded config, the second with two
CPU-bound processes competing for the cores, write the same accuracy, loss, mode and
``merged_from`` for every node and epoch, through a policy switch, a kill and a restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from scatterbrained.sim.config import SimConfig
from scatterbrained.sim.runner import run_simulation

pytestmark = pytest.mark.timeout(300)

HOG = "import time\nend = time.monotonic() + 240\nwhile time.monotonic() < end: pass\n"


def _config(out: Path) -> SimConfig:
    return SimConfig.from_mapping(
        dict(
            nodes=6,
            epochs=5,
            dataset="digits",
            topology="ring",
            seed=3,
            policies={"0": "leech-until:samples=150"},
            faults=[
                {"epoch": 2, "node": 3, "action": "kill"},
                {"epoch": 3, "node": 3, "action": "restart"},
            ],
            out=str(out),
        )
    )


def _rows(out: Path) -> list[tuple[Any, ...]]:
    keys = ("node", "epoch", "alive", "accuracy", "loss", "train_loss", "mode", "merged_from")
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [tuple(json.dumps(row.get(k)) for k in keys) for row in map(json.loads, lines)]


def test_a_seeded_run_is_identical_with_and_without_cpu_load(tmp_path: Path) -> None:
    # Prepare: one idle run.
    run_simulation(_config(tmp_path / "idle"))
    idle = _rows(tmp_path / "idle")

    # Execute: the same run while two CPU-bound processes compete for the cores.
    hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(2)]
    try:
        run_simulation(_config(tmp_path / "loaded"))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    loaded = _rows(tmp_path / "loaded")

    # Assert: byte-identical rows, and the run did exercise the switch, the kill and restart.
    assert loaded == idle
    modes = {json.loads(r[6]) for r in idle if json.loads(r[0]) == "n000"}
    assert modes == {"leeching", "peer"}
    assert any(json.loads(r[2]) is False for r in idle)  # n003 was down for an epoch
