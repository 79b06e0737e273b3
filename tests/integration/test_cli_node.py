"""`scatterbrained node` and `scatterbrained peers` as real processes on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "scatterbrained.cli.main", *args]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, SCATTERBRAINED_DISCOVERY="loopback", PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    return env


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float) -> list[str]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"{needle!r} not printed within {timeout} s; got {seen}")


@pytest.mark.timeout(180)
def test_node_trains_serves_is_listed_and_syncs_a_newcomer() -> None:
    namespace = f"cli-{uuid.uuid4().hex[:8]}"
    trainer = subprocess.Popen(
        _cli(
            "node",
            "-n",
            namespace,
            "--id",
            "trainer",
            "--model",
            "examples.deploy:model",
            "--data",
            "examples.deploy:data",
            "--epochs",
            "3",
            "--discovery",
            "loopback",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=_env(SHARD="0"),
    )
    try:
        lines = _wait_for_line(trainer, "serving", timeout=120)
        assert any(line.startswith("epoch 3:") for line in lines)

        listed = subprocess.run(
            _cli("peers", namespace, "--timeout", "3", "--discovery", "loopback"),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=_env(),
            timeout=60,
            check=True,
        )
        synced = subprocess.run(
            _cli("node", "-n", namespace, "--no-serve", "--discovery", "loopback"),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=_env(),
            timeout=90,
            check=True,
        )

        assert "trainer" in listed.stdout and "peer" in listed.stdout, listed.stdout
        assert "model synced (version 3)" in synced.stdout, synced.stdout + synced.stderr
    finally:
        trainer.kill()
        trainer.wait()


def test_node_with_a_bad_factory_fails_with_one_line() -> None:
    result = subprocess.run(
        _cli("node", "-n", "x", "--model", "no_such_module:make", "--discovery", "off"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "no_such_module" in result.stderr
