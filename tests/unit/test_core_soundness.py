"""Regression tests of the sound core (issue: serving goes quiet, one owner of model state,
events, cancellation, version advertisement, newcomers in a ring, sync_model's final refusals).

Everything runs on the in-memory twins; tests wait on events or bounded polls, never on sleep.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import scatterbrained as sb
from scatterbrained.events import (
    Merged,
    ModelChanged,
    ModeSwitched,
    PeerJoined,
    UpdateDropped,
    UpdateReceived,
)
from scatterbrained.federation.aggregation import Contribution, Krum, aggregate
from scatterbrained.types import OperatingMode

Run = Callable[..., None]
FAST = {"round_timeout": 3.0, "request_timeout": 2.0, "serve_interval": 0.05}


async def open_namespaces(nodes: list[Any], models: list[Any], **options: Any) -> list[Any]:
    namespaces = [n.namespace("X", m, **options) for n, m in zip(nodes, models, strict=True)]
    for ns in namespaces:
        await ns.open()
    for ns in namespaces:
        await ns.wait_for_peers(len(namespaces) - 1, timeout=5)
    return namespaces


def test_idle_serving_nodes_go_quiet(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    """Nodes that trained once and then only serve stop pushing once their models agree."""

    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b", "c", "d")
            namespaces = await open_namespaces(nodes, [mlp(i) for i in range(4)], **FAST)
            await asyncio.gather(
                *(ns.train(1, digit_loader(i, 4, 64)) for i, ns in enumerate(namespaces))
            )
            serving = [asyncio.ensure_future(ns.serve()) for ns in namespaces]
            try:
                await asyncio.sleep(2.0)  # measured window: let them agree first
                versions = [ns.version for ns in namespaces]
                sent = [n.stats.messages_out for n in nodes]
                await asyncio.sleep(2.0)
                rises = [ns.version - v for ns, v in zip(namespaces, versions, strict=True)]
                rates = [(n.stats.messages_out - s) / 2.0 for n, s in zip(nodes, sent, strict=True)]
            finally:
                for task in serving:
                    task.cancel()
                await asyncio.gather(*serving, return_exceptions=True)

            assert max(rises) <= 3, rises
            assert max(rates) <= 10, rates  # heartbeats only

    arun(main, timeout=30)


@pytest.mark.parametrize("what", ["serve", "train", "sync_model", "wait_for_peers"])
def test_wait_for_returns_in_time_around_every_awaitable(
    what: str, arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    """``asyncio.wait_for(x, t)`` around each API awaitable returns within t + 0.5 s."""

    class Endless:
        """A loader that never runs out within the test (each batch takes a little time)."""

        def __iter__(self) -> Any:
            inner = digit_loader(0, 1, 64, batch_size=8)
            while True:
                yield from inner

    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start(*(f"n{i}" for i in range(8)))
            models = [mlp(i) for i in range(7)] + [None]  # n7 has no model: sync_model waits
            # For sync_model nobody serves (LEECHING), so the call is pending when cancelled.
            mode = "leeching" if what == "sync_model" else "peer"
            namespaces = await open_namespaces(nodes, models, mode=mode, **FAST)
            for _ in range(20):
                start = time.monotonic()
                calls = []
                for ns in namespaces:
                    if what == "serve":
                        calls.append(ns.serve())
                    elif what == "train" and ns.model is not None:
                        calls.append(ns.train(1, Endless()))
                    elif what == "sync_model":
                        calls.append(ns.sync_model())
                    elif what == "wait_for_peers":
                        calls.append(ns.wait_for_peers(99))
                results = await asyncio.gather(
                    *(asyncio.wait_for(c, 0.3) for c in calls), return_exceptions=True
                )
                assert time.monotonic() - start < 0.3 + 0.5
                assert all(isinstance(r, (asyncio.TimeoutError, type(None))) for r in results)

    arun(main, timeout=90)


def test_a_peer_sees_a_new_version_soon_after_an_epoch(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, eventually: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            trainer_node, watcher_node = await cluster.start("t", "w")
            trainer, watcher = await open_namespaces(
                [trainer_node, watcher_node], [mlp(0), None], **FAST
            )
            await trainer.train(3, digit_loader(0, 1, 32))
            done = time.monotonic()

            await eventually(lambda: watcher.peer_version("t") == trainer.version, timeout=2.0)

            assert trainer.version >= 3
            assert time.monotonic() - done < 2.0

    arun(main)


def test_restore_announces_the_restored_mode(
    arun: Run, cluster_factory: Any, mlp: Any, tmp_path: Any, eventually: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a_node, b_node = await cluster.start("a", "b")
            a, b = await open_namespaces([a_node, b_node], [mlp(0), mlp(1)], **FAST)
            a.mode = "seeding"
            path = await a.checkpoint(tmp_path / "a.npz")
            a.mode = "peer"
            await eventually(lambda: b.peer_mode("a") is OperatingMode.PEER)
            switches: list[Any] = []
            a.subscribe(lambda e: switches.append(e) if isinstance(e, ModeSwitched) else None)

            await a.restore(path)

            assert a.mode is OperatingMode.SEEDING
            await eventually(lambda: b.peer_mode("a") is OperatingMode.SEEDING, timeout=2.0)
            assert [(s.old, s.new) for s in switches] == [("peer", "seeding")]

    arun(main)


def test_krum_reports_exactly_the_sender_it_used() -> None:
    rng = np.random.default_rng(0)
    honest = {"w": rng.normal(size=8)}
    local = Contribution(honest, 10, "me")
    near = Contribution({"w": honest["w"] + 0.01}, 10, "near")
    far = Contribution({"w": honest["w"] + 100.0}, 10, "far")
    other = Contribution({"w": honest["w"] - 0.02}, 10, "other")

    result = aggregate(Krum(f=1, m=2), local, [far, near, other])

    assert result.used == ("near",)  # local and near are the two best; far never counts
    assert set(result.arrays) == {"w"}


def test_merged_from_after_krum_is_the_sender_used(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b", "c")
            namespaces = await open_namespaces(
                nodes, [mlp(0), mlp(1), mlp(2)], sync=True, aggregator=Krum(f=1, m=2), **FAST
            )
            merges: list[Merged] = []
            namespaces[0].subscribe(lambda e: merges.append(e) if isinstance(e, Merged) else None)

            histories = await asyncio.gather(
                *(ns.train(1, digit_loader(i, 3, 48)) for i, ns in enumerate(namespaces))
            )

            record = histories[0][0]
            (merge,) = merges
            assert set(merge.offered) == {"b", "c"}
            assert len(merge.used) == 1 and record.merged_from == merge.used

    arun(main)


def test_a_newcomer_without_a_model_never_cuts_a_ring(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    """4-node ring + a joiner without a model: n0 keeps merging n3 every epoch."""

    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("n0", "n1", "n2", "n3", "n4")
            ring = {"topology": sb.topology.Ring(), "sync": True, **FAST}
            namespaces = await open_namespaces(nodes, [mlp(i) for i in range(4)] + [None], **ring)
            trainers = namespaces[:4]

            histories = await asyncio.gather(
                *(ns.train(3, digit_loader(i, 4, 32)) for i, ns in enumerate(trainers))
            )

            assert all("n3" in r.merged_from for r in histories[0])
            assert all("n1" in r.merged_from for r in histories[0])
            assert namespaces[4].model is None

    arun(main, timeout=30)


def test_a_newcomer_that_synced_is_a_sender_before_its_first_update_arrives(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    """A node that got its first model by ``sync_model`` and pushes at once (one short epoch,
    well inside the 0.5 s re-advertisement limit) is never dropped as "not a sender": its
    "I have a model now" reaches each peer before its first update (regression: a restored
    star centre waited ``round_timeout`` for a client whose update it had dropped)."""

    async def main() -> None:
        async with cluster_factory() as cluster:
            owner_node, first_node, newcomer_node = await cluster.start(
                "owner", "first", "newcomer"
            )
            example = {"example_input": np.zeros((2, 64), dtype=np.float32)}
            owner = owner_node.namespace("X", mlp(0), **example, **FAST)
            await owner.open()
            first = first_node.namespace("X", mode="leeching", **FAST)
            await first.open()
            await first.sync_model(timeout=10)  # the owner exports its architecture once
            newcomer = newcomer_node.namespace("X", **FAST)
            await newcomer.open()  # announced now: a later change within 0.5 s is rate-limited
            await newcomer.wait_for_peers(["owner"], timeout=3)
            dropped: list[Any] = []
            owner.subscribe(lambda e: dropped.append(e) if isinstance(e, UpdateDropped) else None)
            received = asyncio.get_running_loop().create_future()

            def on_received(event: Any) -> None:
                if isinstance(event, UpdateReceived) and not received.done():
                    received.set_result(event.sender)

            owner.subscribe(on_received)

            await newcomer.sync_model(timeout=5)
            await newcomer.train(1, digit_loader(1, 2, 16, batch_size=16))

            assert await asyncio.wait_for(received, 3) == "newcomer"
            assert dropped == []

    arun(main, timeout=30)


def test_no_weights_go_to_a_member_without_a_model_and_it_gets_them_once_it_has_one(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    """Weights sent to a member without a model are dropped there, so a serving node does
    not send them, and it does not count them as delivered: once the member announces a
    model (after ``sync_model``), it gets the current version (regression: a newcomer that
    synced while the creator trained kept the version it synced, forever)."""

    async def main() -> None:
        async with cluster_factory() as cluster:
            owner_node, newcomer_node = await cluster.start("owner", "newcomer")
            example = {"example_input": np.zeros((2, 64), dtype=np.float32)}
            owner = owner_node.namespace("X", mlp(0), **example, **FAST)
            newcomer = newcomer_node.namespace("X", **FAST)
            await owner.open()
            await newcomer.open()
            await newcomer.wait_for_peers(["owner"], timeout=3)
            await owner.train(1, digit_loader(0, 2, 32))
            serving = asyncio.ensure_future(owner.serve())
            received = asyncio.get_running_loop().create_future()

            def on_received(event: Any) -> None:
                if isinstance(event, UpdateReceived) and not received.done():
                    received.set_result(event.sender)

            newcomer.subscribe(on_received)
            try:
                await asyncio.sleep(0.5)  # ten serve intervals with a model-less member
                dropped_before_sync = newcomer_node.stats.dropped["no_model"]
                await newcomer.sync_model(timeout=5)
                sender = await asyncio.wait_for(received, 3)
            finally:
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)

            assert dropped_before_sync == 0
            assert sender == "owner"

    arun(main, timeout=30)


def test_an_offer_made_while_training_carries_the_digest_of_its_own_weights(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    """Exporting the architecture for an offer takes a while; a model that trains meanwhile
    commits new weights. The offer's weights, digest and version are read together, so the
    asker never refuses it as "digest" (regression: the joiner of the paper's Fig. 4 waited
    ``request_timeout`` and retried)."""

    async def main() -> None:
        async with cluster_factory() as cluster:
            owner_node, newcomer_node = await cluster.start("owner", "newcomer")
            example = {"example_input": np.zeros((2, 64), dtype=np.float32)}
            owner = owner_node.namespace("X", mlp(0), **example, **FAST)
            newcomer = newcomer_node.namespace("X", mode="leeching", **FAST)
            await owner.open()
            await newcomer.open()
            await newcomer.wait_for_peers(["owner"], timeout=3)
            training = asyncio.ensure_future(owner.train(200, digit_loader(0, 8, 16)))
            try:
                await newcomer.sync_model(timeout=10)
            finally:
                training.cancel()
                await asyncio.gather(training, return_exceptions=True)

            assert newcomer_node.stats.dropped["digest"] == 0
            assert newcomer.model is not None

    arun(main, timeout=30)


def test_sync_model_fails_fast_when_every_peer_cannot_serve_the_architecture(
    arun: Run, cluster_factory: Any, mlp: Any
) -> None:
    """A torch model never trained and without ``example_input`` cannot be exported."""

    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("s1", "s2", "joiner")
            servers = [nodes[i].namespace("X", mlp(i), **FAST) for i in range(2)]
            joiner = nodes[2].namespace("X", **FAST)
            for ns in (*servers, joiner):
                await ns.open()
            await joiner.wait_for_peers(2, timeout=5)
            start = time.monotonic()

            with pytest.raises(sb.ModelSyncError) as raised:
                await joiner.sync_model()

            assert time.monotonic() - start < 2.0
            message = str(raised.value)
            assert "s1" in message and "s2" in message and "not exportable" in message
            assert joiner.model is None

    arun(main)


def test_node_mode_is_the_starting_behaviour_of_its_namespaces(
    arun: Run, cluster_factory: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            node = cluster.node("a", mode="leeching")
            await node.start()
            default = node.namespace("X")
            chosen = node.namespace("Y", mode="seeding")

            assert default.mode is OperatingMode.LEECHING
            assert chosen.mode is OperatingMode.SEEDING
            with pytest.raises(sb.ConfigurationError, match="operating mode"):
                cluster.node("b", mode="sideways")

    arun(main)


def test_events_stream_and_stats_agree(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            a_node, b_node = await cluster.start("a", "b")
            seen: list[Any] = []
            a_node.subscribe(seen.append)
            stream = a_node.events()
            first = asyncio.ensure_future(anext(stream))
            a, b = await open_namespaces([a_node, b_node], [mlp(0), mlp(1)], sync=True, **FAST)

            await asyncio.gather(
                a.train(1, digit_loader(0, 2, 32)), b.train(1, digit_loader(1, 2, 32))
            )

            assert isinstance(await asyncio.wait_for(first, 2), type(seen[0]))
            await stream.aclose()
            kinds = {type(e) for e in seen}
            assert {PeerJoined, UpdateReceived, Merged, ModelChanged} <= kinds
            assert a.history[0].merged_from == ("b",)
            assert a_node.stats.messages_in >= 1 and a_node.bus.streams == 0

    arun(main)


def test_closing_a_namespace_ends_every_pending_call(arun: Run, cluster_factory: Any) -> None:
    """Calls without a timeout end when their namespace closes (never a stray cancellation)."""

    async def main() -> None:
        async with cluster_factory() as cluster:
            a_node, b_node = await cluster.start("a", "b")
            a = a_node.namespace("X", **FAST)
            b = b_node.namespace("X", mode="leeching", **FAST)
            await a.open()
            await b.open()
            await a.wait_for_peers(1, timeout=5)
            calls = [a.sync_model(), a.wait_for_peers(5), a.recv(), a.serve()]
            tasks = [asyncio.ensure_future(c) for c in calls]
            await asyncio.sleep(0.1)  # let every call start waiting

            await a.close()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)

            assert isinstance(results[0], sb.ModelSyncError)
            assert isinstance(results[1], sb.ScatterbrainedError)
            assert isinstance(results[2], sb.ScatterbrainedError)
            assert results[3] is None
            assert not any(isinstance(r, asyncio.CancelledError) for r in results)

    arun(main)
