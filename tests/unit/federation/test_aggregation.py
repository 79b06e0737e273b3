"""Tests of scatterbrained.federation.aggregation against straightforward NumPy references."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterbrained.errors import ConfigurationError
from scatterbrained.federation.aggregation import (
    Aggregator,
    CenteredClipping,
    Contribution,
    FedAvg,
    Krum,
    Mean,
    Median,
    TrimmedMean,
    aggregator_from_spec,
)

Arrays = dict[str, Any]

pytestmark = pytest.mark.timeout(60)

SHAPES = {"w": (3, 2), "b": (2,)}


def model(rng: np.random.Generator, scale: float = 1.0, dtype: type = np.float32) -> Arrays:
    return {
        "w": (rng.normal(size=SHAPES["w"]) * scale).astype(dtype),
        "b": (rng.normal(size=SHAPES["b"]) * scale).astype(dtype),
        "count": np.array(7, dtype=np.int64),
    }


def contributions(n: int, seed: int = 0) -> tuple[Contribution, list[Contribution]]:
    rng = np.random.default_rng(seed)
    local = Contribution(model(rng), samples=10, sender="local")
    others = [Contribution(model(rng), samples=10 * (i + 2), sender=f"p{i}") for i in range(n)]
    for i, other in enumerate(others):
        other.arrays["count"][...] = 100 + i  # type: ignore[index]
    return local, others


def flat(c: Contribution, name: str) -> np.ndarray:
    return np.asarray(c.arrays[name], dtype=np.float64)


def stacked(local: Contribution, others: Sequence[Contribution], name: str) -> np.ndarray:
    return np.stack([flat(c, name) for c in (local, *others)])


# ---- references --------------------------------------------------------------------------


def ref_trimmed(rows: np.ndarray, trim: float) -> np.ndarray:
    n = rows.shape[0]
    cut = int(np.floor(trim * n))
    if trim > 0 and n >= 3:
        cut = max(cut, 1)
    out = np.empty(rows.shape[1:])
    for idx in np.ndindex(*rows.shape[1:]):
        values = sorted(rows[(slice(None), *idx)])
        out[idx] = np.mean(values[cut : n - cut])
    return out


def ref_krum(models: list[Arrays], f: int, m: int) -> Arrays:
    vectors = [np.concatenate([mod["w"].ravel(), mod["b"].ravel()]).astype(float) for mod in models]
    n = len(vectors)
    scores = []
    for i in range(n):
        d = sorted(float(np.sum((vectors[i] - vectors[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(d[: max(1, n - f - 2)]))
    best = np.argsort(scores, kind="stable")[:m]
    return {k: np.mean([np.asarray(models[i][k], float) for i in best], axis=0) for k in ("w", "b")}


def ref_centered_clipping(models: list[Arrays], tau: float, iterations: int) -> Arrays:
    vectors = [np.concatenate([mod["w"].ravel(), mod["b"].ravel()]).astype(float) for mod in models]
    v = vectors[0].copy()
    for _ in range(iterations):
        step = np.zeros_like(v)
        for x in vectors:
            norm = np.linalg.norm(x - v)
            step += (x - v) * (1.0 if norm == 0 else min(1.0, tau / norm))
        v = v + step / len(vectors)
    return {"w": v[:6].reshape(3, 2), "b": v[6:]}


# ---- reference checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("aggregator", "reference"),
    [
        (Mean(), lambda rows, w: rows.mean(axis=0)),
        (FedAvg(), lambda rows, w: np.average(rows, axis=0, weights=w)),
        (Median(), lambda rows, w: np.median(rows, axis=0)),
        (TrimmedMean(0.2), lambda rows, w: ref_trimmed(rows, 0.2)),
        (TrimmedMean(0.0), lambda rows, w: rows.mean(axis=0)),
    ],
    ids=repr,
)
def test_coordinate_wise_aggregators_match_numpy(aggregator: Aggregator, reference: object) -> None:
    # Prepare
    local, others = contributions(5)
    weights = np.array([c.samples for c in (local, *others)], dtype=float)
    # Execute
    result = aggregator(local, others)
    # Assert
    for name in ("w", "b"):
        expected = reference(stacked(local, others, name), weights)  # type: ignore[operator]
        np.testing.assert_allclose(result[name], expected, rtol=1e-6, atol=1e-6)
        assert result[name].dtype == np.float32
    assert result["count"] == 7 and result["count"].dtype == np.int64


@pytest.mark.parametrize(("f", "m", "n_others"), [(1, 1, 5), (1, 3, 5), (2, 2, 8), (1, 1, 2)])
def test_krum_matches_reference(f: int, m: int, n_others: int) -> None:
    local, others = contributions(n_others, seed=3)
    result = Krum(f=f, m=m)(local, others)
    expected = ref_krum([dict(c.arrays) for c in (local, *others)], f, m)
    for name in ("w", "b"):
        np.testing.assert_allclose(result[name], expected[name], rtol=1e-6, atol=1e-6)
    assert result["count"] == 7


def test_krum_rejects_outliers_and_keeps_local_when_alone_with_one_peer() -> None:
    # Prepare
    rng = np.random.default_rng(1)
    honest = [Contribution(model(rng, 0.01), sender=f"h{i}") for i in range(5)]
    attacker = Contribution(model(rng, 1000.0), sender="evil")
    # Execute
    chosen = Krum(f=1, m=None).select(honest[0], [*honest[1:], attacker])
    pair = Krum(f=1)(honest[0], [attacker])
    # Assert
    assert chosen[-1] == 5  # the attacker scores worst
    np.testing.assert_array_equal(pair["w"], honest[0].arrays["w"])


@pytest.mark.parametrize(("tau", "iterations"), [(0.5, 1), (0.1, 3), (100.0, 2)])
def test_centered_clipping_matches_reference(tau: float, iterations: int) -> None:
    local, others = contributions(4, seed=5)
    result = CenteredClipping(tau=tau, iterations=iterations)(local, others)
    expected = ref_centered_clipping([dict(c.arrays) for c in (local, *others)], tau, iterations)
    for name in ("w", "b"):
        np.testing.assert_allclose(result[name], expected[name], rtol=1e-5, atol=1e-6)


def test_adaptive_clipping_follows_the_scale_of_the_models() -> None:
    # Prepare: the same models in two units (x 1000)
    local, others = contributions(5, seed=3)
    big_local = Contribution({k: v * 1000 for k, v in local.arrays.items()}, local.samples)
    big_others = [Contribution({k: v * 1000 for k, v in o.arrays.items()}) for o in others]
    # Execute
    small = CenteredClipping()(local, others)
    big = CenteredClipping()(big_local, big_others)
    # Assert: the result scales with the models (a fixed tau would not)
    np.testing.assert_allclose(big["w"], small["w"] * 1000, rtol=1e-4)


def test_adaptive_clipping_ignores_a_gross_outlier_and_bounds_a_close_one() -> None:
    # Prepare: three honest models near 1, one attacker far away or at the clipping edge
    rng = np.random.default_rng(0)
    honest = [Contribution({"w": 1 + 0.01 * rng.standard_normal(50)}) for _ in range(3)]
    honest_mean = np.mean([h.arrays["w"] for h in honest], axis=0)
    far = Contribution({"w": np.full(50, -10.0)})
    # Execute
    with_far = CenteredClipping(iterations=1)(honest[0], [*honest[1:], far])
    clean = CenteredClipping(iterations=1)(honest[0], honest[1:])
    # Assert: the gross outlier moves the result by far less than one honest step
    step = np.linalg.norm(clean["w"] - honest[0].arrays["w"])
    assert np.linalg.norm(with_far["w"] - honest_mean) < 2 * np.linalg.norm(
        honest[0].arrays["w"] - honest_mean
    )
    assert np.linalg.norm(with_far["w"] - clean["w"]) < step


def test_centered_clipping_with_large_tau_is_the_mean() -> None:
    local, others = contributions(3)
    result = CenteredClipping(tau=1e9)(local, others)
    np.testing.assert_allclose(result["w"], stacked(local, others, "w").mean(axis=0), rtol=1e-6)


def test_fedavg_with_zero_samples_everywhere_is_the_plain_mean() -> None:
    local, others = contributions(3)
    zero_local = Contribution(local.arrays, samples=0)
    zero_others = [Contribution(o.arrays, samples=0) for o in others]
    result = FedAvg()(zero_local, zero_others)
    np.testing.assert_allclose(result["w"], Mean()(local, others)["w"], rtol=1e-6)


def test_float64_models_keep_their_dtype() -> None:
    rng = np.random.default_rng(0)
    local = Contribution(model(rng, dtype=np.float64))
    result = FedAvg()(local, [Contribution(model(rng, dtype=np.float64))])
    assert result["w"].dtype == np.float64


@pytest.mark.parametrize(
    "aggregator",
    [Mean(), FedAvg(), Median(), TrimmedMean(), Krum(), CenteredClipping()],
    ids=repr,
)
def test_no_others_returns_a_copy_of_local(aggregator: Aggregator) -> None:
    local, _ = contributions(0)
    result = aggregator(local, [])
    for name, array in local.arrays.items():
        np.testing.assert_array_equal(result[name], array)
        assert result[name] is not array
        assert not np.shares_memory(result[name], array)


@pytest.mark.parametrize(
    "aggregator",
    [Mean(), FedAvg(), Median(), TrimmedMean(), Krum(), CenteredClipping()],
    ids=repr,
)
def test_mismatching_contributions_raise(aggregator: Aggregator) -> None:
    local, others = contributions(1)
    missing = Contribution({"w": others[0].arrays["w"]}, sender="bad")
    reshaped = Contribution({**others[0].arrays, "b": np.zeros(3, np.float32)}, sender="bad")
    negative = Contribution(others[0].arrays, samples=-1, sender="bad")
    with pytest.raises(ConfigurationError, match="names"):
        aggregator(local, [missing])
    with pytest.raises(ConfigurationError, match="shape"):
        aggregator(local, [reshaped])
    with pytest.raises(ConfigurationError, match="samples"):
        aggregator(local, [negative])


def test_custom_callable_is_accepted_as_aggregator() -> None:
    def keep_local(local: Contribution, others: Sequence[Contribution]) -> Arrays:
        return {k: np.array(v) for k, v in local.arrays.items()}

    assert aggregator_from_spec(keep_local) is keep_local


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("fedavg", FedAvg()),
        ("FedAvg", FedAvg()),
        ("mean", Mean()),
        ("median", Median()),
        ("trimmed-mean:trim=0.2", TrimmedMean(0.2)),
        ("krum:f=1", Krum(f=1, m=None)),
        ("krum:f=1,m=1", Krum(f=1, m=1)),
        ("multi-krum:f=1,m=3", Krum(f=1, m=3)),
        ("multi-krum:f=2", Krum(f=2, m=None)),
        ("centered-clipping:tau=1", CenteredClipping(tau=1.0)),
        ("centered-clipping", CenteredClipping()),
        ("centered-clipping:f=3,margin=2", CenteredClipping(tau=None, f=3, margin=2.0)),
        ({"name": "centered_clipping", "tau": 2, "iterations": 3}, CenteredClipping(2.0, 3)),
    ],
)
def test_aggregator_from_spec(spec: object, expected: object) -> None:
    assert aggregator_from_spec(spec) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("medain", "did you mean 'median'"),
        ("trimmed-mean:trim=0.5", r"\[0, 0.5\)"),
        ("krum:f=-1", "f must be"),
        ("krum:m=0", "m must be"),
        ("centered-clipping:tau=0", "tau"),
        ("centered-clipping:margin=0", "margin"),
        ("centered-clipping:power=0.5", "power"),
        ("mean:x=1", "does not take"),
    ],
)
def test_aggregator_from_spec_rejects(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        aggregator_from_spec(spec)


# ---- properties ----------------------------------------------------------------------------

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def contribution_sets(draw: st.DrawFn) -> tuple[Contribution, list[Contribution]]:
    n = draw(st.integers(1, 7))
    size = draw(st.integers(1, 4))
    vectors = [
        np.array(draw(st.lists(finite, min_size=size, max_size=size)), np.float32)
        for _ in range(n + 1)
    ]
    samples = draw(st.lists(st.integers(0, 50), min_size=n + 1, max_size=n + 1))
    cs = [
        Contribution({"v": v}, samples=s, sender=f"s{i}")
        for i, (v, s) in enumerate(zip(vectors, samples, strict=True))
    ]
    return cs[0], cs[1:]


PROPERTY_AGGREGATORS: list[Aggregator] = [
    Mean(),
    FedAvg(),
    Median(),
    TrimmedMean(0.25),
    CenteredClipping(1.0, 2),
]


@settings(max_examples=60, deadline=None)
@given(data=contribution_sets(), seed=st.integers(0, 1000))
def test_permutation_of_others_does_not_change_the_result(
    data: tuple[Contribution, list[Contribution]], seed: int
) -> None:
    local, others = data
    permuted = [others[i] for i in np.random.default_rng(seed).permutation(len(others))]
    for aggregator in [*PROPERTY_AGGREGATORS, Krum(f=1, m=2)]:  # type: ignore[list-item]
        np.testing.assert_allclose(
            aggregator(local, others)["v"], aggregator(local, permuted)["v"], rtol=1e-5, atol=1e-3
        )


@settings(max_examples=60, deadline=None)
@given(data=contribution_sets())
def test_identical_contributions_aggregate_to_themselves(
    data: tuple[Contribution, list[Contribution]],
) -> None:
    local, others = data
    copies = [Contribution(local.arrays, samples=o.samples) for o in others]
    for aggregator in [*PROPERTY_AGGREGATORS, Krum(f=1, m=None)]:
        np.testing.assert_allclose(aggregator(local, copies)["v"], local.arrays["v"], rtol=1e-6)


@settings(max_examples=80, deadline=None)
@given(data=contribution_sets())
def test_results_lie_within_coordinate_min_max(
    data: tuple[Contribution, list[Contribution]],
) -> None:
    local, others = data
    rows = stacked(local, others, "v")
    low, high = rows.min(axis=0), rows.max(axis=0)
    slack = 1e-3 + 1e-6 * np.abs(rows).max()
    bounded: list[Aggregator] = [FedAvg(), Mean(), Median(), TrimmedMean(0.25), Krum(f=1, m=2)]
    for aggregator in bounded:
        result = aggregator(local, others)["v"]
        assert np.all(result >= low - slack) and np.all(result <= high + slack)


@settings(max_examples=60, deadline=None)
@given(data=contribution_sets(), sign=st.sampled_from([-1.0, 1.0]))
def test_median_and_trimmed_mean_resist_one_huge_outlier(
    data: tuple[Contribution, list[Contribution]], sign: float
) -> None:
    local, others = data
    honest = [local, *others]
    outlier = Contribution({"v": np.full_like(local.arrays["v"], sign * 1e30)}, sender="evil")
    if len(honest) < 3:
        honest.append(Contribution({"v": local.arrays["v"].copy()}))
    low = stacked(honest[0], honest[1:], "v").min(axis=0) - 1e-3
    high = stacked(honest[0], honest[1:], "v").max(axis=0) + 1e-3
    n_total = len(honest) + 1
    trim = TrimmedMean(trim=min(0.49, 1.0 / n_total + 1e-9))
    for aggregator in (Median(), trim):
        result = aggregator(honest[0], [*honest[1:], outlier])["v"]
        assert np.all(result >= low) and np.all(result <= high), aggregator


@pytest.mark.parametrize("n", [3, 4, 5, 9])
def test_default_trimmed_mean_cuts_one_outlier_per_side_from_three_contributions(n: int) -> None:
    rows = [np.array([float(i)]) for i in range(1, n)]
    local = Contribution({"v": np.array([0.0])}, sender="me")
    others = [Contribution({"v": r}, sender=f"p{i}") for i, r in enumerate(rows[:-1])]
    others.append(Contribution({"v": np.array([1e9])}, sender="evil"))

    result = TrimmedMean()(local, others)["v"]

    assert result[0] < n  # the 1e9 outlier was cut although floor(0.1 * n) == 0


def test_trimmed_mean_with_trim_zero_is_the_mean() -> None:
    local = Contribution({"v": np.array([0.0])}, sender="me")
    others = [Contribution({"v": np.array([3.0])}), Contribution({"v": np.array([9.0])})]

    assert TrimmedMean(0.0)(local, others)["v"][0] == pytest.approx(4.0)


def test_fedavg_caps_an_inflated_sample_count_at_ten_times_the_median() -> None:
    honest = [Contribution({"v": np.array([1.0])}, samples=100, sender=f"h{i}") for i in range(3)]
    liar = Contribution({"v": np.array([-1.0])}, samples=10**9, sender="liar")

    result = FedAvg()(honest[0], [*honest[1:], liar])["v"][0]

    # weights 100, 100, 100 and min(10**9, 10 * 100): (300 - 1000) / 1300
    assert result == pytest.approx((300.0 - 1000.0) / 1300.0)
    assert FedAvg(max_ratio=None)(honest[0], [*honest[1:], liar])["v"][0] < -0.99


def test_fedavg_caps_and_specs() -> None:
    a = Contribution({"v": np.array([0.0])}, samples=10)
    b = Contribution({"v": np.array([1.0])}, samples=1000)

    assert FedAvg(max_samples=10)(a, [b])["v"][0] == pytest.approx(0.5)
    assert aggregator_from_spec("fedavg") == FedAvg()
    assert aggregator_from_spec("fedavg:max_ratio=none,max_samples=50") == FedAvg(None, 50)
    with pytest.raises(ConfigurationError, match="max_ratio"):
        FedAvg(max_ratio=0)
