"""Split a dataset's samples among simulated nodes: IID, Dirichlet label skew, label shards.

Every partitioner takes the training labels and returns one sorted ``int64`` index array per
node. The arrays are disjoint, together they cover every sample, and they are a pure function
of ``(labels, nodes, parameters, seed)``.

Spec strings (CLI and config files) name a partitioner and its parameters::

    "iid"                       "dirichlet:alpha=0.5"        "dirichlet:alpha=0.1,min_size=2"
    "shards:k=2"                {"kind": "dirichlet", "alpha": 0.5}
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import ConfigurationError

__all__ = [
    "PARTITIONERS",
    "dirichlet",
    "iid",
    "label_histogram",
    "parse_partition_spec",
    "partition",
    "shards",
]

#: Default smallest partition :func:`dirichlet` accepts, in samples.
DEFAULT_MIN_SIZE = 5
#: Default number of Dirichlet draws tried before giving up.
DEFAULT_MAX_ATTEMPTS = 100


def _as_labels(labels: Sequence[int] | np.ndarray) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise ConfigurationError(f"labels must be a non-empty 1-D array, got shape {array.shape}")
    if array.dtype.kind not in "iub":
        raise ConfigurationError(f"labels must be integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def _check_nodes(nodes: int, samples: int) -> None:
    if isinstance(nodes, bool) or not isinstance(nodes, (int, np.integer)) or nodes < 1:
        raise ConfigurationError(f"node count must be a positive integer, got {nodes!r}")
    if nodes > samples:
        raise ConfigurationError(
            f"node count {nodes} is larger than the dataset ({samples} samples); "
            f"use at most {samples} nodes"
        )


def _int_at_least(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigurationError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def iid(labels: Sequence[int] | np.ndarray, nodes: int, seed: int) -> list[np.ndarray]:
    """Deal a random permutation of the samples into ``nodes`` near-equal parts.

    Part sizes differ by at most one sample.

    Args:
        labels: class label of every sample (only its length matters here).
        nodes: number of parts.
        seed: seed of the permutation.

    Raises:
        ConfigurationError: ``nodes`` is not in ``[1, len(labels)]`` or labels are invalid.
    """
    array = _as_labels(labels)
    _check_nodes(nodes, len(array))
    permutation = np.random.default_rng(seed).permutation(len(array))
    return [np.sort(part) for part in np.array_split(permutation, nodes)]


def dirichlet(
    labels: Sequence[int] | np.ndarray,
    nodes: int,
    alpha: float,
    seed: int,
    min_size: int = DEFAULT_MIN_SIZE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> list[np.ndarray]:
    """Label-skewed split: each class is spread over the nodes by proportions ~ Dir(alpha).

    Small ``alpha`` (e.g. 0.1) gives each node few classes; large ``alpha`` (e.g. 100)
    approaches IID. Draws are repeated until every node holds at least ``min_size`` samples.

    Args:
        labels: class label of every sample.
        nodes: number of parts.
        alpha: concentration of the symmetric Dirichlet, > 0.
        seed: seed of all draws.
        min_size: smallest acceptable part, in samples.
        max_attempts: draws to try before giving up.

    Raises:
        ConfigurationError: ``alpha`` is not a finite positive number, ``nodes`` is not in
            ``[1, len(labels)]``, ``nodes * min_size`` exceeds the samples, or no draw within
            ``max_attempts`` gave every node ``min_size`` samples (the message suggests a
            larger ``alpha`` or a smaller ``min_size``).
    """
    array = _as_labels(labels)
    _check_nodes(nodes, len(array))
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigurationError(f"alpha must be a positive number, got {alpha!r}")
    if not math.isfinite(alpha):
        raise ConfigurationError(f"alpha must be finite, got {alpha!r}; use 'iid' instead")
    min_size = _int_at_least("min_size", min_size, 0)
    attempts = _int_at_least("max_attempts", max_attempts)
    if nodes * min_size > len(array):
        raise ConfigurationError(
            f"cannot give each of {nodes} nodes min_size={min_size} samples from "
            f"{len(array)} samples; lower min_size or use fewer nodes"
        )
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(array == label) for label in np.unique(array)]
    for _ in range(attempts):
        parts = _dirichlet_draw(by_class, nodes, float(alpha), rng)
        if min(len(part) for part in parts) >= min_size:
            return parts
    raise ConfigurationError(
        f"no Dirichlet(alpha={alpha}) split in {attempts} draws gave each of {nodes} nodes at "
        f"least {min_size} samples; use a larger alpha, a smaller min_size or fewer nodes"
    )


def _dirichlet_draw(
    by_class: list[np.ndarray], nodes: int, alpha: float, rng: np.random.Generator
) -> list[np.ndarray]:
    pieces: list[list[np.ndarray]] = [[] for _ in range(nodes)]
    for members in by_class:
        shuffled = rng.permutation(members)
        proportions = rng.dirichlet(np.full(nodes, alpha))
        cuts = np.round(np.cumsum(proportions)[:-1] * len(shuffled)).astype(np.int64)
        for node, piece in enumerate(np.split(shuffled, cuts)):
            pieces[node].append(piece)
    return [np.sort(np.concatenate(node_pieces)).astype(np.int64) for node_pieces in pieces]


def shards(
    labels: Sequence[int] | np.ndarray, nodes: int, shards_per_node: int, seed: int
) -> list[np.ndarray]:
    """Pathological non-IID split of McMahan et al.: sort by label, cut shards, deal them out.

    The samples, sorted by label (ties in random order), are cut into ``nodes *
    shards_per_node`` contiguous shards whose sizes differ by at most one sample, and each node
    gets ``shards_per_node`` shards chosen at random. Every sample is dealt out (no remainder
    is dropped), so a node sees roughly ``shards_per_node`` classes.

    Args:
        labels: class label of every sample.
        nodes: number of parts.
        shards_per_node: shards each node receives (``k`` in spec strings).
        seed: seed of the tie order and the dealing.

    Raises:
        ConfigurationError: ``nodes`` is not in ``[1, len(labels)]``, ``shards_per_node`` is not
            a positive integer, or there are fewer samples than shards.
    """
    array = _as_labels(labels)
    _check_nodes(nodes, len(array))
    per_node = _int_at_least("shards_per_node", shards_per_node)
    total_shards = nodes * per_node
    if total_shards > len(array):
        raise ConfigurationError(
            f"{nodes} nodes x {per_node} shards = {total_shards} shards is more than the "
            f"{len(array)} samples; use fewer shards per node or fewer nodes"
        )
    rng = np.random.default_rng(seed)
    permutation = rng.permutation(len(array))
    by_label = permutation[np.argsort(array[permutation], kind="stable")]
    cut = np.array_split(by_label, total_shards)
    dealt = rng.permutation(total_shards).reshape(nodes, per_node)
    return [np.sort(np.concatenate([cut[s] for s in row])).astype(np.int64) for row in dealt]


def _iid_from_params(labels: np.ndarray, nodes: int, seed: int) -> list[np.ndarray]:
    return iid(labels, nodes, seed)


def _dirichlet_from_params(
    labels: np.ndarray,
    nodes: int,
    seed: int,
    alpha: float = 0.5,
    min_size: int = DEFAULT_MIN_SIZE,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> list[np.ndarray]:
    return dirichlet(labels, nodes, alpha, seed, min_size=min_size, max_attempts=max_attempts)


def _shards_from_params(labels: np.ndarray, nodes: int, seed: int, k: int = 2) -> list[np.ndarray]:
    return shards(labels, nodes, k, seed)


#: Partitioner name -> function ``(labels, nodes, seed, **parameters)``; the keyword
#: parameters after ``seed`` are what spec strings may set.
PARTITIONERS: Mapping[str, Callable[..., list[np.ndarray]]] = MappingProxyType(
    {"iid": _iid_from_params, "dirichlet": _dirichlet_from_params, "shards": _shards_from_params}
)
_PARAM_ALIASES = MappingProxyType({"shards_per_node": "k", "a": "alpha"})


def _parse_number(key: str, text: str) -> float | int:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ConfigurationError(f"partition parameter {key}={text!r} is not a number") from None


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def parse_partition_spec(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Parse ``"kind"``, ``"kind:key=value,..."`` or ``{"kind": ..., key: value}``.

    Args:
        spec: the spec; names are case-insensitive, ``shards_per_node`` is an alias of ``k``.

    Returns:
        The partitioner name and its parameters (only those given).

    Raises:
        ConfigurationError: unknown partitioner or parameter (with a did-you-mean), a
            malformed ``key=value`` pair, or a value that is not a number.
    """
    if isinstance(spec, Mapping):
        params = dict(spec)
        kind = str(params.pop("kind", params.pop("name", ""))).strip().lower()
    else:
        kind, _, rest = str(spec).strip().partition(":")
        kind = kind.strip().lower()
        params = {}
        for pair in filter(None, (item.strip() for item in rest.split(","))):
            key, equals, value = pair.partition("=")
            if not equals or not key.strip():
                raise ConfigurationError(
                    f"malformed partition parameter {pair!r} in {spec!r}; expected key=value"
                )
            params[key.strip()] = _parse_number(key.strip(), value.strip())
    if kind not in PARTITIONERS:
        known = ", ".join(PARTITIONERS)
        raise ConfigurationError(
            f"unknown partitioner {kind!r} in {spec!r}; expected one of {known}"
            + _did_you_mean(kind, list(PARTITIONERS))
        )
    defaults = list(inspect.signature(PARTITIONERS[kind]).parameters)[3:]
    resolved = {_PARAM_ALIASES.get(key, key): value for key, value in params.items()}
    for key in resolved:
        if key not in defaults:
            allowed = ", ".join(defaults) or "none"
            raise ConfigurationError(
                f"partitioner {kind!r} has no parameter {key!r} (parameters: {allowed})"
                + _did_you_mean(key, defaults)
            )
    return kind, resolved


def partition(
    spec: str | Mapping[str, Any], labels: Sequence[int] | np.ndarray, nodes: int, seed: int
) -> list[np.ndarray]:
    """Split samples among ``nodes`` as ``spec`` says (see :func:`parse_partition_spec`).

    Args:
        spec: e.g. ``"iid"``, ``"dirichlet:alpha=0.5"``, ``"shards:k=2"``.
        labels: class label of every sample.
        nodes: number of parts.
        seed: seed of the split.

    Returns:
        One sorted ``int64`` index array per node; disjoint and covering all samples.

    Raises:
        ConfigurationError: the spec is invalid or the partitioner rejects its parameters.
    """
    kind, params = parse_partition_spec(spec)
    return PARTITIONERS[kind](_as_labels(labels), nodes, seed, **params)


def label_histogram(
    parts: Sequence[np.ndarray], labels: Sequence[int] | np.ndarray, num_classes: int
) -> np.ndarray:
    """Count the samples of each class in each part.

    Args:
        parts: index arrays, one per node.
        labels: class label of every sample.
        num_classes: number of classes (columns).

    Returns:
        ``int64`` array of shape ``(len(parts), num_classes)``.

    Raises:
        ConfigurationError: a label is outside ``[0, num_classes)``.
    """
    array = _as_labels(labels)
    classes = _int_at_least("num_classes", num_classes)
    if int(array.min()) < 0 or int(array.max()) >= classes:
        raise ConfigurationError(
            f"labels must lie in [0, {classes}), got [{array.min()}, {array.max()}]"
        )
    histogram = np.zeros((len(parts), classes), dtype=np.int64)
    for row, part in enumerate(parts):
        histogram[row] = np.bincount(array[np.asarray(part, dtype=np.int64)], minlength=classes)
    return histogram
