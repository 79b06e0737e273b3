"""Console output of simulations: no source locations, whole lines off a terminal."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from scatterbrained.cli.progress import LiveProgress, make_console
from scatterbrained.sim.config import SimConfig

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "simulation.toml"
LINE = re.compile(
    r"^\d\d:\d\d:\d\d epoch +\d+/\d+  mean acc \S+  alive \d+/\d+  .* sent [\d.]+ k?M?G?B"
)


def _rows(events: dict[int, str]) -> list[dict[str, Any]]:
    return [
        {
            "node": f"n{i:03d}",
            "alive": True,
            "accuracy": 0.8,
            "peers": 3,
            "bytes_sent": 2_300_000,
            "event": events.get(i),
        }
        for i in range(8)
    ]


def test_off_a_terminal_a_long_line_stays_whole() -> None:
    # Prepare: a pipe-like console of the default 80 columns
    buffer = io.StringIO()
    console = Console(file=buffer, width=80, log_path=False, soft_wrap=True)
    assert not console.is_terminal
    events = {i: "killed" if i % 2 else "restarted" for i in range(8)}
    # Execute
    with LiveProgress(SimConfig(nodes=8, epochs=30), console=console) as progress:
        progress.status("loading digits")
        progress.epoch(7, _rows(events))
    # Assert
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 2, lines  # no progress bar, nothing wrapped
    assert re.match(r"^\d\d:\d\d:\d\d loading digits$", lines[0])
    assert LINE.match(lines[1]) and lines[1].endswith("n006 restarted, n007 killed")
    assert len(lines[1]) > 120
    assert "\x1b[" not in buffer.getvalue(), "no colour codes off a terminal"


def test_on_a_terminal_lines_carry_no_source_location() -> None:
    # Prepare
    buffer = io.StringIO()
    console = Console(file=buffer, width=200, force_terminal=True, log_path=False)
    # Execute
    with LiveProgress(SimConfig(nodes=8, epochs=30), console=console) as progress:
        progress.epoch(1, _rows({}))
    # Assert
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", buffer.getvalue())  # colours and cursor
    assert "epoch   1/30" in text and "mean acc 0.800" in text
    assert "progress.py" not in text


def test_make_console_soft_wraps_only_off_a_terminal() -> None:
    # make_console looks at stdout, which pytest captures: not a terminal
    console = make_console()
    assert console.soft_wrap is (not console.is_terminal)


@pytest.mark.timeout(240)
def test_simulate_piped_prints_whole_lines_without_source_locations(
    tmp_path: Path, torch_ready: None
) -> None:
    # Prepare: a run folder whose path is longer than 80 columns
    out_dir = tmp_path / ("run-" + "x" * 90)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "80"}
    env.pop("FORCE_COLOR", None)
    argv = [sys.executable, "-m", "scatterbrained.cli.main", "simulate", str(EXAMPLE)]
    argv += ["--nodes", "3", "--epochs", "2", "--no-centralized", "--out", str(out_dir)]
    # Execute
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=220)
    # Assert
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "progress.py" not in out + done.stderr
    lines = out.splitlines()
    epochs = [line for line in lines if " epoch " in line]
    assert len(epochs) == 2 and all(LINE.match(line) for line in epochs), epochs
    assert f"run folder: {out_dir}" in lines, "the long path was broken across lines"
    assert f"plot: {out_dir / 'topology.png'}" in lines
    assert "\x1b[" not in out
    assert (out_dir / "topology.png").stat().st_size > 10_000
