"""Property test: every API awaitable can be cancelled at any moment and leaves nothing behind.

Per example, a fresh 3-node in-memory cluster runs inside its own ``asyncio.run``; one
awaitable of node ``a``'s namespace is started and cancelled after a drawn delay (``task.cancel``
or ``asyncio.wait_for``). It must finish within :data:`GRACE_S` of the cancel, the namespace
must still work afterwards, and once the nodes are closed there must be no task left, no
worker thread alive and no in-memory endpoint still attached.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from scatterbrained.errors import PeerTimeoutError

pytestmark = pytest.mark.timeout(120)

#: Seconds an awaitable may take to finish once it was cancelled.
GRACE_S = 1.0
#: Seconds the leak checks poll before they fail.
SETTLE_S = 2.0
#: Fast options so that follow-up calls stay short.
FAST = {"request_timeout": 2.0, "serve_interval": 0.05, "round_timeout": 3.0}
#: Names of the worker threads of each example's default executor.
THREAD_PREFIX = "cancellation-test-worker"
#: Names of the training lane's thread (see scatterbrained.learning.lane).
LANE_PREFIX = "scatterbrained-train"

TARGETS = ("serve", "train", "train_share_every", "sync_model", "wait_for_peers", "recv")


class Endless:
    """A loader that never runs out (until :meth:`finish`); counts the batches handed out."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.batches = 0
        self._finished = threading.Event()

    def finish(self) -> None:
        """End the current epoch: a failed example must not leave a thread training forever."""
        self._finished.set()

    def __iter__(self) -> Iterator[Any]:
        while not self._finished.is_set():
            for batch in self.inner:
                self.batches += 1
                yield batch


def workers_alive() -> list[threading.Thread]:
    """Threads of the examples' executors and training lanes that are still alive."""
    return [t for t in threading.enumerate() if t.name.startswith((THREAD_PREFIX, LANE_PREFIX))]


async def poll(condition: Callable[[], bool], timeout: float = SETTLE_S) -> bool:
    """True once ``condition()`` holds, False if it did not within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def cancel_once(
    target: str, delay: float, via_wait_for: bool, cluster_factory: Any, mlp: Any, loader: Any
) -> None:
    """One example: start ``target`` on node a, cancel it after ``delay`` s, check the aftermath."""
    endless = Endless(loader(0, 3, 64, batch_size=8))
    try:
        await check_cancel(target, delay, via_wait_for, cluster_factory, mlp, loader, endless)
    except BaseException:
        endless.finish()  # else asyncio.run would wait forever for a leaked training thread
        raise


async def check_cancel(
    target: str,
    delay: float,
    via_wait_for: bool,
    cluster_factory: Any,
    mlp: Any,
    loader: Any,
    endless: Endless,
) -> None:
    # Prepare: a private executor (its threads are the training threads), 3 nodes in "X".
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix=THREAD_PREFIX)
    loop.set_default_executor(executor)
    cluster = cluster_factory()
    async with cluster, asyncio.timeout(15):
        nodes = await cluster.start("a", "b", "c")
        if target == "sync_model":  # a has no model and nobody serves one: the call waits
            specs = [(None, "peer"), (mlp(1), "leeching"), (mlp(2), "leeching")]
        else:
            specs = [(mlp(0), "peer"), (mlp(1), "peer"), (mlp(2), "peer")]
        namespaces = [
            node.namespace("X", model, mode=mode, **FAST)
            for node, (model, mode) in zip(nodes, specs, strict=True)
        ]
        for ns in namespaces:
            await ns.open()
        for ns in namespaces:
            await ns.wait_for_peers(2, timeout=5)
        a, b = namespaces[0], namespaces[1]
        calls = {
            "serve": lambda: a.serve(),
            "train": lambda: a.train(1, endless),
            "train_share_every": lambda: a.train(1, endless, share_every=2),
            "sync_model": lambda: a.sync_model(),
            "wait_for_peers": lambda: a.wait_for_peers(5),  # 2 peers exist
            "recv": lambda: a.recv(),
        }
        version_before = a.version

        # Execute: cancel after the drawn delay, and time how long the call takes to end.
        if via_wait_for:
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(calls[target](), delay)
            late = time.monotonic() - started - delay
        else:
            task = asyncio.ensure_future(calls[target]())
            await asyncio.sleep(delay)
            assert not task.done(), f"{target} ended by itself: {task}"
            cancelled_at = time.monotonic()
            task.cancel()
            await asyncio.wait({task}, timeout=GRACE_S + 1)
            late = time.monotonic() - cancelled_at
            assert task.cancelled(), f"{target} did not end as cancelled: {task}"

        # Assert: it ended in time, and the namespace still works.
        assert late <= GRACE_S, f"{target} took {late:.2f} s to end after the cancel"
        if target.startswith("train"):
            drawn = endless.batches
            await asyncio.sleep(0.05)
            assert endless.batches == drawn, "the training thread still draws batches"
            assert a.epochs_done == 0 and len(a.history) == 0  # the stopped epoch does not count
            await a.train(1, loader(0, 3, 48))
            assert a.epochs_done == 1 and len(a.history) == 1
            assert a.version > version_before
        elif target == "serve":
            await a.serve(duration=0.1)
        elif target == "sync_model":
            with pytest.raises(PeerTimeoutError):
                await a.sync_model(timeout=0.2)
        elif target == "wait_for_peers":
            assert len(await a.wait_for_peers(2, timeout=1)) == 2
        elif target == "recv":  # nothing is lost: the next payload reaches the next recv
            assert await b.send_to("a", b"after-cancel")
            sender, payload = await a.recv(timeout=1)
            assert (sender.id, payload) == ("b", [b"after-cancel"])

        # Close every node; then nothing may be left of them.
        await cluster.close()

    assert cluster.net.addresses == frozenset(), cluster.net.addresses
    assert all(node.transport.bound_port is None for node in nodes)
    assert len(cluster.hub) == 0
    executor.shutdown(wait=False)
    assert await poll(lambda: not workers_alive()), f"threads alive: {workers_alive()}"
    assert await poll(lambda: asyncio.all_tasks() == {asyncio.current_task()}), [
        t.get_name() for t in asyncio.all_tasks() if t is not asyncio.current_task()
    ]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    target=st.sampled_from(TARGETS),
    delay=st.floats(min_value=0.0, max_value=0.5),
    via_wait_for=st.booleans(),
)
@example(target="serve", delay=0.2, via_wait_for=False)
@example(target="train", delay=0.3, via_wait_for=False)
@example(target="train_share_every", delay=0.3, via_wait_for=True)
@example(target="sync_model", delay=0.25, via_wait_for=True)
@example(target="wait_for_peers", delay=0.0, via_wait_for=False)
@example(target="recv", delay=0.1, via_wait_for=False)
def test_any_awaitable_can_be_cancelled_at_any_moment(
    target: str,
    delay: float,
    via_wait_for: bool,
    cluster_factory: Any,
    mlp: Any,
    digit_loader: Any,
) -> None:
    # Prepare
    baseline = threading.active_count()

    # Execute
    asyncio.run(cancel_once(target, delay, via_wait_for, cluster_factory, mlp, digit_loader))

    # Assert: asyncio.run shut the default executor down; no thread outlives the example.
    deadline = time.monotonic() + SETTLE_S
    while threading.active_count() > baseline and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= baseline, threading.enumerate()
