"""Asynchronous gossip (the default) against synchronous rounds and centralized training.

Run from the repository root (the package importable, e.g. ``PYTHONPATH=src``)::

    python benchmarks/convergence.py                    # digits16 and fmnist16
    python benchmarks/convergence.py --tasks digits16 --modes default,sync

The two tasks, exactly as in the issue that asked for this benchmark:

* **digits16**: ``sklearn.datasets.load_digits()``, X/16 float32,
  ``train_test_split(test_size=0.2, stratify=y, random_state=0)``; a Dirichlet(0.5) label
  partition over 16 nodes (:func:`dirichlet_partition`); MLP 64-64-10 (ReLU),
  ``torch.manual_seed(0)`` right before building each model; SGD lr 0.05, batch 16, 30 epochs.
* **fmnist16**: Fashion-MNIST from Debian's IDX files, X/255 float32 (784 inputs), the
  official 60k/10k split, the same partition, MLP 784-128-10, SGD lr 0.05, batch 32, 20 epochs.
* ``digits8ring`` (not run by default): digits over 8 nodes on a ``Ring()``, Adam lr 0.01,
  batch 16, 30 epochs (the issue's 8-process set-up, here in one process).
* ``digits8dring`` (not run by default): the same on a directed ring
  (``Ring(bidirectional=False)``), where the default merges with push-sum; the mode
  ``plainmix`` (``push_sum=False``) gives plain averaging for comparison.

Each federated run is 16 ``sb.Node`` s in this process on the in-memory transport, full mesh,
through the public API: every node runs ``await ns.train(1, loader)`` once per epoch on its
own (no barrier between nodes), ``default`` with default namespace options, ``sync`` with
``sync=True``. ``centralized`` trains one model on all the training samples for the same
epochs. Reported per run: final mean and worst-node test accuracy, wall seconds (first epoch
started to last epoch done), bytes sent. A one-epoch federated run per task comes first and
is not reported (first-use costs of PyTorch and the library). One JSON line per run, then
``{"runs": [...], "wall_s": ...}``. ``--modes`` also takes ``gossip0`` (gossip with
``gossip_wait=0``, the previous default).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import logging
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

import scatterbrained as sb
from scatterbrained.discovery.memory import MemoryDiscovery, MemoryDiscoveryHub
from scatterbrained.transport.memory import MemoryNetwork, MemoryTransport

logger = logging.getLogger("convergence")


@dataclass
class Task:
    """One benchmark task: data, partition, model and optimizer settings."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    hidden: tuple[int, ...]
    batch_size: int
    epochs: int
    lr: float = 0.05
    nodes: int = 16
    topology: str = "full mesh"
    adam: bool = False
    one_call: bool = False

    def optimizer(self, model: Any) -> Any:
        """The task's optimizer for ``model`` (the paper's ``create_optimizer``)."""
        from torch import optim

        if self.adam:
            return optim.Adam(model.parameters(), lr=self.lr)
        return optim.SGD(model.parameters(), lr=self.lr)


def dirichlet_partition(
    y: np.ndarray, nodes: int = 16, alpha: float = 0.5, min_size: int = 5
) -> list[np.ndarray]:
    """Label-skewed partition: per class (ascending) shuffle, draw ``p ~ Dir(alpha)``, cut at
    ``(cumsum(p) * n_c).astype(int)[:-1]``; redraw from the same stream until every node has
    ``min_size`` samples; each node's indices sorted."""
    rng = np.random.default_rng(0)
    while True:
        parts: list[list[int]] = [[] for _ in range(nodes)]
        for label in np.unique(y):
            indices = np.flatnonzero(y == label)
            rng.shuffle(indices)
            p = rng.dirichlet(alpha * np.ones(nodes))
            cuts = (np.cumsum(p) * len(indices)).astype(int)[:-1]
            for node, chunk in enumerate(np.split(indices, cuts)):
                parts[node].extend(chunk.tolist())
        if min(len(part) for part in parts) >= min_size:
            return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def digits16() -> Task:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return Task("digits16", x_tr, y_tr, x_te, y_te, (64,), 16, 30)


def digits8ring() -> Task:
    """The issue's process set-up, in one process: digits over 8 nodes on a ``Ring()``,
    MLP 64-64-10, Adam 1e-2, batch 16, 30 epochs."""
    task = digits16()
    return dataclasses.replace(
        task, name="digits8ring", nodes=8, topology="ring", adam=True, lr=0.01, one_call=True
    )


def digits8dring() -> Task:
    """digits8ring on a directed ring (each node sends to its successor only)."""
    return dataclasses.replace(digits8ring(), name="digits8dring", topology="directed-ring")


def fmnist16() -> Task:
    from scatterbrained.sim.datasets import load_fashion_mnist

    data = load_fashion_mnist()
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32)  # noqa: E731 (already /255)
    return Task(
        "fmnist16", flat(data.x_train), data.y_train, flat(data.x_test), data.y_test,
        (128,), 32, 20,
    )  # fmt: skip


def build_model(task: Task) -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    sizes = [task.x_train.shape[1], *task.hidden]
    layers: list[Any] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], 10))


def loader(task: Task, indices: np.ndarray | None, seed: int) -> Any:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    x, y = task.x_train, task.y_train
    if indices is not None:
        x, y = x[indices], y[indices]
    data = TensorDataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=task.batch_size, shuffle=True, generator=generator)


def accuracy(model: Any, task: Task) -> float:
    import torch

    with torch.no_grad():
        logits = model(torch.from_numpy(task.x_test))
    return float((logits.argmax(1).numpy() == task.y_test).mean())


async def federated(task: Task, options: dict[str, Any]) -> dict[str, Any]:
    """The task's nodes in this process; each trains ``task.epochs`` epochs on its own."""
    parts = dirichlet_partition(task.y_train, nodes=task.nodes)
    rings = {"ring": sb.topology.Ring(), "directed-ring": sb.topology.Ring(bidirectional=False)}
    topology = {"topology": rings[task.topology]} if task.topology in rings else {}
    hub, network = MemoryDiscoveryHub(), MemoryNetwork()
    name = f"convergence-{uuid.uuid4().hex[:6]}"
    nodes = [
        sb.Node(
            f"n{i:02d}",
            transport=MemoryTransport(network),
            discovery=MemoryDiscovery(hub, interval=0.05),
        )
        for i in range(len(parts))
    ]
    for node in nodes:
        await node.start()
    try:
        models = [build_model(task) for _ in parts]
        spaces = [
            node.namespace(name, model, task.optimizer, **topology, **options)
            for node, model in zip(nodes, models, strict=True)
        ]
        for ns in spaces:
            await ns.open()
        await asyncio.gather(*(ns.wait_for_peers(len(parts) - 1, timeout=60) for ns in spaces))
        loaders = [loader(task, part, i) for i, part in enumerate(parts)]

        async def run(ns: Any, data: Any) -> None:
            if task.one_call:
                await ns.train(task.epochs, data)
                return
            for _ in range(task.epochs):
                await ns.train(1, data)

        started = time.monotonic()
        await asyncio.gather(*(run(ns, data) for ns, data in zip(spaces, loaders, strict=True)))
        wall = time.monotonic() - started
        accuracies = [accuracy(model, task) for model in models]
        consensus = accuracy(average_model(task, models), task)
        sent = sum(node.transport.stats.bytes_out for node in nodes)
    finally:
        for node in nodes:
            await node.close()
    return {
        "mean_accuracy": round(float(np.mean(accuracies)), 4),
        "worst_accuracy": round(float(np.min(accuracies)), 4),
        "average_model_accuracy": round(consensus, 4),
        "wall_s": round(wall, 2),
        "bytes": sent,
    }


def average_model(task: Task, models: list[Any]) -> Any:
    """A model whose weights are the uniform mean of ``models``' (what consensus would give)."""
    import torch

    mean = build_model(task)
    states = [m.state_dict() for m in models]
    with torch.no_grad():
        mean.load_state_dict({k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]})
    return mean


def centralized(task: Task) -> dict[str, Any]:
    """One model, every training sample, the same epochs, model, optimizer and batch."""
    import torch
    from torch import nn

    model = build_model(task)
    optimizer = task.optimizer(model)
    data = loader(task, None, 0)
    started = time.monotonic()
    for _ in range(task.epochs):
        for x, y in data:
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
    wall = time.monotonic() - started
    with torch.no_grad():
        value = accuracy(model, task)
    return {"mean_accuracy": round(value, 4), "worst_accuracy": round(value, 4),
            "wall_s": round(wall, 2), "bytes": 0}  # fmt: skip


MODES: dict[str, dict[str, Any]] = {
    "default": {},
    "sync": {"sync": True},
    "gossip0": {"gossip_wait": 0.0},
    "plainmix": {"push_sum": False},
    "noconsensus": {"consensus_rounds": 0},
    "mean": {"aggregator": sb.aggregation.Mean()},
}
TASKS = {
    "digits16": digits16,
    "fmnist16": fmnist16,
    "digits8ring": digits8ring,
    "digits8dring": digits8dring,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits16,fmnist16")
    parser.add_argument("--modes", default="default,sync,centralized")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    started, rows = time.monotonic(), []
    for task_name in args.tasks.split(","):
        task = TASKS[task_name]()
        warmup = dataclasses.replace(task, epochs=1)  # first-use costs out of the timings
        asyncio.run(federated(warmup, {}))
        for mode in args.modes.split(","):
            if mode == "centralized":
                result = centralized(task)
            else:
                result = asyncio.run(federated(task, MODES[mode]))
            row = {"task": task_name, "mode": mode, **result}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(json.dumps({"runs": rows, "wall_s": round(time.monotonic() - started, 1)}))


if __name__ == "__main__":
    main()
