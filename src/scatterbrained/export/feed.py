"""Feed a namespace's ``EpochDone`` events to metrics loggers without blocking the event loop.

``ns.train(..., loggers=[...])`` opens an :class:`EpochFeed` for the duration of the call:
each ``EpochDone`` of the namespace becomes a row (:func:`~.base.record_row`) handed to the
loggers in one worker thread, in order, so a slow disk or tracking server never stalls the
federation. At most :data:`MAX_PENDING` epochs wait for the thread; past that an epoch is
dropped and counted (:attr:`EpochFeed.dropped`). Logger failures are logged and counted by
:class:`~.base.SafeLoggers`, never raised into training.

The loggers belong to the caller: the feed flushes them when ``train`` returns but does not
close them, so one logger can follow several ``train`` calls (close it with ``with``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

from .._tasks import wait_future
from ..events import EpochDone, Event
from .base import MetricsLogger, SafeLoggers, record_row

__all__ = ["DRAIN_TIMEOUT_S", "MAX_PENDING", "EpochFeed"]

logger = logging.getLogger(__name__)

#: Epochs that may wait for the logging thread before new ones are dropped.
MAX_PENDING = 256
#: Seconds ``train`` waits at its end for the loggers to write what is pending.
DRAIN_TIMEOUT_S = 30.0


class EpochFeed:
    """Hands epoch rows to loggers in one background thread (an async context manager).

    Use :meth:`on_event` as an event callback (``ns.subscribe(feed.on_event)``) or call
    :meth:`submit` directly; both must be called on the event loop that opened the feed.

    Args:
        loggers: the :class:`~.base.MetricsLogger` objects (not closed by the feed).
        max_pending: epochs that may wait for the thread (then they are dropped).
        drain_timeout: seconds :meth:`__aexit__` waits for pending epochs after a normal
            exit; after an error or a cancellation it does not wait (the thread still writes
            what is queued).
    """

    def __init__(
        self,
        loggers: Iterable[MetricsLogger],
        *,
        max_pending: int = MAX_PENDING,
        drain_timeout: float = DRAIN_TIMEOUT_S,
    ) -> None:
        self.loggers = SafeLoggers(loggers)
        self.max_pending = max_pending
        self.drain_timeout = drain_timeout
        #: Epochs dropped because the logging thread fell behind.
        self.dropped = 0
        self._pending: list[Future[None]] = []
        self._executor: ThreadPoolExecutor | None = None

    def on_event(self, event: Event) -> None:
        """Submit the record of an :class:`~scatterbrained.events.EpochDone`; ignore others."""
        if isinstance(event, EpochDone):
            self.submit(event.record.epoch, [record_row(event.node, event.record)])

    def submit(self, epoch: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Queue ``rows`` of ``epoch`` for the loggers; never blocks, never raises."""
        if self._executor is None:
            logger.warning("metrics feed is not open: epoch %d not logged", epoch)
            return
        self._pending = [f for f in self._pending if not f.done()]
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            logger.warning(
                "metrics loggers are %d epochs behind: epoch %d not logged (%d dropped)",
                len(self._pending),
                epoch,
                self.dropped,
            )
            return
        self._pending.append(self._executor.submit(self.loggers.log_epoch, epoch, list(rows)))

    async def __aenter__(self) -> EpochFeed:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="scatterbrained-metrics")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        last = executor.submit(self.loggers.flush)
        executor.shutdown(wait=False)  # queued epochs still run, in order
        if exc_type is not None:
            return
        deadline = time.monotonic() + self.drain_timeout
        if not await wait_future(asyncio.wrap_future(last), deadline):
            logger.warning(
                "metrics loggers did not finish within %.0f s; they keep writing in the background",
                self.drain_timeout,
            )
