"""A learner's state on disk: ``ns.checkpoint(path)`` and ``ns.restore(path)``.

The file format (an ``.npz`` written atomically, weights as arrays, metadata as JSON) is
:mod:`scatterbrained.checkpoint`'s; this module decides what a learner saves and how it comes
back: weights, optimizer state, epochs done, model version, round, samples seen, mode and
history. A restore is all or nothing: the whole file is read and checked (shapes, finite
weights, metadata) before anything of the learner changes; the restored mode is announced to
the peers like any other switch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigurationError, WireError
from ..history import EpochRecord
from ..learning_options import LearningOptions
from ..types import OperatingMode
from ..wire.codec import check_specs
from .exchange import all_finite
from .model_state import ModelState
from .port import FederationPort

__all__ = ["Restored", "checkpoint_path", "restore_state", "save_state"]


@dataclass(frozen=True)
class Restored:
    """What a checkpoint holds beyond the model state (applied by the learner).

    Attributes:
        epochs_done: local epochs trained before.
        round: the synchronous round counter.
        mode: the operating mode when it was saved.
        history: the epoch records.
        releases: privatized models sent before (the privacy spent goes on from there).
    """

    epochs_done: int
    round: int
    mode: OperatingMode
    history: list[EpochRecord]
    releases: int = 0


def checkpoint_path(options: LearningOptions, port: FederationPort) -> Path | None:
    """Where ``checkpoint_dir`` keeps this namespace's checkpoint, or ``None`` without one.

    One file per node id and namespace name (unsafe characters replaced by ``_``).
    """
    if options.checkpoint_dir is None:
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in port.name)
    return Path(options.checkpoint_dir) / f"{port.node_id}-{safe}.ckpt.npz"


async def save_state(path: str | Path, state: ModelState, meta: Mapping[str, Any]) -> Path:
    """Save the weights, optimizer state and ``meta`` (with the model's counters) atomically.

    Args:
        path: the file to write.
        state: the model state saved.
        meta: the learner's counters: ``namespace``, ``epochs_done``, ``round``, ``mode``,
            ``history`` (JSON-serialisable).

    Returns:
        The path written.

    Raises:
        ConfigurationError: there is no model yet.
        OSError: the file cannot be written.
    """
    from ..checkpoint import save_checkpoint

    adapter = state.adapter
    if adapter is None:
        raise ConfigurationError("nothing to checkpoint: the namespace has no model yet")
    full = {
        **meta,
        "version": state.version,
        "samples_seen": state.samples_seen,
        "local_samples": state.local_samples,
    }
    extra = adapter.checkpoint_state()
    arrays = adapter.get_arrays()
    optimizer = extra if any(value is not None for value in extra.values()) else None
    return await asyncio.to_thread(save_checkpoint, path, arrays, full, optimizer)


async def restore_state(path: str | Path, state: ModelState) -> Restored:
    """Load a checkpoint written by :func:`save_state` into ``state``, all or nothing.

    Returns:
        The learner's counters, for the caller to apply.

    Raises:
        ConfigurationError: no model to load into.
        CheckpointError: the file is unreadable, does not fit the model, holds non-finite
            weights or broken metadata (nothing was changed).
        FileNotFoundError: no file at ``path``.
    """
    from ..checkpoint import load_checkpoint

    adapter = state.adapter
    if adapter is None:
        raise ConfigurationError("restore needs a model: pass model= to node.namespace()")
    arrays, meta, extra = await asyncio.to_thread(load_checkpoint, path)
    try:
        check_specs(arrays, adapter.array_specs())
    except WireError as exc:
        raise CheckpointError(path, f"it does not fit the model ({exc})") from None
    if not all_finite(arrays):
        raise CheckpointError(path, "it holds NaN or infinite weights")
    parsed = _parse_meta(meta, path)
    previous = adapter.get_arrays()
    try:
        adapter.set_arrays(arrays)
        if extra is not None:
            adapter.load_checkpoint_state(extra)
    except Exception as exc:
        adapter.set_arrays(previous)
        raise CheckpointError(path, f"it could not be loaded ({exc})") from None
    state.samples_seen = parsed["samples_seen"]
    state.local_samples = parsed["local_samples"]
    state.commit("restore", version=parsed["version"])
    return Restored(
        parsed["epochs_done"],
        parsed["round"],
        parsed["mode"],
        parsed["history"],
        parsed["releases"],
    )


def _parse_meta(meta: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """Check and convert the metadata; raise before anything is applied."""
    try:
        return {
            "epochs_done": _count(meta["epochs_done"]),
            "version": _count(meta["version"]),
            "round": _count(meta.get("round", meta["version"])),
            "samples_seen": _count(meta["samples_seen"]),
            "local_samples": _count(meta.get("local_samples", 0)),
            "releases": _count(meta.get("releases", 0)),
            "mode": OperatingMode.parse(meta["mode"]),
            "history": [_record_from_dict(r) for r in meta.get("history", [])],
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(path, f"unreadable metadata ({type(exc).__name__}: {exc})") from None


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise ValueError(f"expected a count 0..2**62, got {value!r}")
    return value


def _record_from_dict(data: Mapping[str, Any]) -> EpochRecord:
    values = dict(data)
    values["merged_from"] = tuple(values.get("merged_from", ()))
    values["mode_switches"] = tuple(values.get("mode_switches", ()))
    return EpochRecord(**values)
