"""The learner: local training in a worker thread, federation on the event loop.

A :class:`Learner` is the learning side of a namespace (reached through ``Namespace``'s
``train``, ``serve``, ``sync_model``, ``checkpoint`` and ``restore``). It owns the model
adapter and the model's version; :class:`~.exchange.Exchange` shares and merges weights,
:class:`~.model_sharing.ModelSharing` answers and sends model requests,
:mod:`~.checkpointing` saves and restores its state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError
from ..federation.policies import PolicyState
from ..history import EpochRecord, History
from ..learning_options import LearningOptions
from ..peers import PeerRecord
from ..wire.codec import compute_digest
from ..wire.messages import ModelOffer, ModelRequest, ModelUnavailable, ModelUpdate
from . import checkpointing, serving
from .exchange import Arrays, Exchange
from .model_sharing import ModelSharing

if TYPE_CHECKING:
    from ..adapters.base import ModelAdapter
    from ..namespace import Namespace

__all__ = ["Learner"]

logger = logging.getLogger(__name__)


class Learner:
    """The learning side of a namespace.

    Args:
        ns: the namespace it learns in.
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
        ns: Namespace,
        model: Any,
        create_optimizer: Any,
        loss: Any,
        options: LearningOptions,
    ) -> None:
        self.ns = ns
        self.options = options
        self.create_optimizer = create_optimizer
        self.loss = loss
        self.adapter: ModelAdapter | None = None
        if model is not None:
            self.adapter = _adapt(model, create_optimizer, loss, options)
        self.version = 0
        self.epochs_done = 0
        self.samples_seen = 0
        self.local_samples = 0
        self.history = History()
        self.published: Arrays | None = None  # what is served and pushed until the next change
        self.reference: Arrays | None = None  # the weights at the start of this epoch
        self._digest: bytes | None = None  # of the published weights; reset by publish
        self._started_at = time.monotonic()
        self._last_val: tuple[float | None, float | None] = (None, None)
        self.exchange = Exchange(self)
        self.sharing = ModelSharing(self)

    # ------------------------------------------------------------------ lifecycle

    @property
    def model(self) -> Any:
        """The wrapped model, or ``None``."""
        return self.adapter.model if self.adapter is not None else None

    async def open(self) -> None:
        """Restore from ``checkpoint_dir`` when a checkpoint exists; publish the weights."""
        path = checkpointing.checkpoint_path(self)
        if path is not None and path.exists() and self.adapter is not None:
            await self.restore(path)
            logger.info(
                "namespace %s resumed from %s at epoch %d", self.ns.name, path, self.epochs_done
            )
        self.publish()

    async def close(self) -> None:
        """Cancel pending requests and background work."""
        await self.sharing.close()

    def publish(self) -> None:
        """Snapshot the current weights: what is served and pushed until the next change."""
        if self.adapter is not None:
            self.published = self.adapter.get_arrays()
            self._digest = None

    def published_digest(self) -> bytes:
        """The digest of the published weights, computed once per publish.

        Raises:
            ConfigurationError: nothing is published yet (no model).
        """
        if self.published is None:
            raise ConfigurationError(f"namespace {self.ns.name!r} has published no model yet")
        if self._digest is None:
            self._digest = compute_digest(self.published)
        return self._digest

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
        self.reference = self.published
        hook = self._step_hook(share_every, switches, merged) if share_every else None
        result = await asyncio.to_thread(adapter.train_epoch, trainloader, step_hook=hook)
        self.local_samples = result.samples
        self.samples_seen += result.samples
        self.epochs_done += 1
        self._apply_policy(switches)
        mode = self.ns.mode
        if share_every:
            self.version += 1
            self.publish()
        else:
            merged.extend(await self.exchange.run(trained=True))
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
        path = checkpointing.checkpoint_path(self)
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
        return await self.exchange.run(trained=True)

    async def _evaluate(self, validloader: Any) -> tuple[float | None, float | None]:
        if validloader is None or self.adapter is None:
            return None, None
        result = await asyncio.to_thread(self.adapter.evaluate, validloader)
        self._last_val = (result.loss, result.accuracy)
        return float(result.loss), result.accuracy

    def policy_state(self) -> PolicyState:
        """What mode policies see now (epochs, samples, version, peers, validation)."""
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
        switch = self.ns._apply_policy(self.policy_state())
        if switch is not None:
            switches.append(switch)

    # ------------------------------------------------------------------ federation

    def wake(self) -> None:
        """Make every wait re-check its condition (membership or a peer's mode changed)."""
        self.exchange.wake()

    async def serve(self, duration: float | None = None) -> None:
        """Keep federating and answering model requests until cancelled or ``duration`` s.

        See :mod:`scatterbrained.learning.serving`.
        """
        await serving.serve(self.exchange, duration)

    async def sync_model(self, timeout: float | None = None) -> Any:
        """Download the model from a peer; see :meth:`ModelSharing.sync_model`."""
        return await self.sharing.sync_model(timeout)

    async def checkpoint(self, path: str | Path) -> Path:
        """Save this learner's state atomically; see :func:`checkpointing.save_learner`."""
        return await checkpointing.save_learner(self, path)

    async def restore(self, path: str | Path) -> None:
        """Load a checkpoint into this learner; see :func:`checkpointing.restore_learner`."""
        await checkpointing.restore_learner(self, path)

    # ------------------------------------------------------------------ inbound

    def on_update(self, record: PeerRecord, update: ModelUpdate, now: float) -> str | None:
        """Accept a peer's weights for merging; return a drop reason or ``None``."""
        return self.exchange.accept(record, update, now)

    def on_request(self, record: PeerRecord, request: ModelRequest) -> str | None:
        """Answer a model request in the background."""
        return self.sharing.on_request(record, request)

    def on_offer(self, record: PeerRecord, offer: ModelOffer | ModelUnavailable) -> str | None:
        """Hand a model offer to the ``sync_model`` call waiting for it."""
        return self.sharing.on_offer(record, offer)

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
