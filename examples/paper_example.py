"""The paper's example: one node creates "MyNetwork" and trains; a newcomer syncs the model.

Run the two roles in two terminals (or on two machines of one LAN)::

    python examples/paper_example.py train     # trains 10 epochs on digits, then serves
    python examples/paper_example.py join      # no model code: downloads architecture + weights

Set ``SCATTERBRAINED_DISCOVERY=loopback`` to keep discovery on this machine.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

import torch
from torch import nn

import scatterbrained as sb
from scatterbrained.sim.datasets import ArrayLoader, load_digits


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of the model's state dict, to compare models across processes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def create_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer factory passed to the namespace: it receives the model."""
    return torch.optim.Adam(model.parameters(), lr=0.01)


async def train(epochs: int, serve_s: float | None) -> None:
    """Create MyNetwork with a model, train, then serve it."""
    data = load_digits()
    trainloader = ArrayLoader(data.x_train, data.y_train, batch_size=32)
    validloader = ArrayLoader(data.x_test, data.y_test, batch_size=256, shuffle=False)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    async with sb.Node() as node, node.namespace("MyNetwork", model, create_optimizer) as ns:
        history = await ns.train(epochs, trainloader, validloader)
        print(
            json.dumps({"trained": weights_digest(model), "accuracy": history.last.val_accuracy}),
            flush=True,
        )
        await ns.serve(serve_s)


async def join(timeout: float) -> None:
    """Join MyNetwork with no model code, download the model and run it."""
    data = load_digits()
    async with sb.Node() as node, node.namespace(name="MyNetwork") as ns:
        model = await ns.sync_model(timeout=timeout)
        with torch.no_grad():
            logits = model(torch.as_tensor(data.x_test[:256]))
        accuracy = float((logits.argmax(1).numpy() == data.y_test[:256]).mean())
        print(json.dumps({"synced": weights_digest(model), "accuracy": accuracy}), flush=True)


def main() -> None:
    """``train [EPOCHS] [SERVE_SECONDS]`` or ``join [TIMEOUT]``."""
    role = sys.argv[1] if len(sys.argv) > 1 else "train"
    if role == "train":
        epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
        serve_s = float(sys.argv[3]) if len(sys.argv) > 3 else None
        asyncio.run(train(epochs, serve_s))
    elif role == "join":
        asyncio.run(join(float(sys.argv[2]) if len(sys.argv) > 2 else 60.0))
    else:
        sys.exit(f"unknown role {role!r}; use train or join")


if __name__ == "__main__":
    main()
