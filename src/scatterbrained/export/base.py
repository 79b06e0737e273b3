"""What every metrics exporter shares: the logger protocol, rows, scalars, a fail-safe fan-out.

A *row* is one node's epoch as a dict, the same dicts as the simulator's ``metrics.jsonl``
(keys ``node``, ``epoch``, ``accuracy``, ``loss``, ``train_loss``, ``bytes_sent``, ...); a real
node's :class:`~scatterbrained.history.EpochRecord` becomes one with :func:`record_row`. A
:class:`MetricsLogger` receives the rows of one epoch at a time and writes

* per node: every numeric field of the row (``accuracy``, ``loss``, ``bytes_sent``, ...),
  plus ``alive`` (0/1) and ``merged`` (how many peers' models were merged), see
  :func:`node_scalars`;
* aggregated over the nodes, when an epoch has rows of two or more nodes: mean, worst and best
  accuracy, mean losses, total bytes, nodes alive, see :func:`aggregate_scalars`.

:class:`SafeLoggers` calls several loggers so that a failing one never reaches the caller:
each failure is logged and counted, and a logger that failed :data:`MAX_FAILURES` times in a
row is switched off.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from ..history import EpochRecord, metric_row

__all__ = [
    "AGGREGATE_RUN",
    "MAX_FAILURES",
    "ClosedOnExit",
    "MetricsLogger",
    "SafeLoggers",
    "aggregate_scalars",
    "node_scalars",
    "record_row",
]

logger = logging.getLogger(__name__)

#: The name of the aggregated series (a TensorBoard run, an MLflow parent run).
AGGREGATE_RUN = "all"
#: Consecutive failures after which :class:`SafeLoggers` stops calling a logger.
MAX_FAILURES = 3
#: Row keys that are not metrics (identity and position).
_NOT_SCALARS = frozenset({"node", "index", "epoch"})


@runtime_checkable
class MetricsLogger(Protocol):
    """Writes per-epoch metric rows somewhere (TensorBoard, MLflow, ...).

    Implementations may block (file or network I/O); callers on an event loop run them in a
    thread (``ns.train(..., loggers=...)`` does). They may raise: :class:`SafeLoggers` catches.
    """

    def log_epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Record the rows of ``epoch`` (one per node that reported it)."""

    def flush(self) -> None:
        """Write out whatever is buffered."""

    def close(self) -> None:
        """Flush and release files, threads and runs. Idempotent."""


def record_row(node: str, record: EpochRecord) -> dict[str, Any]:
    """One node's epoch record as a ``metrics.jsonl``-style row.

    Args:
        node: the node id.
        record: the epoch's record (``EpochDone.record``, an item of ``ns.history``).

    Returns:
        A dict with the simulator's keys (``accuracy`` is ``val_accuracy``, ``loss`` is
        ``val_loss``) plus ``samples`` and, with a privacy mechanism, ``epsilon``.
    """
    row = {**metric_row(node, record), "samples": record.samples}
    if record.epsilon is not None:
        row["epsilon"] = record.epsilon
    return row


def _number(value: Any) -> float | None:
    """``value`` as a finite float, or ``None`` when it is not a number (or NaN/inf)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def node_scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The scalars of one node's row: every finite numeric field, ``alive`` as 0/1, and
    ``merged`` (the number of models in ``merged_from``). ``None`` values are left out."""
    scalars: dict[str, float] = {}
    for key, value in row.items():
        number = _number(value) if key not in _NOT_SCALARS else None
        if number is not None:
            scalars[str(key)] = number
    merged = row.get("merged_from")
    if isinstance(merged, (list, tuple)):
        scalars["merged"] = float(len(merged))
    return scalars


def _values(rows: Iterable[Mapping[str, Any]], key: str) -> list[float]:
    return [v for v in (_number(row.get(key)) for row in rows) if v is not None]


def aggregate_scalars(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Scalars over the nodes of one epoch.

    Returns:
        ``accuracy`` (mean over the nodes that report one), ``accuracy_min`` (the worst node),
        ``accuracy_max``, ``loss`` and ``train_loss`` (means), ``bytes_sent`` and
        ``bytes_received`` (sums, bytes), ``peers`` (mean), ``nodes_alive`` and
        ``nodes_reporting`` (nodes with an accuracy). Keys without any value are left out.
    """
    scalars: dict[str, float] = {}
    accuracy = _values(rows, "accuracy")
    if accuracy:
        scalars["accuracy"] = sum(accuracy) / len(accuracy)
        scalars["accuracy_min"] = min(accuracy)
        scalars["accuracy_max"] = max(accuracy)
    for key in ("loss", "train_loss", "peers"):
        values = _values(rows, key)
        if values:
            scalars[key] = sum(values) / len(values)
    for key in ("bytes_sent", "bytes_received"):
        values = _values(rows, key)
        if values:
            scalars[key] = sum(values)
    scalars["nodes_alive"] = float(sum(1 for row in rows if row.get("alive", True)))
    scalars["nodes_reporting"] = float(len(accuracy))
    return scalars


_Closable = TypeVar("_Closable", bound="ClosedOnExit")


class ClosedOnExit:
    """Mixin: a ``with`` block calls :meth:`close` on exit (loggers and their group)."""

    def close(self) -> None:
        """Release what the object holds (subclasses override it)."""

    def __enter__(self: _Closable) -> _Closable:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SafeLoggers(ClosedOnExit):
    """Calls several :class:`MetricsLogger` objects; never raises.

    Each failure is logged (with its traceback at DEBUG level) and counted in
    :attr:`failures`; after :data:`MAX_FAILURES` consecutive failures a logger is switched off
    and the warning says so. Thread-safe: one call at a time. A context manager that closes
    every logger on exit.

    Args:
        loggers: the loggers, called in order.
    """

    def __init__(self, loggers: Iterable[MetricsLogger]) -> None:
        self.loggers = list(loggers)
        #: Failures per logger (by position in :attr:`loggers`).
        self.failures = [0] * len(self.loggers)
        self._streak = [0] * len(self.loggers)
        self._lock = threading.Lock()
        self._closed = False

    def __len__(self) -> int:
        return len(self.loggers)

    def _call(self, index: int, what: str, *args: Any) -> None:
        if self._streak[index] >= MAX_FAILURES:
            return
        target = self.loggers[index]
        try:
            getattr(target, what)(*args)
        except Exception as exc:
            self.failures[index] += 1
            self._streak[index] += 1
            off = self._streak[index] >= MAX_FAILURES
            logger.warning(
                "metrics logger %s failed in %s: %s%s",
                type(target).__name__,
                what,
                exc,
                f" ({MAX_FAILURES} failures in a row: switched off)" if off else "",
            )
            logger.debug("metrics logger failure", exc_info=True)
        else:
            self._streak[index] = 0

    def log_epoch(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Hand ``rows`` of ``epoch`` to every logger that is still on."""
        with self._lock:
            if self._closed:
                return
            for index in range(len(self.loggers)):
                self._call(index, "log_epoch", epoch, rows)

    def flush(self) -> None:
        """Flush every logger that is still on."""
        with self._lock:
            for index in range(len(self.loggers)):
                self._call(index, "flush")

    def close(self) -> None:
        """Close every logger (even those switched off). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for index in range(len(self.loggers)):
                self._streak[index] = 0
                self._call(index, "close")
