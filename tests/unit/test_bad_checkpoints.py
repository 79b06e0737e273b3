"""Corrupt checkpoints: one CheckpointError naming the file, never a half-restored learner."""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import scatterbrained as sb
from scatterbrained.checkpoint import load_checkpoint, save_checkpoint

Run = Callable[..., None]


def _good(path: Path, arrays: dict[str, np.ndarray]) -> bytes:
    meta = {"epochs_done": 2, "version": 5, "samples_seen": 64, "mode": "peer", "history": []}
    save_checkpoint(path, arrays, meta)
    return path.read_bytes()


def _rezip(blob: bytes, edit: Callable[[str, bytes], bytes | None]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = edit(name, src.read(name))
            if data is not None:
                dst.writestr(name, data)
    return out.getvalue()


def _meta_blob(meta: Any) -> bytes:
    array = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _variants(blob: bytes) -> dict[str, bytes]:
    def replace_meta(meta: Any) -> bytes:
        return _rezip(blob, lambda n, d: _meta_blob(meta) if n == "__meta__.npy" else d)

    base = {"names": ["0.weight", "0.bias", "2.weight", "2.bias"], "epochs_done": 1}
    return {
        "empty": b"",
        "truncated": blob[: len(blob) // 2],
        "text": b"hello, I am not an archive",
        "no_meta": _rezip(blob, lambda n, d: None if n == "__meta__.npy" else d),
        "array_missing": _rezip(blob, lambda n, d: None if n == "a0.npy" else d),
        "meta_not_json": _rezip(blob, lambda n, d: b"\x93NUMPYxx" if n == "__meta__.npy" else d),
        "meta_list": replace_meta([1, 2, 3]),
        "names_missing": replace_meta({"epochs_done": 1}),
        "counters_missing": replace_meta(base),
        "negative_epoch": replace_meta(
            {**base, "epochs_done": -1, "version": 1, "samples_seen": 1, "mode": "peer"}
        ),
        "bad_mode": replace_meta({**base, "version": 1, "samples_seen": 1, "mode": "sideways"}),
        "bad_history": replace_meta(
            {**base, "version": 1, "samples_seen": 1, "mode": "peer", "history": [{"epoch": "x"}]}
        ),
        "wrong_shape": b"",  # filled below
    }


def test_every_bad_file_raises_one_checkpoint_error_and_changes_nothing(
    arun: Run, cluster_factory: Any, mlp: Any, weights: Any, tmp_path: Path
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            ns = node.namespace("X", mlp(0))
            await ns.open()
            before = weights(ns.model)
            blob = _good(tmp_path / "good.npz", ns.learner.state.current())
            variants = _variants(blob)
            small = {k: v[:1] for k, v in ns.learner.state.current().items()}
            variants["wrong_shape"] = _good(tmp_path / "small.npz", small)
            nan = {k: np.full_like(v, np.nan) for k, v in ns.learner.state.current().items()}
            variants["non_finite"] = _good(tmp_path / "nan.npz", nan)

            for name, data in variants.items():
                path = tmp_path / f"{name}.npz"
                path.write_bytes(data)
                with pytest.raises(sb.CheckpointError, match=re.escape(str(path))):
                    await ns.restore(path)
                assert ns.epochs_done == 0 and ns.version == 0, name
                for key, value in weights(ns.model).items():
                    np.testing.assert_array_equal(value, before[key], err_msg=name)

    arun(main, timeout=30)


def test_load_checkpoint_wraps_raw_errors(tmp_path: Path) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(b"PK\x03\x04 broken zip")

    with pytest.raises(sb.CheckpointError, match="unreadable"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.npz")


def test_a_corrupt_file_in_checkpoint_dir_names_it_or_starts_fresh(
    arun: Run, cluster_factory: Any, mlp: Any, tmp_path: Path
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            (tmp_path / "a-X.ckpt.npz").write_bytes(b"truncated")

            strict = node.namespace("X", mlp(0), checkpoint_dir=tmp_path)
            with pytest.raises(sb.CheckpointError, match=r"a-X\.ckpt\.npz"):
                await strict.open()
            lenient = node.namespace(
                "Y", mlp(0), checkpoint_dir=tmp_path, on_bad_checkpoint="fresh"
            )
            (tmp_path / "a-Y.ckpt.npz").write_bytes(b"truncated")
            await lenient.open()

            assert lenient.epochs_done == 0
            with pytest.raises(sb.ConfigurationError, match="on_bad_checkpoint"):
                node.namespace("Z", mlp(0), on_bad_checkpoint="maybe")

    arun(main)
