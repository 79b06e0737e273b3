"""One local epoch on the training lane, whole or in chunks (``share_every``).

A whole epoch is one lane job: the adapter's ``train_epoch`` over the loader. With
``share_every=k`` the epoch runs as jobs of ``k`` batches each, drawn from one iterator
over the loader, and the node's exchange runs on the event loop between two jobs, so no job
ever waits for the network while it holds the lane (other nodes of the process would wait
behind it). Every job's step hook raises :class:`TrainingStopped` at the next step once the
epoch's ``stop`` event is set (``train`` cancelled, or the namespace closed).
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..adapters.base import EpochResult

if TYPE_CHECKING:
    from ..adapters.base import ModelAdapter
    from .lane import TrainingLane

__all__ = ["TrainingStopped", "run_epoch"]


class TrainingStopped(Exception):
    """Raised inside a training job to stop it at the next step (``train`` cancelled or
    the namespace closed)."""


async def run_epoch(
    training: TrainingLane,
    adapter: ModelAdapter,
    loader: Any,
    every: int | None,
    stop: threading.Event,
    between: Callable[[], Awaitable[None]],
) -> EpochResult:
    """Train one pass over ``loader`` on ``training``; with ``every``, as chunks of
    ``every`` batches with ``await between()`` after each full chunk.

    Raises:
        TrainingStopped: ``stop`` was set while a job ran.
        Exception: whatever the adapter or the loader raised.
    """
    hook = stop_hook(stop)
    if not every:
        return await training.run(stop, adapter.train_epoch, loader, step_hook=hook)
    batches = Batches(loader)
    parts: list[EpochResult] = []
    while True:
        parts.append(await training.run(stop, batches.train_chunk, adapter, every, hook))
        if batches.exhausted:
            return joined(parts)
        await between()


def stop_hook(stop: threading.Event) -> Callable[[int], None]:
    """A step hook that stops the job at the next step once ``stop`` is set."""

    def hook(steps: int) -> None:
        if stop.is_set():
            raise TrainingStopped

    return hook


class Batches:
    """One pass over a loader, handed out in chunks (the iterator is made on the lane: a
    ``DataLoader``'s ``iter()`` may start its worker processes)."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader
        self._iterator: Iterator[Any] | None = None
        self.exhausted = False

    def train_chunk(
        self, adapter: ModelAdapter, size: int, hook: Callable[[int], None]
    ) -> EpochResult:
        """Train on the next ``size`` batches (fewer at the end of the pass)."""
        if self._iterator is None:
            self._iterator = iter(self._loader)
        return adapter.train_epoch(self._take(self._iterator, size), step_hook=hook)

    def _take(self, iterator: Iterator[Any], size: int) -> Iterator[Any]:
        """Up to ``size`` batches; marks the pass exhausted when fewer were left."""
        for count, batch in enumerate(itertools.islice(iterator, size), start=1):
            yield batch
            if count == size:
                return
        self.exhausted = True


def joined(parts: list[EpochResult]) -> EpochResult:
    """One epoch's result from its chunks (the loss weighted by samples)."""
    samples = sum(p.samples for p in parts)
    steps = sum(p.steps for p in parts)
    if not samples:
        return EpochResult(loss=math.nan, samples=0, steps=steps)
    loss = sum(p.loss * p.samples for p in parts if p.samples) / samples
    return EpochResult(loss=loss, samples=samples, steps=steps)
