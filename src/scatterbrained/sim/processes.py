"""The ``process`` backend: one OS process per node, faults as real signals.

``kill`` is SIGKILL, ``pause``/``resume`` are SIGSTOP/SIGCONT, ``restart`` starts the worker
again with ``--restart``. Faults mean what they mean in the in-process backends
(:func:`~scatterbrained.sim.inprocess.apply_faults`): a fault with ``epoch = e`` happens
after the network finished epoch ``e``, so a node killed at 2 and restarted at 5 has no
rows for epochs 3 to 5 and trains again from epoch 6; the event markers sit on the first
row after the fault (``killed`` on epoch 3, ``restarted`` on epoch 6). Random churn
(``churn_rate``) draws the same kills and restarts as there.

Workers train free running, except at *gates*: the epochs after which faults happen, the
start (epoch 0), and, in synchronous rounds, every epoch (see :func:`plan_faults`). A worker
that finished the epoch of a gate waits there until the runner opens it. The runner waits
until every live worker arrived, then applies that gate's faults one by one, each
acknowledged by the worker it concerns: a worker told to pause goes OFFLINE and says so
before it is stopped; a restarted or resumed worker reports when it is back. Then the runner
waits for the membership to settle (every live node sees exactly the other live ones), lets
the restarted and resumed workers catch up (``sync_model``), and opens the gate. Nothing
depends on timing: every wait is a bounded poll of a file, and a wait that runs out or a
worker that dies stops the run with a :class:`ProcessRunError` naming the worker and its log.

The files, all in the run folder (written atomically, so a reader never sees half a file):

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
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ScatterbrainedError
from ..types import OperatingMode
from .config import FaultEvent, SimConfig
from .experiment import Experiment, node_id
from .worker import (
    CATCH_UP,
    FAULTS,
    GO,
    SYNC_TIMEOUT,
    gate_path,
    plan_path,
    read_json,
    wait_path,
    write_atomically,
)

__all__ = [
    "FaultPlan",
    "ProcessRunError",
    "ProcessRunTimeoutError",
    "plan_faults",
    "read_metric_rows",
    "run_processes",
]

logger = logging.getLogger(__name__)

#: Seconds between two looks at the workers' files.
POLL_S = 0.05
#: Seconds between two progress reports (``on_epoch``) while waiting.
PROGRESS_EVERY_S = 0.5
#: Seconds for every worker to start (interpreter, imports, data) and reach the first gate.
START_TIMEOUT_S = 180.0
#: Seconds for a restarted worker to start and report at its gate.
RESTART_TIMEOUT_S = 180.0
#: Seconds for a worker told to pause to go OFFLINE and say so (then it is stopped anyway).
PAUSE_TIMEOUT_S = 30.0
#: Seconds for the system to reap a SIGKILLed worker.
REAP_TIMEOUT_S = 30.0
#: Seconds for the restarted and resumed workers to catch up (``sync_model``) and say so.
CATCH_UP_TIMEOUT_S = SYNC_TIMEOUT + 30.0
#: Seconds for the workers to evaluate their final model and exit after ``stop``.
FINISH_TIMEOUT_S = 120.0
#: Seconds a membership settle waits at least (as in the in-process backends).
SETTLE_TIMEOUT_S = 30.0

_EVENTS = {"kill": "killed", "restart": "restarted", "pause": "paused", "resume": "resumed"}
ALIVE, DEAD, PAUSED = "alive", "dead", "paused"


class ProcessRunError(ScatterbrainedError):
    """A worker died unexpectedly or did not do what the runner waited for."""


class ProcessRunTimeoutError(ProcessRunError, TimeoutError):
    """A bounded wait of the process runner ran out (all workers are killed)."""


# ---------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class FaultPlan:
    """The faults that take effect, epoch by epoch, and the gates the workers wait at.

    Attributes:
        epochs: epochs of the run.
        steps: after-epoch -> the faults that take effect then, in the order they happen
            (a kill of a dead node, a resume of a node that is not paused, ... are left out).
        gates: the epochs after which every live worker waits for the runner, ascending;
            always holds 0 (the start) and every epoch with steps.
    """

    epochs: int
    steps: Mapping[int, tuple[FaultEvent, ...]]
    gates: tuple[int, ...]

    def events(self) -> dict[tuple[int, int], str]:
        """(node index, row epoch) -> the event shown on that row (the last one wins)."""
        marks: dict[tuple[int, int], str] = {}
        for after, faults in self.steps.items():
            for fault in faults:
                marks[(fault.node, after + 1)] = _EVENTS[fault.action]
        return marks

    def status(self, node: int) -> list[str]:
        """Node ``node``'s state during each epoch 1..epochs: ``alive``, ``dead`` or ``paused``."""
        state, states = ALIVE, []
        for epoch in range(1, self.epochs + 1):
            for fault in self.steps.get(epoch - 1, ()):
                if fault.node == node:
                    state = _after(state, fault.action)
            states.append(state)
        return states


def _after(state: str, action: str) -> str:
    return {"kill": DEAD, "restart": ALIVE, "pause": PAUSED, "resume": ALIVE}[action]


def plan_faults(config: SimConfig) -> FaultPlan:
    """The faults of ``config`` as :func:`~scatterbrained.sim.inprocess.apply_faults` applies them.

    Mirrors it step by step: after each epoch ``e`` (0 = before training, up to
    ``epochs - 1``) the faults scheduled at ``e`` in the order the config lists them, then the
    churn restarts due at ``e``, then the churn kills drawn (from the same seeded generator,
    one draw per node alive at that point) take effect where they apply: a kill on a live
    node, a restart on a dead one, a pause on a running one, a resume on a paused one.

    Gates: 0, every epoch with faults, and in synchronous rounds every epoch (free-running
    processes would otherwise drift apart by whole rounds, e.g. a SEEDING node, which never
    waits for anyone, would run ahead and its neighbours would adopt its round numbers and
    then wait ``round_timeout`` for rounds it never sends).
    """
    n, epochs = config.nodes, config.epochs
    alive, paused = [True] * n, [False] * n
    churn = random.Random(config.seed + 7919)
    pending: dict[int, int] = {}
    steps: dict[int, tuple[FaultEvent, ...]] = {}
    for after in range(epochs):
        scheduled = [f for f in config.faults if f.epoch == after]
        for index, due in list(pending.items()):
            if due == after:
                scheduled.append(FaultEvent(after, index, "restart"))
                del pending[index]
        if config.churn_rate > 0 and after > 0:
            for index in range(n):
                if alive[index] and churn.random() < config.churn_rate:
                    scheduled.append(FaultEvent(after, index, "kill"))
                    pending[index] = min(after + 2, epochs)
        taken: list[FaultEvent] = []
        for fault in scheduled:
            i, action = fault.node, fault.action
            if action == "kill" and alive[i]:
                alive[i], paused[i] = False, False
            elif action == "restart" and not alive[i]:
                alive[i] = True
            elif action == "pause" and alive[i] and not paused[i]:
                paused[i] = True
            elif action == "resume" and paused[i]:
                paused[i] = False
            else:
                continue
            taken.append(FaultEvent(after, i, action))
        if taken:
            steps[after] = tuple(taken)
    gates = set(range(epochs)) if config.sync else {0, *steps}
    return FaultPlan(epochs, steps, tuple(sorted(gates)))


# ---------------------------------------------------------------------------------- workers


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

    def at(self, epoch: int, stages: tuple[str, ...]) -> bool:
        """True when the worker reported one of ``stages`` at gate ``epoch``."""
        report = self.report()
        return report is not None and report.get("epoch") == epoch and report["stage"] in stages

    def final_accuracy(self) -> float | None:
        """The accuracy of the model the worker held when the run ended, if it got there."""
        value = (read_json(self.out / "nodes" / f"{self.id}.final.json") or {}).get("accuracy")
        return None if value is None else float(value)

    def signal(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the process if it still runs."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL the worker and wait until it is gone."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=REAP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise ProcessRunError(f"worker {self.id} survived SIGKILL") from None
        self.state = DEAD

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


class _Run:
    """The runner's side of one process run."""

    def __init__(
        self,
        config: SimConfig,
        out: Path,
        on_epoch: Callable[[int, list[dict[str, Any]]], None] | None,
        paths: tuple[str, ...] = (),
    ) -> None:
        self.config = config
        self.out = out
        self.on_epoch = on_epoch
        self.plan = plan_faults(config)
        self.marks = self.plan.events()
        self.status = [self.plan.status(i) for i in range(config.nodes)]
        self.workers = [_Worker(i, out, paths) for i in range(config.nodes)]
        self.reported = 0
        self._next_progress = 0.0
        fault_gates = len(self.plan.steps) + 1
        budget = 120 + config.epochs * (config.round_timeout + 30)
        budget += fault_gates * (RESTART_TIMEOUT_S + 2 * _settle_timeout(config.nodes))
        self.budget = budget
        self.deadline = time.monotonic() + budget
        self.gate: dict[str, Any] = {}

    # -------------------------------------------------------------------- the whole run

    def run(self) -> None:
        """Start the workers, take them through every gate, and let them finish."""
        (self.out / "logs").mkdir(parents=True, exist_ok=True)
        (self.out / "nodes").mkdir(parents=True, exist_ok=True)
        for stale in (self.out / "stop", gate_path(self.out)):
            stale.unlink(missing_ok=True)
        plan = {"gates": list(self.plan.gates), "discovery_port": free_udp_port()}
        write_atomically(plan_path(self.out), json.dumps(plan))
        for worker in self.workers:
            worker.spawn(restart=False, epoch=0)
        for epoch in self.plan.gates:
            self._pass_gate(epoch)
        self._finish()

    def _pass_gate(self, epoch: int) -> None:
        """Everyone live at ``epoch``; its faults; settle; catch up; open."""
        live = [w for w in self.workers if w.state == ALIVE]
        timeout = START_TIMEOUT_S if epoch == 0 else self.budget
        self._wait(
            lambda: all(w.at(epoch, ("arrived",)) for w in live),
            timeout,
            lambda: (
                f"workers to finish epoch {epoch}: "
                + _missing(w for w in live if not w.at(epoch, ("arrived",)))
            ),
        )
        logger.debug("every live worker finished epoch %d", epoch)
        steps = self.plan.steps.get(epoch, ())
        self._publish(epoch, FAULTS)
        pending: dict[int, str] = {}  # node -> stage its worker still has to report
        back: list[_Worker] = []  # restarted or resumed here
        for fault in steps:
            worker = self.workers[fault.node]
            if fault.node in pending:
                self._acknowledged(worker, epoch, pending.pop(fault.node))
            self._apply(worker, fault, epoch, pending)
            back = [w for w in back if w is not worker]
            if fault.action in ("restart", "resume"):
                back.append(worker)
        for index, stage in pending.items():
            self._acknowledged(self.workers[index], epoch, stage)
        for i, worker in enumerate(back):  # one by one: each may sync from the one before
            self._settle(epoch)
            self._publish(epoch, CATCH_UP, catch_up=[w.id for w in back[: i + 1]])
            self._acknowledged(worker, epoch, "caught_up")
        self._settle(epoch)  # faults, policy switches: every view agrees before the rounds
        self._publish(epoch, GO)
        logger.debug("gate after epoch %d open", epoch)

    def _apply(
        self, worker: _Worker, fault: FaultEvent, epoch: int, pending: dict[int, str]
    ) -> None:
        """Apply one fault; what the worker must report before the next one goes in ``pending``."""
        logger.info("after epoch %d: %s %s", epoch, fault.action, worker.id)
        if fault.action == "kill":
            worker.kill()
        elif fault.action == "pause":
            self._instruct(epoch, pause=worker.id)
            self._acknowledged(worker, epoch, "paused", required=False)
            worker.signal(signal.SIGSTOP)
            worker.state = PAUSED
        elif fault.action == "restart":
            worker.spawn(restart=True, epoch=epoch)
            pending[worker.index] = "arrived"
        elif fault.action == "resume":
            worker.signal(signal.SIGCONT)
            worker.state = ALIVE
            self._instruct(epoch, resume=worker.id)
            pending[worker.index] = "arrived"

    def _acknowledged(self, worker: _Worker, epoch: int, stage: str, required: bool = True) -> None:
        """Wait until ``worker`` reported ``stage`` at gate ``epoch``."""
        timeout = {"paused": PAUSE_TIMEOUT_S, "caught_up": CATCH_UP_TIMEOUT_S}.get(
            stage, RESTART_TIMEOUT_S
        )
        try:
            self._wait(
                lambda: worker.at(epoch, (stage,)),
                timeout,
                lambda: f"worker {worker.id} to report {stage!r} after epoch {epoch}",
            )
        except ProcessRunTimeoutError as exc:
            if required:
                raise
            logger.warning("%s; going on", exc)

    def _settle(self, epoch: int) -> None:
        """Wait until the live nodes agree on who is there (bounded, then go on with a warning).

        As in the in-process backends: every live node sees exactly the other live nodes,
        each with the mode that node is in (what rounds decide on). A node that is OFFLINE
        (configured so, or switched by a policy) is silent and tracks nobody: it is neither
        waited for nor expected. Model versions are not waited for, unlike in the in-process
        backends: over UDP discovery a peer's announced version is only refreshed by its
        Hellos, not by its beacons, so it may stay behind for good.
        """
        timeout = _settle_timeout(self.config.nodes)

        def settled() -> bool:
            reports: dict[str, dict[str, Any]] = {}
            for worker in self.workers:
                report = worker.report() if worker.state == ALIVE else None
                if worker.state == ALIVE and report is None:
                    return False
                if report is not None and report.get("mode") != OperatingMode.OFFLINE.value:
                    reports[worker.id] = report
            for node, report in reports.items():
                seen: dict[str, list[Any]] = report["peers"]
                if set(seen) != set(reports) - {node}:
                    return False
                if any(mode != reports[peer]["mode"] for peer, (mode, _) in seen.items()):
                    return False
            return True

        try:
            self._wait(settled, timeout, lambda: f"the membership to settle after epoch {epoch}")
        except ProcessRunTimeoutError as exc:
            logger.warning("%s; going on", exc)

    def _finish(self) -> None:
        """Wait until every live worker trained its last epoch, then let them all stop."""
        live = [w for w in self.workers if w.state == ALIVE]
        self._wait(
            lambda: all(w.done for w in live),
            self.budget,
            lambda: "workers to finish the last epoch: " + _missing(w for w in live if not w.done),
        )
        (self.out / "stop").touch()
        for worker in live:
            worker.state = "finishing"  # exiting now is what it should do
        self._wait(
            lambda: not any(w.running for w in live),
            FINISH_TIMEOUT_S,
            lambda: "workers to exit after the run: " + _missing(w for w in live if w.running),
        )
        for worker in live:
            assert worker.proc is not None
            if worker.proc.returncode != 0:
                logger.warning(
                    "worker %s exited with %s:\n%s",
                    worker.id,
                    worker.proc.returncode,
                    worker.log_tail(),
                )

    def kill_all(self) -> None:
        """Kill every worker that still runs (a stopped one is continued so it can die)."""
        for worker in self.workers:
            worker.signal(signal.SIGCONT)
            worker.signal(signal.SIGKILL)
        for worker in self.workers:
            if worker.proc is not None:
                try:
                    worker.proc.wait(timeout=REAP_TIMEOUT_S)
                except subprocess.TimeoutExpired:  # pragma: no cover - the kernel's business
                    logger.warning("worker %s survived SIGKILL", worker.id)

    # -------------------------------------------------------------------- waiting

    def _instruct(self, epoch: int, pause: str | None = None, resume: str | None = None) -> None:
        """Tell one worker to pause, or to resume (a later word for it replaces an earlier one)."""
        paused = [n for n in self.gate["pause"] if n != resume]
        resumed = [n for n in self.gate["resume"] if n != pause]
        paused += [pause] if pause else []
        resumed += [resume] if resume else []
        self._publish(epoch, FAULTS, pause=paused, resume=resumed)

    def _publish(self, epoch: int, phase: int, **lists: list[str]) -> None:
        """Write ``gate.json``; lists not given keep their value within the same epoch."""
        same = self.gate.get("epoch") == epoch
        gate: dict[str, Any] = {"epoch": epoch, "phase": phase}
        for name in ("pause", "resume", "catch_up"):
            gate[name] = lists.get(name, self.gate.get(name, []) if same else [])
        self.gate = gate
        write_atomically(gate_path(self.out), json.dumps(gate))

    def _wait(self, condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
        """Poll ``condition`` until it holds; fail when a worker dies or time runs out."""
        start = time.monotonic()
        end = min(start + timeout, self.deadline)
        while not condition():
            self._check_alive()
            self.report_progress()
            if time.monotonic() >= end:
                why = "the run's budget is spent" if end == self.deadline else "timed out"
                raise ProcessRunTimeoutError(
                    f"{why} after waiting {time.monotonic() - start:.0f} s for {what()} "
                    f"(logs: {self.out / 'logs'})"
                )
            time.sleep(POLL_S)

    def _check_alive(self) -> None:
        for worker in self.workers:
            if worker.state in (ALIVE, PAUSED) and worker.proc is not None and not worker.running:
                raise ProcessRunError(
                    f"worker {worker.id} exited with status {worker.proc.returncode}; "
                    f"the end of {worker.log}:\n{worker.log_tail()}"
                )

    # -------------------------------------------------------------------- rows

    def rows_at(self, epoch: int) -> list[dict[str, Any]]:
        """Every node's row for ``epoch`` (placeholders where a node did not train)."""
        rows = []
        for worker in self.workers:
            seen = {r["epoch"]: r for r in read_metric_rows(worker.metrics)}
            rows.append(self._row(worker, epoch, seen.get(epoch)))
        return rows

    def _row(self, worker: _Worker, epoch: int, row: dict[str, Any] | None) -> dict[str, Any]:
        state = self.status[worker.index][epoch - 1]
        if row is None:
            row = {"node": worker.id, "index": worker.index, "epoch": epoch}
            row.update(alive=state == PAUSED, event=None, accuracy=None, loss=None)
            mode = OperatingMode.OFFLINE.value if state == PAUSED else None
            row.update(train_loss=None, mode=mode, merged_from=[], bytes_sent=0)
            row.update(bytes_received=0, wall_s=0.0, peers=0)
        row = {**row, "event": self.marks.get((worker.index, epoch))}
        if epoch == self.config.epochs and row["alive"]:
            row["final_accuracy"] = worker.final_accuracy()
        return row

    def report_progress(self, final: list[dict[str, Any]] | None = None) -> None:
        """Call ``on_epoch`` for every epoch that every node is through (all at the end)."""
        if self.on_epoch is None:
            return
        if final is not None:
            while self.reported < self.config.epochs:
                self.reported += 1
                self.on_epoch(self.reported, [r for r in final if r["epoch"] == self.reported])
            return
        now = time.monotonic()
        if now < self._next_progress:
            return
        self._next_progress = now + PROGRESS_EVERY_S
        while self.reported < self.config.epochs:
            epoch = self.reported + 1
            trained = {
                w.index: {r["epoch"] for r in read_metric_rows(w.metrics)} for w in self.workers
            }
            if any(
                self.status[i][epoch - 1] == ALIVE and epoch not in trained[i]
                for i in range(self.config.nodes)
            ):
                return
            self.reported = epoch
            self.on_epoch(epoch, self.rows_at(epoch))


def free_udp_port() -> int:
    """A UDP port nothing is bound to now: this run's discovery port (only its nodes use it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("", 0))
        port: int = probe.getsockname()[1]
    return port


def _missing(workers: Any) -> str:
    return ", ".join(w.id for w in workers) or "(none)"


def _settle_timeout(nodes: int) -> float:
    """As the in-process backends: every pair greets, so it grows with N²."""
    return max(SETTLE_TIMEOUT_S, 0.0005 * nodes * nodes)


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
