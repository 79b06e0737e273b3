"""Checks shared by the adapters and the architecture loaders (a leaf: imports no adapter).

Factory names and keyword arguments travel in architecture envelopes from peers, so they
are bounded in size and nesting; array names must match the model exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

from ..errors import ConfigurationError

__all__ = ["check_array_names", "validate_factory_kwargs", "validate_factory_name"]

_FACTORY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,199}\Z")
_KWARG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}\Z")
_MAX_KWARG_ITEMS = 10_000
_MAX_KWARG_STRING = 10_000
_MAX_KWARG_DEPTH = 8


def validate_factory_name(name: object) -> str:
    """Return ``name`` when it is a valid factory name (``"package.model-v2"``).

    Raises:
        ConfigurationError: not a string of letters, digits, ``_ . -`` starting with a letter
            or ``_``, at most 200 characters.
    """
    if not isinstance(name, str) or not _FACTORY_NAME.match(name):
        raise ConfigurationError(
            f"factory name must be letters, digits, '_', '.', '-' (max 200), got {name!r:.80}"
        )
    return name


def _check_json_value(value: object, path: str, depth: int, budget: list[int]) -> object:
    budget[0] -= 1
    if budget[0] < 0:
        raise ConfigurationError(f"factory kwargs have more than {_MAX_KWARG_ITEMS} values")
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigurationError(f"factory kwarg {path} is not finite: {value!r}")
        return value
    if isinstance(value, str):
        if len(value) > _MAX_KWARG_STRING:
            raise ConfigurationError(f"factory kwarg {path} is longer than {_MAX_KWARG_STRING}")
        return value
    if isinstance(value, (list, tuple)) and depth < _MAX_KWARG_DEPTH:
        return [
            _check_json_value(item, f"{path}[{i}]", depth + 1, budget)
            for i, item in enumerate(value)
        ]
    raise ConfigurationError(
        f"factory kwarg {path} is a {type(value).__name__}; expected str, int, float, bool, "
        f"None or (at most {_MAX_KWARG_DEPTH} nested) lists of those"
    )


def validate_factory_kwargs(kwargs: object) -> dict[str, object]:
    """Return a checked copy of factory keyword arguments (tuples become lists).

    Raises:
        ConfigurationError: not a mapping of identifier -> JSON-like value (str, int, finite
            float, bool, None, and lists of those), or too large.
    """
    if not isinstance(kwargs, Mapping):
        raise ConfigurationError(f"factory kwargs must be a mapping, got {type(kwargs).__name__}")
    budget = [_MAX_KWARG_ITEMS]
    checked: dict[str, object] = {}
    for key, value in kwargs.items():
        if not isinstance(key, str) or not _KWARG_NAME.match(key):
            raise ConfigurationError(f"factory kwarg name {key!r:.60} is not an identifier")
        checked[key] = _check_json_value(value, key, 0, budget)
    return checked


def check_array_names(expected: set[str], given: set[str]) -> None:
    """Raise when ``given`` names differ from ``expected``.

    Raises:
        ConfigurationError: the message lists (up to 5) missing and unexpected names.
    """
    if expected == given:
        return
    missing = sorted(expected - given)
    unexpected = sorted(given - expected)
    raise ConfigurationError(
        f"array names do not match the model: missing {missing[:5]}"
        f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
        f"{' ...' if len(unexpected) > 5 else ''}"
    )
