"""The learner: local training on the training lane, federation on the event loop.

A :class:`Learner` is the learning side of a namespace (reached through ``Namespace``'s
``train``, ``serve``, ``sync_model``, ``checkpoint`` and ``restore``). It reaches the
namespace only through a :class:`~.port.FederationPort`; the model's weights and version
belong to its :class:`~.model_state.ModelState`; at each sync point it runs the round
protocol that :func:`~.protocols.choose_step` picks; :class:`~.model_sharing.ModelSharing`
answers and sends model requests; :mod:`~.checkpointing` saves and restores its state.

Training and evaluation run on the event loop's :class:`~.lane.TrainingLane` (one thread
that every learner of the loop shares, see :mod:`~.lane`). With ``share_every`` an epoch
runs as chunks of that many steps, and each exchange happens on the event loop between two
chunks, so no job ever waits for the network while it holds the lane.

Every awaitable here is cancellable at any point: a cancelled ``train`` stops its job at the
next optimizer step (the epoch is not counted) before the cancellation propagates.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..adapters.base import EpochResult, SharedThreadTuning
from ..errors import CheckpointError, ConfigurationError, ScatterbrainedError
from ..events import EpochDone
from ..federation.policies import PolicyState
from ..history import EpochRecord
from ..learning_options import LearningOptions, check_share_every
from ..types import OperatingMode
from ..wire.messages import ModelOffer, ModelRequest, ModelUnavailable, ModelUpdate
from . import checkpointing, epochs, lane
from .epochs import TrainingStopped
from .exchange import Exchange
from .model_sharing import ModelSharing
from .model_state import ModelState
from .port import FederationPort
from .protocols import choose_step, serving

if TYPE_CHECKING:
    from ..adapters.base import ModelAdapter

__all__ = ["MAX_CONSENSUS_ROUNDS", "Learner", "TrainingStopped"]

logger = logging.getLogger(__name__)

#: The most consensus rounds that end a ``train`` call by default (``consensus_rounds``).
MAX_CONSENSUS_ROUNDS = 64


class Learner:
    """The learning side of a namespace.

    Args:
        port: the namespace, as the learning code sees it.
        model: the caller's model (any framework an adapter supports), or ``None`` for a
            newcomer that will ``sync_model()``.
        create_optimizer: ``callable(model) -> optimizer`` (framework-specific), or ``None``.
        loss: the loss function, or ``None`` to infer it.
        options: the namespace's learning options.

    Raises:
        ConfigurationError: no adapter fits ``model``.
    """

    def __init__(
        self,
        port: FederationPort,
        model: Any,
        create_optimizer: Any,
        loss: Any,
        options: LearningOptions,
    ) -> None:
        self.port = port
        self.options = options
        self.create_optimizer = create_optimizer
        self.loss = loss
        adapter = _adapt(model, create_optimizer, loss, options) if model is not None else None
        self.state = ModelState(adapter, port.emit, port.node_id, port.name)
        self.epochs_done = 0
        self._lane: lane.TrainingLane | None = None
        self._closed = False
        self._stop = threading.Event()  # the running or queued training job's
        self._started_at = time.monotonic()
        self._last_val: tuple[float | None, float | None] = (None, None)
        self.exchange = Exchange(port, self.state, options)
        self.sharing = ModelSharing(
            port, self.state, self.exchange, options, create_optimizer, loss
        )

    # ------------------------------------------------------------------ views

    @property
    def adapter(self) -> ModelAdapter | None:
        """The model adapter, or ``None`` before a model is set or synced."""
        return self.state.adapter

    @property
    def model(self) -> Any:
        """The wrapped model, or ``None``."""
        return self.state.model

    @property
    def version(self) -> int:
        """The model version (moves on every change: training, merge, adoption)."""
        return self.state.version

    @property
    def samples_seen(self) -> int:
        """Local training samples seen in all epochs."""
        return self.state.samples_seen

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Restore from ``checkpoint_dir`` when a checkpoint exists; publish the weights.

        Raises:
            CheckpointError: the checkpoint there is bad (unless ``on_bad_checkpoint`` is
                ``"fresh"``).
        """
        path = checkpointing.checkpoint_path(self.options, self.port)
        if path is not None and path.exists() and self.state.has_model:
            try:
                await self.restore(path)
            except CheckpointError as exc:
                if self.options.on_bad_checkpoint != "fresh":
                    raise
                logger.warning("namespace %s starts fresh: %s", self.port.name, exc)
            else:
                logger.info(
                    "namespace %s resumed from %s at epoch %d",
                    self.port.name,
                    path,
                    self.epochs_done,
                )
        self.state.publish_initial()

    async def close(self) -> None:
        """Cancel pending requests and background work; stop a training job at its next
        step (its ``train`` call raises :class:`ScatterbrainedError`); give the training
        lane back."""
        self._closed = True
        self._stop.set()
        await self.sharing.close()
        if self._lane is not None:
            self._lane.release()
            self._lane = None

    async def _training_lane(self) -> lane.TrainingLane:
        """The event loop's training lane, held from the first use until :meth:`close`;
        tuned by the adapter once other learners share it.

        Raises:
            ScatterbrainedError: the namespace was closed.
        """
        self._check_open()
        if self._lane is None or self._lane.closed:
            self._lane = lane.acquire()
        adapter = self.state.adapter
        if self._lane.shared and isinstance(adapter, SharedThreadTuning):
            self._lane.prepare(type(adapter).__qualname__, adapter.tune_shared_thread)
        return self._lane

    def _check_open(self) -> None:
        if self._closed:
            raise ScatterbrainedError(
                f"namespace {self.port.name!r} was closed; open a new one with node.namespace()"
            )

    # ------------------------------------------------------------------ train

    async def train(
        self,
        epochs: int,
        trainloader: Any,
        validloader: Any = None,
        *,
        share_every: int | None = None,
    ) -> None:
        """Train ``epochs`` local epochs on the training lane, federating at each sync point.

        Args:
            epochs: local epochs to run now. After a restart restored from
                ``checkpoint_dir``, ``ns.epochs_done`` tells how many were done before, so a
                script can finish its job with ``train(total - ns.epochs_done, ...)``.
            trainloader: iterable of ``(inputs, targets)`` batches (re-iterable each epoch).
            validloader: optional iterable of batches evaluated after each epoch.
            share_every: federate every this many optimizer steps instead of per epoch
                (default: the namespace's ``share_every`` option, else once per epoch).

        Raises:
            ConfigurationError: there is no model (pass ``model=`` or call ``sync_model()``),
                ``epochs`` is negative or ``share_every`` is not a positive integer.
            ScatterbrainedError: the namespace was closed (before or during the call).
        """
        self._check_open()
        if not self.state.has_model:
            raise ConfigurationError(
                f"namespace {self.port.name!r} has no model: pass model= to node.namespace() "
                "or call `await ns.sync_model()` first"
            )
        if not isinstance(epochs, int) or epochs < 0:
            raise ConfigurationError(f"epochs must be >= 0 (an integer), got {epochs!r}")
        check_share_every(share_every)
        every = share_every if share_every is not None else self.options.share_every
        for _ in range(epochs):
            await self._train_one_epoch(trainloader, validloader, every)
        if epochs:
            await self._consensus(epochs)

    async def _consensus(self, epochs: int) -> None:
        """End a ``train`` call with exchanges that only mix (``consensus_rounds``).

        On a sparse graph the nodes end training with different models (one exchange per
        epoch reaches only the neighbours, and local training on skewed data pulls them
        apart); a few mixing-only exchanges bring every node close to their average. Every
        node of a namespace computes the same count from the same graph, so their rounds
        stay aligned. The last epoch's exchange was the first mixing step, so a graph that
        mixes in one step (complete, or a centralized star) gets none. By default there are
        fewer than the epochs of the call: a one-epoch call (a loop of ``train(1)``) gets
        none, and mixing never costs more traffic than training.
        """
        rounds = self.options.consensus_rounds
        if rounds is None:
            limit = min(epochs - 1, MAX_CONSENSUS_ROUNDS)
            rounds = max(0, self.exchange.consensus_steps(limit + 1) - 1) if limit else 0
        if rounds:
            logger.debug("namespace %s: %d consensus rounds", self.port.name, rounds)
        for _ in range(rounds):
            await self.federate(trained=False)

    async def _train_one_epoch(
        self, trainloader: Any, validloader: Any, share_every: int | None
    ) -> None:
        adapter = self.state.adapter
        assert adapter is not None
        start = time.monotonic()
        sent0, received0 = self.port_bytes()
        switches: list[str] = []
        merged: list[str] = []
        self.exchange.reference = self.state.published
        result = await self._run_epoch(adapter, trainloader, share_every, switches, merged)
        self.state.local_samples = result.samples
        self.state.samples_seen += result.samples
        self.epochs_done += 1
        self.state.commit("train")
        mode = self.port.mode
        if not share_every:
            merged.extend(await self.federate(trained=True))
        val_loss, val_accuracy = await self._evaluate(validloader)
        self._apply_policy(switches)
        sent, received = self.port_bytes()
        record = EpochRecord(
            epoch=self.epochs_done,
            train_loss=float(result.loss),
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            mode=mode.value,
            merged_from=tuple(dict.fromkeys(merged)),
            bytes_sent=sent - sent0,
            bytes_received=received - received0,
            samples=result.samples,
            version=self.state.version,
            peers=self.port.peer_count(),
            wall_s=time.monotonic() - start,
            mode_switches=tuple(switches),
            epsilon=self._epsilon(),
        )
        self.port.emit(EpochDone(self.port.node_id, self.port.name, record))
        path = checkpointing.checkpoint_path(self.options, self.port)
        if path is not None:
            await self.checkpoint(path)

    def _epsilon(self) -> float | None:
        """Privacy spent so far by the namespace's ``privacy`` mechanism, if it accounts."""
        accounting = getattr(self.options.privacy, "epsilon", None)
        return float(accounting(self.exchange.releases)) if callable(accounting) else None

    def port_bytes(self) -> tuple[int, int]:
        """Bytes (sent, received) in the namespace so far (0, 0 if the port does not count)."""
        counter = getattr(self.port, "traffic", None)
        return counter() if callable(counter) else (0, 0)

    async def federate(self, trained: bool) -> list[str]:
        """Run this sync point's round protocol once; return the senders merged from."""
        async with self.exchange.lock:
            return await choose_step(self.exchange)(self.exchange, trained)

    async def _run_epoch(
        self,
        adapter: ModelAdapter,
        trainloader: Any,
        every: int | None,
        switches: list[str],
        merged: list[str],
    ) -> EpochResult:
        """One pass over ``trainloader`` on the lane (see :func:`epochs.run_epoch`), with
        this node's exchanges between chunks when ``every`` is set.

        Raises:
            ScatterbrainedError: the namespace was closed meanwhile.
        """
        self._stop = threading.Event()
        training = await self._training_lane()

        async def between() -> None:
            merged.extend(await self._step_exchange(switches))

        try:
            return await epochs.run_epoch(
                training, adapter, trainloader, every, self._stop, between
            )
        except TrainingStopped:
            self._check_open()  # closed: say so; else (cancelled) lane.run raised already
            raise

    async def _step_exchange(self, switches: list[str]) -> list[str]:
        self.state.commit("train")
        merged = await self.federate(trained=True)
        self._apply_policy(switches)
        return merged

    async def _evaluate(self, validloader: Any) -> tuple[float | None, float | None]:
        adapter = self.state.adapter
        if validloader is None or adapter is None:
            return None, None
        training = await self._training_lane()
        result = await training.run(threading.Event(), adapter.evaluate, validloader)
        self._last_val = (result.loss, result.accuracy)
        return float(result.loss), result.accuracy

    def policy_state(self) -> PolicyState:
        """What mode policies see now (epochs, samples, version, peers, validation)."""
        val_loss, val_accuracy = self._last_val
        return PolicyState(
            mode=self.port.mode,
            samples_seen=self.state.samples_seen,
            epochs_done=self.epochs_done,
            version=self.state.version,
            peers=self.port.peer_count(),
            elapsed_s=time.monotonic() - self._started_at,
            val_accuracy=val_accuracy,
            val_loss=val_loss,
        )

    def _apply_policy(self, switches: list[str]) -> None:
        """Let the policy decide at the end of a sync point (effective from the next one).

        Deciding after the exchange, not before it, means every peer hears of the switch a
        whole epoch before the switched node's next exchange, so synchronous rounds never
        depend on who heard of it in time.
        """
        switch = self.port.apply_policy(self.policy_state())
        if switch is not None:
            switches.append(switch)

    # ------------------------------------------------------------------ federation

    def wake(self) -> None:
        """Make every wait re-check its condition (membership or a peer's mode changed)."""
        self.exchange.wake()

    async def serve(
        self, duration: float | None = None, closed: Callable[[], bool] | None = None
    ) -> None:
        """Keep federating and answering model requests until cancelled, ``duration`` s, or
        ``closed()`` is true. See :mod:`scatterbrained.learning.protocols.serving`."""
        await serving.serve(self.exchange, duration, closed)

    async def sync_model(self, timeout: float | None = None) -> Any:
        """Download the model from a peer; see :meth:`ModelSharing.sync_model`."""
        return await self.sharing.sync_model(timeout)

    async def checkpoint(self, path: str | Path) -> Path:
        """Save this learner's state atomically; see :func:`checkpointing.save_state`."""
        meta = {
            "namespace": self.port.name,
            "epochs_done": self.epochs_done,
            "round": self.exchange.round,
            "mode": self.port.mode.value,
            "history": self.port.history.to_dicts(),
            "releases": self.exchange.releases,
        }
        return await checkpointing.save_state(path, self.state, meta)

    async def restore(self, path: str | Path) -> None:
        """Load a checkpoint, all or nothing; the restored mode is announced to the peers.

        Raises:
            ConfigurationError: the file does not fit the model or is corrupt (nothing
                changed).
            FileNotFoundError: no file at ``path``.
        """
        restored = await checkpointing.restore_state(path, self.state)
        self.port.history.records[:] = restored.history
        self.epochs_done = restored.epochs_done
        self.exchange.round = max(self.exchange.round, restored.round)
        self.exchange.releases = max(self.exchange.releases, restored.releases)
        self.port.set_mode(restored.mode, "restored from checkpoint")

    # ------------------------------------------------------------------ inbound

    def on_update(
        self, sender: str, announced: OperatingMode | None, update: ModelUpdate
    ) -> str | None:
        """Accept a peer's weights for merging; return a drop reason or ``None``."""
        return self.exchange.accept(sender, announced, update)

    def on_request(self, sender: str, request: ModelRequest) -> str | None:
        """Answer a model request in the background."""
        return self.sharing.on_request(sender, request)

    def on_offer(self, sender: str, offer: ModelOffer | ModelUnavailable) -> str | None:
        """Hand a model offer to the ``sync_model`` call waiting for it."""
        return self.sharing.on_offer(sender, offer)

    def peer_left(self, peer_id: str) -> None:
        """Forget a departed peer's updates and fail requests waiting on it."""
        self.exchange.forget(peer_id)
        self.sharing.peer_left(peer_id)
        self.wake()

    def peer_restarted(self, peer_id: str) -> None:
        """A peer came back with a new session: its round numbers start over."""
        self.exchange.forget(peer_id)


def _adapt(model: Any, create_optimizer: Any, loss: Any, options: LearningOptions) -> ModelAdapter:
    from ..adapters import adapt

    extra = dict(options.adapter_options)
    if options.example_input is not None:
        extra["example_input"] = options.example_input
    if options.factory is not None:
        extra["factory"] = options.factory
    return adapt(model, create_optimizer, loss, **extra)
