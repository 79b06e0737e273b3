"""The training lane: one thread per event loop that runs every learner's model work.

Local training and evaluation run off the event loop, in a worker thread. Every learner on
one event loop (all the namespaces of all the nodes a process runs on that loop) shares one
such thread, and its jobs run one at a time, first come first served, so the nodes of an
in-process federation take turns epoch by epoch. One thread is faster than one per node:

* Python holds the GIL for most of a small model's step (batching, autograd bookkeeping,
  the optimizer loop), so two training threads cannot run at once; they only hand the GIL
  back and forth, and every hand-over costs;
* PyTorch's CPU kernels use OpenMP, and every thread that enters a parallel region gets its
  own team of OpenMP workers; with more workers than cores, OpenMP stops spinning between
  regions and sleeps instead, so each of the many small kernels of a step pays a wake-up.

Measured on 2 cores (fmnist16 of ``benchmarks/convergence.py``: 16 nodes, MLP 784-128-10,
batch 32): 16 local epochs take 2.1-2.2 s on a pool of 6 or 16 threads, 2.4 s on one thread
once another thread ran a parallel kernel, and 1.1-1.4 s on one thread alone, as much as
one centralized epoch over the same data. So the event-loop side of a learner never runs a
PyTorch kernel (weights move between NumPy and the model by plain memory copies) and the
lane is the only thread that trains.

The lane's thread needs the GIL between kernels, and a busy event loop keeps it for up to
the interpreter's switch interval (5 ms) at each hand-over: with hundreds of in-process
nodes, whose membership keeps the loop busy, that dominated (1,000 nodes of
``benchmarks/scale.py``: 88 s an epoch against 27.6 s with a 0.5 ms interval). The
simulator shortens the interval while it runs (:func:`scatterbrained.sim.inprocess.
short_gil_turns`); a script of its own with that many nodes can call
``sys.setswitchinterval(0.0005)``.

A lane is shared per event loop and counted: :func:`acquire` on a learner's first use,
:meth:`TrainingLane.release` when it closes; the thread ends when the last user releases
it. A cancelled job that has not started is dropped from the queue; a running one is asked
to stop (the training step hook checks ``stop``) and waited for, so a cancelled call returns
within one optimizer step and the thread never outlives it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["TrainingLane", "acquire"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_LANES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TrainingLane] = (
    weakref.WeakKeyDictionary()
)
_LANES_LOCK = threading.Lock()


class TrainingLane:
    """One worker thread that runs model work (training, evaluation) in arrival order.

    Use :func:`acquire` to get the lane of the running event loop; construct one directly
    only for a private lane (tests).
    """

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="scatterbrained-train"
        )
        self._users = 0
        self._closed = False
        self._setups: dict[str, Callable[[], object]] = {}
        self._ran: set[str] = set()  # set-ups run so far (read and written on the thread)

    @property
    def users(self) -> int:
        """How many learners hold this lane."""
        return self._users

    @property
    def closed(self) -> bool:
        """True once the last user released the lane (its thread is ending)."""
        return self._closed

    async def run(
        self, stop: threading.Event | None, fn: Callable[..., T], *args: Any, **kw: Any
    ) -> T:
        """Run ``fn(*args, **kw)`` on the lane's thread, after the jobs queued before it.

        On cancellation a job still queued is dropped. A running one that takes a ``stop``
        event (and checks it now and then, as the training step hook does) gets it set and
        is waited for, so it never outlives the call; one with ``stop=None`` (a job that
        cannot stop half-way) finishes on the lane and its result is dropped. Then the
        cancellation propagates.

        Raises:
            RuntimeError: the lane was released by all its users.
            Exception: whatever ``fn`` raises.
        """
        if self._closed:
            raise RuntimeError("the training lane was closed; acquire a new one")
        job = self._executor.submit(self._on_thread, functools.partial(fn, *args, **kw))
        del fn, args, kw  # a failure's traceback holds this frame: keep it small
        return await _outcome(job, stop)

    @property
    def shared(self) -> bool:
        """True while more than one learner holds the lane (an in-process federation)."""
        return self._users > 1

    def prepare(self, key: str, setup: Callable[[], object]) -> None:
        """Have ``setup()`` run once on the lane's thread, before its next job (e.g. a
        framework making the thread's kernels single-threaded); a key already given is
        ignored. A failing set-up is logged, not raised: it only tunes speed."""
        self._setups.setdefault(key, setup)

    def _on_thread(self, job: Callable[[], T]) -> T:
        """Run the set-ups not run yet, then ``job``."""
        for key, setup in list(self._setups.items()):
            if key not in self._ran:
                self._ran.add(key)
                try:
                    setup()
                except Exception:
                    logger.warning("training lane: set-up %r failed", key, exc_info=True)
        return job()

    def hold(self) -> TrainingLane:
        """Count one more user (call under the registry lock, via :func:`acquire`)."""
        self._users += 1
        return self

    def release(self) -> None:
        """Give the lane back; the last user's release ends its thread once the jobs
        already queued ran (their callers were asked to stop), without blocking the
        caller."""
        with _LANES_LOCK:
            self._users = max(0, self._users - 1)
            if self._users or self._closed:
                return
            self._closed = True
            for loop, lane in list(_LANES.items()):
                if lane is self:
                    del _LANES[loop]
        self._executor.shutdown(wait=False)


async def _outcome(job: concurrent.futures.Future[T], stop: threading.Event | None) -> T:
    """Wait for ``job``; on cancellation drop it if queued, else stop it (when it can be)."""
    future = asyncio.wrap_future(job)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if not job.cancel() and stop is not None:  # running: stop at the next step
            stop.set()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await future
        raise
    finally:
        del job, future  # else: error -> traceback -> this frame -> job -> error, a cycle


def acquire() -> TrainingLane:
    """The training lane of the running event loop, counted as one more user.

    Raises:
        RuntimeError: no event loop is running in this thread.
    """
    loop = asyncio.get_running_loop()
    with _LANES_LOCK:
        lane = _LANES.get(loop)
        if lane is None or lane.closed:
            lane = _LANES[loop] = TrainingLane()
        return lane.hold()
