"""MLflowLogger: rows in, MLflow's own client gets the same series back."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scatterbrained.errors import ConfigurationError

pytest.importorskip("mlflow")

from scatterbrained.export import MLflowLogger
from scatterbrained.export.mlflow_logger import tracking_uri

pytestmark = pytest.mark.timeout(60)

Read = Callable[..., dict[str, dict[str, Any]]]


def rows_of(epoch: int, nodes: int = 3) -> list[dict[str, Any]]:
    return [
        {
            "node": f"n{i:03d}", "epoch": epoch, "alive": True,
            "accuracy": 0.1 * i + 0.05 * epoch, "loss": 1.0 / epoch,
            "merged_from": ["x"] * i, "bytes_sent": 100 * (i + 1), "mode": "peer",
        }
        for i in range(nodes)
    ]  # fmt: skip


def test_child_run_per_node_and_aggregate_in_the_top_run(tmp_path: Path, read_mlflow: Read) -> None:
    uri = (tmp_path / "mlruns").as_uri()
    epochs = {epoch: rows_of(epoch) for epoch in (1, 2)}

    with MLflowLogger(uri, run_name="run-1", params={"nodes": 3, "topology": "ring"}) as ml:
        for epoch, rows in epochs.items():
            ml.log_epoch(epoch, rows)
    runs = read_mlflow(uri)

    assert set(runs) == {"run-1", "n000", "n001", "n002"}
    top = runs["run-1"]
    assert top["_parent"] is None and top["_status"] == "FINISHED"
    assert top["_params"] == {"nodes": "3", "topology": "ring"}
    for node in ("n000", "n001", "n002"):
        expected = [
            (e, r["accuracy"]) for e, rows in epochs.items() for r in rows if r["node"] == node
        ]
        assert runs[node]["accuracy"] == expected
        assert runs[node]["_parent"] == top["_id"] and runs[node]["_status"] == "FINISHED"
    assert runs["n002"]["merged"] == [(1, 2.0), (2, 2.0)]
    means = [(e, sum(r["accuracy"] for r in rows) / 3) for e, rows in epochs.items()]
    assert [(s, pytest.approx(v)) for s, v in top["accuracy"]] == means
    assert top["bytes_sent"] == [(1, 600.0), (2, 600.0)]


def test_a_single_node_logs_into_one_run_named_after_it(tmp_path: Path, read_mlflow: Read) -> None:
    uri = (tmp_path / "mlruns").as_uri()

    with MLflowLogger(uri, experiment="MyNetwork") as ml:
        ml.log_epoch(1, rows_of(1, nodes=1))
        ml.log_epoch(2, rows_of(2, nodes=1))

    runs = read_mlflow(uri, "MyNetwork")
    assert set(runs) == {"n000"}
    assert runs["n000"]["accuracy"] == [(1, 0.05), (2, 0.1)]
    assert "accuracy_min" not in runs["n000"]


def test_a_folder_becomes_a_file_store_and_nothing_is_made_before_the_first_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    folder = tmp_path / "mlruns"

    ml = MLflowLogger(folder)
    assert ml.tracking_uri == folder.resolve().as_uri() and not folder.exists()
    ml.log_epoch(1, rows_of(1))
    ml.close()

    assert folder.is_dir()
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # opted in only while opening


def test_uris_pass_through_and_paths_become_file_uris() -> None:
    assert tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert tracking_uri("runs/mlruns").startswith("file:///")


def test_without_mlflow_the_error_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)

    with pytest.raises(ConfigurationError, match=r"scatterbrained\[mlflow\]"):
        MLflowLogger(tmp_path / "mlruns")
