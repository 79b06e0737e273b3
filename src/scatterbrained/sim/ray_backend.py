"""The driver of the ``ray`` backend: start the node actors, hold the gates, collect rows.

See :mod:`scatterbrained.sim.ray_actors` for what runs inside the actors and
``docs/ray.md`` for local use and multi-machine clusters.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError, ScatterbrainedError
from .config import SimConfig
from .experiment import Experiment, node_id
from .gates import (
    ALIVE,
    DEAD,
    REAP_TIMEOUT_S,
    START_TIMEOUT_S,
    GatedRun,
    ProcessRunError,
    ProcessRunTimeoutError,
)
from .ray_actors import CALL_TIMEOUT_S, RAY_POLL_S, NodeActor, require_ray

__all__ = ["RayStartError", "run_ray"]

logger = logging.getLogger(__name__)

EpochCallback = Callable[[int, list[dict[str, Any]]], None]


class RayStartError(ScatterbrainedError):
    """Ray could not be started or reached (``ray.init`` failed)."""


def run_ray(
    exp: Experiment, out: Path, on_epoch: EpochCallback | None = None
) -> list[dict[str, Any]]:
    """Run every node as a Ray actor; return the metric rows.

    Uses the Ray instance this process is connected to, if any; else starts one: a local
    one (``ray_address`` unset; enough logical CPUs for every node, shut down at the end) or
    connects to the cluster at ``ray_address`` (disconnects at the end).

    Args:
        exp: the loaded experiment.
        out: the run folder (restarted nodes resume from ``out/checkpoints``, which must be
            writable on every machine).
        on_epoch: called once per epoch, in order, with the epoch and its rows (every node).

    Returns:
        One row per node and epoch, sorted by epoch then node (``metrics.jsonl``).

    Raises:
        RayStartError: Ray could not be started or reached.
        ConfigurationError: Ray is not installed, or the cluster has too few CPUs or GPUs
            for ``nodes`` actors of ``ray_num_cpus_per_node`` / ``ray_num_gpus_per_node``.
        ProcessRunTimeoutError: a wait ran out (actors that cannot be scheduled or are too
            slow to start included); every actor is killed.
        ProcessRunError: an actor died when it should not have.
    """
    ray = require_ray()
    config = exp.config
    started_here = _connect(ray, config)
    try:
        _check_resources(ray, config)
        paths = (*exp.import_roots(), os.getcwd())
        run = _RayRun(ray, config, out, on_epoch, paths)
        try:
            run.run()
        finally:
            run.kill_all()
    finally:
        if started_here:
            ray.shutdown()
    rows = [row for epoch in range(1, config.epochs + 1) for row in run.rows_at(epoch)]
    run.report_progress(final=rows)
    return rows


def _connect(ray: Any, config: SimConfig) -> bool:
    """Start or join Ray unless this process already is; True when this call did it."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # a simulation never phones home
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
    if config.ray_address is None:
        cpus = math.ceil(config.nodes * config.ray_num_cpus_per_node)
        options.update(num_cpus=max(os.cpu_count() or 1, cpus))
        if config.ray_num_gpus_per_node == 0:
            options["num_gpus"] = 0
    else:
        options.update(address=config.ray_address)
    try:
        ray.init(**options)
    except Exception as exc:  # Ray raises many kinds (ConnectionError, RuntimeError, ...)
        where = config.ray_address or "a local Ray instance"
        raise RayStartError(
            f"could not start or reach {where}: {type(exc).__name__}: {exc}; check "
            "`ray status` (for a cluster: the head's address and that its ports are open)"
        ) from exc
    return True


def _check_resources(ray: Any, config: SimConfig) -> None:
    """Fail at once when the actors can never all be scheduled (instead of a start timeout)."""
    have = ray.cluster_resources()
    for name, per_node, option in (
        ("CPU", config.ray_num_cpus_per_node, "ray_num_cpus_per_node"),
        ("GPU", config.ray_num_gpus_per_node, "ray_num_gpus_per_node"),
    ):
        need = config.nodes * per_node
        if need > float(have.get(name, 0.0)) + 1e-9:
            raise ConfigurationError(
                f"{config.nodes} nodes x {option} = {per_node} need {need:g} {name}s, but the "
                f"Ray cluster has {float(have.get(name, 0.0)):g}; lower {option} (fractions "
                "are fine), run fewer nodes or add machines"
            )


class _ActorWorker:
    """One node's actor as the gated runner sees it (state cached by :meth:`_RayRun._refresh`)."""

    def __init__(self, run: _RayRun, index: int) -> None:
        self.index = index
        self.id = node_id(index)
        self.state = ALIVE
        self._run = run
        self.actor: Any = None
        self.run_ref: Any = None
        self.ray_node: str | None = None  # where it ran first: a restart goes there too
        self.all_rows: list[dict[str, Any]] = []
        self._new_life()

    def _new_life(self) -> None:
        self.life_rows = 0
        self.last_report: dict[str, Any] | None = None
        self.address: str | None = None
        self.is_done = False
        self.final: dict[str, Any] | None = None
        self.ended = False
        self.problem: str | None = None

    def create(self) -> None:
        """Create the actor (on the Ray node it ran on before, if any)."""
        self._new_life()
        self.actor = self._run.actor_class(self.ray_node).remote(
            self._run.config.to_json(), self.index, self._run.host, self._run.paths
        )
        self.run_ref = None

    def launch(self, bootstrap: list[str], restart: bool, epoch: int) -> None:
        """Start the node in the actor, greeting ``bootstrap``."""
        run = self._run
        self.run_ref = self.actor.run.remote(
            list(run.plan.gates), bootstrap, run.checkpoints, run.gate, restart, epoch
        )

    def spawn(self, restart: bool, epoch: int) -> None:
        """A restart: a new actor that resumes from its checkpoint and greets every live node."""
        self.create()
        self.launch(self._run.addresses(), restart, epoch)
        self.state = ALIVE

    @property
    def running(self) -> bool:
        """True while the actor exists and its node has not returned."""
        return self.actor is not None and not self.ended

    @property
    def done(self) -> bool:
        """True once the node trained its last epoch."""
        return self.is_done

    def report(self) -> dict[str, Any] | None:
        """The node's last gate report in this life."""
        return self.last_report

    def rows(self) -> list[dict[str, Any]]:
        """Every row of every life of the node."""
        return self.all_rows

    def final_accuracy(self) -> float | None:
        """The accuracy of the model the node held at the end, if it got there."""
        value = (self.final or {}).get("accuracy")
        return None if value is None else float(value)

    def pause(self) -> None:
        """Nothing more: the node went OFFLINE and waits at its gate (actors are not frozen)."""

    def resume(self) -> None:
        """Nothing more: the gate tells the node to come back."""

    def kill(self) -> None:
        """:func:`ray.kill` the actor (no goodbye) and wait until its node is gone."""
        ray = self._run.ray
        if self.actor is not None:
            ray.kill(self.actor, no_restart=True)
            if self.run_ref is not None:
                try:
                    ray.get(self.run_ref, timeout=REAP_TIMEOUT_S)
                except ray.exceptions.GetTimeoutError:
                    raise ProcessRunError(f"actor {self.id} survived ray.kill") from None
                except ray.exceptions.RayError:
                    pass  # RayActorError: what a killed actor's call ends with
        self.actor, self.ended, self.state = None, True, DEAD

    def failure(self) -> str | None:
        """What the actor's node raised, if it failed."""
        return self.problem

    def take(self, polled: dict[str, Any]) -> None:
        """Take the state an actor's ``poll`` returned."""
        self.all_rows.extend(polled["rows"])
        self.life_rows += len(polled["rows"])
        self.last_report = polled["report"]
        self.address = polled["address"]
        self.is_done = bool(polled["done"])
        self.final = polled["final"]


class _RayRun(GatedRun):
    """The gated runner over Ray actors."""

    poll_s = RAY_POLL_S

    def __init__(
        self,
        ray: Any,
        config: SimConfig,
        out: Path,
        on_epoch: EpochCallback | None,
        paths: tuple[str, ...] = (),
    ):
        self.ray = ray
        self.paths = paths  # for the config's module:function model and dataset
        self.host = None if config.ray_address else "127.0.0.1"
        self.checkpoints = str(out.resolve() / "checkpoints")
        self.actors = [_ActorWorker(self, i) for i in range(config.nodes)]
        self._remote = ray.remote(NodeActor)
        super().__init__(config, self.actors, on_epoch)

    def actor_class(self, ray_node: str | None) -> Any:
        """The remote actor class with this run's resources (pinned to ``ray_node`` if set)."""
        options: dict[str, Any] = {
            "num_cpus": self.config.ray_num_cpus_per_node,
            "num_gpus": self.config.ray_num_gpus_per_node,
        }
        if ray_node is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(ray_node, soft=False)
        return self._remote.options(**options)

    def addresses(self) -> list[str]:
        """The addresses of every node that runs now."""
        return [w.address for w in self.actors if w.running and w.address is not None]

    def _start(self) -> None:
        """Create every actor, let them load in parallel, then start the nodes one by one."""
        for worker in self.actors:
            worker.create()
        refs = [w.actor.prepare.remote() for w in self.actors]
        _, pending = self.ray.wait(refs, num_returns=len(refs), timeout=START_TIMEOUT_S)
        if pending:
            raise ProcessRunTimeoutError(
                f"{len(pending)} of {len(refs)} Ray actors did not load the experiment within "
                f"{START_TIMEOUT_S:.0f} s (not enough free CPUs or memory in the cluster?)"
            )
        for worker, ref in zip(self.actors, refs, strict=True):
            try:
                worker.ray_node = self.ray.get(ref)
            except self.ray.exceptions.RayError as exc:
                raise ProcessRunError(f"actor {worker.id} failed to start: {exc}") from None
        for worker in self.actors:  # each greets the ones before it; they greet it back
            worker.launch(self.addresses(), restart=False, epoch=0)
            self._wait(
                partial(_has_address, worker),
                START_TIMEOUT_S,
                partial(str, f"actor {worker.id} to start its node"),
            )

    def _gather(self, calls: list[tuple[_ActorWorker, Any]]) -> list[tuple[_ActorWorker, Any]]:
        """Wait (bounded) for actor calls; (worker, result) of those that answered."""
        if not calls:
            return []
        refs = [ref for _, ref in calls]
        ready, _ = self.ray.wait(refs, num_returns=len(refs), timeout=CALL_TIMEOUT_S)
        answered = set(ready)
        results = []
        for worker, ref in calls:
            if ref not in answered:
                continue
            try:
                results.append((worker, self.ray.get(ref)))
            except self.ray.exceptions.RayError as exc:  # gone: its run ref says why
                logger.debug("actor %s did not answer: %s", worker.id, exc)
        return results

    def _call_all(self, method: str, *args: Any) -> None:
        """Call ``method`` on every actor that exists and wait (bounded) for the answers."""
        self._gather(
            [
                (w, getattr(w.actor, method).remote(*args))
                for w in self.actors
                if w.actor is not None
            ]
        )

    def _refresh(self) -> None:
        """Poll every actor; note the nodes that returned (and why, if they failed)."""
        running = {w.run_ref: w for w in self.actors if w.running and w.run_ref is not None}
        finished: list[Any] = []
        if running:
            finished, _ = self.ray.wait(list(running), num_returns=len(running), timeout=0)
        polls = [(w, w.actor.poll.remote(w.life_rows)) for w in self.actors if w.actor is not None]
        for worker, polled in self._gather(polls):
            worker.take(polled)
        for ref in finished:
            worker = running[ref]
            worker.ended = True
            try:
                self.ray.get(ref)
            except self.ray.exceptions.RayError as exc:
                worker.problem = str(exc)[-4000:]

    def _send_gate(self, gate: dict[str, Any]) -> None:
        self._call_all("set_gate", gate)

    def _send_stop(self) -> None:
        self._call_all("stop")

    def _where(self) -> str:
        return " (actor logs: the Ray session folder of each machine, /tmp/ray/session_latest/logs)"

    def kill_all(self) -> None:
        """Kill every actor that still exists."""
        for worker in self.actors:
            if worker.actor is not None:
                try:
                    self.ray.kill(worker.actor, no_restart=True)
                except Exception as exc:  # pragma: no cover - Ray already gone
                    logger.debug("could not kill actor %s: %s", worker.id, exc)
                worker.actor = None


def _has_address(worker: _ActorWorker) -> bool:
    return worker.address is not None
