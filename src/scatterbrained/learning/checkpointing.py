"""A learner's state on disk: ``ns.checkpoint(path)`` and ``ns.restore(path)``.

The file format (an ``.npz`` written atomically, weights as arrays, metadata as JSON) is
:mod:`scatterbrained.checkpoint`'s; this module decides what a learner saves and how it comes
back: weights, optimizer state, epochs done, model version, samples seen, mode and history.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError, WireError
from ..history import EpochRecord, History
from ..types import OperatingMode
from ..wire.codec import check_specs

if TYPE_CHECKING:
    from .learner import Learner

__all__ = ["checkpoint_path", "restore_learner", "save_learner"]


def checkpoint_path(learner: Learner) -> Path | None:
    """Where ``checkpoint_dir`` keeps this learner's checkpoint, or ``None`` without one.

    One file per node id and namespace name (unsafe characters replaced by ``_``).
    """
    if learner.options.checkpoint_dir is None:
        return None
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in learner.ns.name)
    return Path(learner.options.checkpoint_dir) / f"{learner.ns.node.id}-{safe}.ckpt.npz"


async def save_learner(learner: Learner, path: str | Path) -> Path:
    """Save weights, optimizer state, epoch, version and mode atomically; return the path.

    Raises:
        ConfigurationError: there is no model yet.
        OSError: the file cannot be written.
    """
    from ..checkpoint import save_checkpoint

    adapter = learner.adapter
    if adapter is None:
        raise ConfigurationError("nothing to checkpoint: the namespace has no model yet")
    meta = {
        "namespace": learner.ns.name,
        "epochs_done": learner.epochs_done,
        "version": learner.version,
        "samples_seen": learner.samples_seen,
        "local_samples": learner.local_samples,
        "mode": learner.ns.mode.value,
        "history": learner.history.to_dicts(),
    }
    extra = adapter.checkpoint_state()
    arrays = adapter.get_arrays()
    state = extra if any(value is not None for value in extra.values()) else None
    return await asyncio.to_thread(save_checkpoint, path, arrays, meta, state)


async def restore_learner(learner: Learner, path: str | Path) -> None:
    """Load a checkpoint written by :func:`save_learner` into ``learner``.

    Raises:
        ConfigurationError: no model to load into, or the checkpoint does not fit it.
        FileNotFoundError: no file at ``path``.
    """
    from ..checkpoint import load_checkpoint

    adapter = learner.adapter
    if adapter is None:
        raise ConfigurationError("restore needs a model: pass model= to node.namespace()")
    arrays, meta, extra = await asyncio.to_thread(load_checkpoint, path)
    try:
        check_specs(arrays, adapter.array_specs())
    except WireError as exc:
        raise ConfigurationError(f"checkpoint {path} does not fit the model: {exc}") from None
    adapter.set_arrays(arrays)
    if extra is not None:
        adapter.load_checkpoint_state(extra)
    learner.epochs_done = int(meta["epochs_done"])
    learner.version = int(meta["version"])
    learner.samples_seen = int(meta["samples_seen"])
    learner.local_samples = int(meta.get("local_samples", 0))
    learner.history = History([_record_from_dict(r) for r in meta.get("history", [])])
    learner.ns._modes.set_manual(OperatingMode.parse(meta["mode"]), "restored from checkpoint")
    learner.publish()


def _record_from_dict(data: Mapping[str, Any]) -> EpochRecord:
    values = dict(data)
    values["merged_from"] = tuple(values.get("merged_from", ()))
    values["mode_switches"] = tuple(values.get("mode_switches", ()))
    return EpochRecord(**values)
