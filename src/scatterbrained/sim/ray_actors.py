"""The ``ray`` backend: every node is a Ray actor, the nodes talk over real ZeroMQ.

The actors run the process backend's worker code (:func:`~.worker.run_node`): the same
node, the same training loop, the same gates (:mod:`scatterbrained.sim.gates`). Only the
link to the runner differs: the driver sets the gate and polls each actor's report, rows
and final accuracy by actor calls instead of files, so the run folder need not be shared
between machines.

Discovery needs no broadcast: the driver starts the nodes one after the other and gives
each the addresses of the nodes started before it as a bootstrap list (a restarted node
gets every live node's address); a node greeted by a newcomer greets it back, so every
node knows every other. On a local Ray instance the nodes listen on ``127.0.0.1``; on a
cluster (``ray_address`` set) on the IP address Ray uses for their machine.

Faults: ``kill`` is :func:`ray.kill` (no goodbye), ``restart`` starts a new actor on the same
Ray node (its checkpoint is there), ``pause`` sends the node OFFLINE at its gate (an actor
cannot be frozen like a process), ``resume`` brings it back and lets it catch up.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from .config import SimConfig
from .experiment import Experiment
from .worker import FAULTS, RunnerGone, run_node

__all__ = ["RAY_INSTALL", "NodeActor", "require_ray"]

logger = logging.getLogger(__name__)

#: How to install the optional Ray dependency.
RAY_INSTALL = "pip install 'scatterbrained[ray]'"
#: Seconds between two polls of the actors.
RAY_POLL_S = 0.1
#: Seconds one round of actor calls (poll, gate, stop) may take.
CALL_TIMEOUT_S = 60.0


def require_ray() -> Any:
    """Import and return the ``ray`` module, or fail with one line saying how to install it.

    Raises:
        ConfigurationError: Ray cannot be imported.
    """
    try:
        import ray
    except ImportError as exc:
        raise ConfigurationError(
            f'backend = "ray" needs Ray, which cannot be imported ({exc}); '
            f"install it with {RAY_INSTALL}"
        ) from None
    return ray


# ---------------------------------------------------------------------------------- actor


class NodeActor:
    """One simulated node inside a Ray actor (made remote by :func:`run_ray`).

    It is its own :class:`~.worker.RunnerLink`: the worker code writes reports and rows
    into the actor's state, the driver reads them with :meth:`poll` and sets the gate with
    :meth:`set_gate`.

    Args:
        config: the run's configuration (:meth:`SimConfig.to_json`).
        index: the node's index.
        host: the address to listen on (``None``: the IP address Ray uses for this machine).
        paths: folders to put on ``sys.path`` first (where the driver imported the config's
            ``module:function`` model and dataset from; on a cluster they must exist on
            every machine).
    """

    def __init__(
        self, config: dict[str, Any], index: int, host: str | None, paths: tuple[str, ...] = ()
    ) -> None:
        for path in reversed(paths):
            if path not in sys.path:
                sys.path.insert(0, path)
        self._config = SimConfig.from_mapping(config)
        self._index = index
        self._host = host
        self._exp: Experiment | None = None
        self._gate: dict[str, Any] = {"epoch": -1, "phase": FAULTS}
        self._report: dict[str, Any] | None = None
        self._rows: list[dict[str, Any]] = []
        self._address: str | None = None
        self._done = False
        self._stopped = False
        self._final: dict[str, Any] | None = None

    async def prepare(self) -> str:
        """Import torch, load the data and build the model once; return Ray's node id."""
        if self._exp is None:
            self._exp = await asyncio.to_thread(self._load)
        import ray

        node: str = ray.get_runtime_context().get_node_id()
        return node

    def _load(self) -> Experiment:
        import torch

        torch.set_num_threads(max(1, self._config.threads))
        exp = Experiment.load(self._config)
        exp.build_model()
        return exp

    async def run(
        self,
        gates: list[int],
        bootstrap: list[str],
        checkpoint_dir: str,
        gate: dict[str, Any],
        restart: bool = False,
        start_epoch: int = 0,
    ) -> None:
        """Run the node to the end of the run (see :func:`~.worker.run_node`)."""
        await self.prepare()
        assert self._exp is not None
        if gate:  # else no gate yet
            self._gate = gate
        if self._host is None:
            import ray

            self._host = ray.util.get_node_ip_address()
        options = {"host": self._host, "discovery_scope": "off", "bootstrap": bootstrap}
        await run_node(
            self._exp,
            self._index,
            self,
            gates=set(gates),
            node_options=options,
            checkpoint_dir=Path(checkpoint_dir),
            restart=restart,
            start_epoch=start_epoch,
        )

    async def poll(self, since: int) -> dict[str, Any]:
        """The actor's state: report, rows from ``since`` on, address, done, final result."""
        return {
            "report": self._report,
            "rows": self._rows[since:],
            "address": self._address,
            "done": self._done,
            "final": self._final,
        }

    async def set_gate(self, gate: dict[str, Any]) -> None:
        """The runner's new gate."""
        self._gate = gate

    async def stop(self) -> None:
        """The run is over: evaluate, report and return from :meth:`run`."""
        self._stopped = True

    # -------------------------------------------------------------------- RunnerLink

    def gate(self) -> dict[str, Any]:
        """The gate the driver set last (:class:`~.worker.RunnerLink`)."""
        if self._stopped:
            raise RunnerGone
        return self._gate

    def report(self, report: dict[str, Any]) -> None:
        """Keep the report for the next :meth:`poll`."""
        self._report = report

    def started(self, address: str) -> None:
        """Keep the node's address for the next :meth:`poll`."""
        self._address = address

    def row(self, row: dict[str, Any]) -> None:
        """Keep the row for the next :meth:`poll`."""
        self._rows.append(row)

    def done(self) -> None:
        """Note that the node trained its last epoch."""
        self._done = True

    def stopped(self) -> bool:
        """True once the driver called :meth:`stop`."""
        return self._stopped

    def final(self, result: dict[str, Any]) -> None:
        """Keep the final accuracy for the next :meth:`poll`."""
        self._final = result
