"""Tests of scatterbrained.federation.privacy."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterbrained.errors import ConfigurationError
from scatterbrained.federation.privacy import ClipAndNoise, PairingRule, gaussian_epsilon
from scatterbrained.federation.topology import FullyConnected, Graph, RandomRegular, Ring

Arrays = dict[str, Any]

pytestmark = pytest.mark.timeout(30)


def global_norm(a: Arrays, b: Arrays, names: tuple[str, ...] = ("w", "b")) -> float:
    return float(np.sqrt(sum(np.sum((np.float64(a[n]) - np.float64(b[n])) ** 2) for n in names)))


def models(seed: int, scale: float) -> tuple[Arrays, Arrays]:
    rng = np.random.default_rng(seed)
    reference = {
        "w": rng.normal(size=(4, 3)),
        "b": rng.normal(size=3),
        "steps": np.array(5, np.int64),
    }
    arrays = {
        "w": reference["w"] + rng.normal(size=(4, 3)) * scale,
        "b": reference["b"] + rng.normal(size=3) * scale,
        "steps": np.array(9, np.int64),
    }
    return arrays, reference


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 10**6),
    scale=st.floats(1e-6, 1e3),
    clip=st.floats(1e-3, 1e2),
)
def test_clipping_bounds_the_update_norm(seed: int, scale: float, clip: float) -> None:
    # Prepare
    arrays, reference = models(seed, scale)
    before = global_norm(arrays, reference)
    # Execute
    out = ClipAndNoise(clip_norm=clip).apply(arrays, reference)
    after = global_norm(out, reference)
    # Assert
    assert after <= clip * (1 + 1e-9) + 1e-9
    if before <= clip:
        np.testing.assert_allclose(out["w"], arrays["w"], rtol=1e-12, atol=1e-12)
    else:
        assert after == pytest.approx(clip, rel=1e-6)


def test_clipping_keeps_direction_dtype_and_non_float_arrays() -> None:
    arrays, reference = models(1, 10.0)
    arrays32 = {k: v.astype(np.float32) if k != "steps" else v for k, v in arrays.items()}
    out = ClipAndNoise(clip_norm=1.0).apply(arrays32, reference)
    delta_in = np.concatenate(
        [(arrays["w"] - reference["w"]).ravel(), arrays["b"] - reference["b"]]
    )
    delta_out = np.concatenate([(out["w"] - reference["w"]).ravel(), out["b"] - reference["b"]])
    cosine = delta_in @ delta_out / np.linalg.norm(delta_in) / np.linalg.norm(delta_out)
    assert cosine == pytest.approx(1.0, abs=1e-5)
    assert out["w"].dtype == np.float32 and out["steps"] == 9


def test_noise_has_the_requested_scale_and_is_seeded() -> None:
    # Prepare
    reference = {"w": np.zeros(20_000)}
    arrays = {"w": np.zeros(20_000)}
    # Execute
    first = ClipAndNoise(clip_norm=2.0, noise_multiplier=0.5, seed=7).apply(arrays, reference)
    again = ClipAndNoise(clip_norm=2.0, noise_multiplier=0.5, seed=7).apply(arrays, reference)
    # Assert
    assert np.std(first["w"]) == pytest.approx(1.0, rel=0.03)
    assert abs(np.mean(first["w"])) < 0.05
    np.testing.assert_array_equal(first["w"], again["w"])


def test_clip_and_noise_validates() -> None:
    with pytest.raises(ConfigurationError, match="clip_norm"):
        ClipAndNoise(clip_norm=0.0)
    with pytest.raises(ConfigurationError, match="noise_multiplier"):
        ClipAndNoise(clip_norm=1.0, noise_multiplier=-0.1)
    with pytest.raises(ConfigurationError, match="same names"):
        ClipAndNoise(1.0).apply({"w": np.zeros(2)}, {"v": np.zeros(2)})
    with pytest.raises(ConfigurationError, match="shape"):
        ClipAndNoise(1.0).apply({"w": np.zeros(2)}, {"w": np.zeros(3)})


@pytest.mark.parametrize(
    "topology",
    [FullyConnected(), Ring(), RandomRegular(k=3, seed=2), Graph([("n0", "n1")], directed=True)],
    ids=repr,
)
@pytest.mark.parametrize("epoch", [0, 1, 2, 7])
def test_pairing_never_both_directions_and_both_sides_agree(topology: object, epoch: int) -> None:
    # Prepare
    members = [f"n{i}" for i in range(8)]
    rule = PairingRule()
    # Execute
    split = {m: rule.split(m, topology.neighbours(m, members, epoch), epoch) for m in members}  # type: ignore[attr-defined]
    # Assert
    for node, nb in split.items():
        assert not nb.out & nb.inbound
        for partner in nb.out:
            assert node in split[partner].inbound
        for partner in nb.inbound:
            assert node in split[partner].out
    # every original link survives in exactly one direction
    for node in members:
        original = topology.neighbours(node, members, epoch)  # type: ignore[attr-defined]
        for partner in original.out | original.inbound:
            assert partner in split[node].out | split[node].inbound


def test_pairing_alternates_direction_every_epoch() -> None:
    rule = PairingRule()
    nb = FullyConnected().neighbours("a", ["a", "b"])
    even, odd = rule.split("a", nb, 4), rule.split("a", nb, 5)
    assert even.out != odd.out
    assert even.out | even.inbound == odd.out | odd.inbound == frozenset({"b"})


def test_pairing_spreads_sending_across_nodes() -> None:
    members = [f"n{i}" for i in range(16)]
    rule = PairingRule()
    out_sizes = [
        len(rule.split(m, FullyConnected().neighbours(m, members), 0).out) for m in members
    ]
    assert min(out_sizes) > 0 and max(out_sizes) < len(members) - 1
    assert sum(out_sizes) == 16 * 15 // 2


@pytest.mark.parametrize(
    ("sigma", "sampling", "steps"), [(1.1, 1.0, 10), (1.1, 0.01, 1000), (4.0, 1.0, 200)]
)
def test_epsilon_is_the_accountant_librarys_own_figure(
    sigma: float, sampling: float, steps: int
) -> None:
    import math

    import dp_accounting
    from dp_accounting import rdp

    event: Any = dp_accounting.GaussianDpEvent(sigma)
    if sampling < 1:
        event = dp_accounting.PoissonSampledDpEvent(sampling, event)
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, steps))

    epsilon = gaussian_epsilon(sigma, steps, 1e-5, sampling)

    assert epsilon == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)
    if sampling == 1.0:  # never above the classic RDP-to-(eps, delta) bound
        classic = min(
            steps * a / (2 * sigma**2) + math.log(1 / 1e-5) / (a - 1) for a in range(2, 256)
        )
        assert 0 < epsilon <= classic


def test_epsilon_edges_and_errors() -> None:
    mechanism = ClipAndNoise(1.0, 0.0)

    assert mechanism.epsilon(0) == 0.0
    assert mechanism.epsilon(3) == float("inf")  # no noise: no privacy
    assert ClipAndNoise(1.0, 1.0).epsilon(2) < ClipAndNoise(1.0, 1.0).epsilon(3)
    with pytest.raises(ConfigurationError, match="delta"):
        ClipAndNoise(1.0, 1.0, delta=0.0)
    with pytest.raises(ConfigurationError, match="releases >= 0"):
        gaussian_epsilon(1.0, -1, 1e-5)
