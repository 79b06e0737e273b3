"""Tests of scatterbrained.sim.partition: IID, Dirichlet, shards, spec parsing, histograms."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scatterbrained.errors import ConfigurationError
from scatterbrained.sim.partition import (
    PARTITIONERS,
    dirichlet,
    iid,
    label_histogram,
    parse_partition_spec,
    partition,
    shards,
)


def _labels(samples: int, classes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=samples)


def _assert_disjoint_cover(parts: list[np.ndarray], samples: int) -> None:
    joined = np.concatenate(parts)
    assert joined.dtype == np.int64
    assert len(joined) == samples, "parts must cover every sample"
    assert len(np.unique(joined)) == samples, "parts must be disjoint"
    assert all(np.array_equal(part, np.sort(part)) for part in parts)


_cases = st.tuples(st.integers(20, 400), st.integers(1, 10), st.integers(1, 12), st.integers(0, 99))


@settings(max_examples=80, deadline=None)
@given(case=_cases)
def test_iid_is_disjoint_covering_balanced_and_deterministic(
    case: tuple[int, int, int, int],
) -> None:
    # Prepare
    samples, classes, nodes, seed = case
    labels = _labels(samples, classes, seed)
    # Execute
    parts = iid(labels, nodes, seed)
    # Assert
    _assert_disjoint_cover(parts, samples)
    sizes = [len(part) for part in parts]
    assert len(parts) == nodes and max(sizes) - min(sizes) <= 1
    assert all(np.array_equal(a, b) for a, b in zip(parts, iid(labels, nodes, seed), strict=True))


@settings(max_examples=80, deadline=None)
@given(case=_cases, alpha=st.sampled_from([0.1, 0.5, 1.0, 10.0]))
def test_dirichlet_is_disjoint_covering_and_deterministic(
    case: tuple[int, int, int, int], alpha: float
) -> None:
    # Prepare
    samples, classes, nodes, seed = case
    labels = _labels(samples, classes, seed)
    # Execute (min_size=0: the first draw is accepted, and empty parts must be fine too)
    parts = dirichlet(labels, nodes, alpha, seed, min_size=0)
    again = dirichlet(labels, nodes, alpha, seed, min_size=0)
    # Assert
    _assert_disjoint_cover(parts, samples)
    assert len(parts) == nodes
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


@settings(max_examples=80, deadline=None)
@given(case=_cases, per_node=st.integers(1, 4))
def test_shards_are_disjoint_covering_and_deterministic(
    case: tuple[int, int, int, int], per_node: int
) -> None:
    # Prepare
    samples, classes, nodes, seed = case
    assume(nodes * per_node <= samples)
    labels = _labels(samples, classes, seed)
    # Execute
    parts = shards(labels, nodes, per_node, seed)
    # Assert
    _assert_disjoint_cover(parts, samples)
    shard = samples // (nodes * per_node)
    assert all(per_node * shard <= len(part) <= per_node * (shard + 1) for part in parts)
    again = shards(labels, nodes, per_node, seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def test_dirichlet_resamples_until_min_size_is_met() -> None:
    # Prepare: with seed 0 the first two draws starve some node, the third does not
    labels = np.repeat(np.arange(3), 40)
    # Execute
    parts = dirichlet(labels, 8, 0.3, seed=0, min_size=4, max_attempts=3)
    # Assert
    with pytest.raises(ConfigurationError, match="in 2 draws"):
        dirichlet(labels, 8, 0.3, seed=0, min_size=4, max_attempts=2)
    _assert_disjoint_cover(parts, 120)
    assert min(len(part) for part in parts) >= 4


def test_dirichlet_alpha_controls_label_skew() -> None:
    # Prepare
    labels = np.repeat(np.arange(10), 200)
    # Execute
    skewed = label_histogram(dirichlet(labels, 10, 0.1, seed=0), labels, 10)
    even = label_histogram(dirichlet(labels, 10, 1000.0, seed=0), labels, 10)
    # Assert: with small alpha most nodes are dominated by few classes
    top_share_skewed = np.mean(skewed.max(axis=1) / skewed.sum(axis=1))
    top_share_even = np.mean(even.max(axis=1) / even.sum(axis=1))
    assert top_share_skewed > 0.5
    assert top_share_even < 0.2


def test_shards_give_each_node_few_classes() -> None:
    # Prepare
    labels = np.repeat(np.arange(10), 100)
    # Execute
    histogram = label_histogram(shards(labels, 10, 2, seed=1), labels, 10)
    # Assert: two shards of one class each -> at most two classes per node (shard = 50)
    assert ((histogram > 0).sum(axis=1) <= 2).all()
    np.testing.assert_array_equal(histogram.sum(axis=0), np.full(10, 100))


def test_seed_changes_the_split() -> None:
    labels = _labels(300, 5)
    assert not np.array_equal(iid(labels, 3, 0)[0], iid(labels, 3, 1)[0])
    assert not np.array_equal(shards(labels, 3, 2, 0)[0], shards(labels, 3, 2, 1)[0])
    assert not np.array_equal(dirichlet(labels, 3, 0.5, 0)[0], dirichlet(labels, 3, 0.5, 1)[0])


def test_too_many_nodes_message() -> None:
    labels = _labels(12, 3)
    expected = r"node count 13 is larger than the dataset \(12 samples\); use at most 12 nodes"
    with pytest.raises(ConfigurationError, match=expected):
        iid(labels, 13, 0)
    with pytest.raises(ConfigurationError, match=expected):
        dirichlet(labels, 13, 0.5, 0)
    with pytest.raises(ConfigurationError, match=expected):
        shards(labels, 13, 1, 0)
    with pytest.raises(ConfigurationError, match=expected):
        partition("iid", labels, 13, 0)


@pytest.mark.parametrize("nodes", [0, -3, 2.0, True])
def test_bad_node_counts(nodes: object) -> None:
    with pytest.raises(ConfigurationError, match="node count must be a positive integer"):
        iid(_labels(10, 2), nodes, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("alpha", [0, -1.0, float("nan"), float("inf"), "0.5"])
def test_bad_alpha(alpha: object) -> None:
    with pytest.raises(ConfigurationError, match="alpha must be"):
        dirichlet(_labels(50, 3), 2, alpha, 0)  # type: ignore[arg-type]


def test_dirichlet_min_size_errors() -> None:
    labels = _labels(20, 4)
    with pytest.raises(ConfigurationError, match="cannot give each of 5 nodes min_size=5"):
        dirichlet(labels, 5, 0.5, 0)
    with pytest.raises(ConfigurationError, match="use a larger alpha, a smaller min_size"):
        dirichlet(np.repeat(np.arange(10), 30), 30, 0.001, 0, min_size=9, max_attempts=5)
    with pytest.raises(ConfigurationError, match="min_size must be an integer >= 0"):
        dirichlet(labels, 2, 0.5, 0, min_size=-1)


def test_shards_errors() -> None:
    with pytest.raises(ConfigurationError, match="shards_per_node must be an integer >= 1"):
        shards(_labels(50, 3), 2, 0, 0)
    with pytest.raises(ConfigurationError, match="6 shards is more than the 5 samples"):
        shards(_labels(5, 3), 3, 2, 0)


@pytest.mark.parametrize("labels", [np.zeros((2, 2), dtype=int), np.array([]), np.array([0.5])])
def test_bad_labels(labels: np.ndarray) -> None:
    with pytest.raises(ConfigurationError, match="labels must be"):
        iid(labels, 1, 0)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("iid", ("iid", {})),
        (" IID ", ("iid", {})),
        ("dirichlet:alpha=0.5", ("dirichlet", {"alpha": 0.5})),
        ("dirichlet: alpha=0.1 , min_size=2", ("dirichlet", {"alpha": 0.1, "min_size": 2})),
        ("shards:k=2", ("shards", {"k": 2})),
        ("shards:shards_per_node=3", ("shards", {"k": 3})),
        ({"kind": "dirichlet", "alpha": 1}, ("dirichlet", {"alpha": 1})),
        ({"name": "shards", "k": 4}, ("shards", {"k": 4})),
    ],
)
def test_parse_spec(spec: object, expected: tuple[str, dict[str, float]]) -> None:
    assert parse_partition_spec(spec) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dirichlett:alpha=1", r"unknown partitioner 'dirichlett'.*did you mean 'dirichlet'"),
        ("dirichlet:alhpa=1", r"no parameter 'alhpa'.*did you mean 'alpha'"),
        ("iid:alpha=1", r"partitioner 'iid' has no parameter 'alpha' \(parameters: none\)"),
        ("shards:k", "malformed partition parameter 'k'"),
        ("dirichlet:alpha=lots", "alpha='lots' is not a number"),
        ({"alpha": 1}, "unknown partitioner ''"),
    ],
)
def test_parse_spec_errors(spec: object, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_partition_spec(spec)  # type: ignore[arg-type]


def test_partition_dispatches_with_parameters() -> None:
    # Prepare
    labels = np.repeat(np.arange(4), 25)
    # Execute
    by_spec = partition("shards:k=1", labels, 4, seed=2)
    by_mapping = partition({"kind": "dirichlet", "alpha": 0.3, "min_size": 1}, labels, 4, 2)
    # Assert
    assert all(np.array_equal(a, b) for a, b in zip(by_spec, shards(labels, 4, 1, 2), strict=True))
    direct = dirichlet(labels, 4, 0.3, 2, min_size=1)
    assert all(np.array_equal(a, b) for a, b in zip(by_mapping, direct, strict=True))
    assert set(PARTITIONERS) == {"iid", "dirichlet", "shards"}


def test_label_histogram_counts_and_validates() -> None:
    # Prepare
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 1]), np.array([2, 3, 4, 5]), np.array([], dtype=np.int64)]
    # Execute
    histogram = label_histogram(parts, labels, 4)
    # Assert
    assert histogram.tolist() == [[1, 1, 0, 0], [0, 1, 3, 0], [0, 0, 0, 0]]
    with pytest.raises(ConfigurationError, match=r"labels must lie in \[0, 2\)"):
        label_histogram(parts, labels, 2)
