"""Accuracy per epoch of gossip on a ring and on a fully-connected graph, against centralized.

Run from the repository root (the package importable, e.g. ``PYTHONPATH=src``)::

    python benchmarks/convergence.py [--epochs 30] [--nodes 8] [--dataset digits]
                                     [--backend memory|process] [--out DIR]

Three runs on the same data (``digits`` by default, split over the nodes with
Dirichlet(0.5)), the same model (MLP, 128 hidden units), the same optimizer (Adam,
lr 0.05, batch 16) and the same number of local epochs:

* ``ring`` and ``fully-connected``: a simulated federation (:func:`run_simulation`),
  gossip (``sync=False``) sharing every 2 optimizer steps. The accuracy of an epoch is the
  mean over the nodes of each node's test accuracy after that epoch.
* ``centralized``: one model trained on all the training samples, evaluated on the same
  test set after every epoch (built with the simulator's :class:`Experiment` helpers, so
  the initial weights, data and optimizer are the simulation's).

``wall_s`` of a gossip run is the simulator's own clock (nodes started to last epoch done,
dataset loading and plots excluded); ``wall_s`` of centralized covers its training and its
per-epoch evaluations. Progress goes to stderr; the last line printed is one JSON object.
Run folders go to a temporary folder that is removed afterwards, unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from scatterbrained.adapters import adapt
from scatterbrained.sim.config import SimConfig
from scatterbrained.sim.datasets import ArrayLoader
from scatterbrained.sim.experiment import Experiment
from scatterbrained.sim.runner import run_simulation

TOPOLOGIES = ("ring", "fully-connected")
BACKENDS = ("memory", "process")

logger = logging.getLogger("convergence")


def base_config(args: argparse.Namespace, out: Path) -> SimConfig:
    """The shared configuration of every run (the gossip runs change ``topology``/``out``)."""
    return SimConfig(
        nodes=args.nodes,
        epochs=args.epochs,
        dataset=args.dataset,
        partition="dirichlet:alpha=0.5",
        model="mlp",
        hidden=128,
        topology="ring",
        backend=args.backend,
        sync=False,
        share_every=2,
        batch_size=16,
        lr=0.05,
        seed=args.seed,
        out=str(out),
    )


def mean_accuracy_per_epoch(rows: Sequence[dict[str, Any]], epochs: int) -> list[float | None]:
    """Per epoch 1..``epochs``, the mean test accuracy over the nodes that reported one."""
    per_epoch: list[list[float]] = [[] for _ in range(epochs)]
    for row in rows:
        accuracy = row.get("accuracy")
        if accuracy is not None and 1 <= row["epoch"] <= epochs:
            per_epoch[row["epoch"] - 1].append(float(accuracy))
    return [round(statistics.fmean(v), 4) if v else None for v in per_epoch]


def run_gossip(config: SimConfig, topology: str) -> dict[str, Any]:
    """Run the federation on ``topology``; return its accuracy curve, wall time and bytes."""
    config = config.replace(topology=topology, out=str(Path(str(config.out)) / topology))

    def progress(epoch: int, rows: list[dict[str, Any]]) -> None:
        values = [r["accuracy"] for r in rows if r.get("accuracy") is not None]
        mean = statistics.fmean(values) if values else float("nan")
        logger.info("%s epoch %d/%d: mean accuracy %.4f", topology, epoch, config.epochs, mean)

    result = run_simulation(
        config, on_epoch=progress, on_status=lambda msg: logger.info("%s: %s", topology, msg)
    )
    summary = result.summary
    return {
        "accuracy_per_epoch": mean_accuracy_per_epoch(result.metrics, config.epochs),
        "final_mean_accuracy": _round(summary["mean_accuracy"]),
        "final_min_accuracy": _round(summary["min_accuracy"]),
        "wall_s": summary["wall_s"],
        "bytes_total": summary["bytes_total"],
        "nodes_finished": summary["nodes_finished"],
    }


def run_centralized(config: SimConfig) -> dict[str, Any]:
    """Train one model on every training sample, evaluating it after each epoch."""
    import torch

    torch.set_num_threads(max(1, config.threads))
    exp = Experiment.load(config)
    adapter = adapt(exp.build_model(), exp.create_optimizer(), None)
    loader = ArrayLoader(  # every training sample, shuffled as the library's baseline does
        exp.dataset.x_train,
        exp.dataset.y_train,
        batch_size=config.batch_size,
        shuffle=True,
        seed=config.seed * 1_000_003,
    )
    test = exp.test_loader()
    curve: list[float] = []
    started = time.monotonic()
    for epoch in range(1, config.epochs + 1):
        adapter.train_epoch(loader)
        accuracy = float(adapter.evaluate(test).accuracy or 0.0)
        curve.append(round(accuracy, 4))
        logger.info("centralized epoch %d/%d: accuracy %.4f", epoch, config.epochs, accuracy)
    wall = time.monotonic() - started
    return {"accuracy_per_epoch": curve, "final_accuracy": curve[-1], "wall_s": round(wall, 3)}


def run_all(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Every run of the benchmark, in the order ring, fully-connected, centralized."""
    config = base_config(args, out)
    runs: dict[str, Any] = {topology: run_gossip(config, topology) for topology in TOPOLOGIES}
    runs["centralized"] = run_centralized(config)
    return {
        "dataset": args.dataset,
        "nodes": args.nodes,
        "epochs": args.epochs,
        "backend": args.backend,
        "partition": config.partition,
        "hyperparameters": {
            "model": f"{config.model}:hidden={config.hidden}",
            "lr": config.lr,
            "batch_size": config.batch_size,
            "sync": config.sync,
            "share_every": config.share_every,
            "seed": config.seed,
        },
        "runs": runs,
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--epochs", type=int, default=30, help="local epochs per node")
    parser.add_argument("--nodes", type=int, default=8, help="nodes of the gossip runs")
    parser.add_argument("--dataset", default="digits", help="digits or fashion-mnist")
    parser.add_argument("--backend", choices=BACKENDS, default="memory", help="how nodes run")
    parser.add_argument("--seed", type=int, default=0, help="seed of data split and models")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.nodes < 1:
        parser.error("--epochs and --nodes must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and print the JSON result as the last line of stdout."""
    args = parse_args(argv)
    os.environ["SCATTERBRAINED_DISCOVERY"] = "loopback"  # never leave the machine
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    logger.setLevel(logging.INFO)
    started = time.monotonic()
    if args.out is not None:
        result = run_all(args, args.out)
        result["out"] = str(args.out)
    else:
        with tempfile.TemporaryDirectory(prefix="sb-convergence-") as tmp:
            result = run_all(args, Path(tmp))
        result["out"] = None
    result["total_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
