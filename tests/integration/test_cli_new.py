"""`scatterbrained new` and `scatterbrained simulate` run from inside the new project, as a
user would: real processes, the project's files unchanged, then with its model swapped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

CNN = '''
from torch import nn


def make_model(input_shape, num_classes):
    """A small CNN; the digits come flat (64,), so it first reshapes them to 1x8x8 images."""
    assert tuple(input_shape) == (64,)
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, num_classes),
    )
'''


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SCATTERBRAINED_DISCOVERY="loopback", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = str(ROOT / "src")
    return subprocess.run(
        [sys.executable, "-m", "scatterbrained.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=240,
    )


def _only_run(project: Path) -> dict[str, object]:
    runs = sorted((project / "runs").iterdir())
    summary: dict[str, object] = json.loads((runs[-1] / "summary.json").read_text("utf-8"))
    return summary


@pytest.mark.timeout(480)
def test_a_new_project_runs_as_it_is_and_with_its_model_swapped_for_a_cnn(
    tmp_path: Path,
) -> None:
    created = _cli("new", "demo-project", cwd=tmp_path)
    project = tmp_path / "demo-project"
    assert created.returncode == 0, created.stderr
    assert {p.name for p in project.iterdir()} >= {
        "model.py",
        "data.py",
        "scatterbrained.toml",
        "README.md",
    }
    readme = (project / "README.md").read_text("utf-8")
    assert 'pip install "scatterbrained[torch]"' in readme and "scatterbrained simulate" in readme

    first = _cli("simulate", cwd=project)

    assert first.returncode == 0, first.stdout + first.stderr
    assert "config: scatterbrained.toml" in first.stdout
    summary = _only_run(project)
    assert summary["dataset"] == "data:load" and summary["nodes_finished"] == 4
    assert float(summary["mean_accuracy"]) > 0.5  # type: ignore[arg-type]  # chance: 0.1

    (project / "model.py").write_text(CNN, encoding="utf-8")
    shutil.rmtree(project / "runs")

    second = _cli("simulate", cwd=project)

    assert second.returncode == 0, second.stdout + second.stderr
    assert float(_only_run(project)["mean_accuracy"]) > 0.5  # type: ignore[arg-type]
