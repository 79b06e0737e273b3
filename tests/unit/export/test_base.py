"""Rows, scalars, aggregation and the fail-safe fan-out of metrics loggers."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from scatterbrained.export import (
    MetricsLogger,
    SafeLoggers,
    aggregate_scalars,
    node_scalars,
    record_row,
)
from scatterbrained.export.base import MAX_FAILURES
from scatterbrained.history import EpochRecord

pytestmark = pytest.mark.timeout(10)


def row(node: str, accuracy: float | None, **extra: Any) -> dict[str, Any]:
    base = {"node": node, "index": 0, "epoch": 1, "alive": accuracy is not None, "event": None}
    return {**base, "accuracy": accuracy, "loss": None, "merged_from": [], **extra}


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.epochs: list[int] = []
        self.flushed = self.closed = 0

    def log_epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        if self.fail:
            raise OSError("disk full")
        self.epochs.append(epoch)

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        self.closed += 1


def test_a_record_becomes_a_metrics_jsonl_row() -> None:
    record = EpochRecord(
        epoch=3, train_loss=0.5, val_loss=0.4, val_accuracy=0.9, mode="peer",
        merged_from=("b", "c"), bytes_sent=10, bytes_received=20, samples=64, version=7,
        peers=2, wall_s=1.5, epsilon=2.0,
    )  # fmt: skip

    result = record_row("a", record)

    assert result == {
        "node": "a", "epoch": 3, "alive": True, "event": None, "accuracy": 0.9, "loss": 0.4,
        "train_loss": 0.5, "mode": "peer", "merged_from": ["b", "c"], "bytes_sent": 10,
        "bytes_received": 20, "wall_s": 1.5, "peers": 2, "version": 7, "samples": 64,
        "epsilon": 2.0,
    }  # fmt: skip


def test_node_scalars_keep_numbers_and_count_merges() -> None:
    scalars = node_scalars(row("a", 0.5, merged_from=["b"], bytes_sent=7, mode="peer"))

    assert scalars == {"alive": 1.0, "accuracy": 0.5, "bytes_sent": 7.0, "merged": 1.0}


def test_node_scalars_leave_out_none_and_non_finite() -> None:
    scalars = node_scalars(row("a", None, train_loss=float("nan"), peers=0))

    assert scalars == {"alive": 0.0, "peers": 0.0, "merged": 0.0}


def test_aggregate_is_mean_worst_best_and_sums_over_reporting_nodes() -> None:
    rows = [
        row("a", 0.5, loss=1.0, bytes_sent=10, peers=1),
        row("b", 0.9, loss=3.0, bytes_sent=30, peers=3),
        row("c", None, bytes_sent=0),  # dead: counts for bytes, not for accuracy
    ]

    scalars = aggregate_scalars(rows)

    assert scalars["accuracy"] == pytest.approx(0.7)
    assert (scalars["accuracy_min"], scalars["accuracy_max"]) == (0.5, 0.9)
    assert scalars["loss"] == 2.0 and scalars["peers"] == 2.0
    assert scalars["bytes_sent"] == 40.0
    assert (scalars["nodes_alive"], scalars["nodes_reporting"]) == (2.0, 2.0)


def test_safe_loggers_count_failures_switch_off_and_never_raise(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, good = Recorder(fail=True), Recorder()
    safe = SafeLoggers([broken, good])
    assert isinstance(broken, MetricsLogger)

    with caplog.at_level(logging.WARNING), safe:
        for epoch in range(1, MAX_FAILURES + 3):
            safe.log_epoch(epoch, [row("a", 0.5)])

    assert safe.failures == [MAX_FAILURES, 0]
    assert good.epochs == [1, 2, 3, 4, 5] and good.closed == 1
    assert broken.closed == 1  # closed even when switched off
    assert sum("switched off" in r.message for r in caplog.records) == 1
    safe.log_epoch(9, [row("a", 0.5)])  # after close: ignored
    assert good.epochs[-1] == 5
