"""One local epoch in chunks: the batches are drawn once, results joined by samples."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pytest

from scatterbrained.adapters.base import EpochResult
from scatterbrained.learning.epochs import Batches, joined

pytestmark = pytest.mark.timeout(10)


class CountingAdapter:
    """Stands in for an adapter: "trains" by summing its batches."""

    def train_epoch(self, loader: Iterable[Any], *, step_hook: Any = None) -> EpochResult:
        batches = list(loader)
        return EpochResult(loss=float(sum(batches)), samples=len(batches), steps=len(batches))


@pytest.mark.parametrize(("batches", "size", "chunks"), [(5, 2, [2, 2, 1]), (4, 2, [2, 2, 0])])
def test_batches_hand_out_one_pass_in_chunks_and_notice_its_end(
    batches: int, size: int, chunks: list[int]
) -> None:
    # Prepare: a loader that may be iterated only once.
    drawn: list[int] = []

    def once() -> Any:
        for value in range(batches):
            drawn.append(value)
            yield value

    source, adapter = Batches(once()), CountingAdapter()

    # Execute
    sizes = []
    while not source.exhausted:
        sizes.append(source.train_chunk(adapter, size, lambda _steps: None).samples)

    # Assert: every batch drawn exactly once, in order.
    assert sizes == chunks and drawn == list(range(batches))


def test_joined_weights_the_loss_by_samples_and_skips_empty_chunks() -> None:
    parts = [EpochResult(1.0, 2, 2), EpochResult(4.0, 1, 1), EpochResult(math.nan, 0, 0)]

    result = joined(parts)

    assert result == EpochResult(loss=2.0, samples=3, steps=3)
    assert math.isnan(joined([EpochResult(math.nan, 0, 0)]).loss)
