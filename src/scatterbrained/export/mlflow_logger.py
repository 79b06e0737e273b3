"""MLflow runs through MLflow's own client (``mlflow-skinny`` is enough).

Layout in the experiment (default ``scatterbrained``): one MLflow run per federation
(``run_name``, e.g. the simulator's run folder name) holding the aggregated series
(``accuracy`` = mean, ``accuracy_min``, ``bytes_sent``, ...; see :mod:`.base`) and the
parameters given, and one nested child run per node (named by the node id, tag
``scatterbrained.node``) holding that node's series. When the first epoch logged has a single
node (``ns.train``, ``scatterbrained node``), that node's series go into the top run itself and
there is no aggregate. The step is the epoch.

MLflow 3 keeps its file store (``file:`` URIs, ``./mlruns``) in maintenance mode and refuses
it unless ``MLFLOW_ALLOW_FILE_STORE=true``. A local file store is still what needs no server
and no database, so for a ``file:`` URI this logger sets that variable while it opens its
client (and puts the previous value back); to read the store later with MLflow's own tools,
set ``MLFLOW_ALLOW_FILE_STORE=true`` too. Any other URI (``http://``, ``sqlite:///``, ...) is
passed to MLflow unchanged.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .base import ClosedOnExit, aggregate_scalars, node_scalars

__all__ = ["DEFAULT_EXPERIMENT", "MLFLOW_INSTALL", "MLflowLogger", "tracking_uri"]

logger = logging.getLogger(__name__)

#: How to install the optional MLflow dependency.
MLFLOW_INSTALL = "pip install 'scatterbrained[mlflow]'"
#: The experiment runs go to unless another is named.
DEFAULT_EXPERIMENT = "scatterbrained"
#: Nodes that get their own child run; later nodes only count in the aggregate.
DEFAULT_MAX_NODES = 256
#: MLflow's limit on a parameter value (characters); longer values are cut.
_MAX_PARAM = 500
_ALLOW_FILE_STORE = "MLFLOW_ALLOW_FILE_STORE"
_ENV_LOCK = threading.Lock()
_EXPERIMENT_LOCK = threading.Lock()
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+:")


def tracking_uri(target: str | Path) -> str:
    """``target`` as an MLflow tracking URI: a URI (``scheme:...``) as given, a path as an
    absolute ``file:`` URI."""
    if isinstance(target, str) and _SCHEME.match(target):
        return target  # a URI (a Windows drive letter "C:" is not a scheme)
    return Path(target).resolve().as_uri()


def _mlflow_client_class() -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ConfigurationError(
            f"MLflow export needs mlflow (mlflow-skinny is enough), which cannot be imported "
            f"({exc}); install it with {MLFLOW_INSTALL}"
        ) from None
    return MlflowClient


def _open_client(client_class: Any, uri: str) -> Any:
    """An MLflow client for ``uri``; a ``file:`` store is opted into for MLflow 3."""
    if not uri.startswith("file:") or os.environ.get(_ALLOW_FILE_STORE) is not None:
        return client_class(tracking_uri=uri)
    with _ENV_LOCK:  # MLflow checks the variable when it builds (and caches) the store
        os.environ[_ALLOW_FILE_STORE] = "true"
        try:
            client = client_class(tracking_uri=uri)
        finally:
            os.environ.pop(_ALLOW_FILE_STORE, None)
    return client


def _experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``, created when missing (once per process: two loggers of
    one process never create it twice; the file store has no lock across processes)."""
    with _EXPERIMENT_LOCK:
        found = client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        try:
            return str(client.create_experiment(name))
        except Exception:  # created meanwhile by another process: use that one
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
            return str(found.experiment_id)


class MLflowLogger(ClosedOnExit):
    """Writes metric rows as MLflow metrics (a :class:`~.base.MetricsLogger`).

    The client, experiment and runs are created at the first epoch logged, not before. Runs
    end (``FINISHED``) on :meth:`close`.

    Args:
        target: a tracking URI (``file:///...``, ``http://host:5000``, ``sqlite:///...``) or a
            folder for a local file store.
        experiment: the MLflow experiment (created when missing).
        run_name: the name of the top run (default: MLflow's generated name).
        params: parameters of the top run (e.g. the simulation config); values are
            converted to text and cut at 500 characters.
        aggregate: log aggregated series in the top run; ``None`` (default) does when the
            first epoch has rows of two or more nodes.
        max_nodes: at most this many child runs; further nodes only count in the aggregate.

    Raises:
        ConfigurationError: mlflow is not installed (says how to install it).
    """

    def __init__(
        self,
        target: str | Path,
        *,
        experiment: str = DEFAULT_EXPERIMENT,
        run_name: str | None = None,
        params: Mapping[str, Any] | None = None,
        aggregate: bool | None = None,
        max_nodes: int = DEFAULT_MAX_NODES,
    ) -> None:
        self._client_class = _mlflow_client_class()
        self.tracking_uri = tracking_uri(target)
        self.experiment = experiment
        self.run_name = run_name
        self.params = dict(params or {})
        self.aggregate = aggregate
        self.max_nodes = max_nodes
        self._client: Any = None
        self._top: str | None = None
        self._experiment_id = ""
        self._single: str | None = None  # the node whose series go into the top run
        self._runs: dict[str, str] = {}  # node id -> child run id
        self._lock = threading.Lock()
        self._warned_full = False
        self._closed = False

    @property
    def run_id(self) -> str | None:
        """The top run's id (``None`` before the first epoch)."""
        return self._top

    @property
    def node_runs(self) -> dict[str, str]:
        """Run id of each node logged (the top run for a single node)."""
        runs = dict(self._runs)
        if self._single is not None and self._top is not None:
            runs[self._single] = self._top
        return runs

    def _start(self, nodes: Sequence[str]) -> None:
        from mlflow.entities import Param

        client = _open_client(self._client_class, self.tracking_uri)
        experiment_id = _experiment_id(client, self.experiment)
        if len(nodes) == 1 and not self.aggregate:
            self._single = nodes[0]
        name = self.run_name or self._single
        tags = {"scatterbrained.node": self._single} if self._single else {}
        run = client.create_run(experiment_id, run_name=name, tags=tags)
        self._top = run.info.run_id
        self._experiment_id = experiment_id
        self._client = client
        if self.params:
            params = [Param(str(k), str(v)[:_MAX_PARAM]) for k, v in sorted(self.params.items())]
            for start in range(0, len(params), 100):  # MLflow takes 100 params per batch
                client.log_batch(self._top, params=params[start : start + 100])

    def _node_run(self, node: str) -> str | None:
        if node == self._single:
            return self._top
        run_id = self._runs.get(node)
        if run_id is not None:
            return run_id
        if len(self._runs) >= self.max_nodes:
            if not self._warned_full:
                self._warned_full = True
                logger.warning(
                    "MLflow export: more than %d nodes; node %s and later ones only count in "
                    "the aggregate",
                    self.max_nodes,
                    node,
                )
            return None
        tags = {"mlflow.parentRunId": self._top, "scatterbrained.node": node}
        run = self._client.create_run(self._experiment_id, run_name=node, tags=tags)
        self._runs[node] = run.info.run_id
        return str(run.info.run_id)

    def _log(self, run_id: str, scalars: Mapping[str, float], epoch: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, epoch) for key, value in scalars.items()]
        if metrics:
            self._client.log_batch(run_id, metrics=metrics)

    def log_epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Log each node's scalars in its run and the aggregate in the top run."""
        with self._lock:
            if self._closed:
                return
            nodes = list(dict.fromkeys(str(row["node"]) for row in rows))
            if self._client is None:
                self._start(nodes)
            for row in rows:
                run_id = self._node_run(str(row["node"]))
                if run_id is not None:
                    self._log(run_id, node_scalars(row), epoch)
            if self._single is None and self.aggregate is not False and len(nodes) >= 2:
                assert self._top is not None
                self._log(self._top, aggregate_scalars(rows), epoch)

    def flush(self) -> None:
        """Nothing to do: every call writes through to the tracking store."""

    def close(self) -> None:
        """End every run this logger started (status ``FINISHED``). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._client is None:
                return
            for run_id in [*self._runs.values(), self._top]:
                self._client.set_terminated(run_id)
