"""The training lane: one thread per event loop, jobs one at a time, prompt cancellation."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import scatterbrained as sb
from scatterbrained.learning import lane
from scatterbrained.learning.lane import TrainingLane

pytestmark = pytest.mark.timeout(30)

Run = Callable[..., None]
LANE_PREFIX = "scatterbrained-train"


def lane_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(LANE_PREFIX)]


class Concurrency:
    """Records how many jobs run at once and on which threads."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.threads: set[str] = set()
        self.order: list[int] = []
        self._lock = threading.Lock()

    def job(self, index: int, seconds: float = 0.01) -> int:
        with self._lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.threads.add(threading.current_thread().name)
            self.order.append(index)
        time.sleep(seconds)
        with self._lock:
            self.running -= 1
        return index


def test_jobs_of_one_loop_share_one_thread_and_run_one_at_a_time(arun: Run) -> None:
    async def main() -> None:
        # Prepare: two learners' worth of lane users on one loop.
        first, second = lane.acquire(), lane.acquire()
        seen = Concurrency()

        # Execute: eight jobs submitted at once, from two "learners".
        results = await asyncio.gather(
            *((first if i % 2 else second).run(threading.Event(), seen.job, i) for i in range(8))
        )

        # Assert
        assert first is second and first.shared and first.users == 2
        assert results == list(range(8))
        assert seen.most == 1 and len(seen.threads) == 1
        assert seen.threads.pop().startswith(LANE_PREFIX)
        assert seen.order == list(range(8))  # first come, first served
        first.release()
        second.release()

    arun(main)


def test_the_last_release_ends_the_thread_and_a_new_user_gets_a_new_lane(
    arun: Run, eventually: Any
) -> None:
    async def main() -> None:
        # Prepare
        held = lane.acquire()
        await held.run(threading.Event(), lambda: None)
        assert len(lane_threads()) == 1

        # Execute
        held.release()

        # Assert
        assert held.closed
        await eventually(lambda: not lane_threads(), timeout=5.0, what="lane thread ends")
        with pytest.raises(RuntimeError, match="closed"):
            await held.run(threading.Event(), lambda: None)
        fresh = lane.acquire()
        assert fresh is not held and await fresh.run(threading.Event(), lambda: 7) == 7
        fresh.release()

    arun(main)


def test_each_event_loop_has_its_own_lane() -> None:
    # Prepare / Execute: one lane per asyncio.run, each held until the run ends.
    async def grab() -> tuple[int, str]:
        held = lane.acquire()
        try:
            name = await held.run(threading.Event(), lambda: threading.current_thread().name)
            return id(held), name
        finally:
            held.release()

    lanes = [asyncio.run(grab()), asyncio.run(grab())]

    # Assert
    assert lanes[0][0] != lanes[1][0]
    assert all(name.startswith(LANE_PREFIX) for _, name in lanes)


def test_a_cancelled_job_still_queued_never_runs_and_returns_at_once(
    arun: Run, eventually: Any
) -> None:
    async def main() -> None:
        # Prepare: a job that holds the lane until released, and one queued behind it.
        training = lane.acquire()
        gate, started = threading.Event(), threading.Event()
        ran: list[str] = []

        def blocker() -> None:
            started.set()
            gate.wait(10)

        blocking = asyncio.ensure_future(training.run(threading.Event(), blocker))
        await eventually(started.is_set, timeout=5.0, what="job started")

        # Execute: the queued job times out while the lane is busy.
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(training.run(threading.Event(), ran.append, "queued"), 0.1)
        waited = time.monotonic() - began

        # Assert: it ended with its deadline, not with the blocker, and never ran.
        assert waited < 2.0
        gate.set()
        await blocking
        await training.run(threading.Event(), lambda: None)  # the lane goes on
        assert ran == []
        training.release()

    arun(main)


def test_a_cancelled_running_job_is_asked_to_stop_and_waited_for(
    arun: Run, eventually: Any
) -> None:
    async def main() -> None:
        # Prepare: a job that runs until its stop event is set.
        training = lane.acquire()
        stop, started, finished = threading.Event(), threading.Event(), threading.Event()

        def until_stopped() -> None:
            started.set()
            while not stop.wait(0.005):
                pass
            finished.set()

        task = asyncio.ensure_future(training.run(stop, until_stopped))
        await eventually(started.is_set, timeout=5.0, what="job started")

        # Execute
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        # Assert: the job had ended before the cancellation reached the caller.
        assert stop.is_set() and finished.is_set()
        training.release()

    arun(main)


def test_a_job_error_reaches_its_caller_and_the_lane_goes_on(arun: Run) -> None:
    async def main() -> None:
        training = lane.acquire()

        def fail() -> None:
            raise ValueError("bad batch")

        with pytest.raises(ValueError, match="bad batch"):
            await training.run(threading.Event(), fail)
        assert await training.run(threading.Event(), lambda: 3) == 3
        training.release()

    arun(main)


def test_set_ups_run_once_on_the_lanes_thread_and_a_failure_is_only_logged(
    arun: Run, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        # Prepare
        training = TrainingLane().hold()
        calls: list[str] = []

        def setup() -> None:
            calls.append(threading.current_thread().name)

        def broken() -> None:
            raise OSError("no OpenMP here")

        # Execute: set-ups run before the next job, once per thread, whatever is asked.
        training.prepare("tune", setup)
        training.prepare("tune", setup)
        training.prepare("broken", broken)
        with caplog.at_level(logging.WARNING, logger="scatterbrained.learning.lane"):
            for _ in range(3):
                assert await training.run(None, lambda: 5) == 5

        # Assert
        assert len(calls) == 1 and calls[0].startswith(LANE_PREFIX)
        assert "set-up 'broken' failed" in caplog.text
        training.release()

    arun(main)


class ThreadSpyLoader:
    """A loader that records the thread that iterates it and how many iterate at once."""

    def __init__(self, inner: Any, seen: Concurrency) -> None:
        self.inner, self.seen = inner, seen

    def __iter__(self) -> Iterator[Any]:
        for batch in self.inner:
            self.seen.job(0, seconds=0.0005)
            yield batch


def test_in_process_nodes_train_on_one_thread_taking_turns(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, eventually: Any
) -> None:
    async def main() -> None:
        # Prepare: three nodes of one process, gossip and share_every both.
        seen = Concurrency()
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b", "c")
            spaces = [n.namespace("X", mlp(i), round_timeout=3.0) for i, n in enumerate(nodes)]
            for ns in spaces:
                await ns.open()
            for ns in spaces:
                await ns.wait_for_peers(2, timeout=5)

            # Execute
            await asyncio.gather(
                *(
                    ns.train(2, ThreadSpyLoader(digit_loader(i, 3, 64), seen), share_every=1)
                    for i, ns in enumerate(spaces)
                )
            )

            # Assert: one lane thread, never two batches at once, every node trained.
            assert len(seen.threads) == 1 and seen.threads.pop().startswith(LANE_PREFIX)
            assert seen.most == 1
            assert [ns.epochs_done for ns in spaces] == [2, 2, 2]
        await eventually(lambda: not lane_threads(), timeout=5.0, what="lane thread ends")

    arun(main, timeout=25)


class Held:
    """A loader whose epoch lasts until :meth:`release` (it keeps the lane busy)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.started = threading.Event()
        self._released = threading.Event()

    def release(self) -> None:
        self._released.set()

    def __iter__(self) -> Iterator[Any]:
        self.started.set()
        while not self._released.wait(0.002):
            yield from self.inner


async def two_open(cluster: Any, mlp: Any) -> list[Any]:
    """Namespace "X" open on two started nodes "a" and "b"."""
    spaces = [n.namespace("X", mlp(i)) for i, n in enumerate(await cluster.start("a", "b"))]
    for ns in spaces:
        await ns.open()
    return spaces


def test_a_train_call_queued_behind_another_nodes_epoch_can_be_cancelled_at_once(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, eventually: Any
) -> None:
    async def main() -> None:
        # Prepare: b's epoch holds the lane; a's train call waits behind it.
        async with cluster_factory() as cluster:
            a, b = await two_open(cluster, mlp)
            held = Held(digit_loader(1, 2, 32))
            busy = asyncio.ensure_future(b.train(1, held))
            await eventually(held.started.is_set, timeout=5.0, what="epoch started")

            # Execute
            began = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(a.train(1, digit_loader(0, 2, 32)), 0.2)
            waited = time.monotonic() - began

            # Assert: a's call ended with its deadline, b goes on, a trains afterwards.
            assert waited < 2.0 and not busy.done()
            assert a.epochs_done == 0
            held.release()
            await busy
            await a.train(1, digit_loader(0, 2, 32))
            assert (a.epochs_done, b.epochs_done) == (1, 1)

    arun(main, timeout=25)


def test_closing_a_namespace_during_its_training_stops_it_with_a_typed_error(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, eventually: Any
) -> None:
    async def main() -> None:
        # Prepare: a's epoch runs until stopped; b's waits behind it on the lane.
        async with cluster_factory() as cluster:
            a, b = await two_open(cluster, mlp)
            held = Held(digit_loader(0, 2, 32))
            running = asyncio.ensure_future(a.train(3, held))
            await eventually(held.started.is_set, timeout=5.0, what="epoch started")
            queued = asyncio.ensure_future(b.train(1, digit_loader(1, 2, 32), share_every=1))

            # Execute: close both while a trains and b waits.
            await a.close()
            await b.close()
            outcomes = await asyncio.gather(running, queued, return_exceptions=True)
            held.release()

            # Assert: each call says its namespace was closed; no epoch counted; later
            # calls refuse at once; the lane's thread ends.
            for outcome in outcomes:
                assert isinstance(outcome, sb.ScatterbrainedError), outcome
                assert "was closed" in str(outcome)
            assert (a.epochs_done, b.epochs_done) == (0, 0)
            with pytest.raises(sb.ScatterbrainedError, match="was closed"):
                await a.train(1, digit_loader(0, 2, 32))
        await eventually(lambda: not lane_threads(), timeout=5.0, what="lane thread ends")

    arun(main, timeout=25)


@pytest.mark.parametrize("every", [0, 2.0, True, "3"])
def test_share_every_must_be_a_whole_number_of_steps(
    every: Any, arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            with pytest.raises(sb.ConfigurationError, match="share_every"):
                node.namespace("Y", mlp(0), share_every=every)
            ns = node.namespace("X", mlp(0))
            await ns.open()
            with pytest.raises(sb.ConfigurationError, match="share_every"):
                await ns.train(1, digit_loader(0, 2, 32), share_every=every)

    arun(main)


def test_share_every_covers_the_whole_epoch_in_chunks(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        # Prepare: 5 batches of 16, chunks of 2: exchanges after batches 2 and 4.
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            ns = node.namespace("X", mlp(0))
            await ns.open()

            # Execute
            history = await ns.train(2, digit_loader(0, 2, 80, batch_size=16), share_every=2)

            # Assert: every sample of both epochs was trained on, the loss is one number.
            assert [r.samples for r in history] == [80, 80]
            assert all(np.isfinite(r.train_loss) for r in history)
            assert ns.learner.exchange.round == 4  # two exchanges an epoch, none at the end

    arun(main)
