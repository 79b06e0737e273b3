"""The ``process`` backend: one OS process per node, faults as real signals.

``kill`` is SIGKILL, ``pause``/``resume`` are SIGSTOP/SIGCONT, ``restart`` starts the worker
again with ``--restart``. Faults fire when the network reaches the scheduled epoch: a kill or
pause of node *i* after epoch *e* fires when node *i* has finished *e* epochs; a restart or
resume fires when the most advanced live node has finished *e* epochs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import FaultEvent
from .experiment import Experiment, node_id

__all__ = ["read_metric_rows", "run_processes"]

logger = logging.getLogger(__name__)

POLL_S = 0.2


class _Worker:
    """A worker process and what it has reported."""

    def __init__(self, exp: Experiment, index: int, out: Path) -> None:
        self.index = index
        self.id = node_id(index)
        self.out = out
        self.metrics = out / "nodes" / f"{self.id}.jsonl"
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False

    def spawn(self, restart: bool) -> None:
        env = dict(os.environ, SCATTERBRAINED_DISCOVERY="loopback", PYTHONUNBUFFERED="1")
        log = (self.out / "logs" / f"{self.id}.log").open("ab")
        command = [sys.executable, "-m", "scatterbrained.sim.worker", str(self.out / "config.json")]
        command.append(str(self.index))
        if restart:
            command.append("--restart")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()

    @property
    def done(self) -> bool:
        return (self.out / "nodes" / f"{self.id}.done").exists()

    def final_accuracy(self) -> float | None:
        path = self.out / "nodes" / f"{self.id}.final.json"
        try:
            value = json.loads(path.read_text(encoding="utf-8")).get("accuracy")
        except (FileNotFoundError, json.JSONDecodeError):
            return None  # the worker never got there (or was killed while writing)
        return None if value is None else float(value)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def epochs_done(self) -> int:
        return max((row["epoch"] for row in read_metric_rows(self.metrics)), default=0)

    def signal(self, sig: signal.Signals) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)


def run_processes(
    exp: Experiment,
    out: Path,
    on_epoch: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every node as its own process; return the merged metric rows.

    Raises:
        TimeoutError: the run took longer than its budget (all workers are killed).
    """
    config = exp.config
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "nodes").mkdir(parents=True, exist_ok=True)
    workers = [_Worker(exp, i, out) for i in range(config.nodes)]
    faults = sorted(config.faults, key=lambda f: (f.epoch, f.node))
    events: list[dict[str, Any]] = []
    budget = 120 + config.epochs * (config.round_timeout + 30)
    deadline = time.monotonic() + budget
    reported = 0
    try:
        (out / "stop").unlink(missing_ok=True)
        for worker in workers:
            worker.spawn(restart=False)
        while any(w.running for w in workers):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the process run exceeded its budget of {budget:.0f} s")
            time.sleep(POLL_S)
            faults = _fire_due(workers, faults, events)
            if not faults and all(w.done or not w.running for w in workers):
                (out / "stop").touch()
            progress = min((w.epochs_done() for w in workers if w.running), default=config.epochs)
            while on_epoch is not None and reported < progress:
                reported += 1
                on_epoch(reported, _rows_at(workers, reported))
    finally:
        for worker in workers:
            worker.signal(signal.SIGCONT)
            worker.signal(signal.SIGKILL)
    rows = _merge(workers, events, config.epochs)
    return rows


def _fire_due(
    workers: list[_Worker], faults: list[FaultEvent], events: list[dict[str, Any]]
) -> list[FaultEvent]:
    remaining = []
    lead = max((w.epochs_done() for w in workers if w.running), default=0)
    for fault in faults:
        worker = workers[fault.node]
        own = worker.epochs_done()
        if fault.action in ("kill", "pause") and own >= fault.epoch and worker.running:
            worker.signal(signal.SIGKILL if fault.action == "kill" else signal.SIGSTOP)
            worker.paused = fault.action == "pause"
            events.append({"node": worker.id, "epoch": own, "event": _event(fault.action)})
        elif fault.action == "restart" and lead >= fault.epoch and not worker.running:
            worker.spawn(restart=True)  # its first row after the restart says "restarted"
        elif fault.action == "resume" and lead >= fault.epoch and worker.paused:
            worker.signal(signal.SIGCONT)
            worker.paused = False
            events.append({"node": worker.id, "epoch": lead, "event": "resumed"})
        else:
            remaining.append(fault)
    return remaining


def _event(action: str) -> str:
    return {"kill": "killed", "pause": "paused"}.get(action, action)


def read_metric_rows(path: Path) -> list[dict[str, Any]]:
    """The complete rows of a worker's ``.jsonl`` file, read while the worker may be writing it.

    Only newline-terminated lines count: the runner polls the file while workers append to it,
    so the last line may still be half written. A line that does not parse (a worker killed in
    the middle of a write on a filesystem without atomic appends) is skipped with a warning
    instead of failing the whole run. A missing file has no rows.
    """
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    rows: list[dict[str, Any]] = []
    for line in text[: text.rfind("\n") + 1].splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            logger.warning("%s: skipping a metric line that does not parse: %.80r", path, line)
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int):
            rows.append(row)
    return rows


def _rows_at(workers: list[_Worker], epoch: int) -> list[dict[str, Any]]:
    return [r for w in workers for r in read_metric_rows(w.metrics) if r["epoch"] == epoch]


def _merge(
    workers: list[_Worker], events: list[dict[str, Any]], epochs: int
) -> list[dict[str, Any]]:
    """One row per node and epoch; epochs a node missed (dead) get an empty row."""
    rows: list[dict[str, Any]] = []
    marks = {(e["node"], e["epoch"]): e["event"] for e in events}
    for worker in workers:
        seen = {r["epoch"]: r for r in read_metric_rows(worker.metrics)}
        for epoch in range(1, epochs + 1):
            row = seen.get(epoch)
            if row is None:
                row = {"node": worker.id, "index": worker.index, "epoch": epoch, "alive": False}
                row.update(accuracy=None, loss=None, train_loss=None, mode=None, merged_from=[])
                row.update(bytes_sent=0, bytes_received=0, wall_s=0.0, peers=0, event=None)
            mark = marks.get((worker.id, epoch))
            if mark is not None:
                row = {**row, "event": mark}
            if epoch == epochs and row["alive"]:
                row = {**row, "final_accuracy": worker.final_accuracy()}
            rows.append(row)
    rows.sort(key=lambda r: (r["epoch"], r["index"]))
    return rows
