"""Factories for ``scatterbrained node`` (deployments across machines).

Each machine runs, with its own data::

    scatterbrained node -n digits-net --model examples.deploy:model --data examples.deploy:data

``model()`` returns a fresh PyTorch model and ``data()`` returns ``(trainloader, validloader)``.
Here every node takes a different third of scikit-learn's digits, chosen by the environment
variable ``SHARD`` (0, 1 or 2), so the example runs on one machine too.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from scatterbrained.sim.datasets import ArrayLoader, load_digits


def model() -> nn.Module:
    """A small MLP for 8x8 digits (seeded, so every node starts from the same weights)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def data() -> tuple[ArrayLoader, ArrayLoader]:
    """This node's share of the digits, and the common test set."""
    shard = int(os.environ.get("SHARD", "0"))
    digits = load_digits()
    train = ArrayLoader(digits.x_train[shard::3], digits.y_train[shard::3], batch_size=16)
    valid = ArrayLoader(digits.x_test, digits.y_test, batch_size=256, shuffle=False)
    return train, valid
