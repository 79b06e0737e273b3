"""Learning over the in-memory network: FedAvg on a star, gossip, rounds, sync_model, churn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest

import scatterbrained as sb
from scatterbrained.adapters.torch import TorchAdapter
from scatterbrained.errors import ConfigurationError, ModeError, PeerTimeoutError
from scatterbrained.federation.aggregation import Contribution, FedAvg
from scatterbrained.sim.loaders import ArrayLoader
from scatterbrained.wire.messages import ModelUpdate

pytestmark = pytest.mark.timeout(30)

Run = Callable[..., None]
Arrays = dict[str, np.ndarray]
FAST = {"round_timeout": 3.0, "request_timeout": 2.0, "serve_interval": 0.05}


class SpyAggregator:
    """FedAvg that records every call's contributions (senders, samples, arrays)."""

    def __init__(self) -> None:
        self.calls: list[tuple[Contribution, list[Contribution]]] = []

    def __call__(self, local: Contribution, others: Sequence[Contribution]) -> Arrays:
        self.calls.append((local, list(others)))
        return FedAvg()(local, others)


async def opened(nodes: Sequence[Any], models: Sequence[Any], **options: Any) -> list[Any]:
    """Open namespace "X" on every node (with its model) and wait until all see each other."""
    namespaces = [
        n.namespace("X", m, **{**FAST, **options}) for n, m in zip(nodes, models, strict=True)
    ]
    for ns in namespaces:
        await ns.open()
    for ns in namespaces:
        await ns.wait_for_peers(len(nodes) - 1, timeout=3)
    return namespaces


def assert_same(left: Arrays, right: Arrays, atol: float = 0.0) -> None:
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_allclose(left[name], right[name], rtol=0, atol=atol, err_msg=name)


def fedavg_by_hand(models: Sequence[Arrays], samples: Sequence[int]) -> Arrays:
    stacked = {name: np.stack([m[name].astype(np.float64) for m in models]) for name in models[0]}
    share = np.asarray(samples, dtype=np.float64) / float(sum(samples))
    return {name: np.tensordot(share, rows, axes=1) for name, rows in stacked.items()}


# ---------------------------------------------------------------------- centralized FedAvg


def test_one_synchronous_star_round_is_fedavg_of_the_clients(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any
) -> None:
    async def main() -> None:
        sizes = {"a": 96, "b": 160}
        expected_clients = {}
        for seed, (cid, size) in enumerate(sizes.items()):  # the clients' epoch, replayed here
            reference = TorchAdapter(mlp(seed))
            reference.train_epoch(digit_loader(seed, 3, size))
            expected_clients[cid] = reference.get_arrays()
        expected = fedavg_by_hand(list(expected_clients.values()), list(sizes.values()))
        spy = SpyAggregator()
        async with cluster_factory() as cluster:
            nodes = await cluster.start("c", "a", "b")
            star = {"topology": sb.topology.Star(center="c"), "sync": True}
            center = nodes[0].namespace("X", mlp(7), aggregator=spy, **star, **FAST)
            await center.open()
            clients = await opened(nodes[1:], [mlp(0), mlp(1)], **star)
            await center.wait_for_peers(2, timeout=3)
            server = asyncio.ensure_future(center.serve())

            await asyncio.gather(
                *(
                    ns.train(1, digit_loader(i, 3, sizes[ns.node.id]))
                    for i, ns in enumerate(clients)
                )
            )
            server.cancel()

            (local, others), *_ = spy.calls
            received = {c.sender: c for c in (local, *others)}
            assert len(spy.calls) == 1
            assert {s: c.samples for s, c in received.items()} == sizes  # not the centre's
            for cid in sizes:
                assert_same(dict(received[cid].arrays), expected_clients[cid], atol=1e-6)
            for ns in clients:
                assert ns.history[0].merged_from == ("c",)
                assert_same(weights(ns.model), expected, atol=1e-6)
            assert_same(weights(clients[0].model), weights(clients[1].model))
            assert_same(weights(center.model), expected, atol=1e-6)
            assert center.version == 1

    arun(main)


def test_a_training_centre_averages_its_own_model_in(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any
) -> None:
    async def main() -> None:
        spy = SpyAggregator()
        async with cluster_factory() as cluster:
            nodes = await cluster.start("c", "a")
            star = {"topology": sb.topology.Star(), "sync": True}  # centre = smallest id "a"
            center, client = await opened(nodes[::-1], [mlp(0), mlp(1)], **star)
            center.aggregator = spy

            await asyncio.gather(
                center.train(2, digit_loader(0, 2, 64)), client.train(2, digit_loader(1, 2, 64))
            )

            assert center.node.id == "a"
            assert [(lo.sender, [o.sender for o in os]) for lo, os in spy.calls] == [
                ("a", ["c"]),
                ("a", ["c"]),
            ]
            assert [r.merged_from for r in client.history] == [("a",), ("a",)]
            assert_same(weights(center.model), weights(client.model))

    arun(main)


def test_a_seeding_centre_distributes_its_model_and_clients_never_wait_for_it(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any, eventually: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("c", "a", "late")
            star = {"topology": sb.topology.Star(center="c"), "sync": True, "round_timeout": 20.0}
            opts = {**FAST, **star}
            center = nodes[0].namespace("X", mlp(7), mode="seeding", **opts)
            await center.open()
            client = nodes[1].namespace("X", mlp(0), **opts)
            await client.open()
            await center.wait_for_peers(1, timeout=3)
            seeded = weights(center.model)
            server = asyncio.ensure_future(center.serve())
            start = time.monotonic()
            store = client.learner.exchange.store  # peek: train once the seed has arrived
            await eventually(lambda: store.latest_round(["c"]) is not None, what="seed arrived")

            await client.train(2, digit_loader(0, 3, 64))
            late = nodes[2].namespace("X", mlp(1), **opts)
            await late.open()
            late_store = late.learner.exchange.store
            await eventually(lambda: late_store.latest_round(["c"]) is not None, what="late seed")
            await late.train(1, digit_loader(1, 3, 64))
            server.cancel()

            assert time.monotonic() - start < 10.0  # nobody waited a 20 s round_timeout
            assert [r.merged_from for r in client.history] == [("c",), ()]
            assert [r.merged_from for r in late.history] == [("c",)]  # newcomers get it too
            assert_same(weights(late.model), seeded)
            assert_same(weights(center.model), seeded)  # a seeding centre never merges

    arun(main)


def test_a_seeding_centre_seeds_a_client_again_after_it_left_and_seeds_never_go_stale(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any, eventually: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            centre_node, client_node = await cluster.start("c", "a")
            star = {"topology": sb.topology.Star(center="c"), "sync": True, "round_timeout": 20.0}
            opts = {**FAST, **star, "max_staleness_s": 0.3}
            center = centre_node.namespace("X", mlp(7), mode="seeding", **opts)
            await center.open()
            first = client_node.namespace("X", mlp(0), **opts)
            await first.open()
            server = asyncio.ensure_future(center.serve())
            seeded = weights(center.model)
            await eventually(lambda: first.learner.exchange.store.latest_round(["c"]) is not None)
            await first.close()
            await eventually(lambda: not center.peers, what="client left")

            again = client_node.namespace("X", mlp(0), **opts)
            await again.open()
            store = again.learner.exchange.store
            await eventually(lambda: store.latest_round(["c"]) is not None, what="seeded again")
            await asyncio.sleep(0.6)  # twice max_staleness_s: a seed is still current
            await again.train(1, digit_loader(0, 3, 64))
            server.cancel()

            assert [r.merged_from for r in again.history] == [("c",)]
            assert_same(weights(again.model), seeded)

    arun(main)


# ---------------------------------------------------------------------- gossip and rounds


def test_gossip_on_a_ring_beats_local_training_on_label_skewed_digits(
    arun: Run, cluster_factory: Any, mlp: Any, digits: Any
) -> None:
    epochs = 8

    def shard(i: int) -> ArrayLoader:
        keep = digits.y_train % 4 == i  # 2-3 classes per node
        return ArrayLoader(digits.x_train[keep][:300], digits.y_train[keep][:300], 32, seed=i)

    def adam(model: Any) -> Any:
        import torch

        return torch.optim.Adam(model.parameters(), lr=0.01)

    test = ArrayLoader(digits.x_test, digits.y_test, 512, shuffle=False)
    local: list[float] = []
    for i in range(4):
        alone = TorchAdapter(mlp(0), adam)
        for _ in range(epochs):
            alone.train_epoch(shard(i))
        local.append(float(alone.evaluate(test).accuracy or 0.0))

    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("n0", "n1", "n2", "n3")
            namespaces = [
                n.namespace("R", mlp(0), adam, topology=sb.topology.Ring(), sync=True, **FAST)
                for n in nodes
            ]
            for ns in namespaces:
                await ns.open()
            for ns in namespaces:
                await ns.wait_for_peers(3, timeout=3)

            histories = await asyncio.gather(
                *(ns.train(epochs, shard(i), test) for i, ns in enumerate(namespaces))
            )

            federated = float(np.mean([float(h[-1].val_accuracy or 0.0) for h in histories]))
            assert federated > float(np.mean(local)) + 0.15, (federated, local)
            neighbours = [set(h[-1].merged_from) for h in histories]
            assert neighbours == [{"n1", "n3"}, {"n0", "n2"}, {"n1", "n3"}, {"n0", "n2"}]

    arun(main)


def test_synchronous_rounds_are_reproducible(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any
) -> None:
    async def one_run() -> list[Arrays]:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b", "c", "d")
            ring = sb.topology.Ring()
            namespaces = await opened(nodes, [mlp(i) for i in range(4)], sync=True, topology=ring)
            await asyncio.gather(
                *(ns.train(3, digit_loader(i, 4, 64)) for i, ns in enumerate(namespaces))
            )
            return [weights(ns.model) for ns in namespaces]

    results: list[list[Arrays]] = []

    async def main() -> None:
        results.append(await one_run())
        results.append(await one_run())

    arun(main)

    first, second = results
    for left, right in zip(first, second, strict=True):
        assert_same(left, right)  # bit for bit
    with pytest.raises(AssertionError):
        assert_same(first[0], first[1])  # ring neighbourhoods differ: so do the models


def test_share_every_federates_every_k_steps(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        spies = [SpyAggregator(), SpyAggregator()]
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b")
            namespaces = await opened(nodes, [mlp(0), mlp(1)], sync=True, share_every=2)
            for ns, spy in zip(namespaces, spies, strict=True):
                ns.aggregator = spy

            await asyncio.gather(  # 8 batches of 16: exchanges after steps 2, 4, 6, 8
                *(
                    ns.train(1, digit_loader(i, 2, 128, batch_size=16))
                    for i, ns in enumerate(namespaces)
                )
            )
            a = namespaces[0]
            await nodes[1].close()  # alone now: no waiting for b's rounds
            await a.train(1, digit_loader(0, 2, 96, batch_size=32), share_every=3)  # 3 steps

            assert [len(s.calls) for s in spies] == [4, 4]
            assert all(o[0].sender == "b" for _, o in spies[0].calls)
            assert a.history[0].merged_from == ("b",)
            # The version moves with every change: 4 x (train + merge) + the epoch's last steps.
            assert a.history[0].version == 4 * 2 + 1
            assert a.history[1].version == 9 + 1 + 1  # one more exchange (alone: no merge)
            assert a.learner.exchange.round == 5  # rounds: one per exchange

    arun(main)


def test_a_lone_node_trains_alone_without_waiting(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            ns = node.namespace("X", mlp(0), sync=True, round_timeout=20.0)
            await ns.open()
            start = time.monotonic()

            history = await ns.train(3, digit_loader(0, 1, 64))

            assert time.monotonic() - start < 5.0
            assert [r.merged_from for r in history] == [(), (), ()]
            assert [r.epoch for r in history] == [1, 2, 3] and ns.epochs_done == 3
            assert [r.version for r in history] == [1, 2, 3]
            assert all(r.samples == 64 and r.peers == 0 for r in history)

    arun(main)


def test_train_argument_errors(arun: Run, cluster_factory: Any, mlp: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            empty = node.namespace("E")
            with_model = node.namespace("M", mlp(0))

            with pytest.raises(ConfigurationError, match="sync_model"):
                await empty.train(1, [])
            with pytest.raises(ConfigurationError, match="epochs must be >= 0"):
                await with_model.train(-1, [])
            with pytest.raises(ConfigurationError, match="share_every"):
                node.namespace("S", mlp(0), share_every=0)

    arun(main)


# ---------------------------------------------------------------------- churn


def test_a_peer_leaving_during_a_synchronous_round_does_not_stall_it(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b", "idle")
            a, b, idle = await opened(nodes, [mlp(0), mlp(1), mlp(2)], sync=True, round_timeout=20)

            async def leave_soon() -> None:
                await asyncio.sleep(0.3)
                await idle.node.close()  # it never sent its round-0 update

            start = time.monotonic()
            await asyncio.gather(
                a.train(1, digit_loader(0, 2, 64)), b.train(1, digit_loader(1, 2, 64)), leave_soon()
            )

            assert time.monotonic() - start < 3.0  # far below round_timeout
            assert a.history[0].merged_from == ("b",)
            assert b.history[0].merged_from == ("a",)

    arun(main)


@pytest.mark.parametrize(("min_peers", "merged"), [(1, ("b",)), (2, ())])
def test_min_peers_is_the_quorum_a_synchronous_round_needs_to_merge(
    min_peers: int,
    merged: tuple[str, ...],
    arun: Run,
    cluster_factory: Any,
    mlp: Any,
    digit_loader: Any,
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b", "idle")  # "idle" never sends an update
            a, b, _ = await opened(
                nodes, [mlp(0), mlp(1), mlp(2)], sync=True, round_timeout=0.5, min_peers=min_peers
            )
            start = time.monotonic()

            await asyncio.gather(
                a.train(1, digit_loader(0, 2, 64)), b.train(1, digit_loader(1, 2, 64))
            )

            assert 0.5 <= time.monotonic() - start < 3.0  # ended by round_timeout
            assert a.history[0].merged_from == merged

    arun(main)


def test_a_crashed_peer_ends_the_round_when_it_times_out(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory(peer_timeout=0.5) as cluster:
            nodes = await cluster.start("a", "idle")
            a, idle = await opened(nodes, [mlp(0), mlp(1)], sync=True, round_timeout=20)

            async def crash_soon() -> None:
                await asyncio.sleep(0.2)
                await idle.node.abort()

            start = time.monotonic()
            await asyncio.gather(a.train(1, digit_loader(0, 1, 64)), crash_soon())

            assert time.monotonic() - start < 5.0
            assert a.history[0].merged_from == ()

    arun(main)


def test_a_peer_that_stops_sending_mid_round_does_not_stall_it(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b")
            a, b = await opened(nodes, [mlp(0), mlp(1)], sync=True, round_timeout=20)

            async def stop_sending_soon() -> None:
                await asyncio.sleep(0.3)
                b.mode = "leeching"  # b never trains, so a waits for b's round-0 update

            start = time.monotonic()
            await asyncio.gather(a.train(1, digit_loader(0, 1, 64)), stop_sending_soon())

            assert time.monotonic() - start < 3.0
            assert a.history[0].merged_from == ()

    arun(main)


def test_clients_follow_a_restarted_centre(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any
) -> None:
    async def main() -> None:
        star = {"topology": sb.topology.Star(center="c"), "sync": True}
        async with cluster_factory() as cluster:
            center_node, client_node = await cluster.start("c", "a")
            center, client = await opened([center_node, client_node], [mlp(9), mlp(0)], **star)
            server = asyncio.ensure_future(center.serve())
            await client.train(2, digit_loader(0, 1, 64))
            server.cancel()
            await center_node.close()

            (restarted,) = await cluster.start("c")  # same id, new session, round counter 0
            (center,) = await opened([restarted], [mlp(9)], **star)
            await client.wait_for_peers(["c"], timeout=3)
            server = asyncio.ensure_future(center.serve())
            start = time.monotonic()
            await client.train(1, digit_loader(0, 1, 64))
            server.cancel()

            assert time.monotonic() - start < 2.0  # not a round_timeout wait
            assert client.history[-1].merged_from == ("c",)
            assert_same(weights(client.model), weights(center.model))

    arun(main)


def test_a_restarted_gossip_peer_is_merged_again(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any
) -> None:
    async def main() -> None:
        gossip = {"gossip_wait": 0.5}  # asynchronous, but wait for the neighbour's update
        async with cluster_factory() as cluster:
            nodes = await cluster.start("a", "b")
            a, b = await opened(nodes, [mlp(0), mlp(1)], **gossip)
            await asyncio.gather(
                a.train(3, digit_loader(0, 2, 64)), b.train(3, digit_loader(1, 2, 64))
            )
            await nodes[1].close()

            (again,) = await cluster.start("b")  # new session: its versions restart at 0
            (b,) = await opened([again], [mlp(1)], **gossip)
            await a.wait_for_peers(["b"], timeout=3)
            await asyncio.gather(
                a.train(1, digit_loader(0, 2, 64)), b.train(1, digit_loader(1, 2, 64))
            )

            assert a.history[-1].merged_from == ("b",)
            assert a.node.stats.dropped["stale"] == 0  # version 0 is not "older" than 2

    arun(main)


# ---------------------------------------------------------------------- sync_model


def test_sync_model_gives_a_newcomer_the_exact_model(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, digits: Any, weights: Any
) -> None:
    async def main() -> None:
        import torch

        async with cluster_factory() as cluster:
            server_node, newcomer_node = await cluster.start("server", "new")
            server = server_node.namespace("X", mlp(3), **FAST)
            await server.open()
            await server.train(1, digit_loader(0, 1, 64))  # the first batch is the example
            newcomer = newcomer_node.namespace("X", **FAST)
            await newcomer.open()
            await newcomer.wait_for_peers(["server"], timeout=3)

            model = await newcomer.sync_model(timeout=10)

            assert newcomer.model is model
            assert_same(newcomer.learner.adapter.get_arrays(), weights(server.model))
            x = torch.from_numpy(digits.x_test[:5])
            with torch.no_grad():
                np.testing.assert_allclose(model(x).numpy(), server.model(x).numpy(), atol=1e-6)
            assert newcomer.version == server.version
            history = await newcomer.train(1, digit_loader(1, 2, 32))  # it can train too
            assert len(history) == 1

    arun(main)


def announced_version(ns: Any, peer_id: str) -> int | None:
    """The model version ``peer_id`` last announced in ``ns`` (``None`` if unknown)."""
    record = ns.node.peers.get(peer_id)
    info = record.namespaces.get(ns.name) if record is not None else None
    return None if info is None else int(info.version)


def test_sync_model_picks_the_peer_with_the_newest_version(
    arun: Run,
    cluster_factory: Any,
    mlp: Any,
    digit_loader: Any,
    weights: Any,
    eventually: Callable[..., Any],
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            old_node, new_node, me = await cluster.start("old", "new", "me")
            old = old_node.namespace("X", mlp(1), **FAST)
            new = new_node.namespace("X", mlp(2), **FAST)
            mine = me.namespace("X", mlp(0), **FAST)
            for ns in (old, new):
                await ns.open()
            await new.train(2, digit_loader(0, 1, 32))  # alone: version 2, old stays 0
            await mine.open()
            await mine.wait_for_peers(2, timeout=3)
            await eventually(lambda: announced_version(mine, "new") == 2, what="v2 Hello")

            await mine.sync_model(timeout=5)

            assert_same(weights(mine.model), weights(new.model))

    arun(main)


@pytest.mark.parametrize("mode", ["seeding", "offline"])
def test_sync_model_in_a_mode_that_does_not_receive_raises(
    mode: str, arun: Run, cluster_factory: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            ns = node.namespace("X", mode=mode)
            await ns.open()

            with pytest.raises(ModeError, match=f"is {mode}"):
                await ns.sync_model(timeout=1)

    arun(main)


def test_sync_model_with_nobody_serving_times_out(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            ns = node.namespace("X")
            await ns.open()
            start = time.monotonic()

            with pytest.raises(PeerTimeoutError, match="no serving peer seen"):
                await ns.sync_model(timeout=0.3)
            assert time.monotonic() - start < 1.5

    arun(main)


def test_sync_model_reports_peers_that_cannot_serve(arun: Run, cluster_factory: Any) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            empty_node, leech_node, me = await cluster.start("empty", "leech", "me")
            for node, mode in ((empty_node, "peer"), (leech_node, "leeching")):
                await node.namespace("X", mode=mode).open()
            ns = me.namespace("X")
            await ns.open()
            await ns.wait_for_peers(2, timeout=3)

            with pytest.raises(PeerTimeoutError) as raised:
                await ns.sync_model(timeout=0.5)

            message = str(raised.value)
            assert "empty: no model yet" in message  # announced: it is not even asked
            assert "leech" not in message  # a leecher is never asked
            assert ns.model is None

    arun(main)


def test_serve_pushes_and_merges_in_gossip(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            trainer_node, server_node = await cluster.start("t", "s")
            trainer, server = await opened(
                [trainer_node, server_node], [mlp(0), mlp(1)], gossip_wait=2.0
            )
            serving = asyncio.ensure_future(server.serve(duration=1.0))

            await trainer.train(1, digit_loader(0, 1, 64))
            await serving  # meanwhile the server merges the trainer's update

            assert trainer.history[0].merged_from == ("s",)  # the served weights, merged
            assert server.version == 1
            assert server.history.last is None  # serving is not training

    arun(main)


def test_weights_holding_nan_are_never_merged_and_are_counted(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            good_node, bad_node = await cluster.start("good", "bad")
            good, bad = await opened([good_node, bad_node], [mlp(0), mlp(1)], gossip_wait=2.0)
            poisoned = {k: v.copy() for k, v in bad.learner.adapter.get_arrays().items()}
            first = next(iter(poisoned))
            poisoned[first].flat[0] = np.nan
            update = ModelUpdate(version=0, samples=10, mode="peer", arrays=poisoned)
            before = weights(good.model)

            await bad.send("good", update)
            await good.train(1, digit_loader(0, 1, 64))

            assert good.history[0].merged_from == ()
            assert good_node.stats.dropped["non_finite"] == 1
            assert all(np.isfinite(a).all() for a in weights(good.model).values())
            assert weights(good.model).keys() == before.keys()

    arun(main)


def test_privacy_spent_is_recorded_per_epoch_and_survives_a_restore(
    arun: Any, cluster_factory: Any, mlp: Any, digit_loader: Any, tmp_path: Any
) -> None:
    """With ``privacy=ClipAndNoise(...)`` each epoch's record carries the epsilon spent so far
    (the accountant library's figure for the models sent), and a restored checkpoint goes on
    counting from there instead of starting over."""
    from scatterbrained.federation.privacy import ClipAndNoise, gaussian_epsilon

    async def main() -> None:
        async with cluster_factory() as cluster:
            a_node, b_node = await cluster.start("a", "b")
            privacy = ClipAndNoise(clip_norm=1.0, noise_multiplier=1.1)
            a = a_node.namespace("X", mlp(0), privacy=privacy, round_timeout=3.0)
            b = b_node.namespace("X", mlp(1), round_timeout=3.0)
            await a.open()
            await b.open()
            await a.wait_for_peers(["b"], timeout=3)
            await b.wait_for_peers(["a"], timeout=3)

            history, plain = await asyncio.gather(
                a.train(3, digit_loader(0, 2, 64)), b.train(1, digit_loader(1, 2, 64))
            )
            releases = a.learner.exchange.releases
            path = await a.checkpoint(tmp_path / "a.npz")
            fresh = a_node.namespace("Y", mlp(0), privacy=ClipAndNoise(1.0, 1.1))
            await fresh.open()
            await fresh.restore(path)

            epsilons = [r.epsilon for r in history]
            assert releases >= 3
            assert epsilons == sorted(epsilons) and epsilons[0] is not None and epsilons[0] > 0
            assert epsilons[-1] == pytest.approx(gaussian_epsilon(1.1, releases, 1e-5))
            assert fresh.learner.exchange.releases == releases
            assert plain[0].epsilon is None  # no mechanism, nothing accounted

    arun(main, timeout=30)
