"""Checkpoints: the atomic file format, and namespace checkpoint / restore / auto-resume."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import scatterbrained as sb
from scatterbrained import OperatingMode
from scatterbrained.checkpoint import load_checkpoint, save_checkpoint
from scatterbrained.errors import ConfigurationError

pytestmark = pytest.mark.timeout(90)

Run = Callable[..., None]
FAST = {"round_timeout": 3.0, "request_timeout": 2.0, "serve_interval": 0.05}


def assert_same(left: dict[str, Any], right: dict[str, Any]) -> None:
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(np.asarray(left[name]), np.asarray(right[name]), name)


# ---------------------------------------------------------------------- file format


def test_save_and_load_round_trip_without_extra(tmp_path: Path) -> None:
    arrays: dict[str, np.ndarray] = {
        "w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "n": np.array(3, np.int64),
    }
    meta = {"epochs_done": 2, "mode": "peer", "history": [{"epoch": 1}]}

    written = save_checkpoint(tmp_path / "sub" / "c.npz", arrays, meta)
    loaded, loaded_meta, extra = load_checkpoint(written)

    assert written == tmp_path / "sub" / "c.npz"
    assert_same(loaded, arrays)
    assert loaded["w"].dtype == np.float32 and loaded["n"].dtype == np.int64
    assert loaded_meta == meta
    assert extra is None


def test_save_and_load_round_trip_with_torch_extra(tmp_path: Path, torch_ready: None) -> None:
    import torch

    extra = {"optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": []}}

    save_checkpoint(tmp_path / "c.npz", {"w": np.zeros(2)}, {}, extra)
    _, _, loaded = load_checkpoint(tmp_path / "c.npz")

    assert loaded is not None
    assert float(loaded["optimizer"]["state"][0]["step"]) == 3.0


def test_saving_overwrites_atomically_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"w": np.zeros(2)}, {"v": 1})

    save_checkpoint(path, {"w": np.ones(2)}, {"v": 2})

    arrays, meta, _ = load_checkpoint(path)
    assert meta == {"v": 2} and arrays["w"].tolist() == [1.0, 1.0]
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]


def test_metadata_that_is_not_json_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="JSON"):
        save_checkpoint(tmp_path / "c.npz", {"w": np.zeros(1)}, {"bad": object()})

    assert list(tmp_path.iterdir()) == []


def test_loading_a_foreign_npz_is_a_configuration_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "other.npz", x=np.zeros(2))

    with pytest.raises(ConfigurationError, match="not a scatterbrained checkpoint"):
        load_checkpoint(tmp_path / "other.npz")


def test_loading_a_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")


def test_the_file_holds_no_pickles(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "c.npz", {"w": np.zeros(2)}, {"a": [1, 2]})

    with np.load(tmp_path / "c.npz", allow_pickle=False) as archive:
        meta = json.loads(bytes(archive["__meta__"]).decode())

    assert meta == {"names": ["w"], "a": [1, 2]}


# ---------------------------------------------------------------------- namespace


def test_namespace_checkpoint_and_restore_round_trip(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any, tmp_path: Path
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            first_node, second_node = await cluster.start("a", "b")
            first = first_node.namespace("X", mlp(0), **FAST)
            await first.open()
            await first.train(2, digit_loader(0, 1, 64), digit_loader(1, 4, 32))
            first.mode = "seeding"

            path = await first.checkpoint(tmp_path / "a.npz")
            second = second_node.namespace("Y", mlp(5), **FAST)
            await second.open()
            await second.restore(path)

            assert_same(weights(second.model), weights(first.model))
            saved = first.learner.adapter.optimizer.state_dict()
            restored = second.learner.adapter.optimizer.state_dict()
            assert saved["state"].keys() == restored["state"].keys()
            for key, state in saved["state"].items():
                for name, value in state.items():
                    np.testing.assert_array_equal(
                        np.asarray(value), np.asarray(restored["state"][key][name])
                    )
            assert (second.epochs_done, second.version) == (2, 2)
            assert second.learner.samples_seen == 128
            assert second.mode is OperatingMode.SEEDING
            assert second.history.to_dicts() == first.history.to_dicts()
            assert second.history[1].val_accuracy is not None

    arun(main)


def test_restore_errors(arun: Run, cluster_factory: Any, mlp: Any, tmp_path: Path) -> None:
    async def main() -> None:
        import torch

        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            source = node.namespace("S", mlp(0))
            empty = node.namespace("E")
            other_shape = node.namespace("O", torch.nn.Linear(64, 3))
            path = await source.checkpoint(tmp_path / "s.npz")

            with pytest.raises(ConfigurationError, match="restore needs a model"):
                await empty.restore(path)
            with pytest.raises(ConfigurationError, match="nothing to checkpoint"):
                await empty.checkpoint(tmp_path / "e.npz")
            with pytest.raises(ConfigurationError, match="does not fit"):
                await other_shape.restore(path)
            with pytest.raises(FileNotFoundError):
                await source.restore(tmp_path / "missing.npz")

    arun(main)


def test_checkpoint_dir_saves_every_epoch_and_a_new_namespace_resumes(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any, tmp_path: Path
) -> None:
    async def main() -> None:
        options = {"checkpoint_dir": tmp_path, **FAST}
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("worker")
            ns = node.namespace("My/Net", mlp(0), mode="leeching", **options)
            await ns.open()
            await ns.train(2, digit_loader(0, 1, 64))
            trained = weights(ns.model)
            await node.close()

            files = sorted(p.name for p in tmp_path.iterdir())  # noqa: ASYNC240
            (again,) = await cluster.start("worker")  # same id: same checkpoint file
            resumed = again.namespace("My/Net", mlp(9), **options)
            await resumed.open()

            assert files == ["worker-My_Net.ckpt.npz"]
            assert resumed.epochs_done == 2 and resumed.version == 2
            assert resumed.mode is OperatingMode.LEECHING
            assert_same(weights(resumed.model), trained)
            history = await resumed.train(1, digit_loader(0, 1, 64))
            assert [r.epoch for r in history] == [1, 2, 3]
            assert resumed.epochs_done == 3

    arun(main)


def test_a_namespace_without_a_checkpoint_starts_fresh(
    arun: Run, cluster_factory: Any, mlp: Any, weights: Any, tmp_path: Path
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("fresh")
            model = mlp(4)
            before = weights(model)
            ns = node.namespace("X", model, checkpoint_dir=tmp_path)
            await ns.open()

            assert ns.epochs_done == 0 and ns.version == 0
            assert_same(weights(ns.model), before)

    arun(main)


def test_a_restored_centre_keeps_clients_in_step(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, weights: Any, tmp_path: Path
) -> None:
    """A centre restored at version V pushes rounds >= V, which a client that synced from it
    (and so expects rounds after V - 1) accepts without waiting for ``round_timeout``."""

    async def main() -> None:
        import torch

        # A long round_timeout, so that "no wait" stays distinguishable on a loaded machine.
        star = {"topology": sb.topology.Star(center="c"), "sync": True, **FAST, "round_timeout": 30}
        example = {"example_input": torch.zeros(2, 64)}  # a restored node has no first batch
        async with cluster_factory() as cluster:
            (center_node,) = await cluster.start("c")
            center = center_node.namespace("X", mlp(9), checkpoint_dir=tmp_path, **star)
            await center.open()
            await center.train(3, digit_loader(0, 2, 64))  # alone: version 3
            await center_node.close()

            center_node, client_node = await cluster.start("c", "a")
            center = center_node.namespace("X", mlp(9), checkpoint_dir=tmp_path, **example, **star)
            client = client_node.namespace("X", **star)
            await center.open()
            await client.open()
            await client.wait_for_peers(["c"], timeout=3)
            await center.wait_for_peers(["a"], timeout=3)
            await client.sync_model(timeout=5)
            server = asyncio.ensure_future(center.serve())

            history = await client.train(1, digit_loader(1, 2, 64))
            server.cancel()

            assert center.version >= 4
            assert history[0].merged_from == ("c",)
            assert history[0].wall_s < 15.0  # no round_timeout (30 s) wait
            assert_same(weights(client.model), weights(center.model))

    arun(main, timeout=60)
