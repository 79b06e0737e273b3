"""`scatterbrained node` and `scatterbrained peers` as real processes on loopback."""

from __future__ import annotations

import os
import re
import signal
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


@pytest.mark.timeout(180)
def test_node_prints_rounded_metrics_and_mode_switches_and_exits_0_on_ctrl_c() -> None:
    namespace = f"cli-{uuid.uuid4().hex[:8]}"
    policy = "after-epochs:epochs=1,then=peer"
    node = subprocess.Popen(
        _cli(
            *("node", "-n", namespace, "--id", "switcher"),
            *("--model", "examples.deploy:model", "--data", "examples.deploy:data"),
            *("--epochs", "2", "--discovery", "loopback"),
            *("--mode", "leeching", "--policy", policy),
            *("--gossip", "--share-every", "5", "--gossip-wait", "0.5", "--round-timeout", "5"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=_env(SHARD="1"),
    )
    try:
        lines = _wait_for_line(node, "serving", timeout=120)

        node.send_signal(signal.SIGINT)
        rest, _ = node.communicate(timeout=60)
    finally:
        node.kill()
        node.wait()

    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2, lines
    for line in epochs:  # e.g. "epoch 1: loss 2.2464 val_loss 2.168 val_acc 0.496 mode ..."
        assert re.search(r"val_acc \d\.\d{3} mode (leeching|peer) merged ", line), line
    assert f"mode leeching -> peer (policy {policy})\n" in lines, lines
    assert node.returncode == 0, rest
    assert "stopped (Ctrl-C)" in rest
    assert "Traceback" not in rest


def test_node_without_a_model_gives_up_after_the_sync_timeout() -> None:
    result = subprocess.run(
        _cli(
            *("node", "-n", f"cli-{uuid.uuid4().hex[:8]}", "--discovery", "off"),
            *("--sync-timeout", "0.5"),
        ),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=_env(),
        timeout=60,
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: "), result.stderr
