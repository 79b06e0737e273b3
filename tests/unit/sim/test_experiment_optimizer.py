"""The simulator's optimizer factory follows the library's convention: it receives the model."""

from __future__ import annotations

import numpy as np
import pytest

from scatterbrained.sim.config import SimConfig
from scatterbrained.sim.experiment import Experiment

pytestmark = pytest.mark.timeout(60)


def test_create_optimizer_takes_the_model_and_uses_the_configured_rate() -> None:
    torch = pytest.importorskip("torch")
    exp = Experiment(SimConfig(lr=0.25), dataset=None, parts=[np.arange(1)])  # type: ignore[arg-type]
    model = torch.nn.Linear(3, 2)

    optimizer = exp.create_optimizer()(model)

    assert isinstance(optimizer, torch.optim.Adam)
    assert optimizer.param_groups[0]["lr"] == 0.25
    assert optimizer.param_groups[0]["params"] == list(model.parameters())
