"""Mini-batches over in-memory NumPy arrays, without torch.

:class:`ArrayLoader` is a small re-iterable stand-in for ``torch.utils.data.DataLoader``: every
``iter()`` is one epoch of ``(x, y)`` NumPy batches, which the model adapters accept directly.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import ConfigurationError

__all__ = ["ArrayLoader", "batches"]


def batches(
    x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(x, y)`` mini-batches that together cover every sample once.

    Args:
        x: inputs, first axis is the sample axis.
        y: targets, same length as ``x``.
        batch_size: samples per batch (the last batch may be smaller).
        shuffle: visit samples in a random order instead of the stored one.
        seed: seed of the shuffle (``None``: fresh entropy); ignored without ``shuffle``.

    Raises:
        ConfigurationError: ``batch_size`` is not a positive integer, or lengths differ.
    """
    _check_batch_args(x, y, batch_size)
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(x))
        for start in range(0, len(x), batch_size):
            chosen = order[start : start + batch_size]
            yield x[chosen], y[chosen]
    else:
        for start in range(0, len(x), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]


def _check_batch_args(x: np.ndarray, y: np.ndarray, batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be a positive integer, got {batch_size!r}")
    if len(x) != len(y):
        raise ConfigurationError(
            f"inputs and targets must have the same length, got {len(x)} and {len(y)}"
        )


class ArrayLoader:
    """A re-iterable of ``(x, y)`` NumPy mini-batches, like a small ``DataLoader``.

    Each ``iter()`` is one epoch. With ``shuffle`` the order of epoch ``e`` (counting from 0
    for this loader) is drawn from the seed sequence ``(seed, e)``, so two loaders built with
    the same seed produce the same batches epoch after epoch, while successive epochs differ.

    Args:
        x: inputs, first axis is the sample axis.
        y: targets, same length as ``x``.
        batch_size: samples per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: reshuffle every epoch.
        seed: base seed of the shuffles (``None``: fresh entropy every epoch).
        drop_last: skip a final batch smaller than ``batch_size``.

    Raises:
        ConfigurationError: ``batch_size`` is not a positive integer, or lengths differ.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        batch_size: int = 32,
        shuffle: bool = True,
        seed: int | None = 0,
        *,
        drop_last: bool = False,
    ) -> None:
        _check_batch_args(x, y, batch_size)
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    @property
    def num_samples(self) -> int:
        """Samples visited per epoch (after ``drop_last``)."""
        return len(self) * self.batch_size if self.drop_last else len(self.x)

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return len(self.x) // self.batch_size
        return -(-len(self.x) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order: np.ndarray | None = None
        if self.shuffle:
            epoch_seed = None if self.seed is None else [self.seed, self.epoch]
            order = np.random.default_rng(epoch_seed).permutation(len(self.x))
        self.epoch += 1
        return self._epoch_batches(order)

    def _epoch_batches(self, order: np.ndarray | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            stop = start + self.batch_size
            if order is None:
                yield self.x[start:stop], self.y[start:stop]
            else:
                chosen = order[start:stop]
                yield self.x[chosen], self.y[chosen]

    def __repr__(self) -> str:
        return (
            f"ArrayLoader(samples={len(self.x)}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, seed={self.seed}, epoch={self.epoch})"
        )
