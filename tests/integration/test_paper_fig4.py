"""The paper's Fig. 4 programs (``../shared/paper/``), verbatim, as two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAPER = ROOT.parent / "shared" / "paper"
HARNESS = Path(__file__).with_name("fig4_harness.py")


def _env() -> dict[str, str]:
    env = dict(os.environ, SCATTERBRAINED_DISCOVERY="loopback", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return env


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text()
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def _start(program: str, report: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(HARNESS), str(PAPER / program), str(report)],
        env=_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.timeout(150)
@pytest.mark.skipif(not (PAPER / "fig4_creator.py").exists(), reason="../shared/paper is absent")
def test_fig4_creator_and_joiner_run_verbatim(tmp_path: Path) -> None:
    # Prepare: the creator trains 10 epochs and serves; the joiner has no model code.
    creator_report, joiner_report = tmp_path / "creator.jsonl", tmp_path / "joiner.jsonl"
    creator = _start("fig4_creator.py", creator_report, tmp_path)
    joiner = _start("fig4_joiner.py", joiner_report, tmp_path)
    try:
        # Execute: wait (bounded) until the joiner synced and holds the creator's weights.
        deadline = time.monotonic() + 120
        agreed = False
        while time.monotonic() < deadline and not agreed:
            assert creator.poll() is None, creator.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert joiner.poll() is None, joiner.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            made, joined = _rows(creator_report), _rows(joiner_report)
            trained = [r for r in made if r["version"] >= 10]
            agreed = bool(trained and joined) and joined[-1]["digest"] == made[-1]["digest"]
            time.sleep(0.2)  # polling two files written by other processes

        # Assert: the newcomer downloaded the model, it runs, and the weights are equal.
        synced = [r for r in _rows(joiner_report) if r["kind"] == "ModelSynced"]
        assert agreed, (_rows(creator_report)[-1:], _rows(joiner_report)[-1:])
        assert synced and synced[0]["output_shape"] == [4, 2]
    finally:
        for proc in (joiner, creator):
            proc.send_signal(signal.SIGINT)
        for proc in (joiner, creator):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
