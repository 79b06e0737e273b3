"""The ``process`` backend: one OS process per node, faults as real signals.

``kill`` is SIGKILL, ``pause``/``resume`` are SIGSTOP/SIGCONT, ``restart`` starts the worker
again with ``--restart``. The runner holds the gates as :mod:`scatterbrained.sim.gates`
describes; runner and workers talk through files in the run folder (written atomically, so
a reader never sees half a file), and every wait is a bounded poll of a file:

* ``plan.json``: the gate epochs and the run's own UDP discovery port (so that two runs on
  one machine, whose nodes have the same ids, never meet), written before any worker starts.
* ``gate.json``: where the runner is: ``{"epoch", "phase", "pause", "resume", "catch_up"}``
  with ``phase`` one of :data:`~.worker.FAULTS`, :data:`~.worker.CATCH_UP` and
  :data:`~.worker.GO`.
* ``nodes/<id>.wait.json``: a worker at a gate: ``{"pid", "epoch", "stage", "mode",
  "peers"}``, ``stage`` being ``arrived``, ``paused`` or ``caught_up``.
* ``nodes/<id>.jsonl`` (one row per trained epoch), ``nodes/<id>.done``,
  ``nodes/<id>.final.json`` and ``stop`` as before.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import SimConfig
from .experiment import Experiment, node_id
from .gates import (
    ALIVE,
    DEAD,
    REAP_TIMEOUT_S,
    FaultPlan,
    GatedRun,
    ProcessRunError,
    ProcessRunTimeoutError,
    plan_faults,
)
from .worker import gate_path, plan_path, read_json, wait_path, write_atomically

__all__ = [
    "FaultPlan",
    "ProcessRunError",
    "ProcessRunTimeoutError",
    "plan_faults",
    "read_metric_rows",
    "run_processes",
]

logger = logging.getLogger(__name__)


class _Worker:
    """A worker process, its files and its state in the run."""

    def __init__(self, index: int, out: Path, paths: tuple[str, ...] = ()) -> None:
        self.index = index
        self.paths = paths  # for the config's module:function model and dataset
        self.id = node_id(index)
        self.out = out
        self.metrics = out / "nodes" / f"{self.id}.jsonl"
        self.log = out / "logs" / f"{self.id}.log"
        self.wait_file = wait_path(out, self.id)
        self.proc: subprocess.Popen[bytes] | None = None
        self.state = ALIVE

    def spawn(self, restart: bool, epoch: int) -> None:
        """Start the worker (after a restart: from its checkpoint, at network epoch ``epoch``)."""
        self.wait_file.unlink(missing_ok=True)  # a report of the last life is no report
        env = dict(os.environ, SCATTERBRAINED_DISCOVERY="loopback", PYTHONUNBUFFERED="1")
        if self.paths:  # the user's modules, wherever this process imported them from
            known = [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
            env["PYTHONPATH"] = os.pathsep.join([*self.paths, os.getcwd(), *known])
        command = [sys.executable, "-m", "scatterbrained.sim.worker", str(self.out / "config.json")]
        command += [str(self.index), "--epoch", str(epoch), "--runner-pid", str(os.getpid())]
        if restart:
            command.append("--restart")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        self.state = ALIVE

    @property
    def running(self) -> bool:
        """True while the process exists (stopped by SIGSTOP included)."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def done(self) -> bool:
        """True once the worker trained its last epoch."""
        return (self.out / "nodes" / f"{self.id}.done").exists()

    def report(self) -> dict[str, Any] | None:
        """What the worker last said at a gate, if it was said by this process."""
        report = read_json(self.wait_file)
        if report is None or self.proc is None or report.get("pid") != self.proc.pid:
            return None
        return report

    def rows(self) -> list[dict[str, Any]]:
        """The rows in ``nodes/<id>.jsonl`` (every life of the worker)."""
        return read_metric_rows(self.metrics)

    def final_accuracy(self) -> float | None:
        """The accuracy of the model the worker held when the run ended, if it got there."""
        value = (read_json(self.out / "nodes" / f"{self.id}.final.json") or {}).get("accuracy")
        return None if value is None else float(value)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process if it still runs."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def pause(self) -> None:
        """SIGSTOP (the worker went OFFLINE first)."""
        self.signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT."""
        self.signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the worker and wait until it is gone."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=REAP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise ProcessRunError(f"worker {self.id} survived SIGKILL") from None
        self.state = DEAD

    def failure(self) -> str | None:
        """The exit status and the end of the log of a worker that exited (not with 0)."""
        if self.proc is None or self.proc.returncode in (None, 0):
            return None
        return (
            f"exited with status {self.proc.returncode}; the end of {self.log}:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the worker's log."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------- the run


def run_processes(
    exp: Experiment,
    out: Path,
    on_epoch: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every node as its own process; return the merged metric rows.

    Args:
        exp: the loaded experiment (its config is in ``out/config.json``).
        out: the run folder.
        on_epoch: called once per epoch, in order, with the epoch and its rows (every node),
            as soon as every node has its row for it.

    Returns:
        One row per node and epoch, sorted by epoch then node (``metrics.jsonl``).

    Raises:
        ProcessRunTimeoutError: a wait ran out (a worker too slow to start, to reach a gate,
            to acknowledge a fault) or the run exceeded its budget; every worker is killed.
        ProcessRunError: a worker exited when it should not have.
    """
    run = _Run(exp.config, out, on_epoch, tuple(exp.import_roots()))
    try:
        run.run()
    finally:
        run.kill_all()
    rows = [row for epoch in range(1, exp.config.epochs + 1) for row in run.rows_at(epoch)]
    run.report_progress(final=rows)
    return rows


class _Run(GatedRun):
    """The runner's side of one process run: files in ``out`` and OS processes."""

    def __init__(
        self,
        config: SimConfig,
        out: Path,
        on_epoch: Callable[[int, list[dict[str, Any]]], None] | None,
        paths: tuple[str, ...] = (),
    ) -> None:
        self.out = out
        self.procs = [_Worker(i, out, paths) for i in range(config.nodes)]
        super().__init__(config, self.procs, on_epoch)

    def _start(self) -> None:
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        (self.out / "nodes").mkdir(parents=True, exist_ok=True)
        for stale in (self.out / "stop", gate_path(self.out)):
            stale.unlink(missing_ok=True)
        plan = {"gates": list(self.plan.gates), "discovery_port": free_udp_port()}
        write_atomically(plan_path(self.out), json.dumps(plan))
        for worker in self.procs:
            worker.spawn(restart=False, epoch=0)

    def _send_gate(self, gate: dict[str, Any]) -> None:
        write_atomically(gate_path(self.out), json.dumps(gate))

    def _send_stop(self) -> None:
        (self.out / "stop").touch()

    def _where(self) -> str:
        return f" (logs: {self.out / 'logs'})"

    def kill_all(self) -> None:
        """Kill every worker that still runs (a stopped one is continued so it can die)."""
        for worker in self.procs:
            worker.signal(signal.SIGCONT)
            worker.signal(signal.SIGKILL)
        for worker in self.procs:
            if worker.proc is not None:
                try:
                    worker.proc.wait(timeout=REAP_TIMEOUT_S)
                except subprocess.TimeoutExpired:  # pragma: no cover - the kernel's business
                    logger.warning("worker %s survived SIGKILL", worker.id)


def free_udp_port() -> int:
    """A UDP port nothing is bound to now: this run's discovery port (only its nodes use it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("", 0))
        port: int = probe.getsockname()[1]
    return port


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
