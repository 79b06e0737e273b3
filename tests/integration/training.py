"""A tiny model and one batch of random data: what honest nodes train in integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def mlp(seed: int) -> Any:
    """A 64-16-10 MLP, seeded."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10))


class Batches:
    """One batch of 32 random samples (64 features, 10 classes), the same on every pass."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.random((32, 64), dtype=np.float32)
        self.y = rng.integers(0, 10, 32)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        import torch

        yield torch.from_numpy(self.x), torch.from_numpy(self.y)
