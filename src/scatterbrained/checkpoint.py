"""Atomic local checkpoints: weights, optimizer state, epoch, version and mode in one file.

The file is a NumPy ``.npz`` archive (loaded with ``allow_pickle=False``): arrays under
``a0, a1, ...``, a JSON metadata blob, and optionally the optimizer state serialized with
``torch.save`` and read back with ``torch.load(weights_only=True)``. Checkpoints are local
files written by this process; nothing received from the network is ever loaded this way.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, ConfigurationError

__all__ = ["load_checkpoint", "save_checkpoint"]

_META = "__meta__"
_EXTRA = "__extra__"


def save_checkpoint(
    path: str | Path,
    arrays: Mapping[str, np.ndarray],
    meta: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, fsync, rename).

    Args:
        path: destination file; parent folders are created.
        arrays: named weights.
        meta: JSON-serialisable metadata (epoch, version, mode, ...).
        extra: optimizer state (may hold torch tensors); needs torch when not empty.

    Returns:
        The path written.

    Raises:
        ConfigurationError: ``meta`` is not JSON-serialisable.
        OSError: the file cannot be written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    names = list(arrays)
    try:
        meta_blob = json.dumps({"names": names, **meta}).encode()
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"checkpoint metadata is not JSON-serialisable: {exc}") from None
    payload: dict[str, np.ndarray] = {f"a{i}": np.asarray(arrays[n]) for i, n in enumerate(names)}
    payload[_META] = np.frombuffer(meta_blob, dtype=np.uint8)
    if extra:
        payload[_EXTRA] = np.frombuffer(_torch_bytes(extra), dtype=np.uint8)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **payload)  # type: ignore[arg-type]
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def load_checkpoint(
    path: str | Path,
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any] | None]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Returns:
        ``(arrays, meta, extra)``; ``extra`` is ``None`` when none was saved.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is not a readable scatterbrained checkpoint (truncated,
            not an archive, no or broken metadata, a missing array, a bad optimizer blob).
    """
    try:
        return _read(Path(path))
    except FileNotFoundError:
        raise
    except CheckpointError:
        raise
    except Exception as exc:  # zipfile, numpy, json and torch all raise their own types
        raise CheckpointError(path, f"unreadable ({type(exc).__name__}: {exc})") from None


def _read(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any] | None]:
    with np.load(path, allow_pickle=False) as archive:
        if _META not in archive.files:
            raise CheckpointError(path, "not a scatterbrained checkpoint (no metadata)")
        meta = json.loads(bytes(archive[_META]).decode())
        if not isinstance(meta, dict) or not isinstance(meta.get("names"), list):
            raise CheckpointError(path, "its metadata is not an object with a 'names' list")
        names: list[str] = meta.pop("names")
        arrays = {str(name): archive[f"a{i}"] for i, name in enumerate(names)}
        extra = _from_torch_bytes(bytes(archive[_EXTRA])) if _EXTRA in archive.files else None
    return arrays, meta, extra


def _torch_bytes(extra: Mapping[str, Any]) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(dict(extra), buffer)
    return buffer.getvalue()


def _from_torch_bytes(blob: bytes) -> dict[str, Any]:
    import torch

    loaded = torch.load(io.BytesIO(blob), weights_only=True)
    return dict(loaded)
