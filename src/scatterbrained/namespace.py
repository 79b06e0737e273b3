"""A namespace: one federation as seen from one node.

The namespace holds the membership (who else is in the namespace), enforces the node's
operating mode on everything it sends and accepts, and exposes the raw community
(``peers``, ``wait_for_peers``, ``send_to``, ``recv``, peer events). Learning
(``train``/``serve``/``sync_model``) lives in :mod:`scatterbrained.learning` and is reached
through the same object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._tasks import Pulse
from .errors import ConfigurationError, ModeError, PeerTimeoutError
from .federation.modes import ModeController
from .federation.policies import Policy, PolicyState, as_policy
from .learning import Learner, LearningOptions
from .node import GOODBYE_TIMEOUT
from .peers import PeerRecord
from .types import Identity, OperatingMode
from .wire.messages import (
    Bye,
    Message,
    ModelOffer,
    ModelRequest,
    ModelUnavailable,
    ModelUpdate,
    Raw,
)

if TYPE_CHECKING:
    from .history import History
    from .node import Node

__all__ = ["Namespace", "PeerEvent"]

logger = logging.getLogger(__name__)

PeerFilter = Callable[[Identity], bool]


class PeerEvent:
    """A peer joined or left the namespace.

    Attributes:
        kind: ``"joined"`` or ``"left"``.
        peer: the peer's identity.
    """

    __slots__ = ("kind", "peer")

    def __init__(self, kind: str, peer: Identity) -> None:
        self.kind = kind
        self.peer = peer

    def __repr__(self) -> str:
        return f"PeerEvent({self.kind!r}, {self.peer})"


class Namespace:
    """One node's membership in one federation (create with ``node.namespace(...)``).

    Every option is also an attribute that may be changed while the namespace runs.

    Args:
        node: the owning node.
        name: the namespace name.
        model: the model (PyTorch ``nn.Module``, scikit-learn linear model, or a
            ``ModelAdapter``); ``None`` for a node that will ``sync_model()``.
        create_optimizer: ``params -> torch optimizer`` (default Adam, lr 1e-3).
        topology: who sends to whom (default ``FullyConnected()``).
        mode: initial ``OperatingMode`` (default ``PEER``).
        policy: a policy (or ``(PolicyState) -> mode`` callable) that switches the mode.
        aggregator: how received weights are merged (default sample-weighted ``FedAvg()``).
        loss: the loss function (inferred from the targets when ``None``).
        peer_filter: ``Identity -> bool``; peers for which it is False are ignored.
        **learning: see :class:`~scatterbrained.learning.LearningOptions` (``sync``,
            ``round_timeout``, ``min_peers``, ``share_every``, ``privacy``, ``pairing``,
            ``checkpoint_dir``, ``example_input``, ``factory``, ...).

    Raises:
        ConfigurationError: an option is invalid or unknown.
    """

    def __init__(
        self,
        node: Node,
        name: str,
        model: Any = None,
        create_optimizer: Any = None,
        *,
        topology: Any = None,
        mode: OperatingMode | str = OperatingMode.PEER,
        policy: Policy | Callable[[PolicyState], Any] | None = None,
        aggregator: Any = None,
        loss: Any = None,
        peer_filter: PeerFilter | None = None,
        recv_queue_size: int = 1024,
        **learning: Any,
    ) -> None:
        from .federation.aggregation import FedAvg
        from .federation.topology import FullyConnected

        self.node = node
        self.name = name
        try:
            initial = OperatingMode.parse(mode)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        self._modes = ModeController(initial, as_policy(policy) if policy is not None else None)
        self.topology = topology if topology is not None else FullyConnected()
        self.aggregator = aggregator if aggregator is not None else FedAvg()
        self.peer_filter = peer_filter
        self._members: dict[str, Identity] = {}
        self._membership = Pulse()  # fired on every change
        self._raw: asyncio.Queue[tuple[Identity, list[bytes]]] = asyncio.Queue(recv_queue_size)
        self._event_queues: list[asyncio.Queue[PeerEvent]] = []
        self._callbacks: list[Callable[[PeerEvent], Any]] = []
        self.bytes_sent = 0
        self.bytes_received = 0
        self.dropped_raw = 0
        self._open = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.learner = Learner(
            self, model, create_optimizer, loss, LearningOptions.from_kwargs(learning)
        )

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Namespace:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Join the namespace: register with the node and announce it."""
        if self._open:
            return
        await self.learner.open()
        self._loop = asyncio.get_running_loop()
        self._modes.evaluate(self.learner.policy_state())  # e.g. LeechUntil starts LEECHING
        self.node._register(self)
        self._open = True
        logger.info("node %s joined namespace %s as %s", self.node.id, self.name, self.mode.value)

    async def close(self) -> None:
        """Leave the namespace: say Bye to the members and stop background work. Idempotent."""
        if not self._open:
            return
        self._open = False
        await self.learner.close()
        members = [self.node.peers.get(i) for i in list(self._members)]
        await asyncio.gather(
            *(
                self.node._send_record(r, self.name, Bye("leaving"), GOODBYE_TIMEOUT)
                for r in members
                if r is not None
            ),
            return_exceptions=True,
        )
        self.node._unregister(self)
        for peer in list(self._members.values()):
            self._emit(PeerEvent("left", peer))
        self._members.clear()

    # ------------------------------------------------------------------ mode

    @property
    def mode(self) -> OperatingMode:
        """The current operating mode; assign an ``OperatingMode`` (or its name) to change it.

        Raises (on assignment):
            ConfigurationError: the value names no mode.
        """
        return self._modes.mode

    @mode.setter
    def mode(self, value: OperatingMode | str) -> None:
        try:
            new = OperatingMode.parse(value)
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        try:
            in_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            in_loop = False
        if in_loop or self._loop is None:
            self._set_mode(new)
        else:  # from the training thread (a step hook, a loader): apply on the event loop
            self._loop.call_soon_threadsafe(self._set_mode, new)

    def _set_mode(self, new: OperatingMode) -> None:
        if self._modes.set_manual(new, "set by hand") and self._open:
            self.node._mode_changed()

    @property
    def mode_history(self) -> list[Any]:
        """Every mode switch so far (``ModeSwitch`` records)."""
        return list(self._modes.history)

    @property
    def policy(self) -> Policy | None:
        """The mode policy, or ``None``; assign a policy or callable to replace it."""
        return self._modes.policy

    @policy.setter
    def policy(self, value: Policy | Callable[[PolicyState], Any] | None) -> None:
        self._modes.policy = as_policy(value) if value is not None else None

    def _apply_policy(self, state: PolicyState) -> str | None:
        switch = self._modes.evaluate(state)
        if switch is None:
            return None
        self.node._mode_changed()
        return f"{switch.old.value}->{switch.new.value} ({switch.reason})"

    # ------------------------------------------------------------------ model access

    @property
    def model(self) -> Any:
        """The model trained and shared here (``None`` until set or ``sync_model``)."""
        return self.learner.model

    @property
    def version(self) -> int:
        """The model version: rounds of training/merging done."""
        return self.learner.version

    @property
    def epochs_done(self) -> int:
        """Local epochs trained so far (restored from a checkpoint after a restart)."""
        return self.learner.epochs_done

    @property
    def history(self) -> History:
        """Per-epoch records of every ``train`` call so far."""
        return self.learner.history

    async def train(
        self, epochs: int, trainloader: Any, validloader: Any = None, **kw: Any
    ) -> History:
        """Train locally for ``epochs`` epochs while federating; see ``Learner.train``."""
        return await self.learner.train(epochs, trainloader, validloader, **kw)

    async def serve(self, duration: float | None = None) -> None:
        """Keep sharing, merging and serving the model; see ``Learner.serve``."""
        await self.learner.serve(duration)

    async def sync_model(self, timeout: float | None = None) -> Any:
        """Download the model from a peer; see ``Learner.sync_model``."""
        return await self.learner.sync_model(timeout)

    async def checkpoint(self, path: str | Path) -> Path:
        """Save weights, optimizer state, epoch and mode atomically to ``path``."""
        return await self.learner.checkpoint(path)

    async def restore(self, path: str | Path) -> None:
        """Load what :meth:`checkpoint` saved."""
        await self.learner.restore(path)

    # ------------------------------------------------------------------ membership

    @property
    def peers(self) -> set[Identity]:
        """The peers currently in this namespace (not including this node)."""
        return set(self._members.values())

    def peer_mode(self, peer_id: str) -> OperatingMode | None:
        """The mode ``peer_id`` last announced here, or ``None`` if it is not a member."""
        record = self.node.peers.get(peer_id)
        return record.mode_in(self.name) if record is not None else None

    def _is_member(self, record: PeerRecord) -> bool:
        mode = record.mode_in(self.name)
        if mode is None or mode is OperatingMode.OFFLINE:
            return False
        if self.peer_filter is None:
            return True
        try:
            return bool(self.peer_filter(record.identity(self.name)))
        except Exception:
            logger.exception("peer_filter raised for %s; treating it as excluded", record.id)
            return False

    def _update_member(self, record: PeerRecord) -> None:
        """Re-evaluate whether ``record`` is a member (called by the node)."""
        before = self._members.get(record.id)
        now = record.identity(self.name) if self._is_member(record) else None
        if before == now:
            if now is not None:
                self.learner.wake()  # its mode may have changed: waits re-check senders
            return
        if before is not None:
            del self._members[record.id]
            self.learner.peer_left(record.id)
            self._emit(PeerEvent("left", before))
        if now is not None:
            self._members[record.id] = now
            self._emit(PeerEvent("joined", now))
        self.learner.wake()
        self._notify_membership()

    def _notify_membership(self) -> None:
        """Wake every ``wait_for_peers`` call (they re-check their condition)."""
        self._membership.fire()

    def _emit(self, event: PeerEvent) -> None:
        logger.info(
            "node %s, namespace %s: peer %s %s", self.node.id, self.name, event.peer.id, event.kind
        )
        for queue in self._event_queues:
            if queue.full():
                queue.get_nowait()
            queue.put_nowait(event)
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("peer event callback failed")

    def on_peer_change(self, callback: Callable[[PeerEvent], Any]) -> Callable[[], None]:
        """Call ``callback(PeerEvent)`` whenever a peer joins or leaves; returns an unsubscriber."""
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback)

    async def peer_events(self, maxsize: int = 256) -> AsyncIterator[PeerEvent]:
        """Iterate over peer join/leave events from now on (oldest dropped past ``maxsize``)."""
        queue: asyncio.Queue[PeerEvent] = asyncio.Queue(maxsize)
        self._event_queues.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._event_queues.remove(queue)

    async def wait_for_peers(
        self,
        n: int | Collection[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> set[Identity]:
        """Wait until ``n`` peers (an int) or the peers with the given ids are present.

        Args:
            n: how many peers (default 1), or a collection of node ids that must all be here.
            timeout: seconds to wait; ``None`` waits until cancelled.

        Returns:
            The peers present when the condition held.

        Raises:
            PeerTimeoutError: the condition did not hold within ``timeout``; the message says
                who is here.
        """
        wanted_ids = None if n is None or isinstance(n, int) else set(n)
        count = 1 if n is None else n if isinstance(n, int) else 0

        def satisfied() -> bool:
            if wanted_ids is not None:
                return wanted_ids <= set(self._members)
            return len(self._members) >= count

        async def wait() -> None:
            while not satisfied():
                await self._membership.wait()

        try:
            await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            want = sorted(wanted_ids) if wanted_ids is not None else f"{count} peer(s)"
            raise PeerTimeoutError(
                f"namespace {self.name!r}: waited {timeout} s for {want}, "
                f"present: {sorted(self._members) or 'nobody'}; check that the peers run, "
                "share this namespace name and the discovery scope"
            ) from None
        return self.peers

    # ------------------------------------------------------------------ raw payloads

    def _record_for(self, peer: Identity | str) -> PeerRecord:
        peer_id = peer.id if isinstance(peer, Identity) else peer
        record = self.node.peers.get(peer_id)
        if record is None or peer_id not in self._members:
            raise ConfigurationError(
                f"{peer_id!r} is not a peer in namespace {self.name!r} "
                f"(present: {sorted(self._members) or 'nobody'}); use ns.wait_for_peers() first"
            )
        return record

    async def send_to(self, peer: Identity | str, *payload: bytes) -> bool:
        """Send raw frames to one peer of this namespace.

        Returns:
            True when queued, False when dropped because the peer's queue stayed full.

        Raises:
            ModeError: the mode does not send (LEECHING or OFFLINE).
            ConfigurationError: ``peer`` is not a member of the namespace.
        """
        if not self.mode.sends:
            raise ModeError(
                f"namespace {self.name!r} is {self.mode.value}: it does not send payloads; "
                "set ns.mode to PEER or SEEDING to send"
            )
        record = self._record_for(peer)
        return await self._send(record, Raw(tuple(payload)))

    async def recv(self, timeout: float | None = None) -> tuple[Identity, list[bytes]]:
        """Wait for the next raw payload sent to this node in this namespace.

        Raises:
            PeerTimeoutError: nothing arrived within ``timeout`` seconds.
        """
        try:
            return await asyncio.wait_for(self._raw.get(), timeout)
        except asyncio.TimeoutError:
            raise PeerTimeoutError(
                f"namespace {self.name!r}: no payload within {timeout} s"
            ) from None

    async def _send(self, record: PeerRecord, body: Any) -> bool:
        sent = await self.node._send_record(record, self.name, body)
        self.bytes_sent += sent
        return sent > 0

    # ------------------------------------------------------------------ inbound

    def _deliver(self, record: PeerRecord, message: Message, nbytes: int) -> str | None:
        """Handle a message for this namespace; return a drop reason or ``None``."""
        if record.id not in self._members:
            return "not_member"
        if self.mode is OperatingMode.OFFLINE:
            return "mode"
        self.bytes_received += nbytes
        body = message.body
        if isinstance(body, Raw):
            if not self.mode.receives:
                return "mode"
            if self._raw.full():
                self.dropped_raw += 1
                return "queue_full"
            self._raw.put_nowait((self._members[record.id], [bytes(p) for p in body.payload]))
            return None
        if isinstance(body, ModelUpdate):
            return self.learner.on_update(record, body, time.monotonic())
        if isinstance(body, ModelRequest):
            return self.learner.on_request(record, body)
        if isinstance(body, (ModelOffer, ModelUnavailable)):
            return self.learner.on_offer(record, body)
        return "kind"
