"""Operating modes bite during training: who merges from whom, over the in-memory network.

Synchronous rounds (``sync=True``) make every merge deterministic: a node waits (bounded) for
the update of each in-neighbour that sends, so "X merged from Y" is exact, not a race.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import scatterbrained as sb
from scatterbrained import OperatingMode

pytestmark = pytest.mark.timeout(20)

Run = Callable[..., None]
FAST = {"sync": True, "round_timeout": 3.0, "request_timeout": 2.0}


async def federation(cluster: Any, modes: dict[str, str], mlp: Any, **options: Any) -> list[Any]:
    """Open namespace "X" on one node per entry of ``modes``; wait until all see each other.

    Nodes in OFFLINE mode are invisible (and silent: they see nobody either), so each
    visible node waits for the visible others only.
    """
    namespaces = []
    for seed, (node_id, mode) in enumerate(modes.items()):
        (node,) = await cluster.start(node_id)
        ns = node.namespace("X", mlp(seed), mode=mode, **{**FAST, **options})
        await ns.open()
        namespaces.append(ns)
    visible = [i for i, m in modes.items() if m != "offline"]
    for ns in namespaces:
        if ns.node.id in visible:
            await ns.wait_for_peers([i for i in visible if i != ns.node.id], timeout=3)
    return namespaces


class SlowLoader:
    """Wraps a loader; sleeps ``pause`` seconds per batch (in the training thread)."""

    def __init__(self, inner: Any, pause: float) -> None:
        self.inner, self.pause = inner, pause

    def __iter__(self) -> Iterator[Any]:
        for batch in self.inner:
            time.sleep(self.pause)
            yield batch


def merged(ns: Any) -> list[set[str]]:
    return [set(record.merged_from) for record in ns.history]


def test_an_offline_node_never_merges_and_nobody_merges_from_it(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            modes = {"a": "peer", "b": "peer", "c": "peer", "off": "offline"}
            namespaces = await federation(cluster, modes, mlp)

            await asyncio.gather(
                *(ns.train(2, digit_loader(i, 4, 64)) for i, ns in enumerate(namespaces))
            )

            *peers, offline = namespaces
            assert merged(offline) == [set(), set()]
            assert offline.peers == set()
            assert offline.bytes_sent == offline.bytes_received == 0
            assert [r.mode for r in offline.history] == ["offline", "offline"]
            for ns in peers:
                others = {"a", "b", "c"} - {ns.node.id}
                assert merged(ns) == [others, others]  # merging works, just not with "off"

    arun(main)


def test_a_seeding_node_sends_but_never_merges(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            namespaces = await federation(
                cluster, {"a": "peer", "b": "peer", "seed": "seeding"}, mlp
            )
            seed_before = namespaces[2].learner.adapter.get_arrays()

            await asyncio.gather(
                *(ns.train(2, digit_loader(i, 3, 64)) for i, ns in enumerate(namespaces))
            )

            a, b, seeder = namespaces
            assert merged(seeder) == [set(), set()]
            assert seeder.bytes_sent > 0
            assert seeder.node.stats.dropped["mode"] == 0  # peers never even sent to it
            assert merged(a) == [{"b", "seed"}] * 2
            assert merged(b) == [{"a", "seed"}] * 2
            after = seeder.learner.adapter.get_arrays()
            assert any(not np.array_equal(seed_before[k], after[k]) for k in after)  # trained

    arun(main)


def test_nobody_merges_from_a_leeching_node(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            namespaces = await federation(
                cluster, {"a": "peer", "b": "peer", "leech": "leeching"}, mlp
            )

            await asyncio.gather(
                *(ns.train(2, digit_loader(i, 3, 64)) for i, ns in enumerate(namespaces))
            )

            a, b, leech = namespaces
            assert merged(leech) == [{"a", "b"}] * 2
            assert leech.bytes_sent == 0
            assert merged(a) == [{"b"}] * 2
            assert merged(b) == [{"a"}] * 2

    arun(main)


def test_leech_until_switches_exactly_when_samples_cross_the_threshold(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, eventually: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            per_epoch = 64
            policy = sb.policies.LeechUntil(samples=2 * per_epoch + 1)  # crossed in epoch 3
            (peer_node, leech_node) = await cluster.start("p", "l")
            peer = peer_node.namespace("X", mlp(0), **FAST)
            leech = leech_node.namespace("X", mlp(1), mode="leeching", policy=policy, **FAST)
            for ns in (peer, leech):
                await ns.open()
            await peer.wait_for_peers(1, timeout=3)
            await leech.wait_for_peers(1, timeout=3)

            async def paced_peer() -> None:  # nobody paces p while l leeches: p waits for l
                for epoch in range(4):
                    await eventually(lambda e=epoch: leech.epochs_done >= e, what="leech epoch")
                    await peer.train(1, digit_loader(0, 2, per_epoch))

            await asyncio.gather(paced_peer(), leech.train(4, digit_loader(1, 2, per_epoch)))

            modes = [r.mode for r in leech.history]
            switches = [r.mode_switches for r in leech.history]
            # Decided at the end of epoch 3 (after its exchange): it sends from epoch 4 on.
            assert modes == ["leeching", "leeching", "leeching", "peer"]
            assert [len(s) for s in switches] == [0, 0, 1, 0]
            assert switches[2][0].startswith("leeching->peer")
            assert leech.learner.samples_seen == 4 * per_epoch
            assert leech.mode is OperatingMode.PEER
            assert [(s.old, s.new) for s in leech.mode_history] == [
                (OperatingMode.LEECHING, OperatingMode.PEER)
            ]
            assert merged(peer)[:3] == [set(), set(), set()]  # not while it leeched
            assert merged(peer)[3] == {"l"}  # and it is merged once it peers
            assert all(m == {"p"} for m in merged(leech))  # it always received

    arun(main)


def test_leech_until_from_the_default_mode_starts_leeching_when_the_namespace_opens(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("l")
            ns = node.namespace("X", mlp(0), policy=sb.policies.LeechUntil(samples=100), **FAST)
            await ns.open()
            mode_when_opened = ns.mode

            await ns.train(2, digit_loader(0, 1, 64))

            assert mode_when_opened is OperatingMode.LEECHING  # before any beacon or exchange
            assert [r.mode for r in ns.history] == ["leeching", "leeching"]
            assert [len(r.mode_switches) for r in ns.history] == [0, 1]
            assert ns.mode is OperatingMode.PEER  # for the next exchange
            assert [(s.at_epoch, s.old, s.new) for s in ns.mode_history] == [
                (0, OperatingMode.PEER, OperatingMode.LEECHING),
                (2, OperatingMode.LEECHING, OperatingMode.PEER),  # after 128 >= 100 samples
            ]

    arun(main)


def test_a_manual_mode_change_during_training_applies_from_the_next_exchange(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, eventually: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a, b = await federation(cluster, {"a": "peer", "b": "peer"}, mlp)
            slow = SlowLoader(digit_loader(0, 2, 64), pause=0.1)  # 2 batches: 0.2 s / epoch

            async def switch_after_first_epoch() -> None:
                await eventually(lambda: len(a.history) == 1, what="first epoch")
                a.mode = "seeding"

            await asyncio.gather(
                a.train(3, slow), b.train(3, digit_loader(1, 2, 64)), switch_after_first_epoch()
            )

            assert [r.mode for r in a.history] == ["peer", "seeding", "seeding"]
            assert merged(a) == [{"b"}, set(), set()]
            assert merged(b) == [{"a"}] * 3  # a still sends while seeding
            assert b.peer_mode("a") is OperatingMode.SEEDING

    arun(main)
