"""Wall time and peak memory of 16, 64, 256 and 1,000 simulated nodes in one process.

Run from the repository root (the package importable, e.g. ``PYTHONPATH=src``)::

    python benchmarks/scale.py [--sizes 16,64,256,1000] [--epochs 3] [--model logreg]
                               [--timeout 900] [--out DIR]
    python benchmarks/scale.py --one 64        # one size, in this process (used internally)

Every size is one simulation on the ``memory`` backend (all nodes in one process, in-memory
transport and discovery): ``digits``, an iid split, a tiny model (``logreg`` by default, or
``mlp`` with 16 hidden units), Adam lr 0.05, batch 16, synchronous rounds on
``random-regular:k=4``, 3 epochs.

Each size runs in a FRESH subprocess (``--one N``) so that sizes do not share memory: at its
end the subprocess reads its peak resident set (``ru_maxrss``) and prints one JSON line.
``baseline_rss_mb`` is the resident set after importing torch, matplotlib and the library,
before any node exists. With ``--tracemalloc`` it also reports the peak of Python
allocations (slower: every allocation is traced).

``wall_s`` is the simulator's clock (nodes started to last epoch done; dataset loading and
plots excluded); ``epoch_s`` is the longest any node spent in each epoch; ``startup_s`` is the
rest of ``wall_s`` (starting the nodes and waiting until every node sees every other);
``settled`` is False when the simulator gave up waiting for that membership (it then trains
anyway). ``total_s`` is the subprocess's whole life as the parent saw it (Python and torch
start-up, data loading, plots included). A size that fails or runs past ``--timeout`` is
reported with an ``error`` and the next size still runs.

Progress goes to stderr; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_SIZES = (16, 64, 256, 1000)
MODELS = ("logreg", "mlp")

logger = logging.getLogger("scale")


def scale_config(nodes: int, epochs: int, model: str, out: Path) -> Any:
    """The simulation of one size (imported lazily: the parent never loads torch)."""
    from scatterbrained.sim.config import SimConfig

    return SimConfig(
        nodes=nodes,
        epochs=epochs,
        dataset="digits",
        partition="iid",
        model=model,
        hidden=16,
        topology="random-regular:k=4",
        backend="memory",
        sync=True,
        batch_size=16,
        lr=0.05,
        seed=0,
        out=str(out),
    )


def peak_rss_mb() -> float:
    """Peak resident set in MB (10^6 B; ``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


class WarningCounter(logging.Handler):
    """Counts the library's warnings (e.g. "membership did not settle") during a run."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def epoch_seconds(rows: list[dict[str, Any]], epochs: int) -> list[float]:
    """Per epoch, the longest time any node spent in it (train, share, evaluate, checkpoint)."""
    longest = [0.0] * epochs
    for row in rows:
        if 1 <= row["epoch"] <= epochs and row.get("wall_s") is not None:
            longest[row["epoch"] - 1] = max(longest[row["epoch"] - 1], float(row["wall_s"]))
    return [round(value, 2) for value in longest]


def run_one(nodes: int, epochs: int, model: str, out: Path, trace: bool) -> dict[str, Any]:
    """Run one size in this process; return its measurements."""
    # imported before the baseline so that libraries are not counted as the nodes' memory
    import torch  # noqa: F401

    from scatterbrained.sim import plots  # noqa: F401  (matplotlib, networkx)
    from scatterbrained.sim.runner import run_simulation

    baseline = peak_rss_mb()
    warnings = WarningCounter()
    logging.getLogger("scatterbrained").addHandler(warnings)
    if trace:
        tracemalloc.start()
    config = scale_config(nodes, epochs, model, out / f"nodes-{nodes}")

    def progress(epoch: int, rows: list[dict[str, Any]]) -> None:
        logger.info("%d nodes: epoch %d/%d done", nodes, epoch, epochs)

    result = run_simulation(
        config, on_epoch=progress, on_status=lambda msg: logger.info("%d nodes: %s", nodes, msg)
    )
    summary = result.summary
    per_epoch = epoch_seconds(result.metrics, epochs)
    measured: dict[str, Any] = {
        "nodes": nodes,
        "epochs": epochs,
        "wall_s": summary["wall_s"],
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "baseline_rss_mb": round(baseline, 1),
        "mean_accuracy": _round(summary["mean_accuracy"]),
        "min_accuracy": _round(summary["min_accuracy"]),
        "nodes_finished": summary["nodes_finished"],
        "bytes_total": summary["bytes_total"],
        "epoch_s": per_epoch,
        "startup_s": round(summary["wall_s"] - sum(per_epoch), 2),
        "settled": not any("did not settle" in m for m in warnings.messages),
        "warnings": len(warnings.messages),
    }
    if trace:
        measured["tracemalloc_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 1e6, 1)
        tracemalloc.stop()
    return measured


def run_size_in_subprocess(args: argparse.Namespace, nodes: int, out: Path) -> dict[str, Any]:
    """Run ``--one nodes`` in a fresh interpreter; return its JSON line (or an error entry)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--one", str(nodes)]
    command += ["--epochs", str(args.epochs), "--model", args.model, "--out", str(out)]
    if args.tracemalloc:
        command.append("--tracemalloc")
    env = dict(os.environ, SCATTERBRAINED_DISCOVERY="loopback")
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, env=env, stdout=subprocess.PIPE, text=True, timeout=args.timeout, check=False
        )
    except subprocess.TimeoutExpired:
        logger.warning("%d nodes: no result within %.0f s", nodes, args.timeout)
        return {"nodes": nodes, "epochs": args.epochs, "error": f"timeout after {args.timeout} s"}
    total = round(time.monotonic() - started, 1)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"nodes": nodes, "epochs": args.epochs, "error": f"exit code {done.returncode}"}
    measured: dict[str, Any] = json.loads(lines[-1])
    measured["total_s"] = total
    logger.info("%d nodes: %s", nodes, json.dumps(measured))
    return measured


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="node counts")
    parser.add_argument("--epochs", type=int, default=3, help="local epochs per node")
    parser.add_argument("--model", choices=MODELS, default="logreg", help="mlp has 16 hidden")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per size")
    parser.add_argument("--tracemalloc", action="store_true", help="also trace Python allocs")
    parser.add_argument("--out", type=Path, default=None, help="keep the run folders here")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    if args.epochs < 1 or not args.sizes or min(args.sizes) < 1:
        parser.error("--epochs and every size must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run every size (or ``--one``) and print the JSON result as the last line of stdout."""
    args = parse_args(argv)
    os.environ["SCATTERBRAINED_DISCOVERY"] = "loopback"  # never leave the machine
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(message)s")
    logger.setLevel(logging.INFO)
    if args.one is not None:
        with tempfile.TemporaryDirectory(prefix="sb-scale-") as tmp:
            out = args.out or Path(tmp)
            measured = run_one(args.one, args.epochs, args.model, out, args.tracemalloc)
        print(json.dumps(measured))
        return 0
    with tempfile.TemporaryDirectory(prefix="sb-scale-") as tmp:
        out = args.out or Path(tmp)
        sizes = [run_size_in_subprocess(args, nodes, out) for nodes in args.sizes]
    result = {
        "model": args.model if args.model == "logreg" else f"{args.model}:hidden=16",
        "dataset": "digits",
        "partition": "iid",
        "topology": "random-regular:k=4",
        "sync": True,
        "out": None if args.out is None else str(args.out),
        "runs": sizes,
    }
    print(json.dumps(result))
    return 0


def _round(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


if __name__ == "__main__":
    sys.exit(main())
