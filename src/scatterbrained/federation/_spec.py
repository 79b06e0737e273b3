"""Parsing of short text specs such as ``"grid:cols=4"`` used by the CLI and config files.

A spec is either a string ``"name"`` / ``"name:key=value,key=value"`` (list values separated
by ``|``) or a mapping ``{"name": "grid", "cols": 4}`` (``"type"`` is accepted for ``"name"``).
Names are case-insensitive and ``_`` or spaces count as ``-``.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TypeVar

from ..errors import ConfigurationError
from ..types import OperatingMode

__all__ = ["SpecParams", "build_from_spec", "normalize_name"]

T = TypeVar("T")

_NONE_WORDS = frozenset({"none", "null", ""})
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})


def normalize_name(name: str) -> str:
    """Return ``name`` lower-cased with ``_`` and spaces turned into ``-``."""
    return name.strip().lower().replace("_", "-").replace(" ", "-")


class SpecParams:
    """Typed access to the ``key=value`` parameters of one spec.

    Every getter removes its key; :meth:`finish` then rejects whatever is left over.
    """

    def __init__(self, kind: str, name: str, raw: Mapping[str, object]) -> None:
        self._kind = kind
        self._name = name
        self._raw = {normalize_name(k).replace("-", "_"): v for k, v in raw.items()}
        self._known: list[str] = []

    def _error(self, key: str, expected: str, got: object) -> ConfigurationError:
        return ConfigurationError(
            f"{self._kind} {self._name!r}: parameter {key!r} must be {expected}, got {got!r}"
        )

    def _pop(self, key: str) -> object:
        self._known.append(key)
        value = self._raw.pop(key, None)
        if isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
            return None
        return value

    def _missing(self, key: str) -> ConfigurationError:
        return ConfigurationError(
            f"{self._kind} {self._name!r} needs parameter {key!r} (e.g. '{self._name}:{key}=...')"
        )

    def has(self, key: str) -> bool:
        """Return ``True`` when ``key`` was given (even as ``none``)."""
        return key in self._raw

    def optional_integer(self, key: str) -> int | None:
        """Return the integer value of ``key``, or ``None`` when absent.

        Raises:
            ConfigurationError: the value is not an integer.
        """
        value = self._pop(key)
        if value is None:
            return None
        if isinstance(value, bool):
            raise self._error(key, "an integer", value)
        try:
            return int(str(value).strip()) if not isinstance(value, int) else value
        except ValueError:
            raise self._error(key, "an integer", value) from None

    def integer(self, key: str, default: int | None = None) -> int:
        """Return the integer value of ``key`` (``default`` when absent).

        Raises:
            ConfigurationError: the value is not an integer, or it is absent with no default.
        """
        value = self.optional_integer(key)
        if value is None:
            if default is None:
                raise self._missing(key)
            return default
        return value

    def optional_number(self, key: str) -> float | None:
        """Return the float value of ``key``, or ``None`` when absent.

        Raises:
            ConfigurationError: the value is not a number.
        """
        value = self._pop(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self._error(key, "a number", value)
        try:
            return float(value)
        except ValueError:
            raise self._error(key, "a number", value) from None

    def number(self, key: str, default: float | None = None) -> float:
        """Return the float value of ``key`` (``default`` when absent).

        Raises:
            ConfigurationError: the value is not a number, or it is absent with no default.
        """
        value = self.optional_number(key)
        if value is None:
            if default is None:
                raise self._missing(key)
            return default
        return value

    def optional_text(self, key: str) -> str | None:
        """Return the string value of ``key``, or ``None`` when absent."""
        value = self._pop(key)
        return None if value is None else str(value).strip()

    def texts(self, key: str) -> list[str] | None:
        """Return a list value (``"a|b"`` or a sequence), or ``None`` when absent."""
        value = self._pop(key)
        if value is None:
            return None
        if isinstance(value, str):
            return [part.strip() for part in value.split("|") if part.strip()]
        if isinstance(value, Sequence):
            return [str(part) for part in value]
        raise self._error(key, "a list ('a|b' or a sequence)", value)

    def raw(self, key: str) -> object:
        """Return the untyped value of ``key`` (``None`` when absent)."""
        return self._pop(key)

    def flag(self, key: str, default: bool) -> bool:
        """Return the boolean value of ``key`` (``default`` when absent).

        Raises:
            ConfigurationError: the value is not a boolean word (true/false/yes/no/on/off/1/0).
        """
        value = self._pop(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
        raise self._error(key, "true or false", value)

    def optional_mode(self, key: str) -> OperatingMode | None:
        """Return the operating mode named by ``key``, or ``None`` when absent.

        Raises:
            ConfigurationError: the value names no operating mode.
        """
        value = self._pop(key)
        if value is None:
            return None
        try:
            return OperatingMode.parse(str(value).strip())
        except ValueError as exc:
            raise ConfigurationError(f"{self._kind} {self._name!r}: {exc}") from None

    def mode(self, key: str, default: OperatingMode) -> OperatingMode:
        """Return the operating mode named by ``key`` (``default`` when absent).

        Raises:
            ConfigurationError: the value names no operating mode.
        """
        value = self.optional_mode(key)
        return default if value is None else value

    def expect(self, valid: Collection[str]) -> None:
        """Reject, before any getter runs, parameters that are not in ``valid``.

        Checking first means a misspelt parameter is named even when the factory would
        otherwise stop at a missing required one (``grid:colums=3``).

        Raises:
            ConfigurationError: an unknown parameter was given; the message names it, the
                closest valid one, and every valid one.
        """
        unknown = sorted(set(self._raw) - set(valid))
        if unknown:
            raise self._unknown(unknown, list(valid))

    def finish(self) -> None:
        """Reject parameters that no getter asked for.

        Raises:
            ConfigurationError: an unknown parameter was given; the message lists the valid ones.
        """
        if self._raw:
            raise self._unknown(sorted(self._raw), self._known)

    def _unknown(self, unknown: list[str], valid: list[str]) -> ConfigurationError:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hints.append(f"{key} (did you mean {close[0]!r}?)" if close else key)
        shown = ", ".join(valid) or "none"
        return ConfigurationError(
            f"{self._kind} {self._name!r} does not take parameter(s) {', '.join(hints)}; "
            f"valid parameters: {shown}"
        )


def _split(spec: str | Mapping[str, object], kind: str) -> tuple[str, dict[str, object]]:
    if isinstance(spec, Mapping):
        params = dict(spec)
        name = params.pop("name", None)
        if name is None:
            name = params.pop("type", None)
        if not isinstance(name, str):
            raise ConfigurationError(f"{kind} spec mapping needs a 'name' string, got {spec!r}")
        return name, params
    if not isinstance(spec, str):
        raise ConfigurationError(f"{kind} spec must be a string or a mapping, got {spec!r}")
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigurationError(
                f"{kind} spec {spec!r}: expected 'key=value' items after ':', got {item!r}"
            )
        params[key.strip()] = value.strip()
    return name, params


def _unknown_name(kind: str, name: str, valid: Iterable[str]) -> ConfigurationError:
    names = sorted(valid)
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigurationError(f"unknown {kind} {name!r}{hint}; valid names: {', '.join(names)}")


def build_from_spec(
    spec: str | Mapping[str, object],
    kind: str,
    factories: Mapping[str, Callable[[SpecParams], T]],
    parameters: Mapping[str, Collection[str]] | None = None,
) -> T:
    """Build an object from ``spec`` with the factory registered under its name.

    Args:
        spec: ``"name:key=value,..."`` or a mapping with a ``"name"`` key.
        kind: what is being built, for error messages (e.g. ``"topology"``).
        factories: normalized name -> factory reading its parameters from :class:`SpecParams`.
        parameters: normalized name -> every parameter its factory reads; when a name is
            listed, unknown parameters are refused before the factory runs (so a typo is
            named rather than reported as a missing required parameter).

    Raises:
        ConfigurationError: unknown name (with the closest valid one suggested), unknown or
            malformed parameters, or invalid values.
    """
    raw_name, params = _split(spec, kind)
    name = normalize_name(raw_name)
    factory = factories.get(name)
    if factory is None:
        raise _unknown_name(kind, raw_name.strip(), factories)
    reader = SpecParams(kind, name, params)
    if parameters is not None and name in parameters:
        reader.expect(parameters[name])
    built = factory(reader)
    reader.finish()
    return built
