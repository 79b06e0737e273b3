"""Attacks in the simulator: an attacker's wire carries forged weights; robust rules hold."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scatterbrained.errors import ConfigurationError
from scatterbrained.federation.attacks import attack_from_spec
from scatterbrained.sim.attacks import AttackingTransport
from scatterbrained.sim.config import SimConfig
from scatterbrained.sim.runner import run_simulation
from scatterbrained.transport.memory import MemoryNetwork, MemoryTransport
from scatterbrained.wire.codec import decode, encode
from scatterbrained.wire.messages import Message, ModelUpdate, Raw

SETUP = {
    "nodes": 6,
    "epochs": 4,
    "dataset": "digits",
    "topology": "fully-connected",
    "lr": 0.05,
    "batch_size": 16,
    "seed": 5,
}


def update(sender: str, value: float, samples: int = 10) -> Message:
    body = ModelUpdate(1, samples, "peer", {"w": np.full(3, value, np.float32)})
    return Message(sender, "sim", 1, 1, body)


def test_the_wire_of_an_attacker_carries_forged_weights_and_claims() -> None:
    async def main() -> tuple[Any, Any, Any]:
        network = MemoryNetwork()
        attack = attack_from_spec("ipm:epsilon=1,samples=1000")
        async with (
            AttackingTransport(MemoryTransport(network), attack, "sim") as evil,
            MemoryTransport(network) as honest,
        ):
            await honest.send(evil.address, encode(update("h", 2.0)))
            observed = await asyncio.wait_for(evil.recv(), 5)
            await evil.send(honest.address, encode(update("e", 7.0)))
            forged = decode((await asyncio.wait_for(honest.recv(), 5)).frames)
            await evil.send(honest.address, encode(Message("e", "sim", 1, 2, Raw((b"x",)))))
            untouched = decode((await asyncio.wait_for(honest.recv(), 5)).frames)
            return observed, forged, untouched

    observed, forged, untouched = asyncio.run(main())

    assert decode(observed.frames).sender == "h"  # received messages pass unchanged
    assert forged.body.arrays["w"].tolist() == [-2.0, -2.0, -2.0]  # -1 * mean of honest (2)
    assert forged.body.samples == 1000
    assert isinstance(untouched.body, Raw)


@pytest.mark.timeout(180)
def test_median_resists_a_sign_flipping_attacker_that_breaks_fedavg(
    tmp_path: Path, torch_ready: None
) -> None:
    def honest_mean(aggregator: str, attacks: dict[str, str], name: str) -> float:
        config = {
            **SETUP,
            "aggregator": aggregator,
            "attacks": attacks,
            "out": str(tmp_path / name),
        }
        summary = run_simulation(SimConfig.from_mapping(config)).summary
        value = summary.get("honest_mean_accuracy", summary["mean_accuracy"])
        return float(value)

    attack = {"2": "sign-flip:scale=10"}
    fedavg_clean = honest_mean("fedavg", {}, "a")
    fedavg_attacked = honest_mean("fedavg", attack, "b")
    median_attacked = honest_mean("median", attack, "c")

    assert fedavg_attacked < fedavg_clean - 0.3
    assert median_attacked > fedavg_clean - 0.15


def test_attack_config_is_validated_before_anything_runs() -> None:
    with pytest.raises(ConfigurationError, match=r'attacks\."1"'):
        SimConfig.from_mapping({**SETUP, "attacks": {"1": "sign-flp"}})
    with pytest.raises(ConfigurationError, match="node index"):
        SimConfig.from_mapping({**SETUP, "attacks": {"9": "stale"}})
    with pytest.raises(ConfigurationError, match="memory or zmq backend"):
        SimConfig.from_mapping({**SETUP, "attacks": {"1": "stale"}, "backend": "process"})


def test_a_label_flipping_attacker_trains_on_flipped_labels() -> None:
    from scatterbrained.sim.experiment import Experiment

    honest = Experiment.load(SimConfig.from_mapping(SETUP))
    flipped = Experiment.load(SimConfig.from_mapping({**SETUP, "attacks": {"0": "label-flip"}}))

    labels = [y for _, y in honest.train_loader(0)]
    flipped_labels = [y for _, y in flipped.train_loader(0)]

    assert np.array_equal(np.concatenate(flipped_labels), 9 - np.concatenate(labels))
    assert np.array_equal(
        np.concatenate([y for _, y in flipped.train_loader(1)]),
        np.concatenate([y for _, y in honest.train_loader(1)]),
    )
