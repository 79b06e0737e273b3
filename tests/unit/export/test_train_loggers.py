"""``ns.train(..., loggers=[...])``: a real federation's epochs, exported and read back."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from scatterbrained.export import EpochFeed

pytestmark = pytest.mark.timeout(180)


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def log_epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        self.calls += 1
        raise RuntimeError("tracking server down")

    def flush(self) -> None:
        raise RuntimeError("tracking server down")

    def close(self) -> None:
        pass


class Blocked:
    def __init__(self) -> None:
        self.release = threading.Event()
        self.epochs: list[int] = []

    def log_epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        self.release.wait(10)
        self.epochs.append(epoch)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_two_nodes_export_their_history_to_tensorboard_and_mlflow(
    arun: Any,
    cluster_factory: Any,
    digit_loader: Callable[..., Any],
    mlp: Callable[..., Any],
    tmp_path: Path,
    read_tensorboard: Callable[[Path], dict[str, Any]],
    read_mlflow: Callable[..., dict[str, dict[str, Any]]],
) -> None:
    pytest.importorskip("tensorboardX")
    from scatterbrained.export import MLflowLogger, TensorBoardLogger

    logdir, store = tmp_path / "tb", tmp_path / "mlruns"
    histories: dict[str, list[tuple[int, float]]] = {}
    broken = Broken()

    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b")
            spaces = [n.namespace("X", mlp(seed=i), sync=True) for i, n in enumerate(nodes)]
            for ns in spaces:
                await ns.open()
            await spaces[0].wait_for_peers(1, timeout=5)
            await spaces[1].wait_for_peers(1, timeout=5)

            async def train(i: int, ns: Any) -> None:
                with TensorBoardLogger(logdir) as tb, MLflowLogger(store, experiment="X") as ml:
                    loaders = digit_loader(i, 2, 64), digit_loader(i, 2, 32, seed=9)
                    history = await ns.train(2, *loaders, loggers=[tb, ml, broken])
                    histories[ns.node.id] = [(r.epoch, r.val_accuracy) for r in history]

            await asyncio.gather(*(train(i, ns) for i, ns in enumerate(spaces)))

    arun(main, timeout=45)

    tb_runs, ml_runs = read_tensorboard(logdir), read_mlflow(store.resolve().as_uri(), "X")
    assert set(tb_runs) == set(ml_runs) == {"a", "b"}
    assert broken.calls == 2 * 2  # called for every epoch of both nodes, never raised
    for node, series in histories.items():
        assert len(series) == 2
        assert ml_runs[node]["accuracy"] == series
        assert [(s, pytest.approx(v, rel=1e-6)) for s, v in tb_runs[node]["accuracy"]] == series


def test_a_slow_logger_drops_epochs_past_the_bound_and_never_blocks(arun: Any) -> None:
    blocked = Blocked()
    row = {"node": "a", "epoch": 1, "accuracy": 0.5}

    async def main() -> None:
        async with EpochFeed([blocked], max_pending=2, drain_timeout=0.05) as feed:
            for epoch in range(1, 6):
                feed.submit(epoch, [row])
        assert feed.dropped == 3

    try:
        arun(main)  # returned although the logger is still stuck in epoch 1
        assert blocked.epochs == []
    finally:
        blocked.release.set()
