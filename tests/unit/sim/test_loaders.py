"""Tests of scatterbrained.sim.loaders: batches() and ArrayLoader."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.loaders import ArrayLoader, batches


def _arrays(n: int) -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(n, dtype=np.float32).reshape(n, 1) * np.ones((1, 3), dtype=np.float32)
    return x, np.arange(n, dtype=np.int64)


@settings(max_examples=100, deadline=None)
@given(n=st.integers(1, 200), batch_size=st.integers(1, 64), shuffle=st.booleans())
def test_batches_cover_every_sample_once_and_keep_pairs(
    n: int, batch_size: int, shuffle: bool
) -> None:
    # Prepare
    x, y = _arrays(n)
    # Execute
    produced = list(batches(x, y, batch_size, shuffle=shuffle, seed=1))
    # Assert
    seen = np.concatenate([batch_y for _, batch_y in produced])
    assert sorted(seen.tolist()) == list(range(n))
    assert all(len(bx) <= batch_size for bx, _ in produced)
    assert all(np.array_equal(bx[:, 0], by) for bx, by in produced)
    assert len(produced) == -(-n // batch_size)
    if not shuffle:
        assert seen.tolist() == list(range(n))


def test_batches_shuffle_is_seeded() -> None:
    # Prepare
    x, y = _arrays(50)
    # Execute
    first = [b for _, b in batches(x, y, 8, shuffle=True, seed=5)]
    again = [b for _, b in batches(x, y, 8, shuffle=True, seed=5)]
    other = [b for _, b in batches(x, y, 8, shuffle=True, seed=6)]
    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_loader_epochs_differ_but_repeat_across_instances() -> None:
    # Prepare
    x, y = _arrays(40)
    loader, twin = ArrayLoader(x, y, 16, seed=3), ArrayLoader(x, y, 16, seed=3)
    # Execute
    epochs = [np.concatenate([by for _, by in loader]) for _ in range(3)]
    twin_epochs = [np.concatenate([by for _, by in twin]) for _ in range(3)]
    # Assert
    assert len(loader) == 3 and loader.num_samples == 40 and loader.epoch == 3
    for mine, theirs in zip(epochs, twin_epochs, strict=True):
        np.testing.assert_array_equal(mine, theirs)
        assert sorted(mine.tolist()) == list(range(40))
    assert not np.array_equal(epochs[0], epochs[1])


def test_loader_without_shuffle_and_drop_last() -> None:
    # Prepare
    x, y = _arrays(10)
    loader = ArrayLoader(x, y, batch_size=4, shuffle=False, drop_last=True)
    # Execute
    got = [by.tolist() for _, by in loader]
    # Assert
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(loader) == 2 and loader.num_samples == 8
    assert [by.tolist() for _, by in loader] == got  # re-iterable


def test_loader_batches_are_numpy_with_input_dtype() -> None:
    # Prepare
    x, y = _arrays(5)
    # Execute
    bx, by = next(iter(ArrayLoader(x, y, batch_size=2)))
    # Assert
    assert isinstance(bx, np.ndarray) and bx.dtype == np.float32 and bx.shape == (2, 3)
    assert by.dtype == np.int64
    assert "batch_size=2" in repr(ArrayLoader(x, y, batch_size=2))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_bad_batch_size_is_rejected(batch_size: object) -> None:
    x, y = _arrays(4)
    with pytest.raises(ConfigurationError, match="batch_size must be a positive integer"):
        ArrayLoader(x, y, batch_size=batch_size)  # type: ignore[arg-type]


def test_length_mismatch_is_rejected() -> None:
    x, _ = _arrays(4)
    with pytest.raises(ConfigurationError, match="same length"):
        list(batches(x, np.zeros(3), 2, shuffle=False, seed=None))
