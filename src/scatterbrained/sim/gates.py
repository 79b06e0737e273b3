"""The runner's side of a gated run: workers train free running, the runner holds the gates.

Shared by the ``process`` backend (one OS process per node, files in the run folder) and the
``ray`` backend (one Ray actor per node, actor calls). Faults mean what they mean in the
in-process backends (:func:`~scatterbrained.sim.inprocess.apply_faults`): a fault with
``epoch = e`` happens after the network finished epoch ``e``, so a node killed at 2 and
restarted at 5 has no rows for epochs 3 to 5 and trains again from epoch 6; the event markers
sit on the first row after the fault (``killed`` on epoch 3, ``restarted`` on epoch 6).
Random churn (``churn_rate``) draws the same kills and restarts as there.

Workers train free running, except at *gates*: the epochs after which faults happen, the
start (epoch 0), and, in synchronous rounds, every epoch (see :func:`plan_faults`). A worker
that finished the epoch of a gate waits there until the runner opens it. The runner waits
until every live worker arrived, then applies that gate's faults one by one, each
acknowledged by the worker it concerns: a worker told to pause goes OFFLINE and says so
before it is stopped; a restarted or resumed worker reports when it is back. Then the runner
waits for the membership to settle (every live node sees exactly the other live ones), lets
the restarted and resumed workers catch up (``sync_model``), and opens the gate. Nothing
depends on timing: every wait is a bounded poll, and a wait that runs out or a worker that
dies stops the run with a :class:`ProcessRunError` naming the worker.

A backend subclasses :class:`GatedRun` (how workers start, hear the gate, are polled and
killed) and gives it :class:`GatedWorker` objects.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..errors import ScatterbrainedError
from ..types import OperatingMode
from .config import FaultEvent, SimConfig
from .worker import CATCH_UP, FAULTS, GO, SYNC_TIMEOUT

__all__ = [
    "ALIVE",
    "DEAD",
    "PAUSED",
    "FaultPlan",
    "GatedRun",
    "GatedWorker",
    "ProcessRunError",
    "ProcessRunTimeoutError",
    "plan_faults",
]

logger = logging.getLogger(__name__)

#: Seconds between two looks at the workers (files or actor state).
POLL_S = 0.05
#: Seconds between two progress reports (``on_epoch``) while waiting.
PROGRESS_EVERY_S = 0.5
#: Seconds for every worker to start (interpreter, imports, data) and reach the first gate.
START_TIMEOUT_S = 180.0
#: Seconds for a restarted worker to start and report at its gate.
RESTART_TIMEOUT_S = 180.0
#: Seconds for a worker told to pause to go OFFLINE and say so (then it is stopped anyway).
PAUSE_TIMEOUT_S = 30.0
#: Seconds for the system to reap a killed worker.
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


class GatedWorker(Protocol):
    """What :class:`GatedRun` needs of one worker (a process, a Ray actor).

    Attributes:
        index: the node's index.
        id: the node's id.
        state: ``alive``, ``dead``, ``paused`` (the runner sets it) or ``finishing``.
    """

    index: int
    id: str
    state: str

    def spawn(self, restart: bool, epoch: int) -> None:
        """Start the worker (after a restart: from its checkpoint, at network epoch ``epoch``)."""
        ...

    @property
    def running(self) -> bool:
        """True while the worker exists (a stopped or paused one included)."""
        ...

    @property
    def done(self) -> bool:
        """True once the worker trained its last epoch."""
        ...

    def report(self) -> dict[str, Any] | None:
        """What the worker last said at a gate in this life, if anything."""
        ...

    def rows(self) -> list[dict[str, Any]]:
        """The metric rows the worker wrote so far (every life)."""
        ...

    def final_accuracy(self) -> float | None:
        """The accuracy of the model the worker held when the run ended, if it got there."""
        ...

    def pause(self) -> None:
        """Freeze the worker once it went OFFLINE (a no-op where that is not possible)."""
        ...

    def resume(self) -> None:
        """Undo :meth:`pause`."""
        ...

    def kill(self) -> None:
        """Kill the worker without goodbye and wait until it is gone; state becomes ``dead``."""
        ...

    def failure(self) -> str | None:
        """Why the worker ended badly (exit status, last log lines); None while it runs or
        when it ended well."""
        ...


def _at(worker: GatedWorker, epoch: int, stages: tuple[str, ...]) -> bool:
    """True when ``worker`` reported one of ``stages`` at gate ``epoch``."""
    report = worker.report()
    return report is not None and report.get("epoch") == epoch and report["stage"] in stages


class GatedRun:
    """The runner's side of one gated run; a backend fills in the hooks.

    Args:
        config: the run's configuration.
        workers: one worker per node, in index order (not started yet).
        on_epoch: called once per epoch, in order, with the epoch and its rows (every node).

    Hooks: :meth:`_start`, :meth:`_send_gate`, :meth:`_send_stop`, :meth:`kill_all`, and
    optionally :meth:`_refresh` (called before every look at the workers) and
    :meth:`_where` (where to look when something went wrong).
    """

    #: Seconds between two looks at the workers.
    poll_s = POLL_S

    def __init__(
        self,
        config: SimConfig,
        workers: Sequence[GatedWorker],
        on_epoch: Callable[[int, list[dict[str, Any]]], None] | None,
    ) -> None:
        self.config = config
        self.on_epoch = on_epoch
        self.plan = plan_faults(config)
        self.marks = self.plan.events()
        self.status = [self.plan.status(i) for i in range(config.nodes)]
        self.workers = list(workers)
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
        self._start()
        for epoch in self.plan.gates:
            self._pass_gate(epoch)
        self._finish()

    def _pass_gate(self, epoch: int) -> None:
        """Everyone live at ``epoch``; its faults; settle; catch up; open."""
        live = [w for w in self.workers if w.state == ALIVE]
        timeout = START_TIMEOUT_S if epoch == 0 else self.budget
        self._wait(
            lambda: all(_at(w, epoch, ("arrived",)) for w in live),
            timeout,
            lambda: (
                f"workers to finish epoch {epoch}: "
                + _missing(w for w in live if not _at(w, epoch, ("arrived",)))
            ),
        )
        logger.debug("every live worker finished epoch %d", epoch)
        steps = self.plan.steps.get(epoch, ())
        self._publish(epoch, FAULTS)
        pending: dict[int, str] = {}  # node -> stage its worker still has to report
        back: list[GatedWorker] = []  # restarted or resumed here
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
        self, worker: GatedWorker, fault: FaultEvent, epoch: int, pending: dict[int, str]
    ) -> None:
        """Apply one fault; what the worker must report before the next one goes in ``pending``."""
        logger.info("after epoch %d: %s %s", epoch, fault.action, worker.id)
        if fault.action == "kill":
            worker.kill()
        elif fault.action == "pause":
            self._instruct(epoch, pause=worker.id)
            self._acknowledged(worker, epoch, "paused", required=False)
            worker.pause()
            worker.state = PAUSED
        elif fault.action == "restart":
            worker.spawn(restart=True, epoch=epoch)
            pending[worker.index] = "arrived"
        elif fault.action == "resume":
            worker.resume()
            worker.state = ALIVE
            self._instruct(epoch, resume=worker.id)
            pending[worker.index] = "arrived"

    def _acknowledged(
        self, worker: GatedWorker, epoch: int, stage: str, required: bool = True
    ) -> None:
        """Wait until ``worker`` reported ``stage`` at gate ``epoch``."""
        timeout = {"paused": PAUSE_TIMEOUT_S, "caught_up": CATCH_UP_TIMEOUT_S}.get(
            stage, RESTART_TIMEOUT_S
        )
        try:
            self._wait(
                lambda: _at(worker, epoch, (stage,)),
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
        self._send_stop()
        for worker in live:
            worker.state = "finishing"  # exiting now is what it should do
        self._wait(
            lambda: not any(w.running for w in live),
            FINISH_TIMEOUT_S,
            lambda: "workers to exit after the run: " + _missing(w for w in live if w.running),
        )
        for worker in live:
            problem = worker.failure()
            if problem:
                logger.warning("worker %s: %s", worker.id, problem)

    # -------------------------------------------------------------------- hooks

    def _start(self) -> None:
        """Start every worker (and whatever they need first)."""
        raise NotImplementedError

    def _send_gate(self, gate: dict[str, Any]) -> None:
        """Make ``gate`` the gate every worker sees."""
        raise NotImplementedError

    def _send_stop(self) -> None:
        """Tell every worker that the run is over (they evaluate, report and exit)."""
        raise NotImplementedError

    def kill_all(self) -> None:
        """Kill every worker that still runs (always called at the end)."""
        raise NotImplementedError

    def _refresh(self) -> None:
        """Called before every look at the workers (e.g. to fetch their state at once)."""

    def _where(self) -> str:
        """Where to look when something went wrong (appended to error messages)."""
        return ""

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
        self._send_gate(gate)

    def _wait(self, condition: Callable[[], bool], timeout: float, what: Callable[[], str]) -> None:
        """Poll ``condition`` until it holds; fail when a worker dies or time runs out."""
        start = time.monotonic()
        end = min(start + timeout, self.deadline)
        self._refresh()
        while not condition():
            self._check_alive()
            self.report_progress()
            if time.monotonic() >= end:
                why = "the run's budget is spent" if end == self.deadline else "timed out"
                raise ProcessRunTimeoutError(
                    f"{why} after waiting {time.monotonic() - start:.0f} s for {what()}"
                    f"{self._where()}"
                )
            time.sleep(self.poll_s)
            self._refresh()

    def _check_alive(self) -> None:
        for worker in self.workers:
            if worker.state in (ALIVE, PAUSED) and not worker.running:
                why = worker.failure() or "it ended before the run did"
                raise ProcessRunError(f"worker {worker.id} is gone: {why}")

    # -------------------------------------------------------------------- rows

    def rows_at(self, epoch: int) -> list[dict[str, Any]]:
        """Every node's row for ``epoch`` (placeholders where a node did not train)."""
        rows = []
        for worker in self.workers:
            seen = {r["epoch"]: r for r in worker.rows()}
            rows.append(self._row(worker, epoch, seen.get(epoch)))
        return rows

    def _row(self, worker: GatedWorker, epoch: int, row: dict[str, Any] | None) -> dict[str, Any]:
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
            trained = {w.index: {r["epoch"] for r in w.rows()} for w in self.workers}
            if any(
                self.status[i][epoch - 1] == ALIVE and epoch not in trained[i]
                for i in range(self.config.nodes)
            ):
                return
            self.reported = epoch
            self.on_epoch(epoch, self.rows_at(epoch))


def _missing(workers: Any) -> str:
    return ", ".join(w.id for w in workers) or "(none)"


def _settle_timeout(nodes: int) -> float:
    """As the in-process backends: every pair greets, so it grows with N²."""
    return max(SETTLE_TIMEOUT_S, 0.0005 * nodes * nodes)
