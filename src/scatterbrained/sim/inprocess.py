"""Run every simulated node in this process, epoch by epoch (memory or loopback ZeroMQ).

The nodes are real :class:`~scatterbrained.node.Node` objects; the runner only decides
*when* each trains: all live nodes train one epoch concurrently (federating in synchronous
rounds), then the faults scheduled after that epoch happen, the membership settles (every
node sees every other's mode and model version), and the next epoch starts.

With the in-memory transport no decision depends on wall-clock time, so a seeded run gives
the same metrics on an idle or a loaded machine: a crashed node is reported LOST at once by
the in-memory discovery (never by a timeout), peers never expire by silence, and a round
waits for every live expected neighbour however long its training takes
(:data:`MEMORY_ROUND_TIMEOUT`; the wait still ends at once when a neighbour leaves).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..discovery.memory import MemoryDiscovery, MemoryDiscoveryHub
from ..history import metric_row as epoch_row
from ..node import Node
from ..transport.memory import MemoryNetwork, MemoryTransport
from ..types import OperatingMode
from .attacks import AttackingTransport
from .config import FaultEvent
from .experiment import NAMESPACE, Experiment, node_id

__all__ = ["SWITCH_INTERVAL_S", "SimNode", "run_in_process", "short_gil_turns"]

logger = logging.getLogger(__name__)

#: Seconds without a beacon after which a simulated peer is gone (the loopback ZeroMQ
#: backend; the memory backend never expires a peer by silence, see MEMORY_PEER_TIMEOUT).
SIM_PEER_TIMEOUT = 1.0
#: The memory backend's peer timeout: in effect never (a crash is reported LOST at once).
MEMORY_PEER_TIMEOUT = 24 * 3600.0
#: The memory backend's round timeout: a round ends when every live neighbour delivered
#: (or left), never because a loaded machine trained slowly (600 s only ends a stuck run).
MEMORY_ROUND_TIMEOUT = 600.0
#: Seconds a settle step waits for every node to see the same membership.
SETTLE_TIMEOUT = 30.0


class SimNode:
    """One simulated participant: its node, namespace, data and fault state."""

    def __init__(
        self,
        exp: Experiment,
        index: int,
        make_transport: Callable[[], Any],
        hub: MemoryDiscoveryHub,
        checkpoint_dir: Path,
    ) -> None:
        self.exp = exp
        self.index = index
        self.id = node_id(index)
        self._make_transport = make_transport
        self._hub = hub
        self._checkpoint_dir = checkpoint_dir
        self.node: Node | None = None
        self.ns: Any = None
        self.paused = False
        self.loader = exp.train_loader(index)

    @property
    def alive(self) -> bool:
        """True while the node runs."""
        return self.node is not None

    @property
    def active(self) -> bool:
        """True when the node runs and is not paused."""
        return self.alive and not self.paused

    async def start(self, catch_up: bool = False) -> None:
        """Start the node and join the namespace; with ``catch_up`` restore and sync."""
        memory = self.exp.config.backend == "memory"
        timeout = MEMORY_PEER_TIMEOUT if memory else SIM_PEER_TIMEOUT
        discovery = MemoryDiscovery(self._hub, interval=0.05, peer_timeout=timeout)
        transport = self._make_transport()
        attack = self.exp.attack_of(self.index)
        if attack is not None:
            transport = AttackingTransport(transport, attack, NAMESPACE)
        self.node = Node(self.id, transport=transport, discovery=discovery)
        await self.node.start()
        options = self.exp.namespace_options(self.index)
        if memory:
            options["round_timeout"] = MEMORY_ROUND_TIMEOUT
        self.ns = self.node.namespace(
            NAMESPACE,
            self.exp.build_model(),
            self.exp.create_optimizer(),
            checkpoint_dir=self._checkpoint_dir,
            **options,
        )
        await self.ns.open()

    async def catch_up(self) -> bool:
        """Download the freshest model from a peer (after a restart or a pause)."""
        try:
            await self.ns.sync_model(timeout=SETTLE_TIMEOUT)
        except Exception as exc:  # a node that cannot catch up goes on alone
            logger.warning("node %s could not catch up: %s", self.id, exc)
            return False
        return True

    async def kill(self) -> None:
        """Crash: stop without goodbye (peers notice by timeout)."""
        if self.node is not None:
            await self.node.abort()
        self.node, self.ns, self.paused = None, None, False

    async def stop(self) -> None:
        """Leave cleanly."""
        if self.node is not None:
            await self.node.close()
        self.node, self.ns = None, None

    def pause(self) -> None:
        """Stop training and go OFFLINE."""
        if self.active:
            self.paused = True
            self.ns.mode = OperatingMode.OFFLINE

    def resume(self) -> None:
        """Back to the configured mode (catching up happens before the next epoch)."""
        if self.alive and self.paused:
            self.paused = False
            self.ns.mode = self.exp.mode_of(self.index)

    async def train_epoch(self) -> Any:
        """Train one epoch (federating), return its history record."""
        history = await self.ns.train(1, self.loader, self.exp.test_loader())
        return history.last


#: The interpreter's thread switch interval while an in-process federation runs (seconds).
SWITCH_INTERVAL_S = 0.0005


@contextlib.contextmanager
def short_gil_turns(interval: float = SWITCH_INTERVAL_S) -> Iterator[None]:
    """Shorten the interpreter's switch interval while the block runs, then restore it.

    Hundreds of nodes keep the event loop's thread busy all the time, and the training
    lane's thread hands the GIL back at every PyTorch kernel, then waits for the loop to
    give it up: up to the switch interval (5 ms by default) per kernel. 1,000 nodes of
    ``benchmarks/scale.py`` took 88 s an epoch so, 27.6 s with 0.5 ms. The simulator owns
    its process while it runs (it sets PyTorch's threads too), so it may change this.
    """
    previous = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


async def run_in_process(
    exp: Experiment,
    out: Path,
    on_epoch: Callable[[int, list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the federation described by ``exp`` in this process.

    Args:
        exp: the loaded experiment.
        out: the run folder (checkpoints go to ``out/checkpoints``).
        on_epoch: called after every epoch with the epoch number and its metric rows.

    Returns:
        The metric rows of every node and epoch (``metrics.jsonl`` lines).
    """
    config = exp.config
    hub = MemoryDiscoveryHub()
    network = MemoryNetwork(
        delay=config.delay_ms / 1000.0, drop_rate=config.drop_rate, seed=config.seed
    )

    def make_transport() -> Any:
        if config.backend == "memory":
            return MemoryTransport(network)
        from ..transport.zmq import ZmqTransport

        return ZmqTransport("127.0.0.1")

    nodes = [SimNode(exp, i, make_transport, hub, out / "checkpoints") for i in range(config.nodes)]
    churn = random.Random(config.seed + 7919)
    pending_restarts: dict[int, int] = {}
    rows: list[dict[str, Any]] = []
    try:
        for sn in nodes:
            await sn.start()
        await settle(nodes)
        for epoch in range(1, config.epochs + 1):
            events = await apply_faults(nodes, epoch - 1, exp, churn, pending_restarts)
            await settle(nodes)  # faults, policy switches: every view agrees before rounds
            started = time.monotonic()
            active = [sn for sn in nodes if sn.active]
            records = await asyncio.gather(*(sn.train_epoch() for sn in active))
            by_index = {sn.index: r for sn, r in zip(active, records, strict=True)}
            epoch_rows = [
                metric_row(sn, epoch, by_index.get(sn.index), events.get(sn.index), started)
                for sn in nodes
            ]
            rows.extend(epoch_rows)
            if on_epoch is not None:
                on_epoch(epoch, epoch_rows)
    finally:
        await asyncio.gather(*(sn.stop() for sn in nodes), return_exceptions=True)
    return rows


async def apply_faults(
    nodes: list[SimNode],
    after_epoch: int,
    exp: Experiment,
    churn: random.Random,
    pending_restarts: dict[int, int],
) -> dict[int, str]:
    """Apply the faults scheduled after ``after_epoch``; return node index -> event name."""
    events: dict[int, str] = {}
    scheduled: list[FaultEvent] = [f for f in exp.config.faults if f.epoch == after_epoch]
    for index, due in list(pending_restarts.items()):
        if due == after_epoch:
            scheduled.append(FaultEvent(after_epoch, index, "restart"))
            del pending_restarts[index]
    if exp.config.churn_rate > 0 and after_epoch > 0:
        for sn in nodes:
            if sn.alive and churn.random() < exp.config.churn_rate:
                scheduled.append(FaultEvent(after_epoch, sn.index, "kill"))
                pending_restarts[sn.index] = min(after_epoch + 2, exp.config.epochs)
    catch_up: list[SimNode] = []
    for fault in scheduled:
        sn = nodes[fault.node]
        if fault.action == "kill" and sn.alive:
            await sn.kill()
            events[sn.index] = "killed"
        elif fault.action == "restart" and not sn.alive:
            await sn.start()
            catch_up.append(sn)
            events[sn.index] = "restarted"
        elif fault.action == "pause" and sn.active:
            sn.pause()
            events[sn.index] = "paused"
        elif fault.action == "resume" and sn.paused:
            sn.resume()
            catch_up.append(sn)
            events[sn.index] = "resumed"
    for sn in catch_up:
        await settle(nodes, versions=True)  # sync_model ranks the peers by version
        await sn.catch_up()
    return events


def settle_timeout(nodes: int) -> float:
    """Seconds to wait for membership to settle: every pair greets, so it grows with N²."""
    return max(SETTLE_TIMEOUT, 0.0005 * nodes * nodes)


async def settle(
    nodes: list[SimNode], timeout: float | None = None, *, versions: bool = False
) -> bool:
    """Wait until every active node sees exactly the other active nodes as peers, with
    their modes (and, with ``versions``, their model versions).

    Active: running, not paused and not OFFLINE. An OFFLINE node (configured so, or paused)
    is silent and tracks nobody, so its own view is not waited for. ``timeout`` defaults to
    :func:`settle_timeout` of the node count.
    """
    if timeout is None:
        timeout = settle_timeout(len(nodes))
    deadline = time.monotonic() + timeout
    while True:
        if _settled(nodes, versions):
            return True
        if time.monotonic() >= deadline:
            logger.warning("membership did not settle within %.0f s", timeout)
            return False
        await asyncio.sleep(0.05)


def _settled(nodes: list[SimNode], versions: bool) -> bool:
    """True when every active node sees exactly the other active nodes with their current
    modes (what rounds decide on) and, with ``versions``, model versions (what
    ``sync_model`` ranks peers by). With sessions scoped to topology neighbours (large
    federations, :mod:`scatterbrained.roster`): at least its neighbours, and no node gone."""
    active = {sn.id: sn for sn in nodes if sn.active and sn.ns.mode is not OperatingMode.OFFLINE}
    for sn in active.values():
        others = set(active) - {sn.id}
        scope = sn.ns.wanted_sessions()  # None: everybody (sessions not scoped)
        wanted = others if scope is None else others & scope
        members = {p.id for p in sn.ns.peers}
        if not sn.ns.roster.settled or not wanted <= members <= others:
            return False
        for other in (active[m] for m in members):
            if sn.ns.peer_mode(other.id) is not other.ns.mode:
                return False
            if versions and sn.ns.peer_version(other.id) != other.ns.version:
                return False
    return True


def metric_row(
    sn: SimNode, epoch: int, record: Any, event: str | None, started: float
) -> dict[str, Any]:
    """One ``metrics.jsonl`` line for node ``sn`` at ``epoch``."""
    row: dict[str, Any] = {
        "node": sn.id,
        "index": sn.index,
        "epoch": epoch,
        "alive": sn.alive,
        "event": event,
    }
    if record is None:
        mode = sn.ns.mode.value if sn.alive else None
        row.update(accuracy=None, loss=None, train_loss=None, mode=mode, merged_from=[])
        row.update(bytes_sent=0, bytes_received=0, wall_s=time.monotonic() - started, peers=0)
        return row
    trained = epoch_row(sn.id, record)
    trained.update(row)  # the simulator's epoch, liveness and event
    return trained
