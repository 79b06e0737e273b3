"""Byzantine robustness: honest accuracy for each aggregator under each attack.

Run from the repository root (the package importable, e.g. ``PYTHONPATH=src``)::

    python benchmarks/byzantine.py                       # digits, full mesh and ring
    python benchmarks/byzantine.py --datasets fashion-mnist --attacks sign-flip:scale=10
    python benchmarks/byzantine.py --markdown            # also the README table on stderr

Every run is the in-memory simulator (``scatterbrained.sim``, synchronous rounds, seeded, so
a run gives the same numbers on any machine load): ``--nodes`` nodes (16), Dirichlet(0.5)
label skew, an MLP 64 (digits) or 128 (Fashion-MNIST) hidden units, Adam (lr 0.01, batch
16; digits 30 epochs, Fashion-MNIST 8 on 12,000 samples), ``--f`` attackers
(3) spread over the ids (``0, n/f, 2n/f``: on a ring no two are neighbours). The clean run
of each aggregator has no attacker. Reported per run: the mean and worst final test
accuracy of the honest nodes, and the drop of the mean from the same aggregator's clean run.

Each line printed is one JSON object per run; the last line is
``{"table": [...], "wall_s": ...}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from typing import Any

from scatterbrained.sim.config import SimConfig
from scatterbrained.sim.runner import run_simulation

AGGREGATORS = (
    "fedavg",
    "median",
    "trimmed-mean:trim=0.2",
    "krum:f=3",
    "centered-clipping:f=3",
)
ATTACKS = (
    "sign-flip:scale=10",
    "gaussian:std=1",
    "alie:z=1",
    "ipm:epsilon=0.5",
    "label-flip",
    "honest:samples=1000000000",
    "sign-flip:scale=1,samples=1000000000",
    "stale",
)


def run_one(dataset: str, topology: str, aggregator: str, attack: str | None, args: Any) -> dict:
    """One simulation; its honest accuracies."""
    spread = [i * args.nodes // args.f for i in range(args.f)] if attack else []
    config = SimConfig.from_mapping(
        {
            "nodes": args.nodes,
            "epochs": args.epochs if dataset == "digits" else args.fmnist_epochs,
            "dataset": dataset,
            "train_limit": None if dataset == "digits" else args.fmnist_train_limit,
            "hidden": 64 if dataset == "digits" else 128,
            "topology": topology,
            "aggregator": aggregator,
            "attacks": {str(i): attack for i in spread},
            "lr": args.lr,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "out": tempfile.mkdtemp(prefix="byzantine-"),
        }
    )
    start = time.monotonic()
    summary = run_simulation(config).summary
    honest = summary.get("honest_mean_accuracy", summary["mean_accuracy"])
    worst = summary.get("honest_min_accuracy", summary["min_accuracy"])
    return {
        "dataset": dataset,
        "topology": topology,
        "aggregator": aggregator,
        "attack": attack or "none",
        "attackers": len(spread),
        "honest_mean_accuracy": round(honest, 4),
        "honest_min_accuracy": round(worst, 4),
        "wall_s": round(time.monotonic() - start, 1),
    }


def markdown(rows: list[dict]) -> str:
    """The README table: one row per (dataset, topology, attack), one column per aggregator."""
    aggregators = list(dict.fromkeys(r["aggregator"] for r in rows))
    clean = {
        (r["dataset"], r["topology"], r["aggregator"]): r["honest_mean_accuracy"]
        for r in rows
        if r["attack"] == "none"
    }
    lines = [
        "| dataset | topology | attack | "
        + " | ".join(a.split(":")[0] for a in aggregators)
        + " |",
        "|---|---|---|" + "---|" * len(aggregators),
    ]
    keys = list(dict.fromkeys((r["dataset"], r["topology"], r["attack"]) for r in rows))
    for dataset, topology, attack in keys:
        cells = []
        for aggregator in aggregators:
            match = [
                r
                for r in rows
                if (r["dataset"], r["topology"], r["attack"], r["aggregator"])
                == (dataset, topology, attack, aggregator)
            ]
            if not match:
                cells.append("")
                continue
            value = match[0]["honest_mean_accuracy"]
            base = clean.get((dataset, topology, aggregator))
            drop = "" if attack == "none" or base is None else f" ({value - base:+.2f})"
            cells.append(f"{value:.3f}{drop}")
        lines.append(f"| {dataset} | {topology} | {attack} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="digits")
    parser.add_argument("--topologies", default="fully-connected,ring")
    parser.add_argument("--aggregators", default=",".join(AGGREGATORS), type=str)
    parser.add_argument("--attacks", default=";".join(ATTACKS), help="';'-separated specs")
    parser.add_argument("--nodes", type=int, default=16)
    parser.add_argument("--f", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--fmnist-epochs", type=int, default=8)
    parser.add_argument("--fmnist-train-limit", type=int, default=12000)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    aggregators = _split_specs(args.aggregators)
    attacks = [a for a in args.attacks.split(";") if a.strip()]
    started = time.monotonic()
    rows = []
    for dataset in args.datasets.split(","):
        for topology in args.topologies.split(","):
            for attack in [None, *attacks]:
                for aggregator in aggregators:
                    row = run_one(dataset, topology, aggregator, attack, args)
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    if args.markdown:
        print(markdown(rows), file=sys.stderr)
    print(json.dumps({"table": rows, "wall_s": round(time.monotonic() - started, 1)}))


def _split_specs(text: str) -> list[str]:
    """Split ``a,b:x=1,y=2,c`` at the commas that start a new spec (a name, no '=')."""
    specs: list[str] = []
    for part in text.split(","):
        if specs and "=" in part and ":" not in part:
            specs[-1] += "," + part
        else:
            specs.append(part)
    return [s for s in specs if s]


if __name__ == "__main__":
    main()
