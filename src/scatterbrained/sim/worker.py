"""One simulated node as its own OS process (the ``process`` backend).

Run as ``python -m scatterbrained.sim.worker RUN/config.json INDEX [--epoch E] [--restart]
[--runner-pid PID]`` (the runner does it).
The worker uses real ZeroMQ on 127.0.0.1 and UDP discovery in the loopback scope, trains
free running between the runner's gates (see :mod:`scatterbrained.sim.processes`), and
appends one JSON line per epoch to ``RUN/nodes/<id>.jsonl``, numbered by the network's epoch.
At a gate it reports to the runner (``RUN/nodes/<id>.wait.json``) and does what
``RUN/gate.json`` says: go OFFLINE when told to pause (the runner then stops the process),
come back when told to resume, catch up with ``sync_model`` when told to, go on when the
gate opens. With ``--restart`` it resumes from its checkpoint at network epoch ``E`` and
catches up before training the remaining epochs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Protocol

from ..errors import ScatterbrainedError
from ..history import metric_row
from ..types import OperatingMode
from .config import SimConfig
from .experiment import NAMESPACE, Experiment, node_id

__all__ = [
    "CATCH_UP",
    "FAULTS",
    "GO",
    "FileLink",
    "Gate",
    "RunnerGone",
    "RunnerLink",
    "gate_path",
    "main",
    "plan_path",
    "read_json",
    "run_node",
    "run_worker",
    "wait_path",
    "write_atomically",
]

logger = logging.getLogger(__name__)

#: Seconds a restarted or resumed worker tries to download the model from a peer.
SYNC_TIMEOUT = 30.0
#: Most seconds a finished worker keeps serving while slower nodes finish their epochs.
MAX_LINGER_S = 600.0
#: Seconds between two looks at the runner's ``gate.json``.
GATE_POLL_S = 0.05

#: Phases of a gate, in order: faults being applied, catching up, open.
FAULTS, CATCH_UP, GO = 0, 1, 2


def plan_path(out: Path) -> Path:
    """The runner's plan for the workers (written before any worker starts).

    ``{"gates": [epochs], "discovery_port": port}``: the epochs after which workers wait at
    a gate, and the UDP port of this run's discovery (every run has its own, so two runs on
    one machine never see each other's nodes, which have the same ids).
    """
    return out / "plan.json"


def gate_path(out: Path) -> Path:
    """Where the runner says which gate it is at, in which phase, with which instructions."""
    return out / "gate.json"


def wait_path(out: Path, node: str) -> Path:
    """Where worker ``node`` reports at a gate."""
    return out / "nodes" / f"{node}.wait.json"


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or ``None`` when there is none (yet).

    Writers replace these files atomically, so a file is whole or absent; anything that
    still does not parse as an object counts as absent.
    """
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None


class RunnerGone(Exception):
    """The runner asked everyone to stop, or died: the worker exits without finishing."""


class RunnerLink(Protocol):
    """How a worker and its runner talk: files (:class:`FileLink`) or Ray actor calls.

    Every method is quick and never blocks on the network; the worker polls :meth:`gate`.
    """

    def gate(self) -> dict[str, Any]:
        """The runner's gate: ``{"epoch", "phase", "pause", "resume", "catch_up"}``.

        Raises:
            RunnerGone: the run stopped, or the runner is gone.
        """
        ...

    def report(self, report: dict[str, Any]) -> None:
        """Tell the runner where the worker is (``epoch``, ``stage``, ``mode``, ``peers``)."""
        ...

    def started(self, address: str) -> None:
        """The node runs and listens at ``address`` (``tcp://host:port``)."""
        ...

    def row(self, row: dict[str, Any]) -> None:
        """One metrics row: the node trained network epoch ``row["epoch"]``."""
        ...

    def done(self) -> None:
        """The node trained its last epoch (it keeps serving until :meth:`stopped`)."""
        ...

    def stopped(self) -> bool:
        """True once the runner says every node is done, or the runner is gone."""
        ...

    def final(self, result: dict[str, Any]) -> None:
        """The accuracy and loss of the model the node holds when the run ends."""
        ...


class FileLink:
    """The process backend's :class:`RunnerLink`: files in the run folder.

    Args:
        out: the run folder.
        node: the node's id.
        runner: the runner's process id (default: this process's parent now); a worker
            whose runner is gone stops waiting.
    """

    def __init__(self, out: Path, node: str, runner: int | None = None) -> None:
        self.out = out
        self.node = node
        self._runner = os.getppid() if runner is None else runner

    def gate(self) -> dict[str, Any]:
        """``gate.json``, or "no gate yet" while the runner has written none."""
        if self.stopped():
            raise RunnerGone
        return read_json(gate_path(self.out)) or {"epoch": -1, "phase": FAULTS}

    def report(self, report: dict[str, Any]) -> None:
        """Write ``nodes/<id>.wait.json`` with this process's id (a report of this life)."""
        text = json.dumps({"pid": os.getpid(), **report})
        write_atomically(wait_path(self.out, self.node), text)

    def started(self, address: str) -> None:
        """Nothing to do: process workers find each other by UDP discovery."""

    def row(self, row: dict[str, Any]) -> None:
        """Append the row to ``nodes/<id>.jsonl``."""
        _append(self.out / "nodes" / f"{self.node}.jsonl", row)

    def done(self) -> None:
        """Create ``nodes/<id>.done``."""
        (self.out / "nodes" / f"{self.node}.done").touch()

    def stopped(self) -> bool:
        """The runner created ``stop``, or it died (this process was handed to another)."""
        return (self.out / "stop").exists() or os.getppid() != self._runner

    def final(self, result: dict[str, Any]) -> None:
        """Write ``nodes/<id>.final.json``."""
        write_atomically(self.out / "nodes" / f"{self.node}.final.json", json.dumps(result))


class Gate:
    """A worker's side of the runner's gates.

    Args:
        link: how the worker talks to its runner.
        ns: the worker's namespace.
        mode: the node's configured mode (restored when it resumes).
    """

    def __init__(self, link: RunnerLink, ns: Any, mode: str) -> None:
        self.link = link
        self.ns = ns
        self.mode = OperatingMode.parse(mode)
        self.id: str = ns.node.id
        self._reported: tuple[Any, ...] | None = None

    def _report(self, epoch: int, stage: str) -> None:
        """Report when what the report says changed.

        It says where the node is (``epoch``, ``stage``), its mode and model version, and
        how it sees each peer: ``{"n001": [mode, version]}`` as the peer last announced them.
        """
        ns = self.ns
        peers = {}
        for peer in sorted(p.id for p in ns.peers):
            mode = ns.peer_mode(peer)
            peers[peer] = [None if mode is None else mode.value, ns.peer_version(peer)]
        state = (epoch, stage, ns.mode.value, ns.version, json.dumps(peers))
        if state == self._reported:
            return
        self._reported = state
        report: dict[str, Any] = {"epoch": epoch, "stage": stage}
        report.update(mode=ns.mode.value, version=ns.version, peers=peers)
        self.link.report(report)

    def _gate(self) -> dict[str, Any]:
        return self.link.gate()

    async def passage(self, epoch: int, catch_up: bool = False) -> int:
        """Wait at the gate after ``epoch`` until it opens; return the epoch to go on from.

        That is ``epoch``, or a later one when the node was paused here and resumed at a
        later gate.

        Args:
            epoch: the epoch the node finished (0: it has just started).
            catch_up: the node has just been restarted (it catches up when told to).

        Raises:
            RunnerGone: the run ended (or the runner died) while the node waited.
        """
        stage = "arrived"
        paused = False
        while True:
            gate = self._gate()
            here = gate["epoch"] == epoch
            if paused:
                if gate["epoch"] >= epoch and self.id in gate["resume"]:
                    self.ns.mode = self.mode
                    epoch, stage, paused, catch_up = gate["epoch"], "arrived", False, True
                    logger.info("%s: resumed after epoch %d", self.id, epoch)
                    continue
            elif here and self.id in gate["pause"] and gate["phase"] == FAULTS:
                self.ns.mode = OperatingMode.OFFLINE  # silent: peers drop it at once
                stage, paused = "paused", True
                logger.info("%s: paused after epoch %d", self.id, epoch)
            elif here and gate["phase"] >= CATCH_UP and catch_up and self.id in gate["catch_up"]:
                await self._catch_up()
                stage, catch_up = "caught_up", False
            elif (gate["epoch"], gate["phase"]) >= (epoch, GO):
                return epoch
            self._report(epoch, stage)
            await asyncio.sleep(GATE_POLL_S)  # a bounded poll of the runner's file

    async def _catch_up(self) -> None:
        """Download the freshest model from a peer (after a restart or a pause)."""
        if not self.ns.peers:
            logger.warning("%s: nobody to catch up from", self.id)
            return
        try:
            await self.ns.sync_model(timeout=SYNC_TIMEOUT)
        except ScatterbrainedError as exc:  # e.g. SEEDING does not receive; goes on alone
            logger.warning("%s: could not catch up: %s", self.id, exc)


async def run_worker(
    config: SimConfig,
    index: int,
    restart: bool,
    start_epoch: int = 0,
    runner: int | None = None,
) -> None:
    """Run node ``index`` of ``config`` as a process worker (files, UDP loopback discovery).

    Args:
        config: the run's configuration.
        index: the node's index.
        restart: the node was killed before: resume from its checkpoint and catch up.
        start_epoch: the network's epoch when the node starts (the restart's epoch).
        runner: the runner's process id (default: the parent process): when the runner is
            gone (it died without killing its workers) the worker stops at its next wait.
    """
    from ..discovery.base import DiscoveryScope
    from ..discovery.udp import UdpDiscovery

    os.environ["SCATTERBRAINED_DISCOVERY"] = "loopback"  # never leave the machine
    out = Path(config.out or ".")
    (out / "nodes").mkdir(parents=True, exist_ok=True)
    plan = read_json(plan_path(out))
    if plan is None:
        raise FileNotFoundError(f"{plan_path(out)} is missing: workers are started by the runner")
    discovery = UdpDiscovery(int(plan["discovery_port"]), scope=DiscoveryScope.LOOPBACK)
    await run_node(
        Experiment.load(config),
        index,
        FileLink(out, node_id(index), runner),
        gates=set(plan["gates"]),
        node_options={"host": "127.0.0.1", "discovery": discovery},
        checkpoint_dir=out / "checkpoints",
        restart=restart,
        start_epoch=start_epoch,
    )


async def run_node(
    exp: Experiment,
    index: int,
    link: RunnerLink,
    *,
    gates: set[int],
    node_options: dict[str, Any],
    checkpoint_dir: Path,
    restart: bool = False,
    start_epoch: int = 0,
) -> None:
    """Run node ``index`` of ``exp`` from network epoch ``start_epoch`` to the last one.

    The node trains free running between the runner's gates, reports each epoch's row and,
    when it trained its last epoch, keeps federating until the runner says every node is
    done; then it reports the accuracy of the model it ends with.

    Args:
        exp: the loaded experiment.
        index: the node's index.
        link: how the worker talks to its runner.
        gates: the epochs after which the node waits for the runner.
        node_options: keyword arguments of :class:`~scatterbrained.node.Node` (host,
            discovery, bootstrap, ...).
        checkpoint_dir: where the namespace keeps its checkpoint (a restart resumes there).
        restart: the node was killed before: resume from its checkpoint and catch up.
        start_epoch: the network's epoch when the node starts (the restart's epoch).
    """
    from ..node import Node

    config = exp.config
    async with Node(node_id(index), **node_options) as node:
        link.started(node.address)
        ns = node.namespace(
            NAMESPACE,
            exp.build_model(),
            exp.create_optimizer(),
            checkpoint_dir=checkpoint_dir,
            **exp.namespace_options(index),
        )
        async with ns:
            gate = Gate(link, ns, exp.mode_of(index))
            loader, test = exp.train_loader(index), exp.test_loader()
            # Shuffle on as the in-process node's loader would have: a restart resumes at the
            # checkpoint's epoch, whose batch order was never drawn.
            loader.epoch = ns.epochs_done
            epoch = start_epoch
            try:
                while epoch < config.epochs:
                    if epoch in gates or epoch == start_epoch:
                        epoch = await gate.passage(epoch, catch_up=restart and epoch == start_epoch)
                        if epoch >= config.epochs:
                            break
                    started = time.monotonic()
                    history = await ns.train(1, loader, test)
                    epoch += 1
                    link.row(_row(node.id, index, epoch, history.last, started))
            except RunnerGone:
                logger.info("%s: the run ended before this node finished", node.id)
                return
            link.done()
            await _serve_until_stopped(ns, link)
            adapter = ns.learner.adapter
            assert adapter is not None  # the worker always builds its model
            final = await asyncio.to_thread(adapter.evaluate, test)
            link.final({"node": node.id, "accuracy": final.accuracy, "loss": final.loss})


async def _serve_until_stopped(ns: Any, link: RunnerLink) -> None:
    """Keep federating (merging neighbours' updates) until the runner says all are done."""
    deadline = time.monotonic() + MAX_LINGER_S
    while time.monotonic() < deadline and not link.stopped():  # a runner gone: stop too
        await ns.serve(duration=0.5)


def _row(node: str, index: int, epoch: int, record: Any, started: float) -> dict[str, Any]:
    """The metrics row of network epoch ``epoch`` (the runner adds the fault events)."""
    row = metric_row(node, record)
    row.update(index=index, epoch=epoch, wall_s=time.monotonic() - started)
    return row


def _append(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON line with a single ``write`` on an ``O_APPEND`` descriptor.

    The runner reads the file while it grows; one system call per line means it only ever sees
    whole lines plus at most one unfinished tail, and a SIGKILL cannot cut a line in two. A file
    left without a final newline (should that happen anyway) is closed off first, so the new
    row never glues onto a broken one.
    """
    data = (json.dumps(row) + "\n").encode("utf-8")
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        os.write(fd, data)
    finally:
        os.close(fd)


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m scatterbrained.sim.worker``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("config", type=Path, help="the run's config.json")
    parser.add_argument("index", type=int, help="node index (0-based)")
    parser.add_argument("--epoch", type=int, default=0, help="the network epoch it starts at")
    parser.add_argument("--restart", action="store_true", help="resume and catch up")
    parser.add_argument("--runner-pid", type=int, default=None, help="the runner's process id")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s n{args.index:03d} %(name)s: %(message)s"
    )
    config = SimConfig.from_mapping(json.loads(args.config.read_text()))
    try:
        import torch

        torch.set_num_threads(max(1, config.threads))
    except ImportError:  # pragma: no cover
        pass
    asyncio.run(run_worker(config, args.index, args.restart, args.epoch, args.runner_pid))
    return 0


if __name__ == "__main__":
    sys.exit(main())
