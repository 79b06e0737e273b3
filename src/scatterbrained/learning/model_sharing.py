"""``sync_model`` and its other side: asking peers for the model, and answering them.

A newcomer sends a ``ModelRequest`` (with ``include_architecture`` when it has no model yet)
to the peer with the highest announced version; the peer answers with a ``ModelOffer``
(weights as frames, digest, optionally the architecture) or ``ModelUnavailable`` (``final``
when asking again cannot help). Offers are checked (shapes against the local model, NaN/inf)
before they are adopted; the architecture is rebuilt only through the adapters' safe
loaders, never ``torch.load``. Answers go only to the member that asked, at most one at a
time per requester and :data:`MAX_CONCURRENT_ANSWERS` in all.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._tasks import Pulse, TaskSet, wait_future
from ..errors import ModeError, ModelSyncError, PeerTimeoutError, WireError
from ..events import ModelSynced
from ..learning_options import LearningOptions
from ..wire.codec import check_specs
from ..wire.messages import Architecture, ModelOffer, ModelRequest, ModelUnavailable
from .exchange import Exchange, all_finite
from .model_state import ModelState
from .port import FederationPort

if TYPE_CHECKING:
    from ..adapters.base import ModelAdapter

__all__ = ["MAX_CONCURRENT_ANSWERS", "AnswerLimiter", "ModelSharing"]

logger = logging.getLogger(__name__)

#: Seconds to pause after every peer was asked, before asking them all again.
RETRY_PAUSE_S = 1.0
#: Model answers being sent at once; more requests are refused as "busy" (and counted).
MAX_CONCURRENT_ANSWERS = 8
#: Seconds between two answers to one requester; sooner requests are refused as
#: "request_rate" (an asker retries after ``request_timeout`` or ``RETRY_PAUSE_S``).
MIN_ANSWER_INTERVAL_S = 0.5
#: Answers started per second, all requesters together (a forged requester address can
#: reflect at most this many offers a second at a victim); more are refused as "busy".
MAX_ANSWERS_PER_S = 32


class AnswerLimiter:
    """Which model requests get an answer: one at a time and one per
    :data:`MIN_ANSWER_INTERVAL_S` per requester, :data:`MAX_CONCURRENT_ANSWERS` at once and
    :data:`MAX_ANSWERS_PER_S` a second in all. Bounded: past 1,024 requesters only those
    still limited are remembered.
    """

    def __init__(self) -> None:
        self._answering: set[str] = set()
        self._answered_at: dict[str, float] = {}  # requester -> when its last answer started
        self._recent: deque[float] = deque()  # answers started in the last second

    def admit(self, sender: str, now: float) -> str | None:
        """Start an answer to ``sender`` at ``now`` (monotonic s), or return why not:
        ``"request_rate"`` (this requester, too soon) or ``"busy"`` (too many in all)."""
        last = self._answered_at.get(sender)
        if sender in self._answering or (last is not None and now - last < MIN_ANSWER_INTERVAL_S):
            return "request_rate"
        while self._recent and now - self._recent[0] >= 1.0:
            self._recent.popleft()
        if len(self._answering) >= MAX_CONCURRENT_ANSWERS or len(self._recent) >= (
            MAX_ANSWERS_PER_S
        ):
            return "busy"
        if len(self._answered_at) >= 1024:
            self._answered_at = {
                k: t for k, t in self._answered_at.items() if now - t < MIN_ANSWER_INTERVAL_S
            }
        self._answered_at[sender] = now
        self._recent.append(now)
        self._answering.add(sender)
        return None

    def done(self, sender: str) -> None:
        """The answer to ``sender`` was sent (or failed)."""
        self._answering.discard(sender)


class ModelSharing:
    """Model requests and offers of one learner.

    Args:
        port: the namespace, as the learning code sees it.
        state: the model state that is served, and that adopts what is downloaded.
        exchange: the learner's exchange (its round counters follow an adopted centre).
        options: the learning options (``request_timeout``).
        create_optimizer: the optimizer factory of a model rebuilt from an architecture.
        loss: the loss of a model rebuilt from an architecture.
    """

    def __init__(
        self,
        port: FederationPort,
        state: ModelState,
        exchange: Exchange,
        options: LearningOptions,
        create_optimizer: Any,
        loss: Any,
    ) -> None:
        self.port = port
        self.state = state
        self.exchange = exchange
        self.options = options
        self._create_optimizer = create_optimizer
        self._loss = loss
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._limiter = AnswerLimiter()
        self._tasks = TaskSet(f"namespace {port.name}")
        self._architecture: Architecture | None = None
        self._offers = Pulse()
        self._closed = False

    async def close(self) -> None:
        """Fail pending requests (``ModelSyncError``, never a stray cancellation), stop answers."""
        self._closed = True
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(ModelSyncError("the namespace was closed", final=True))
        self._pending.clear()
        self._offers.fire()
        await self._tasks.close()

    # ------------------------------------------------------------------ answering

    def on_request(self, sender: str, request: ModelRequest) -> str | None:
        """Answer a model request in the background; a drop reason when refused."""
        refusal = self._limiter.admit(sender, time.monotonic())
        if refusal is None:
            self._tasks.spawn(self._answer(sender, request), "answer-request")
        return refusal

    async def _answer(self, sender: str, request: ModelRequest) -> None:
        try:
            await self.port.send(sender, await self._answer_for(request))
        finally:
            self._limiter.done(sender)

    async def _answer_for(self, request: ModelRequest) -> ModelOffer | ModelUnavailable:
        if not self.port.mode.sends:
            return ModelUnavailable(request.request_id, f"mode is {self.port.mode.value}")
        if self.state.published is None:
            return ModelUnavailable(request.request_id, "no model yet")
        architecture = None
        if request.include_architecture:
            architecture = await self._export_architecture()
            if architecture is None:
                reason = "architecture not exportable: pass example_input= or factory="
                return ModelUnavailable(request.request_id, reason, final=True)
        # Weights, digest, version and round are read together, after the (slow, threaded)
        # export: training may have committed meanwhile, and an offer whose digest belongs to
        # other weights is refused by the asker.
        published = self.state.published
        assert published is not None  # a model, once there, is never removed
        return ModelOffer(
            request_id=request.request_id,
            version=self.state.version,
            samples=max(self.state.local_samples, 0),
            arrays=published,
            digest=self.state.digest(),
            architecture=architecture,
            round=self.exchange.round,
        )

    async def _export_architecture(self) -> Architecture | None:
        adapter = self.state.adapter
        if self._architecture is None and adapter is not None:
            # Not on the training lane: an answer must not wait for other nodes' epochs.
            self._architecture = await asyncio.to_thread(adapter.export_architecture)
        return self._architecture

    # ------------------------------------------------------------------ asking

    def on_offer(self, sender: str, offer: ModelOffer | ModelUnavailable) -> str | None:
        """Hand a model offer to the ``sync_model`` call waiting for it."""
        pending = self._pending.get(offer.request_id)
        if pending is None or pending[0] != sender:
            return "unexpected"
        del self._pending[offer.request_id]
        if not pending[1].done():
            pending[1].set_result(offer)
        return None

    def peer_left(self, peer_id: str) -> None:
        """Fail the requests waiting on a peer that left; let waits re-check who is there."""
        for request_id, (owner, future) in list(self._pending.items()):
            if owner == peer_id and not future.done():
                future.set_exception(ModelSyncError(f"peer {peer_id} left"))
                del self._pending[request_id]
        self._offers.fire()

    def peers_changed(self) -> None:
        """A peer joined or changed its mode: a waiting ``sync_model`` looks again."""
        self._offers.fire()

    async def sync_model(self, timeout: float | None = None) -> Any:
        """Download the model (architecture and weights) from a peer that has one.

        Peers are asked in order of their announced model version (highest first); a peer
        that does not answer within ``request_timeout`` or cannot serve is skipped. When
        every serving peer answered that it can never serve this request (``final``), the
        call fails at once instead of asking again.

        Returns:
            The model, also set as ``ns.model``.

        Raises:
            ModeError: the mode does not receive weights (SEEDING or OFFLINE).
            ModelSyncError: every peer that serves said it cannot serve the model (the
                message names each peer and its reason).
            PeerTimeoutError: no peer provided a usable model within ``timeout`` seconds.
        """
        if not self.port.mode.receives:
            raise ModeError(
                f"namespace {self.port.name!r} is {self.port.mode.value}: it does not receive "
                "weights; set ns.mode to PEER or LEECHING to sync"
            )
        deadline = None if timeout is None else time.monotonic() + timeout
        tried: set[str] = set()
        refused: dict[str, str] = {}  # peer -> final reason
        failures: list[str] = []
        while True:
            if self._closed:
                raise ModelSyncError(f"namespace {self.port.name!r} was closed", final=True)
            candidate = self._best_source(tried | set(refused))
            if candidate is None:
                self._raise_if_all_refused(refused)
                if deadline is not None and time.monotonic() >= deadline:
                    seen = failures[-8:] + self._modelless_peers()
                    raise PeerTimeoutError(
                        f"namespace {self.port.name!r}: no peer provided a model within "
                        f"{timeout} s ({'; '.join(seen) or 'no serving peer seen'}); "
                        "check that a peer with a model runs in PEER or SEEDING mode"
                    )
                tried.clear()  # everyone was asked: pause, then ask again
                pause_end = time.monotonic() + RETRY_PAUSE_S
                await self._offers.wait_until(
                    pause_end if deadline is None else min(deadline, pause_end)
                )
                continue
            tried.add(candidate)
            try:
                return await self._sync_from(candidate, deadline)
            except ModelSyncError as exc:
                if self._closed:
                    raise
                if exc.final:
                    refused[candidate] = str(exc)
                failures.append(f"{candidate}: {exc}")
                logger.info("namespace %s: sync from %s failed: %s", self.port.name, candidate, exc)

    def _raise_if_all_refused(self, refused: dict[str, str]) -> None:
        serving = self._serving_peers()
        if refused and serving and serving <= set(refused):
            reasons = "; ".join(f"{p}: {refused[p]}" for p in sorted(serving))
            raise ModelSyncError(
                f"namespace {self.port.name!r}: every peer that serves refused the model "
                f"({reasons}); on the serving side pass example_input= or factory= to "
                "node.namespace(), or register the model factory on both sides"
            )

    def _modelless_peers(self) -> list[str]:
        """``"<id>: no model yet"`` for members whose mode serves but who have no model."""
        weights = self.port.peer_modes()
        return [
            f"{p}: no model yet"
            for p in sorted(weights)
            if not weights[p].sends and (self.port.peer_mode(p) or weights[p]).sends
        ]

    def _serving_peers(self) -> set[str]:
        return {p for p, m in self.port.peer_modes().items() if m.sends}

    def _best_source(self, skip: set[str]) -> str | None:
        best: tuple[int, str] | None = None
        for peer in self._serving_peers() - skip:
            key = (-(self.port.peer_version(peer) or 0), peer)
            if best is None or key < best:
                best = key
        return best[1] if best is not None else None

    async def _sync_from(self, peer: str, deadline: float | None) -> Any:
        request_id = random.getrandbits(62)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (peer, future)
        wait_end = time.monotonic() + self.options.request_timeout
        if deadline is not None:
            wait_end = min(wait_end, deadline)
        try:
            request = ModelRequest(request_id, not self.state.has_model)
            if not await self.port.send(peer, request):
                raise ModelSyncError(f"request to {peer} not delivered")
            if not await wait_future(future, wait_end):
                raise ModelSyncError("no answer in time")
            answer = future.result()
        finally:
            self._pending.pop(request_id, None)
            if not future.done():
                future.cancel()
        if isinstance(answer, ModelUnavailable):
            raise ModelSyncError(f"unavailable ({answer.reason})", final=answer.final)
        await self._adopt_offer(answer, peer)
        logger.info("namespace %s: model v%d synced from %s", self.port.name, answer.version, peer)
        self.port.emit(ModelSynced(self.port.node_id, self.port.name, peer, answer.version))
        return self.state.model

    async def _adopt_offer(self, offer: ModelOffer, source: str) -> None:
        state = self.state
        adapter = state.adapter
        if adapter is None:
            if offer.architecture is None:
                raise ModelSyncError("the offer carries no architecture", final=True)
            try:
                adapter = await asyncio.to_thread(self._rebuild, offer.architecture, offer.arrays)
            except ModelSyncError:
                raise
            except Exception as exc:  # a peer's envelope must never raise into user code
                raise ModelSyncError(
                    f"the offered architecture cannot be rebuilt: {exc}", final=True
                ) from None
        try:
            check_specs(offer.arrays, adapter.array_specs())
        except WireError as exc:
            raise ModelSyncError(f"the offered weights do not fit the local model: {exc}") from None
        if not all_finite(offer.arrays):
            raise ModelSyncError("the offered weights hold NaN or infinity")
        if state.adapter is None:
            state.install(adapter)
        state.commit("adopt", offer.arrays, version=max(state.version, offer.version))
        exchange = self.exchange
        exchange.round = max(exchange.round, offer.round)  # join the round the peer is in
        if source == exchange.center():  # a centre's version bounds the rounds it has pushed
            exchange.global_source = source
            exchange.global_round = max(exchange.global_round, offer.version - 1)

    def _rebuild(
        self, architecture: Architecture, arrays: Mapping[str, np.ndarray]
    ) -> ModelAdapter:
        from ..adapters.architecture import adapter_from_architecture

        return adapter_from_architecture(
            architecture,
            arrays,
            registry=self.port.factories,
            create_optimizer=self._create_optimizer,
            loss=self._loss,
        )
