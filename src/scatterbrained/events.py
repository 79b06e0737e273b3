"""The event stream of a node: what happened, as typed frozen dataclasses.

Every node has one :class:`EventBus`. Its layers *emit* events (a peer joined, an update was
received or dropped, a merge, a round that timed out, a mode switch, a synced model, an
epoch done); users and the library's own views *consume* them:

* ``node.events()`` / ``ns.events()``: async iterators (bounded queues; when a consumer falls
  behind, the oldest events are dropped and counted in :attr:`EventBus.lost`);
* ``node.subscribe(fn)`` / ``ns.subscribe(fn)``: a synchronous callback per event (called on
  the event loop; an exception in it is logged and never reaches the emitter);
* :class:`~scatterbrained.stats.NodeStats` and :class:`~scatterbrained.history.History` are
  views built from the same events, so counters and records never disagree with the stream.

This module is the ground floor: it imports nothing from the rest of the package except
:mod:`.types`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from typing import Any

from .types import Identity

__all__ = [
    "EpochDone",
    "Event",
    "EventBus",
    "Merged",
    "MessageDropped",
    "MessageReceived",
    "MessageSent",
    "ModeSwitched",
    "ModelChanged",
    "ModelSynced",
    "PeerJoined",
    "PeerLeft",
    "RoundTimedOut",
    "UpdateDropped",
    "UpdateReceived",
]

logger = logging.getLogger(__name__)

#: Events an async consumer may lag behind before the oldest are dropped.
DEFAULT_QUEUE_SIZE = 4096
#: Async consumers and callbacks one bus accepts (a bound like every other table).
MAX_CONSUMERS = 256


@dataclass(frozen=True)
class Event:
    """Base of every event.

    Attributes:
        node: the id of the node that emitted it.
        namespace: the namespace it concerns (``""`` for node-level events).
    """

    node: str
    namespace: str


@dataclass(frozen=True)
class PeerJoined(Event):
    """A peer became a member of ``namespace``."""

    peer: Identity


@dataclass(frozen=True)
class PeerLeft(Event):
    """A peer stopped being a member of ``namespace`` (Bye, timeout, mode, filter)."""

    peer: Identity


@dataclass(frozen=True)
class MessageReceived(Event):
    """A multipart message arrived (valid or not); ``nbytes`` is its size in bytes."""

    nbytes: int


@dataclass(frozen=True)
class MessageSent(Event):
    """A message was queued to a peer's connection; ``nbytes`` is its size in bytes."""

    peer: str
    nbytes: int


@dataclass(frozen=True)
class MessageDropped(Event):
    """A message was refused; ``reason`` is a short tag (``header``, ``replay``, ...)."""

    reason: str
    sender: str = ""


@dataclass(frozen=True)
class UpdateReceived(Event):
    """A peer's weights were stored for merging."""

    sender: str
    round: int
    samples: int


@dataclass(frozen=True)
class UpdateDropped(Event):
    """A peer's weights were refused or discarded (``stale``, ``specs``, ``non_finite``...)."""

    sender: str
    reason: str


@dataclass(frozen=True)
class Merged(Event):
    """An aggregation ran: ``offered`` senders were given to the aggregator, ``used`` counted.

    ``changed`` is False when the result equalled the model within the merge tolerance (then
    the version does not move and nothing is pushed).
    """

    round: int
    offered: tuple[str, ...]
    used: tuple[str, ...]
    changed: bool = True


@dataclass(frozen=True)
class RoundTimedOut(Event):
    """A wait for round ``round`` ended at its deadline with ``arrived`` of ``expected``."""

    round: int
    expected: tuple[str, ...]
    arrived: tuple[str, ...]


@dataclass(frozen=True)
class ModeSwitched(Event):
    """The namespace's operating mode changed (``old``/``new`` are mode names)."""

    old: str
    new: str
    reason: str


@dataclass(frozen=True)
class ModelChanged(Event):
    """The model's weights or version changed (``reason``: train, merge, adopt, restore)."""

    version: int
    reason: str


@dataclass(frozen=True)
class ModelSynced(Event):
    """``sync_model`` adopted version ``version`` from ``source``."""

    source: str
    version: int


@dataclass(frozen=True)
class EpochDone(Event):
    """A local epoch finished; ``record`` is its :class:`~scatterbrained.history.EpochRecord`."""

    record: Any = field(compare=False)


class EventBus:
    """Fan-out of one node's events to callbacks and bounded async queues.

    Loop-bound like every asyncio primitive: emit on the node's event loop.
    """

    def __init__(self) -> None:
        self._callbacks: list[Callable[[Event], Any]] = []
        self._queues: list[tuple[Callable[[Event], bool] | None, asyncio.Queue[Event]]] = []
        #: Events dropped because an async consumer fell behind (oldest first).
        self.lost = 0

    @property
    def streams(self) -> int:
        """How many async consumers (``events()`` iterators) are open now."""
        return len(self._queues)

    def emit(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber; never raises."""
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                logger.exception("event callback %r failed on %s", callback, type(event).__name__)
        for accept, queue in self._queues:
            if accept is not None and not accept(event):
                continue
            if queue.full():
                queue.get_nowait()
                self.lost += 1
            queue.put_nowait(event)

    def subscribe(self, callback: Callable[[Event], Any]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event from now on; returns an unsubscriber.

        Raises:
            RuntimeError: more than :data:`MAX_CONSUMERS` subscribers.
        """
        if len(self._callbacks) >= MAX_CONSUMERS:
            raise RuntimeError(f"at most {MAX_CONSUMERS} event callbacks per node")
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    async def stream(
        self,
        accept: Callable[[Event], bool] | None = None,
        maxsize: int = DEFAULT_QUEUE_SIZE,
    ) -> AsyncGenerator[Event, None]:
        """Iterate over events from now on (those ``accept`` returns True for).

        Args:
            accept: a filter; ``None`` takes every event.
            maxsize: events kept while the consumer lags (the oldest are dropped).

        Raises:
            RuntimeError: more than :data:`MAX_CONSUMERS` concurrent streams.
        """
        if len(self._queues) >= MAX_CONSUMERS:
            raise RuntimeError(f"at most {MAX_CONSUMERS} concurrent event streams per node")
        entry: tuple[Callable[[Event], bool] | None, asyncio.Queue[Event]] = (
            accept,
            asyncio.Queue(maxsize),
        )
        self._queues.append(entry)
        try:
            while True:
                yield await entry[1].get()
        finally:
            self._queues.remove(entry)
