"""Training and federating inside a namespace: ``train``, ``serve``, ``sync_model``.

The :class:`Learner` runs local training in a worker thread and the federation on the event
loop. At each sync point (end of an epoch, or every ``share_every`` optimizer steps) it
shares and merges as the namespace's mode and topology say:

* gossip (default): push the current weights to the out-neighbours that receive, then merge
  the freshest unseen update of each in-neighbour that sends, with the aggregator;
* synchronous rounds (``sync=True``): the same, but wait (at most ``round_timeout``) for
  every in-neighbour's update of this round, which makes seeded runs reproducible;
* centralized (``sync=True`` on a topology with a centre, e.g. ``Star``): clients push to
  the centre, the centre aggregates and sends the global model back, clients adopt it.

Nothing waits on one peer without a timeout; a peer that leaves is dropped from every wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._tasks import TaskSet
from .errors import ConfigurationError, ModeError, ModelSyncError, PeerTimeoutError, WireError
from .federation.aggregation import Contribution
from .federation.policies import PolicyState
from .federation.rounds import StoredUpdate, UpdateStore
from .history import EpochRecord, History
from .learning_options import LearningOptions
from .peers import PeerRecord
from .types import OperatingMode
from .wire.codec import check_specs, compute_digest
from .wire.limits import check_all_finite
from .wire.messages import (
    Architecture,
    ModelOffer,
    ModelRequest,
    ModelUnavailable,
    ModelUpdate,
)

if TYPE_CHECKING:
    from .adapters.base import ModelAdapter
    from .namespace import Namespace

__all__ = ["Learner", "LearningOptions"]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]


class Learner:
    """The learning side of a namespace (reached through ``Namespace``'s methods)."""

    def __init__(
        self,
        ns: Namespace,
        model: Any,
        create_optimizer: Any,
        loss: Any,
        options: LearningOptions,
    ) -> None:
        self.ns = ns
        self.options = options
        self._create_optimizer = create_optimizer
        self._loss = loss
        self.adapter: ModelAdapter | None = None
        if model is not None:
            self.adapter = _adapt(model, create_optimizer, loss, options)
        self.version = 0
        self.epochs_done = 0
        self.samples_seen = 0
        self.local_samples = 0
        self.history = History()
        self.store = UpdateStore(max_age_s=options.max_staleness_s)
        self._published: Arrays | None = None
        self._digest: bytes | None = None  # of the published weights; reset by _publish
        self._architecture: Architecture | None = None
        self._reference: Arrays | None = None
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._arrival = asyncio.Event()
        self._lock = asyncio.Lock()
        self._tasks = TaskSet(f"namespace {ns.name}")
        self._started_at = time.monotonic()
        self._global_round = -1
        self._global_source: str | None = None  # the centre whose rounds _global_round counts
        self._last_val: tuple[float | None, float | None] = (None, None)

    # ------------------------------------------------------------------ lifecycle

    @property
    def model(self) -> Any:
        """The wrapped model, or ``None``."""
        return self.adapter.model if self.adapter is not None else None

    async def open(self) -> None:
        """Restore from ``checkpoint_dir`` when a checkpoint exists; publish the weights."""
        path = self._checkpoint_path()
        if path is not None and path.exists() and self.adapter is not None:
            await self.restore(path)
            logger.info(
                "namespace %s resumed from %s at epoch %d", self.ns.name, path, self.epochs_done
            )
        self._publish()

    async def close(self) -> None:
        """Cancel pending requests and background work."""
        for _, future in self._pending.values():
            future.cancel()
        self._pending.clear()
        await self._tasks.close()

    def _checkpoint_path(self) -> Path | None:
        if self.options.checkpoint_dir is None:
            return None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.ns.name)
        return Path(self.options.checkpoint_dir) / f"{self.ns.node.id}-{safe}.ckpt.npz"

    def _publish(self) -> None:
        """Snapshot the current weights: what is served and pushed until the next change."""
        if self.adapter is not None:
            self._published = self.adapter.get_arrays()
            self._digest = None

    # ------------------------------------------------------------------ train

    async def train(
        self,
        epochs: int,
        trainloader: Any,
        validloader: Any = None,
        *,
        share_every: int | None = None,
    ) -> History:
        """Train ``epochs`` local epochs in a worker thread, federating at each sync point.

        Args:
            epochs: local epochs to run now. After a restart restored from
                ``checkpoint_dir``, ``ns.epochs_done`` tells how many were done before, so a
                script can finish its job with ``train(total - ns.epochs_done, ...)``.
            trainloader: iterable of ``(inputs, targets)`` batches (re-iterable each epoch).
            validloader: optional iterable of batches evaluated after each epoch.
            share_every: federate every this many optimizer steps instead of per epoch
                (default: the namespace's ``share_every`` option, else once per epoch).

        Returns:
            The history of every epoch trained by this namespace so far.

        Raises:
            ConfigurationError: there is no model (pass ``model=`` or call ``sync_model()``),
                or ``epochs`` is negative.
        """
        if self.adapter is None:
            raise ConfigurationError(
                f"namespace {self.ns.name!r} has no model: pass model= to node.namespace() "
                "or call `await ns.sync_model()` first"
            )
        if epochs < 0:
            raise ConfigurationError(f"epochs must be >= 0, got {epochs}")
        every = share_every if share_every is not None else self.options.share_every
        for _ in range(epochs):
            await self._train_one_epoch(trainloader, validloader, every)
        return self.history

    async def _train_one_epoch(
        self, trainloader: Any, validloader: Any, share_every: int | None
    ) -> None:
        adapter = self.adapter
        assert adapter is not None
        start = time.monotonic()
        sent0, received0 = self.ns.bytes_sent, self.ns.bytes_received
        switches: list[str] = []
        merged: list[str] = []
        self._reference = self._published
        hook = self._step_hook(share_every, switches, merged) if share_every else None
        result = await asyncio.to_thread(adapter.train_epoch, trainloader, step_hook=hook)
        self.local_samples = result.samples
        self.samples_seen += result.samples
        self.epochs_done += 1
        self._apply_policy(switches)
        mode = self.ns.mode
        if share_every:
            self.version += 1
            self._publish()
        else:
            merged.extend(await self._exchange(trained=True))
        val_loss, val_accuracy = await self._evaluate(validloader)
        self._apply_policy(switches)
        self.history.append(
            EpochRecord(
                epoch=self.epochs_done,
                train_loss=float(result.loss),
                val_loss=val_loss,
                val_accuracy=val_accuracy,
                mode=mode.value,
                merged_from=tuple(dict.fromkeys(merged)),
                bytes_sent=self.ns.bytes_sent - sent0,
                bytes_received=self.ns.bytes_received - received0,
                samples=result.samples,
                version=self.version,
                peers=len(self.ns.peers),
                wall_s=time.monotonic() - start,
                mode_switches=tuple(switches),
            )
        )
        path = self._checkpoint_path()
        if path is not None:
            await self.checkpoint(path)

    def _step_hook(
        self, every: int, switches: list[str], merged: list[str]
    ) -> Callable[[int], None]:
        """A hook for the training thread: every ``every`` steps, federate on the loop."""
        loop = asyncio.get_running_loop()
        timeout = self.options.round_timeout * 2 + self.options.request_timeout

        def hook(steps: int) -> None:
            if steps % every:
                return
            future = asyncio.run_coroutine_threadsafe(self._step_exchange(switches), loop)
            merged.extend(future.result(timeout))

        return hook

    async def _step_exchange(self, switches: list[str]) -> list[str]:
        self._apply_policy(switches)
        return await self._exchange(trained=True)

    async def _evaluate(self, validloader: Any) -> tuple[float | None, float | None]:
        if validloader is None or self.adapter is None:
            return None, None
        result = await asyncio.to_thread(self.adapter.evaluate, validloader)
        self._last_val = (result.loss, result.accuracy)
        return float(result.loss), result.accuracy

    def _policy_state(self) -> PolicyState:
        val_loss, val_accuracy = self._last_val
        return PolicyState(
            mode=self.ns.mode,
            samples_seen=self.samples_seen,
            epochs_done=self.epochs_done,
            version=self.version,
            peers=len(self.ns.peers),
            elapsed_s=time.monotonic() - self._started_at,
            val_accuracy=val_accuracy,
            val_loss=val_loss,
        )

    def _apply_policy(self, switches: list[str]) -> None:
        switch = self.ns._apply_policy(self._policy_state())
        if switch is not None:
            switches.append(switch)

    # ------------------------------------------------------------------ exchange

    def _neighbours(self) -> tuple[list[str], list[str]]:
        """(targets, sources): out-neighbours that receive, in-neighbours that send."""
        me = self.ns.node.id
        members = set(self.ns._members)
        nb = self.ns.topology.neighbours(me, members | {me}, epoch=self.version)
        if self.options.pairing:
            from .federation.privacy import PairingRule

            nb = PairingRule().split(me, nb, self.version)
        targets, sources = [], []
        for peer in sorted(members):
            mode = self.ns.peer_mode(peer)
            if mode is None:
                continue
            if peer in nb.out and mode.receives:
                targets.append(peer)
            if peer in nb.inbound and mode.sends:
                sources.append(peer)
        return targets, sources

    def _center(self) -> str | None:
        if not self.options.sync:
            return None
        me = self.ns.node.id
        center: str | None = self.ns.topology.center(set(self.ns._members) | {me})
        return center

    async def _exchange(self, trained: bool) -> list[str]:
        """Share and merge once; returns the ids merged from. Bumps the version."""
        async with self._lock:
            merged: list[str] = []
            if self.ns.mode is not OperatingMode.OFFLINE and self.adapter is not None:
                center = self._center()
                if center is not None:
                    merged = await self._central_round(center, trained)
                else:
                    merged = await self._gossip_round()
            self.version += 1
            self._publish()
            return merged

    async def _gossip_round(self) -> list[str]:
        assert self.adapter is not None
        mode = self.ns.mode
        round_ = self.version
        local = self.adapter.get_arrays()
        targets, sources = self._neighbours()
        if mode.sends and targets:
            await self._push(targets, self._outgoing(local), round_)
        if not mode.receives or not sources:
            return []
        if self.options.sync:
            await self._wait_for(sources, round_, self.options.round_timeout)
            if not self._quorum(self.store.senders_with_round(sources, round_), sources):
                return []
            updates = self._finite(self.store.take_round(sources, round_, time.monotonic()))
            # A node that fell behind (restart, pause) adopts the round its neighbours are in.
            self.version = max([self.version, *(u.round for u in updates)])
        else:
            if self.options.gossip_wait > 0:
                await self._wait_for(sources, round_, self.options.gossip_wait)
            updates = self._finite(self.store.take_fresh(sources, time.monotonic()))
        return self._merge(local, updates)

    def _finite(self, updates: list[StoredUpdate]) -> list[StoredUpdate]:
        """Drop (and count) updates holding NaN or infinity.

        Values are validated here, right before an update is merged or adopted, not when it
        is decoded: an update superseded by a fresher one before use is never scanned, and
        the scan stays off the receive path.
        """
        usable = []
        for update in updates:
            if _all_finite(update.arrays):
                usable.append(update)
            else:
                self.ns.node.stats.dropped["non_finite"] += 1
                logger.warning(
                    "namespace %s: dropped non-finite weights from %s", self.ns.name, update.sender
                )
        return usable

    def _merge(self, local: Arrays, updates: list[StoredUpdate]) -> list[str]:
        if not updates:
            return []
        assert self.adapter is not None
        me = Contribution(local, max(self.local_samples, 0), self.ns.node.id)
        others = [Contribution(u.arrays, u.samples, u.sender) for u in updates]
        self.adapter.set_arrays(self.ns.aggregator(me, others))
        return [u.sender for u in updates]

    async def _central_round(self, center: str, trained: bool) -> list[str]:
        """Centralized FedAvg: the centre aggregates, the clients adopt its model."""
        assert self.adapter is not None
        mode = self.ns.mode
        if center == self.ns.node.id:
            return await self._aggregate_as_center(trained)
        if center not in self.ns._members:
            logger.info("namespace %s: centre %s absent; training alone", self.ns.name, center)
            return []
        center_mode = self.ns.peer_mode(center)
        if mode.sends and center_mode is not None and center_mode.receives:
            local = self.adapter.get_arrays()
            await self._push([center], self._outgoing(local), self.version)
        if not mode.receives:
            return []
        deadline = time.monotonic() + self.options.round_timeout
        while True:
            updates = [
                u
                for u in self._finite(self.store.take_fresh([center], time.monotonic()))
                if u.round > self._global_round
            ]
            if updates:
                self.adapter.set_arrays(updates[-1].arrays)
                self._global_round = updates[-1].round
                self._global_source = center
                return [center]
            if not await self._wait_arrival(deadline) or not self._still_sends(center):
                logger.info("namespace %s: no global model from %s in time", self.ns.name, center)
                return []

    async def _aggregate_as_center(self, trained: bool) -> list[str]:
        assert self.adapter is not None
        clients = [p for p in sorted(self.ns._members)]
        senders = [p for p in clients if (m := self.ns.peer_mode(p)) is not None and m.sends]
        if not self.ns.mode.receives:
            senders = []
        await self._wait_for(senders, -(2**62), self.options.round_timeout)
        if not self._quorum(self.store.senders_with_round(senders, -(2**62)), senders):
            return []
        updates = self._finite(self.store.take_fresh(senders, time.monotonic()))
        if not updates and not trained:
            return []
        local = self.adapter.get_arrays()
        if trained or not updates:
            result = self.ns.aggregator(
                Contribution(local, max(self.local_samples, 0), self.ns.node.id),
                [Contribution(u.arrays, u.samples, u.sender) for u in updates],
            )
        else:
            first, rest = updates[0], updates[1:]
            result = self.ns.aggregator(
                Contribution(first.arrays, first.samples, first.sender),
                [Contribution(u.arrays, u.samples, u.sender) for u in rest],
            )
        self.adapter.set_arrays(result)
        # Rounds follow the (checkpointed) version, so clients that synced from this centre
        # or saw it before a restart never wait for round numbers it already used.
        self._global_round = max(self._global_round + 1, self.version)
        receivers = [p for p in clients if (m := self.ns.peer_mode(p)) is not None and m.receives]
        if self.ns.mode.sends and receivers:
            await self._push(receivers, self.adapter.get_arrays(), self._global_round)
        return [u.sender for u in updates]

    def _quorum(self, arrived: set[str], expected: list[str]) -> bool:
        """True when a synchronous round has the ``min_peers`` updates it needs to merge."""
        needed = min(self.options.min_peers, len(expected))
        if len(arrived) >= needed:
            return True
        logger.info(
            "namespace %s: round has %d of the %d updates min_peers asks for; not merging",
            self.ns.name,
            len(arrived),
            needed,
        )
        return False

    def _outgoing(self, local: Arrays) -> Arrays:
        privacy = self.options.privacy
        if privacy is None:
            return local
        reference = self._reference if self._reference is not None else local
        return dict(privacy.apply(local, reference))

    async def _push(self, targets: list[str], arrays: Arrays, round_: int) -> None:
        update = ModelUpdate(
            version=self.version,
            samples=max(self.local_samples, 0),
            mode=self.ns.mode.value,
            arrays=arrays,
            round=round_,
        )
        records = [r for p in targets if (r := self.ns.node.peers.get(p)) is not None]
        await asyncio.gather(*(self.ns._send(r, update) for r in records))

    async def _wait_arrival(self, deadline: float) -> bool:
        """Wait for the next update arrival or membership change; False at the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        event = self._arrival
        try:
            await asyncio.wait_for(event.wait(), remaining)
        except asyncio.TimeoutError:
            return False
        return True

    async def _wait_for(self, sources: list[str], round_: int, timeout: float) -> None:
        """Wait until every present source has an update for ``round_`` (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            present = [s for s in sources if self._still_sends(s)]
            have = self.store.senders_with_round(present, round_)
            if len(have) == len(present):
                return
            if not await self._wait_arrival(deadline):
                logger.info(
                    "namespace %s: round %d timed out with %d of %d peers",
                    self.ns.name,
                    round_,
                    len(have),
                    len(present),
                )
                return

    def _still_sends(self, peer: str) -> bool:
        """True while ``peer`` is a member whose announced mode sends weights."""
        mode = self.ns.peer_mode(peer) if peer in self.ns._members else None
        return mode is not None and mode.sends

    def _wake(self) -> None:
        self._arrival.set()
        self._arrival = asyncio.Event()

    # ------------------------------------------------------------------ inbound

    def on_update(self, record: PeerRecord, update: ModelUpdate, now: float) -> str | None:
        """Accept a peer's weights for merging; return a drop reason or ``None``."""
        if not self.ns.mode.receives:
            return "mode"
        try:
            sender_mode = OperatingMode.parse(update.mode)
        except ValueError:
            return "sender_mode"
        announced = record.mode_in(self.ns.name)
        if not sender_mode.sends or announced is None or not announced.sends:
            return "sender_mode"
        if self.adapter is None:
            return "no_model"
        try:
            check_specs(update.arrays, self.adapter.array_specs())
        except WireError:
            return "specs"
        round_ = update.round if update.round >= 0 else update.version
        stored = StoredUpdate(record.id, round_, max(update.samples, 0), update.arrays, now)
        if not self.store.offer(stored):
            return "stale"
        self._wake()
        return None

    def peer_left(self, peer_id: str) -> None:
        """Forget a departed peer's updates and fail requests waiting on it.

        What was merged from it is forgotten too: if it comes back with a new session its
        versions start over, and they must not be refused as stale.
        """
        self.store.reset_sender(peer_id)
        self._forget_global_source(peer_id)
        for request_id, (owner, future) in list(self._pending.items()):
            if owner == peer_id and not future.done():
                future.set_exception(ModelSyncError(f"peer {peer_id} left"))
                del self._pending[request_id]
        self._wake()

    def peer_restarted(self, peer_id: str) -> None:
        """A peer came back with a new session: its round numbers start over."""
        self.store.reset_sender(peer_id)
        self._forget_global_source(peer_id)

    def _forget_global_source(self, peer_id: str) -> None:
        """A centre that left or restarted counts its global rounds afresh."""
        if peer_id == self._global_source:
            self._global_source, self._global_round = None, -1

    def on_request(self, record: PeerRecord, request: ModelRequest) -> str | None:
        """Answer a model request in the background."""
        self._tasks.spawn(self._answer(record, request), "answer-request")
        return None

    def on_offer(self, record: PeerRecord, offer: ModelOffer | ModelUnavailable) -> str | None:
        """Hand a model offer to the ``sync_model`` call waiting for it."""
        pending = self._pending.get(offer.request_id)
        if pending is None or pending[0] != record.id:
            return "unexpected"
        del self._pending[offer.request_id]
        if not pending[1].done():
            pending[1].set_result(offer)
        return None

    async def _answer(self, record: PeerRecord, request: ModelRequest) -> None:
        reason = self._cannot_serve()
        architecture = None
        if reason is None and request.include_architecture:
            architecture = await self._export_architecture()
            if architecture is None:
                reason = "architecture not exportable: pass example_input= or factory="
        if reason is not None or self._published is None:
            await self.ns._send(record, ModelUnavailable(request.request_id, reason or "no model"))
            return
        arrays = self._published
        if self._digest is None:
            self._digest = compute_digest(arrays)
        offer = ModelOffer(
            request_id=request.request_id,
            version=self.version,
            samples=max(self.local_samples, 0),
            arrays=arrays,
            digest=self._digest,
            architecture=architecture,
        )
        await self.ns._send(record, offer)

    def _cannot_serve(self) -> str | None:
        if not self.ns.mode.sends:
            return f"mode is {self.ns.mode.value}"
        if self.adapter is None or self._published is None:
            return "no model yet"
        return None

    async def _export_architecture(self) -> Architecture | None:
        if self._architecture is None and self.adapter is not None:
            self._architecture = await asyncio.to_thread(self.adapter.export_architecture)
        return self._architecture

    # ------------------------------------------------------------------ serve

    async def serve(self, duration: float | None = None) -> None:
        """Keep federating and answering model requests until cancelled or ``duration`` s.

        Merges fresh updates from in-neighbours as they arrive (or, as the centre of a
        synchronous star, aggregates rounds), pushes the model when it changed, and answers
        ``sync_model`` requests (those are answered whenever the namespace is open).
        """
        deadline = None if duration is None else time.monotonic() + duration
        pushed_version = -1
        while deadline is None or time.monotonic() < deadline:
            step_end = time.monotonic() + self.options.serve_interval
            if deadline is not None:
                step_end = min(step_end, deadline)
            await self._wait_arrival(step_end)
            if self.adapter is None or self.ns.mode is OperatingMode.OFFLINE:
                continue
            pushed_version = await self._serve_pass(pushed_version)

    async def _serve_pass(self, pushed_version: int) -> int:
        assert self.adapter is not None
        center = self._center()
        if center is not None:
            if center == self.ns.node.id:
                async with self._lock:
                    if await self._aggregate_as_center(trained=False):
                        self.version += 1
                        self._publish()
            return pushed_version
        async with self._lock:
            targets, sources = self._neighbours()
            if self.options.sync:
                return await self._serve_round(targets, sources, pushed_version)
            if self.ns.mode.receives and sources:
                updates = self._finite(self.store.take_fresh(sources, time.monotonic()))
                if self._merge(self.adapter.get_arrays(), updates):
                    self.version += 1
                    self._publish()
            if self.ns.mode.sends and targets and self.version != pushed_version:
                assert self._published is not None
                await self._push(targets, self._outgoing(self._published), self.version)
                return self.version
        return pushed_version

    async def _serve_round(self, targets: list[str], sources: list[str], pushed: int) -> int:
        """In synchronous rounds, a serving node answers the round its neighbours are in.

        Without this, neighbours that train would wait ``round_timeout`` for it every round.
        """
        assert self.adapter is not None and self._published is not None
        newest = self.store.latest_round(sources)
        if newest is None or newest < self.version:
            return pushed
        if self.ns.mode.sends and targets:
            await self._push(targets, self._outgoing(self._published), newest)
        if self.ns.mode.receives:
            updates = self._finite(self.store.take_round(sources, newest, time.monotonic()))
            self._merge(self.adapter.get_arrays(), updates)
        self.version = newest + 1
        self._publish()
        return self.version

    # ------------------------------------------------------------------ sync_model

    async def sync_model(self, timeout: float | None = None) -> Any:
        """Download the model (architecture and weights) from a peer that has one.

        Peers are asked in order of their announced model version (highest first); a peer
        that does not answer within ``request_timeout`` or cannot serve is skipped.

        Returns:
            The model, also set as ``ns.model``.

        Raises:
            ModeError: the mode does not receive weights (SEEDING or OFFLINE).
            PeerTimeoutError: no peer provided a usable model within ``timeout`` seconds.
        """
        if not self.ns.mode.receives:
            raise ModeError(
                f"namespace {self.ns.name!r} is {self.ns.mode.value}: it does not receive "
                "weights; set ns.mode to PEER or LEECHING to sync"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        tried: set[str] = set()
        failures: list[str] = []
        while True:
            candidate = self._best_source(tried)
            if candidate is None:
                if deadline is not None and time.monotonic() >= deadline:
                    raise PeerTimeoutError(
                        f"namespace {self.ns.name!r}: no peer provided a model within "
                        f"{timeout} s ({'; '.join(failures) or 'no serving peer seen'}); "
                        "check that a peer with a model runs in PEER or SEEDING mode"
                    )
                tried.clear()  # everyone was asked: pause, then ask again
                pause_end = time.monotonic() + 1.0
                await self._wait_arrival(
                    pause_end if deadline is None else min(deadline, pause_end)
                )
                continue
            tried.add(candidate)
            try:
                return await self._sync_from(candidate, deadline)
            except (ModelSyncError, asyncio.TimeoutError) as exc:
                failures.append(f"{candidate}: {exc or 'timeout'}")
                logger.info("namespace %s: sync from %s failed: %s", self.ns.name, candidate, exc)

    def _best_source(self, tried: set[str]) -> str | None:
        best: tuple[int, str] | None = None
        for peer in self.ns._members:
            record = self.ns.node.peers.get(peer)
            info = record.namespaces.get(self.ns.name) if record is not None else None
            mode = self.ns.peer_mode(peer)
            if peer in tried or info is None or mode is None or not mode.sends:
                continue
            key = (-info.version, peer)
            if best is None or key < best:
                best = key
        return best[1] if best is not None else None

    async def _sync_from(self, peer: str, deadline: float | None) -> Any:
        record = self.ns.node.peers.get(peer)
        if record is None:
            raise ModelSyncError(f"peer {peer} left")
        request_id = random.getrandbits(62)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (peer, future)
        wait = self.options.request_timeout
        if deadline is not None:
            wait = max(0.01, min(wait, deadline - time.monotonic()))
        try:
            await self.ns._send(record, ModelRequest(request_id, self.adapter is None))
            answer = await asyncio.wait_for(future, wait)
        finally:
            self._pending.pop(request_id, None)
        if isinstance(answer, ModelUnavailable):
            raise ModelSyncError(f"unavailable ({answer.reason})")
        await self._adopt_offer(answer, peer)
        logger.info("namespace %s: model v%d synced from %s", self.ns.name, answer.version, peer)
        return self.model

    async def _adopt_offer(self, offer: ModelOffer, source: str) -> None:
        if self.adapter is None:
            if offer.architecture is None:
                raise ModelSyncError("the offer carries no architecture")
            self.adapter = await asyncio.to_thread(
                _adapter_from_architecture, offer.architecture, offer.arrays, self
            )
        try:
            check_specs(offer.arrays, self.adapter.array_specs())
        except WireError as exc:
            raise ModelSyncError(f"the offered weights do not fit the local model: {exc}") from None
        if not _all_finite(offer.arrays):
            self.ns.node.stats.dropped["non_finite"] += 1
            raise ModelSyncError("the offered weights hold NaN or infinity")
        self.adapter.set_arrays(offer.arrays)
        self.version = max(self.version, offer.version)
        if source == self._center():  # a centre's version bounds the rounds it has pushed
            self._global_source = source
            self._global_round = max(self._global_round, offer.version - 1)
        self._publish()

    # ------------------------------------------------------------------ checkpoints

    async def checkpoint(self, path: str | Path) -> Path:
        """Save weights, optimizer state, epoch, version and mode atomically.

        Raises:
            ConfigurationError: there is no model yet.
            OSError: the file cannot be written.
        """
        from .checkpoint import save_checkpoint

        if self.adapter is None:
            raise ConfigurationError("nothing to checkpoint: the namespace has no model yet")
        meta = {
            "namespace": self.ns.name,
            "epochs_done": self.epochs_done,
            "version": self.version,
            "samples_seen": self.samples_seen,
            "local_samples": self.local_samples,
            "mode": self.ns.mode.value,
            "history": self.history.to_dicts(),
        }
        extra = self.adapter.checkpoint_state()
        arrays = self.adapter.get_arrays()
        return await asyncio.to_thread(
            save_checkpoint, path, arrays, meta, extra if _has_state(extra) else None
        )

    async def restore(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`checkpoint` into this namespace.

        Raises:
            ConfigurationError: no model to load into, or the checkpoint does not fit it.
            FileNotFoundError: no file at ``path``.
        """
        from .checkpoint import load_checkpoint

        if self.adapter is None:
            raise ConfigurationError("restore needs a model: pass model= to node.namespace()")
        arrays, meta, extra = await asyncio.to_thread(load_checkpoint, path)
        try:
            check_specs(arrays, self.adapter.array_specs())
        except WireError as exc:
            raise ConfigurationError(f"checkpoint {path} does not fit the model: {exc}") from None
        self.adapter.set_arrays(arrays)
        if extra is not None:
            self.adapter.load_checkpoint_state(extra)
        self.epochs_done = int(meta["epochs_done"])
        self.version = int(meta["version"])
        self.samples_seen = int(meta["samples_seen"])
        self.local_samples = int(meta.get("local_samples", 0))
        self.history = History([_record_from_dict(r) for r in meta.get("history", [])])
        self.ns._modes.set_manual(OperatingMode.parse(meta["mode"]), "restored from checkpoint")
        self._publish()


def _all_finite(arrays: Mapping[str, np.ndarray]) -> bool:
    """True when no float array holds NaN or infinity."""
    try:
        for name, array in arrays.items():
            check_all_finite(array, name)
    except WireError:
        return False
    return True


def _has_state(extra: Mapping[str, Any]) -> bool:
    return any(value is not None for value in extra.values())


def _record_from_dict(data: Mapping[str, Any]) -> EpochRecord:
    values = dict(data)
    values["merged_from"] = tuple(values.get("merged_from", ()))
    values["mode_switches"] = tuple(values.get("mode_switches", ()))
    return EpochRecord(**values)


def _adapt(model: Any, create_optimizer: Any, loss: Any, options: LearningOptions) -> ModelAdapter:
    from .adapters import adapt

    extra = dict(options.adapter_options)
    if options.example_input is not None:
        extra["example_input"] = options.example_input
    if options.factory is not None:
        extra["factory"] = options.factory
    return adapt(model, create_optimizer, loss, **extra)


def _adapter_from_architecture(
    architecture: Architecture, arrays: Mapping[str, np.ndarray], learner: Learner
) -> ModelAdapter:
    from .adapters.architecture import adapter_from_architecture

    return adapter_from_architecture(
        architecture,
        arrays,
        registry=learner.ns.node.factories,
        create_optimizer=learner._create_optimizer,
        loss=learner._loss,
    )
