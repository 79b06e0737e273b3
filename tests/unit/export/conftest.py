"""Readers for the metrics-export tests: TensorBoard's and MLflow's own, as a user reads.

* ``read_tensorboard(logdir)``: ``{run: {tag: [(step, value), ...]}}`` through
  ``tensorboard.backend.event_processing.event_accumulator.EventAccumulator``;
* ``read_mlflow(uri, experiment)``: ``{run name: {metric: [(step, value), ...]}}`` (plus
  ``"_parent"`` and ``"_status"`` per run) through ``MlflowClient.get_metric_history``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

Series = dict[str, list[tuple[int, float]]]


@pytest.fixture
def read_tensorboard() -> Callable[[Path], dict[str, Series]]:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def read(logdir: Path) -> dict[str, Series]:
        runs: dict[str, Series] = {}
        for folder in sorted(p for p in Path(logdir).iterdir() if p.is_dir()):
            accumulator = EventAccumulator(str(folder))
            accumulator.Reload()
            runs[folder.name] = {
                tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
                for tag in accumulator.Tags()["scalars"]
            }
        return runs

    return read


@pytest.fixture
def mlflow_file_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """MLflow 3 reads a file store only with MLFLOW_ALLOW_FILE_STORE=true (as the docs say)."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    yield


@pytest.fixture
def read_mlflow(mlflow_file_store: None) -> Callable[..., dict[str, dict[str, Any]]]:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    def read(uri: str, experiment: str = "scatterbrained") -> dict[str, dict[str, Any]]:
        client = MlflowClient(tracking_uri=uri)
        found = client.get_experiment_by_name(experiment)
        assert found is not None, f"no experiment {experiment!r} in {uri}"
        runs: dict[str, dict[str, Any]] = {}
        for run in client.search_runs([found.experiment_id]):
            series: dict[str, Any] = {
                key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
                for key in run.data.metrics
            }
            series["_parent"] = run.data.tags.get("mlflow.parentRunId")
            series["_status"] = run.info.status
            series["_params"] = dict(run.data.params)
            series["_id"] = run.info.run_id
            runs[run.info.run_name] = series
        return runs

    return read
