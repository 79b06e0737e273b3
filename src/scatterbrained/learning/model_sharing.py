"""``sync_model`` and its other side: asking peers for the model, and answering them.

A newcomer sends a ``ModelRequest`` (with ``include_architecture`` when it has no model yet)
to the peer with the highest announced version; the peer answers with a ``ModelOffer``
(weights as frames, digest, optionally the architecture) or ``ModelUnavailable``. Offers are
checked (shapes against the local model, NaN/inf) before they are adopted; the architecture
is rebuilt only through the adapters' safe loaders, never ``torch.load``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._tasks import TaskSet
from ..errors import ModeError, ModelSyncError, PeerTimeoutError, WireError
from ..peers import PeerRecord
from ..wire.codec import check_specs
from ..wire.messages import Architecture, ModelOffer, ModelRequest, ModelUnavailable
from .exchange import all_finite

if TYPE_CHECKING:
    from ..adapters.base import ModelAdapter
    from .learner import Learner

__all__ = ["ModelSharing"]

logger = logging.getLogger(__name__)

#: Seconds to pause after every peer was asked, before asking them all again.
RETRY_PAUSE_S = 1.0


class ModelSharing:
    """Model requests and offers of one learner.

    Args:
        learner: the learner whose model is served, and which adopts what is downloaded.
    """

    def __init__(self, learner: Learner) -> None:
        self.learner = learner
        self.ns = learner.ns
        self._pending: dict[int, tuple[str, asyncio.Future[Any]]] = {}
        self._tasks = TaskSet(f"namespace {learner.ns.name}")
        self._architecture: Architecture | None = None

    async def close(self) -> None:
        """Cancel pending requests and the answers being sent."""
        for _, future in self._pending.values():
            future.cancel()
        self._pending.clear()
        await self._tasks.close()

    # ------------------------------------------------------------------ answering

    def on_request(self, record: PeerRecord, request: ModelRequest) -> str | None:
        """Answer a model request in the background; never a drop reason."""
        self._tasks.spawn(self._answer(record, request), "answer-request")
        return None

    async def _answer(self, record: PeerRecord, request: ModelRequest) -> None:
        reason = self._cannot_serve()
        architecture = None
        if reason is None and request.include_architecture:
            architecture = await self._export_architecture()
            if architecture is None:
                reason = "architecture not exportable: pass example_input= or factory="
        arrays = self.learner.published
        if reason is not None or arrays is None:
            await self.ns._send(record, ModelUnavailable(request.request_id, reason or "no model"))
            return
        offer = ModelOffer(
            request_id=request.request_id,
            version=self.learner.version,
            samples=max(self.learner.local_samples, 0),
            arrays=arrays,
            digest=self.learner.published_digest(),
            architecture=architecture,
        )
        await self.ns._send(record, offer)

    def _cannot_serve(self) -> str | None:
        if not self.ns.mode.sends:
            return f"mode is {self.ns.mode.value}"
        if self.learner.adapter is None or self.learner.published is None:
            return "no model yet"
        return None

    async def _export_architecture(self) -> Architecture | None:
        adapter = self.learner.adapter
        if self._architecture is None and adapter is not None:
            self._architecture = await asyncio.to_thread(adapter.export_architecture)
        return self._architecture

    # ------------------------------------------------------------------ asking

    def on_offer(self, record: PeerRecord, offer: ModelOffer | ModelUnavailable) -> str | None:
        """Hand a model offer to the ``sync_model`` call waiting for it."""
        pending = self._pending.get(offer.request_id)
        if pending is None or pending[0] != record.id:
            return "unexpected"
        del self._pending[offer.request_id]
        if not pending[1].done():
            pending[1].set_result(offer)
        return None

    def peer_left(self, peer_id: str) -> None:
        """Fail the requests waiting on a peer that left."""
        for request_id, (owner, future) in list(self._pending.items()):
            if owner == peer_id and not future.done():
                future.set_exception(ModelSyncError(f"peer {peer_id} left"))
                del self._pending[request_id]

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
                pause_end = time.monotonic() + RETRY_PAUSE_S
                wait_end = pause_end if deadline is None else min(deadline, pause_end)
                await self.learner.exchange.arrival.wait_until(wait_end)
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
        wait = self.learner.options.request_timeout
        if deadline is not None:
            wait = max(0.01, min(wait, deadline - time.monotonic()))
        try:
            request = ModelRequest(request_id, self.learner.adapter is None)
            await self.ns._send(record, request)
            answer = await asyncio.wait_for(future, wait)
        finally:
            self._pending.pop(request_id, None)
        if isinstance(answer, ModelUnavailable):
            raise ModelSyncError(f"unavailable ({answer.reason})")
        await self._adopt_offer(answer, peer)
        logger.info("namespace %s: model v%d synced from %s", self.ns.name, answer.version, peer)
        return self.learner.model

    async def _adopt_offer(self, offer: ModelOffer, source: str) -> None:
        learner = self.learner
        if learner.adapter is None:
            if offer.architecture is None:
                raise ModelSyncError("the offer carries no architecture")
            learner.adapter = await asyncio.to_thread(
                _adapter_from_architecture, offer.architecture, offer.arrays, learner
            )
        try:
            check_specs(offer.arrays, learner.adapter.array_specs())
        except WireError as exc:
            raise ModelSyncError(f"the offered weights do not fit the local model: {exc}") from None
        if not all_finite(offer.arrays):
            self.ns.node.stats.dropped["non_finite"] += 1
            raise ModelSyncError("the offered weights hold NaN or infinity")
        learner.adapter.set_arrays(offer.arrays)
        learner.version = max(learner.version, offer.version)
        exchange = learner.exchange
        if source == exchange.center():  # a centre's version bounds the rounds it has pushed
            exchange.global_source = source
            exchange.global_round = max(exchange.global_round, offer.version - 1)
        learner.publish()


def _adapter_from_architecture(
    architecture: Architecture, arrays: Mapping[str, np.ndarray], learner: Learner
) -> ModelAdapter:
    from ..adapters.architecture import adapter_from_architecture

    return adapter_from_architecture(
        architecture,
        arrays,
        registry=learner.ns.node.factories,
        create_optimizer=learner.create_optimizer,
        loss=learner.loss,
    )
