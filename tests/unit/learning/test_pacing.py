"""Bounded, adaptive gossip waits: the pacer, and default gossip on nodes of unequal speed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from scatterbrained.learning.pacing import (
    FACTOR,
    INITIAL_WAIT_S,
    MAX_WAIT_S,
    MIN_WAIT_S,
    RECENT_ROUNDS,
    GossipPacer,
)

Run = Callable[..., None]
pytestmark = pytest.mark.timeout(60)


def test_the_bound_starts_at_one_second_then_follows_complete_waits_only() -> None:
    pacer = GossipPacer()
    first = pacer.bound()
    pacer.observe(0.2, complete=True)
    learned = pacer.bound()
    pacer.observe(4.0, complete=False)  # a straggler does not slow the others down
    after_timeout = pacer.bound()

    assert first == INITIAL_WAIT_S
    assert learned == pytest.approx(FACTOR * 0.2)
    assert after_timeout == learned


def test_the_bound_stays_within_its_limits_and_a_fixed_one_is_kept() -> None:
    fast, slow = GossipPacer(), GossipPacer()
    for _ in range(30):
        fast.observe(0.0, complete=True)
        slow.observe(60.0, complete=True)
    assert fast.bound() == MIN_WAIT_S
    assert slow.bound() == MAX_WAIT_S
    assert GossipPacer(fixed=0.0).bound() == 0.0
    assert GossipPacer(fixed=2.5).bound() == 2.5


@pytest.mark.parametrize(
    ("newest", "round_", "waited"),
    [(8, 10, True), (7, 10, False), (12, 10, True)],
)
def test_only_sources_that_keep_up_are_waited_for(
    newest: int | None, round_: int, waited: bool
) -> None:
    assert GossipPacer().keeps_up("p", newest, round_) is waited


def test_a_source_never_heard_from_is_waited_for_in_its_first_rounds_only() -> None:
    pacer = GossipPacer()
    seen = [pacer.keeps_up("new", None, r) for r in range(10, 10 + RECENT_ROUNDS + 2)]
    pacer.forget("new")  # it restarted: a newcomer again
    again = pacer.keeps_up("new", None, 40)

    assert seen == [True] * RECENT_ROUNDS + [False, False]
    assert again


class SlowBatches:
    """One batch of digits; iterating takes ``delay`` seconds (a slower machine)."""

    def __init__(self, x: Any, y: Any, delay: float) -> None:
        self.x, self.y, self.delay = x, y, delay

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        time.sleep(self.delay)  # runs in the training thread, as a slow step would
        yield self.x, self.y


def test_default_gossip_waits_for_a_slower_peer_within_one_round(
    arun: Run, cluster_factory: Any, mlp: Any
) -> None:
    """Fast nodes never run ahead of a slower one by more than a round, so they merge its
    model every epoch, and nobody stalls for the bound's 5 s maximum."""
    import torch

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((16, 64), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 10, 16))
    epochs = 6

    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b", "slow")
            spaces = [n.namespace("X", mlp(i)) for i, n in enumerate(nodes)]
            for ns in spaces:
                await ns.open()
            for ns in spaces:
                await ns.wait_for_peers(2, timeout=5)
            started = time.monotonic()

            async def run(ns: Any, delay: float) -> None:
                for _ in range(epochs):
                    await ns.train(1, SlowBatches(x, y, delay))

            await asyncio.gather(*(run(ns, d) for ns, d in zip(spaces, (0, 0, 0.15), strict=True)))
            wall = time.monotonic() - started
            merged_slow = [
                sum("slow" in r.merged_from for r in ns.history.records) for ns in spaces[:2]
            ]
            assert min(merged_slow) >= epochs - 1, merged_slow
            assert wall < epochs * 0.15 + MAX_WAIT_S, wall

    arun(main, timeout=50)
