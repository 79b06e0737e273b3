"""Attack models: what each forges, specs and their errors."""

from __future__ import annotations

import numpy as np
import pytest

from scatterbrained.errors import ConfigurationError
from scatterbrained.federation.attacks import ATTACK_NAMES, attack_from_spec

OWN = {"w": np.array([1.0, -2.0], np.float32), "steps": np.array([7], np.int64)}
HONEST = [{"w": np.array([0.0, 0.0])}, {"w": np.array([2.0, 4.0])}]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("sign-flip", [-1.0, 2.0]),
        ("sign-flip:scale=10", [-10.0, 20.0]),
        ("scale:factor=3", [3.0, -6.0]),
        ("alie:z=1", [0.0, 0.0]),  # mean (1, 2) - std (1, 2) of the honest ones
        ("ipm:epsilon=0.5", [-0.5, -1.0]),
        ("label-flip", [1.0, -2.0]),
        ("honest", [1.0, -2.0]),
    ],
)
def test_each_attack_forges_what_its_definition_says(spec: str, expected: list[float]) -> None:
    forged = attack_from_spec(spec).forge(OWN, HONEST)

    assert forged["w"].tolist() == pytest.approx(expected)
    assert forged["w"].dtype == np.float32
    assert forged["steps"].tolist() == [7]  # integer buffers pass unchanged


def test_gaussian_noise_is_seeded_and_stale_repeats_the_first_model() -> None:
    first = attack_from_spec("gaussian:std=1,seed=4").forge(OWN, [])["w"]
    again = attack_from_spec("gaussian:std=1,seed=4").forge(OWN, [])["w"]
    stale = attack_from_spec("stale")

    replayed = [stale.forge({"w": np.array([float(i)])}, [])["w"][0] for i in range(3)]

    assert np.array_equal(first, again) and not np.array_equal(first, OWN["w"])
    assert replayed == [0.0, 0.0, 0.0]


def test_without_honest_neighbours_alie_and_ipm_use_their_own_model() -> None:
    assert attack_from_spec("ipm").forge(OWN, [])["w"].tolist() == pytest.approx([-0.5, 1.0])
    assert attack_from_spec("alie").forge(OWN, [])["w"].tolist() == pytest.approx([1.0, -2.0])


def test_samples_claim_and_label_flip_flags() -> None:
    assert attack_from_spec("sign-flip:samples=1e9").samples == 10**9
    assert attack_from_spec("sign-flip").samples is None
    assert attack_from_spec("label-flip").flips_labels
    assert set(ATTACK_NAMES) >= {"sign-flip", "alie", "ipm", "label-flip", "stale", "gaussian"}


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("sign-flp", "did you mean 'sign-flip'"),
        ("alie:q=1", "does not take parameter"),
        ("gaussian:std=-1", "std >= 0"),
        ("honest:samples=-5", "samples"),
    ],
)
def test_bad_specs_are_one_configuration_error(spec: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        attack_from_spec(spec)
