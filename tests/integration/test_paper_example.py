"""The paper's two programs as two processes: the newcomer gets the trainer's exact model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "paper_example.py"


def _env() -> dict[str, str]:
    env = dict(os.environ, SCATTERBRAINED_DISCOVERY="loopback", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _json_line(proc: subprocess.Popen[str]) -> dict[str, object]:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return dict(json.loads(line))
    raise AssertionError(f"process ended without a JSON line (exit {proc.wait()})")


@pytest.mark.timeout(180)
def test_newcomer_syncs_the_trained_model(tmp_path: Path) -> None:
    # Prepare: the trainer trains 10 epochs, then serves for up to 60 s.
    trainer = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "train", "10", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=_env(),
        cwd=tmp_path,
    )
    try:
        trained = _json_line(trainer)

        # Execute: a second process with no model code joins and syncs.
        joined = subprocess.run(
            [sys.executable, str(EXAMPLE), "join", "60"],
            capture_output=True,
            text=True,
            env=_env(),
            cwd=tmp_path,
            timeout=120,
            check=True,
        )
        synced = json.loads(next(x for x in joined.stdout.splitlines() if x.startswith("{")))

        # Assert: identical weights, and the synced model runs (and is accurate).
        assert synced["synced"] == trained["trained"]
        assert float(synced["accuracy"]) > 0.85
    finally:
        trainer.kill()
        trainer.wait()
