"""Aggregators: pure functions that merge a node's model with its neighbours' models.

Every aggregator takes the local :class:`Contribution` and the others and returns new named
arrays. Floating-point arrays are combined in float64 and cast back to the local dtype;
non-float arrays (integer or boolean buffers such as BatchNorm's ``num_batches_tracked``) keep
the local value. With no others the result is a copy of the local arrays. Any callable with
the :class:`Aggregator` signature can be used as a custom aggregator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..errors import ConfigurationError
from ._spec import SpecParams, build_from_spec

__all__ = [
    "Aggregate",
    "Aggregator",
    "CenteredClipping",
    "Contribution",
    "FedAvg",
    "Krum",
    "Mean",
    "Median",
    "TrimmedMean",
    "aggregate",
    "aggregator_from_spec",
    "weighted_mean",
]

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Contribution:
    """One model taking part in an aggregation.

    Attributes:
        arrays: the model's named arrays.
        samples: local training samples behind the model (the FedAvg weight, >= 0).
        sender: the contributing node's id (``""`` for the local model if unknown).
    """

    arrays: Mapping[str, np.ndarray]
    samples: int = 1
    sender: str = field(default="")


class Aggregator(Protocol):
    """Merges the local model with the models of other nodes."""

    def __call__(self, local: Contribution, others: Sequence[Contribution]) -> Arrays:
        """Return the merged arrays (names, shapes and dtypes of ``local``).

        Raises:
            ConfigurationError: a contribution's names or shapes differ from ``local``'s.
        """
        ...


@dataclass(frozen=True)
class Aggregate:
    """The result of an aggregation and what it was made of.

    Attributes:
        arrays: the merged named arrays.
        used: senders of the *other* contributions that the result is built from, in the
            order offered (e.g. Krum lists only the models it selected; a coordinate-wise
            rule lists every contribution, since each one can move a coordinate).
    """

    arrays: Arrays
    used: tuple[str, ...]


def aggregate(
    aggregator: Aggregator, local: Contribution, others: Sequence[Contribution]
) -> Aggregate:
    """Run ``aggregator`` and report which of ``others`` it used.

    Built-in aggregators report exactly (:meth:`Krum.aggregate`); for any other callable
    every offered contribution counts as used.

    Raises:
        ConfigurationError: a contribution does not fit the local model.
    """
    method = getattr(aggregator, "aggregate", None)
    if callable(method):
        result = method(local, others)
        if isinstance(result, Aggregate):
            return result
    return Aggregate(dict(aggregator(local, others)), tuple(o.sender for o in others))


def _is_float(array: np.ndarray) -> bool:
    return bool(np.issubdtype(array.dtype, np.floating))


def _validate(local: Contribution, others: Sequence[Contribution]) -> None:
    names = set(local.arrays)
    for other in others:
        if set(other.arrays) != names:
            missing = sorted(names - set(other.arrays))
            extra = sorted(set(other.arrays) - names)
            raise ConfigurationError(
                f"contribution from {other.sender!r} has different array names than the local "
                f"model (missing {missing}, extra {extra}); validate updates before aggregating"
            )
        for name, array in other.arrays.items():
            if np.shape(array) != np.shape(local.arrays[name]):
                raise ConfigurationError(
                    f"contribution from {other.sender!r}: array {name!r} has shape "
                    f"{np.shape(array)}, local has {np.shape(local.arrays[name])}"
                )
    for c in (local, *others):
        if c.samples < 0:
            raise ConfigurationError(f"contribution {c.sender!r} has samples={c.samples} < 0")


def _stack(name: str, contributions: Sequence[Contribution]) -> np.ndarray:
    """Stack one array of every contribution as float64 rows: shape ``(n, size)``."""
    return np.stack(
        [np.asarray(c.arrays[name], dtype=np.float64).reshape(-1) for c in contributions]
    )


def _per_coordinate(
    local: Contribution,
    others: Sequence[Contribution],
    combine: Callable[[np.ndarray], np.ndarray],
) -> Arrays:
    """Apply ``combine`` (rows -> one row) to every float array; keep non-float arrays local."""

    def merge(name: str, contributions: list[Contribution], array: np.ndarray) -> np.ndarray:
        merged = combine(_stack(name, contributions))
        return merged.reshape(array.shape).astype(array.dtype, copy=False)

    return _per_float_array(local, others, merge)


def _per_float_array(
    local: Contribution,
    others: Sequence[Contribution],
    merge: Callable[[str, list[Contribution], np.ndarray], np.ndarray],
) -> Arrays:
    """``merge(name, contributions, local array)`` for every float array (validated first);
    non-float arrays, and every array when there are no others, stay local (copied)."""
    _validate(local, others)
    contributions = [local, *others]
    result: Arrays = {}
    for name, array in local.arrays.items():
        array = np.asarray(array)
        if not others or not _is_float(array):
            result[name] = array.copy()
            continue
        result[name] = merge(name, contributions, array)
    return result


def weighted_mean(
    local: Contribution, others: Sequence[Contribution], weights: np.ndarray
) -> Arrays:
    """Coordinate-wise mean of ``local`` and ``others`` with ``weights`` (one each, in that
    order, normalised here; all zero: the plain mean). Non-float arrays stay local.

    Raises:
        ConfigurationError: a contribution does not fit the local model.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    weights = weights / weights.sum()

    def merge(name: str, contributions: list[Contribution], array: np.ndarray) -> np.ndarray:
        return _weighted_sum([c.arrays[name] for c in contributions], weights, array.dtype)

    return _per_float_array(local, others, merge)


def _weighted_sum(arrays: Sequence[np.ndarray], weights: np.ndarray, dtype: Any) -> np.ndarray:
    """``sum(w * a)`` accumulated in float64, one element-wise pass per array, cast to
    ``dtype``. Element-wise on purpose: a matrix product over stacked rows goes through
    BLAS, whose worker threads spin beside the training thread and slow it down."""
    total = np.zeros(np.shape(arrays[0]), dtype=np.float64)
    scratch = np.empty_like(total)
    for weight, array in zip(weights, arrays, strict=True):
        np.multiply(array, weight, out=scratch, casting="unsafe")
        total += scratch
    return total.astype(dtype, copy=False)


@dataclass(frozen=True)
class Mean:
    """Plain (unweighted) coordinate-wise mean of the local model and the others."""

    def __call__(self, local: Contribution, others: Sequence[Contribution]) -> Arrays:
        """Return the mean arrays (see :class:`Aggregator`)."""
        return _per_coordinate(local, others, lambda rows: rows.mean(axis=0))


@dataclass(frozen=True)
class FedAvg:
    """Sample-weighted mean (McMahan et al.); when every weight is 0 it is the plain mean.

    Sample counts are claims a peer makes. Each weight is capped at ``max_ratio`` times the
    median of the positive counts of the merge (the local one included) and at
    ``max_samples``, so one peer claiming 10**9 samples weighs no more than ``max_ratio``
    typical peers. Honest counts of one label-skewed federation rarely differ by 10x.

    Args:
        max_ratio: cap relative to the median positive count (``None``: no such cap).
        max_samples: absolute cap on one contribution's count (``None``: none).

    Raises:
        ConfigurationError: a cap is not positive.
    """

    max_ratio: float | None = 10.0
    max_samples: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_ratio", "max_samples"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigurationError(f"FedAvg {name} must be > 0 or None, got {value!r}")

    def weights(self, contributions: Sequence[Contribution]) -> np.ndarray:
        """The capped sample counts of ``contributions`` (before normalisation)."""
        weights = np.array([c.samples for c in contributions], dtype=np.float64)
        positive = weights[weights > 0]
        if self.max_ratio is not None and positive.size:
            weights = np.minimum(weights, self.max_ratio * float(np.median(positive)))
        if self.max_samples is not None:
            weights = np.minimum(weights, float(self.max_samples))
        return weights

    def __call__(self, local: Contribution, others: Sequence[Contribution]) -> Arrays:
        """Return the sample-weighted mean arrays (see :class:`Aggregator`)."""
        return weighted_mean(local, others, self.weights([local, *others]))


@dataclass(frozen=True)
class Median:
    """Coordinate-wise median (the mean of the two middle values for an even count)."""

    def __call__(self, local: Contribution, others: Sequence[Contribution]) -> Arrays:
        """Return the coordinate-wise median arrays (see :class:`Aggregator`)."""
        return _per_coordinate(local, others, lambda rows: np.median(rows, axis=0))


@dataclass(frozen=True)
class TrimmedMean:
    """Coordinate-wise mean after dropping ``floor(trim * n)`` values from each end.

    With ``trim > 0`` at least one value is dropped from each end once there are ``n >= 3``
    contributions (the local one included), so one outlier is cut even in the small
    neighbourhoods of sparse graphs, where ``floor(0.1 * n)`` would be 0 below ten.

    Args:
        trim: fraction trimmed from each end, ``0 <= trim < 0.5`` (0: the plain mean).

    Raises:
        ConfigurationError: ``trim`` is out of range.
    """

    trim: float = 0.1

    def __post_init__(self) -> None:
        if not 0.0 <= self.trim < 0.5:
            raise ConfigurationError(f"TrimmedMean trim must be in [0, 0.5), got {self.trim!r}")

    def __call__(self, local: Contribution, others: Sequence[Contribution]) -> Arrays:
        """Return the trimmed-mean arrays (see :class:`Aggregator`)."""
        n = len(others) + 1
        cut = math.floor(self.trim * n)
        if self.trim > 0 and n >= 3:
            cut = max(cut, 1)

        def combine(rows: np.ndarray) -> np.ndarray:
            ordered = np.sort(rows, axis=0)
            kept: np.ndarray = ordered[cut : rows.shape[0] - cut].mean(axis=0)
            return kept

        return _per_coordinate(local, others, combine)


def _float_names(local: Contribution) -> list[str]:
    return [n for n, a in local.arrays.items() if _is_float(np.asarray(a))]


def _from_rows(
    local: Contribution, contributions: Sequence[Contribution], pick: Callable[[np.ndarray], Any]
) -> Arrays:
    """Apply ``pick`` (rows -> one row) to every float array of ``contributions``."""
    result: Arrays = {}
    for name, array in local.arrays.items():
        array = np.asarray(array)
        if _is_float(array):
            merged = np.asarray(pick(_stack(name, contributions)))
            result[name] = merged.reshape(array.shape).astype(array.dtype, copy=False)
        else:
            result[name] = array.copy()
    return result


@dataclass(frozen=True)
class Krum:
    """Krum / Multi-Krum (Blanchard et al. 2017): average the ``m`` best-scored models.

    A model's score is the sum of squared L2 distances (over all float arrays) to its
    ``n - f - 2`` nearest other models. The local model is one candidate among the others
    and is *not* always part of the result. Ties prefer the local model, then sender id.

    Fallback with fewer than ``2f + 3`` contributions: each score uses the
    ``max(1, n - f - 2)`` nearest models (with only local + one other, the local model wins
    the tie, so Krum keeps the local model).

    Args:
        f: number of Byzantine contributions tolerated (>= 0).
        m: models averaged (>= 1; clipped to ``n``); ``None`` (the default) means ``n - f``
            (Multi-Krum). ``m=1`` is the original Krum: it adopts one model, which on
            label-skewed data costs ~20 points even without attackers (README, "Byzantine
            robustness, measured").

    Raises:
        ConfigurationError: ``f < 0`` or ``m < 1``.
    """

    f: int = 1
    m: int | None = None

    def __post_init__(self) -> None:
        if self.f < 0:
            raise ConfigurationError(f"Krum f must be >= 0, got {self.f!r}")
        if self.m is not None and self.m < 1:
            raise ConfigurationError(f"Krum m must be >= 1 or None, got {self.m!r}")

    def __call__(self, local: Contribution, others: Sequence[Contribution]) -> Arrays:
        """Return the (Multi-)Krum arrays (see :class:`Aggregator`)."""
        return self.aggregate(local, others).arrays

    def aggregate(self, local: Contribution, others: Sequence[Contribution]) -> Aggregate:
        """The (Multi-)Krum arrays and the senders of the selected models (local excluded)."""
        _validate(local, others)
        contributions = [local, *others]
        n = len(contributions)
        chosen = sorted(self.select(local, others)[: self._count(n)])
        picked = [contributions[i] for i in chosen]
        arrays = _from_rows(local, picked, lambda rows: rows.mean(axis=0))
        return Aggregate(arrays, tuple(contributions[i].sender for i in chosen if i != 0))

    def _count(self, n: int) -> int:
        m = max(1, n - self.f) if self.m is None else self.m
        return min(m, n)

    def select(self, local: Contribution, others: Sequence[Contribution]) -> list[int]:
        """Return contribution indices (0 = local, i = ``others[i - 1]``) best score first."""
        contributions = [local, *others]
        n = len(contributions)
        distances = np.zeros((n, n))
        for name in _float_names(local):
            rows = _stack(name, contributions)
            for i in range(n):
                distances[i] += np.square(rows - rows[i]).sum(axis=1)
        nearest = max(1, n - self.f - 2)
        scores = [float(np.sort(np.delete(distances[i], i))[:nearest].sum()) for i in range(n)]
        return sorted(range(n), key=lambda i: (scores[i], i != 0, contributions[i].sender))


@dataclass(frozen=True)
class CenteredClipping:
    """Self-centred clipping (Karimireddy et al. 2021; ClippedGossip, He et al. 2022).

    Starting from ``v = local``, each iteration sets
    ``v += mean_i((x_i - v) * min(1, tau / ||x_i - v||) ** power)`` over all contributions
    (local included), with the L2 norm taken over all float arrays together. Centred at the
    node's own model, it needs no majority among a node's few in-neighbours: it is the rule
    for sparse graphs (a ring gives three contributions per merge).

    With ``tau=None`` (the default) the radius adapts each iteration to the spread of the
    models, as in ClippedGossip: ``tau = margin * d_k``, where ``d_k`` is the distance from
    ``v`` to the ``k``-th nearest other contribution, ``k = max(1, len(others) - f)``; so it
    follows the model's scale and only the ``f`` farthest can be clipped. The default
    ``power`` is then 2 (a redescending weight): a contribution at distance ``r > tau`` moves
    ``v`` by ``tau**2 / r / n``, at most ``tau / n`` (at ``r = tau``), and a gross outlier
    (a sign flip scaled by 10) by almost nothing. With a fixed ``tau`` the default ``power``
    is 1: the published centred clipping; ``tau`` is then in the units of the parameters and
    must follow the model's scale (too large lets attackers through, too small stops mixing).

    Measured (``benchmarks/byzantine.py``, digits, 16 nodes, f = 3): the adaptive rule stays
    within 3 points of clean under sign flip on the ring and the full mesh; a ``margin`` of 2
    lets inner-product manipulation through on the ring (-22 points), 1.5 mixes too little.

    Args:
        tau: fixed clipping radius (> 0), or ``None`` for the adaptive radius.
        iterations: clipping iterations (>= 1).
        f: contributions per merge assumed hostile, for the adaptive radius (>= 0).
        margin: the adaptive radius over the ``k``-th nearest distance (> 0).
        power: exponent of the clipping weight (>= 1); ``None``: 2 adaptive, 1 fixed.

    Raises:
        ConfigurationError: ``tau <= 0``, ``iterations < 1``, ``f < 0``, ``margin <= 0`` or
            ``power < 1``.
    """

    tau: float | None = None
    iterations: int = 3
    f: int = 1
    margin: float = 1.75
    power: float | None = None

    def __post_init__(self) -> None:
        checks = (
            (self.tau is None or self.tau > 0, "tau must be > 0 or None (adaptive)", self.tau),
            (self.iterations >= 1, "iterations must be >= 1", self.iterations),
            (self.f >= 0, "f must be >= 0", self.f),
            (self.margin > 0, "margin must be > 0", self.margin),
            (self.power is None or self.power >= 1, "power must be >= 1 or None", self.power),
        )
        for ok, what, value in checks:
            if not ok:
                raise ConfigurationError(f"CenteredClipping {what}, got {value!r}")

    def __call__(self, local: Contribution, others: Sequence[Contribution]) -> Arrays:
        """Return the centred-clipping arrays (see :class:`Aggregator`)."""
        _validate(local, others)
        names = _float_names(local)
        contributions = [local, *others]
        rows = {name: _stack(name, contributions) for name in names}
        centre = {name: rows[name][0].copy() for name in names}
        for _ in range(self.iterations):
            norms_sq = np.zeros(len(contributions))
            for name in names:
                norms_sq += np.square(rows[name] - centre[name]).sum(axis=1)
            norms = np.sqrt(norms_sq)
            clipped = np.minimum(1.0, self._radius(norms) / np.where(norms > 0, norms, np.inf))
            scale = clipped ** self._power()
            for name in names:
                centre[name] = centre[name] + (scale @ (rows[name] - centre[name])) / len(scale)
        result: Arrays = {}
        for name, array in local.arrays.items():
            array = np.asarray(array)
            if name in centre:
                result[name] = centre[name].reshape(array.shape).astype(array.dtype, copy=False)
            else:
                result[name] = array.copy()
        return result

    def _radius(self, norms: np.ndarray) -> float:
        """The clipping radius for distances ``norms`` (index 0: the local contribution)."""
        if self.tau is not None:
            return self.tau
        others = np.sort(norms[1:])
        if others.size == 0:
            return 0.0
        k = max(1, others.size - self.f)
        return self.margin * float(others[k - 1])

    def _power(self) -> float:
        if self.power is not None:
            return self.power
        return 2.0 if self.tau is None else 1.0


_FACTORIES: dict[str, Callable[[SpecParams], Aggregator]] = {
    "fedavg": lambda p: FedAvg(
        max_ratio=p.optional_number("max_ratio") if p.has("max_ratio") else 10.0,
        max_samples=p.optional_integer("max_samples"),
    ),
    "mean": lambda p: Mean(),
    "median": lambda p: Median(),
    "trimmed-mean": lambda p: TrimmedMean(trim=p.number("trim", 0.1)),
    "krum": lambda p: Krum(f=p.integer("f", 1), m=p.optional_integer("m")),
    "multi-krum": lambda p: Krum(f=p.integer("f", 1), m=p.optional_integer("m")),
    "centered-clipping": lambda p: CenteredClipping(
        tau=p.optional_number("tau"),
        iterations=p.integer("iterations", 3),
        f=p.integer("f", 1),
        margin=p.number("margin", 1.75),
        power=p.optional_number("power"),
    ),
}


def aggregator_from_spec(spec: str | Mapping[str, Any] | Aggregator) -> Aggregator:
    """Build an aggregator from a CLI/config spec; a callable passes through unchanged.

    Examples: ``"fedavg"`` (``"fedavg:max_ratio=5,max_samples=10000"``), ``"mean"``,
    ``"median"``, ``"trimmed-mean:trim=0.2"``,
    ``"krum:f=1"`` (Multi-Krum, ``m = n - f``), ``"krum:f=1,m=1"`` (original Krum),
    ``"multi-krum:f=1,m=3"``,
    ``"centered-clipping"`` (adaptive), ``"centered-clipping:f=3"``,
    ``"centered-clipping:tau=1,iterations=3"``, ``{"name": "krum", "f": 2}``.

    Raises:
        ConfigurationError: unknown name (closest valid name suggested), unknown parameters
            or invalid values.
    """
    if callable(spec) and not isinstance(spec, (str, Mapping)):
        return spec
    factories = dict(_FACTORIES)
    factories["fed-avg"] = _FACTORIES["fedavg"]
    factories["centred-clipping"] = _FACTORIES["centered-clipping"]
    return build_from_spec(spec, "aggregator", factories)
