"""``scatterbrained simulate --tensorboard --mlflow``: the real command, read back by
TensorBoard's and MLflow's own readers, equal to the run's ``metrics.jsonl``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scatterbrained.cli.main import main

pytest.importorskip("tensorboardX")
pytest.importorskip("mlflow")

CONFIG = """
nodes = 4
epochs = 3
dataset = "digits"
topology = "fully-connected"
faults = [{ epoch = 2, node = 3, action = "kill" }]
"""


def series(rows: list[dict[str, Any]], node: str, key: str) -> list[tuple[int, float]]:
    return [(r["epoch"], r[key]) for r in rows if r["node"] == node and r[key] is not None]


@pytest.mark.timeout(300)
def test_simulate_exports_the_metrics_jsonl_series_to_tensorboard_and_mlflow(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    read_tensorboard: Callable[[Path], dict[str, Any]],
    read_mlflow: Callable[..., dict[str, dict[str, Any]]],
    torch_ready: None,
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG, encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # the run folder is runs/<time> under the working folder

    code = main(["simulate", str(config), "--tensorboard", "--mlflow"])

    out, err = capsys.readouterr()
    assert code == 0, err
    (run,) = (tmp_path / "runs").iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any(r["accuracy"] is None for r in rows)  # the killed node's epochs
    tb, ml = read_tensorboard(run / "tensorboard"), read_mlflow((run / "mlruns").as_uri())
    nodes = [f"n{i:03d}" for i in range(4)]
    assert set(tb) == {"all", *nodes}
    assert set(ml) == {run.name, *nodes}
    for node in nodes:
        expected = series(rows, node, "accuracy")
        assert ml[node]["accuracy"] == expected
        assert tb[node]["accuracy"] == [(e, float(np.float32(a))) for e, a in expected]
        assert ml[node]["bytes_sent"] == series(rows, node, "bytes_sent")
    for epoch in (1, 2, 3):
        accuracies = [
            r["accuracy"] for r in rows if r["epoch"] == epoch and r["accuracy"] is not None
        ]
        mean = sum(accuracies) / len(accuracies)
        assert dict(ml[run.name]["accuracy"])[epoch] == pytest.approx(mean)
        assert dict(ml[run.name]["accuracy_min"])[epoch] == min(accuracies)
        assert dict(tb["all"]["accuracy"])[epoch] == pytest.approx(mean, rel=1e-6)
    assert ml[run.name]["_params"]["nodes"] == "4"
    assert f"tensorboard: {Path('runs', run.name, 'tensorboard')} (view: tensorboard" in out
    assert f"mlflow: {(run / 'mlruns').resolve().as_uri()}" in out


def test_a_config_file_taken_as_the_flag_value_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.toml"
    config.write_text(CONFIG, encoding="utf-8")

    code = main(["simulate", "--tensorboard", str(config), "--out", str(tmp_path / "run")])

    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: --tensorboard expects a folder or URI, got the file {str(config)!r} (a config "
        "file taken as its value?); write --tensorboard=DIR, or put --tensorboard after the "
        "config file"
    ]
    assert not (tmp_path / "run").exists()


NODE_MODULE = """
import torch
from scatterbrained.sim.datasets import ArrayLoader, load_digits

def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))

def data():
    d = load_digits()
    train = ArrayLoader(d.x_train[:64], d.y_train[:64], 32, seed=0)
    return train, ArrayLoader(d.x_test[:64], d.y_test[:64], 32)
"""


@pytest.mark.timeout(180)
def test_node_exports_its_epochs_under_runs(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    read_tensorboard: Callable[[Path], dict[str, Any]],
    read_mlflow: Callable[..., dict[str, dict[str, Any]]],
    torch_ready: None,
) -> None:
    (tmp_path / "lonely.py").write_text(NODE_MODULE, encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # --model/--data modules and runs/ are found here
    argv = [
        *("node", "-n", "Lonely", "--id", "solo", "--host", "127.0.0.1", "--discovery", "off"),
        *("--model", "lonely:model", "--data", "lonely:data", "--epochs", "2", "--no-serve"),
        *("--tensorboard", "--mlflow"),
    ]

    code = main(argv)

    out, err = capsys.readouterr()
    assert code == 0, err
    printed = [line for line in out.splitlines() if line.startswith("epoch ")]
    accuracies = [float(line.split("val_acc ")[1].split()[0]) for line in printed]
    tb = read_tensorboard(tmp_path / "runs" / "tensorboard")
    ml = read_mlflow((tmp_path / "runs" / "mlruns").as_uri(), "Lonely")
    assert set(tb) == set(ml) == {"solo"}
    exported = ml["solo"]["accuracy"]
    assert [e for e, _ in exported] == [1, 2]  # the node prints accuracies to 3 decimals
    assert [a for _, a in exported] == pytest.approx(accuracies, abs=6e-4)
    assert ml["solo"]["_status"] == "FINISHED"
    assert tb["solo"]["accuracy"] == [(e, float(np.float32(a))) for e, a in ml["solo"]["accuracy"]]
