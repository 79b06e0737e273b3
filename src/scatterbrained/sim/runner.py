"""Run a simulation end to end and write its run folder.

A run folder holds ``config.json`` (everything needed to reproduce the run),
``metrics.jsonl`` (one line per node per epoch), ``live.jsonl`` (the same rows written while
the run goes, for the dashboard), ``summary.json``, ``accuracy.png`` and
``topology.png``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..export.base import MetricsLogger, SafeLoggers
from .config import SimConfig
from .custom import save_npz
from .datasets import Dataset
from .experiment import Experiment, node_id
from .live import LIVE_FILE, LiveLog, run_title, topology_edges

__all__ = ["RunResult", "run_simulation", "summarize"]

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, list[dict[str, Any]]], None]


@dataclass(frozen=True)
class RunResult:
    """What a simulation produced.

    Attributes:
        out: the run folder.
        summary: the contents of ``summary.json``.
        metrics: the rows of ``metrics.jsonl``.
        plots: paths of the PNG plots.
    """

    out: Path
    summary: dict[str, Any]
    metrics: list[dict[str, Any]]
    plots: tuple[Path, ...]


def default_out(root: str | Path = "runs") -> Path:
    """A fresh run folder name under ``root``: ``runs/<YYYYmmdd-HHMMSS>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / stamp
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(root) / f"{stamp}-{suffix}"
    return path


def run_simulation(
    config: SimConfig,
    *,
    on_epoch: EpochCallback | None = None,
    on_status: Callable[[str], None] | None = None,
    loggers: Sequence[MetricsLogger] = (),
) -> RunResult:
    """Run the simulation ``config`` describes and write its run folder.

    Args:
        config: the experiment.
        on_epoch: called after each epoch with its number and metric rows (progress).
        on_status: called with short status lines ("loading data", "baseline", ...).
        loggers: metrics loggers (``scatterbrained.export``) that receive each epoch's rows
            (the ``metrics.jsonl`` lines) as it ends; they are closed when the run ends, and
            their failures are logged, never raised.

    Returns:
        The run's folder, summary, metrics and plot paths.

    Raises:
        ConfigurationError: an invalid setting found while building the experiment.
        DatasetNotFoundError: the dataset is not installed (the message says how).
    """
    status = on_status or (lambda _msg: None)
    _set_threads(config.threads)
    out = Path(config.out) if config.out else default_out()
    config = config.replace(out=str(out))
    status(f"loading {_dataset_label(config)}")
    exp = Experiment.load(config)  # a missing dataset fails before the run folder exists
    exp.build_model()  # and so does a model that cannot be built (e.g. torch missing)
    out.mkdir(parents=True, exist_ok=True)
    if isinstance(config.dataset, Dataset):  # in-memory data: config.json points to a copy
        saved = save_npz(config.dataset, out / "dataset.npz").resolve()
        config = config.replace(dataset=str(saved))
        exp.config = config
    (out / "config.json").write_text(json.dumps(config.to_json(), indent=2) + "\n")
    live = _start_live_log(exp, out)
    report = _live_epochs(exp, live, on_epoch)
    started = time.monotonic()
    status(f"running {config.nodes} nodes ({config.backend} backend)")
    with SafeLoggers(loggers) as exports:
        epoch_done = _also_export(report, exports)
        if config.backend == "process":
            from .processes import run_processes

            rows = run_processes(exp, out, epoch_done)
        elif config.backend == "ray":
            from .ray_backend import run_ray

            rows = run_ray(exp, out, epoch_done)
        else:
            from .inprocess import run_in_process, short_gil_turns

            with short_gil_turns():
                rows = asyncio.run(run_in_process(exp, out, epoch_done))
    wall = time.monotonic() - started
    _write_jsonl(out / "metrics.jsonl", rows)
    centralized = local_only = None
    if config.centralized:
        status("training the centralized baseline")
        centralized = exp.centralized_accuracy()
    if config.local_only:
        status("training every node alone (local-only baseline)")
        local_only = exp.local_only_accuracies()
    summary = summarize(config, rows, wall, centralized, local_only)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    live.end(summary)
    status("drawing plots")
    plots = _plots(exp, rows, out, centralized)
    return RunResult(out, summary, rows, plots)


def summarize(
    config: SimConfig,
    rows: Sequence[dict[str, Any]],
    wall_s: float,
    centralized: float | None = None,
    local_only: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Build ``summary.json`` from the metric rows.

    ``mean/min/max_accuracy`` are over each node's test accuracy after its last epoch (with
    ``attacks``, ``honest_mean/min_accuracy`` leave the attackers out). The
    process backend also reports ``final_consensus_accuracy``: the mean accuracy of the
    models the nodes hold when the whole run ends (finished nodes keep merging while slower
    ones train).
    """
    final = {
        row["node"]: float(row["accuracy"])
        for row in rows
        if row["epoch"] == config.epochs and row.get("accuracy") is not None
    }
    values = list(final.values())
    consensus = [
        float(row["final_accuracy"])
        for row in rows
        if row["epoch"] == config.epochs and row.get("final_accuracy") is not None
    ]
    events = [
        {"node": r["node"], "epoch": r["epoch"], "event": r["event"]}
        for r in rows
        if r.get("event")
    ]
    summary: dict[str, Any] = {
        "nodes": config.nodes,
        "epochs": config.epochs,
        "dataset": config.dataset,
        "topology": config.topology,
        "backend": config.backend,
        "nodes_finished": len(values),
        "mean_accuracy": sum(values) / len(values) if values else None,
        "min_accuracy": min(values) if values else None,
        "max_accuracy": max(values) if values else None,
        "centralized_accuracy": centralized,
        "wall_s": round(wall_s, 3),
        "bytes_total": int(sum(r.get("bytes_sent") or 0 for r in rows)),
        "events": events,
    }
    if local_only is not None:
        summary["local_only_mean_accuracy"] = sum(local_only) / len(local_only)
    if consensus:
        summary["final_consensus_accuracy"] = sum(consensus) / len(consensus)
    if config.attacks:
        attackers = {node_id(int(i)) for i in config.attacks}
        honest = [a for node, a in final.items() if node not in attackers]
        summary["attackers"] = {node_id(int(i)): spec for i, spec in config.attacks.items()}
        summary["honest_mean_accuracy"] = sum(honest) / len(honest) if honest else None
        summary["honest_min_accuracy"] = min(honest) if honest else None
    return summary


def _start_live_log(exp: Experiment, out: Path) -> LiveLog:
    """Open ``live.jsonl`` (what ``scatterbrained dashboard`` follows) with its run record."""
    config = exp.config
    live = LiveLog(out / LIVE_FILE)
    modes = {n: exp.mode_of(i) for i, n in enumerate(exp.ids)}
    edges = topology_edges(exp.topology(), exp.ids, 0)
    data = config.to_json()
    live.start(exp.ids, modes, edges, epochs=config.epochs, title=run_title(data), config=data)
    return live


def _live_epochs(exp: Experiment, live: LiveLog, on_epoch: EpochCallback | None) -> EpochCallback:
    """``on_epoch`` that also appends the epoch to the live log (edges over the live nodes)."""

    def report(epoch: int, rows: list[dict[str, Any]]) -> None:
        alive = [r["node"] for r in rows if r.get("alive")]
        live.epoch(epoch, rows, topology_edges(exp.topology(), alive, epoch))
        if on_epoch is not None:
            on_epoch(epoch, rows)

    return report


def _plots(
    exp: Experiment, rows: list[dict[str, Any]], out: Path, centralized: float | None
) -> tuple[Path, ...]:
    from .plots import plot_accuracy, plot_topology_timeline

    config = exp.config
    accuracy = plot_accuracy(
        rows,
        out / "accuracy.png",
        centralized=centralized,
        title=f"{config.nodes} nodes, {config.topology}, {config.dataset}",
    )
    topology = plot_topology_timeline(
        rows,
        out / "topology.png",
        nodes=exp.ids,
        edges=exp.topology().edges(exp.ids, epoch=1),  # fixes the layout
        title=f"Topology: {config.topology}",
    )
    return accuracy, topology


def _also_export(on_epoch: EpochCallback | None, exports: SafeLoggers) -> EpochCallback | None:
    """``on_epoch`` that also hands the rows to the metrics loggers (when there are any)."""
    if not exports:
        return on_epoch

    def epoch_done(epoch: int, rows: list[dict[str, Any]]) -> None:
        if on_epoch is not None:
            on_epoch(epoch, rows)
        exports.log_epoch(epoch, rows)

    return epoch_done


def _dataset_label(config: SimConfig) -> str:
    source = config.dataset
    return f"in-memory dataset {source.name!r}" if isinstance(source, Dataset) else source


def _write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def _set_threads(threads: int) -> None:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is needed by the bundled models
        return
    torch.set_num_threads(max(1, threads))
