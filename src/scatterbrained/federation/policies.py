"""Mode policies: small rules that pick a node's operating mode from what it has done so far.

A policy is any callable ``(PolicyState) -> OperatingMode | None``; ``None`` means "no
opinion" (keep whatever mode is set). The :class:`~.modes.ModeController` applies a policy's
decision only when it changes, so a manual mode stays until the policy changes its mind.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigurationError
from ..types import OperatingMode
from ._spec import SpecParams, build_from_spec

__all__ = [
    "AfterEpochs",
    "AfterSeconds",
    "FirstOf",
    "FromCallable",
    "LeechUntil",
    "Policy",
    "PolicyState",
    "ValidationThreshold",
    "after_epochs",
    "as_policy",
    "callable_name",
    "policy_from_spec",
]


@dataclass(frozen=True)
class PolicyState:
    """What a policy may look at, as of one evaluation.

    Attributes:
        mode: the node's current operating mode in this namespace.
        samples_seen: local training samples processed so far (all epochs).
        epochs_done: local epochs completed.
        version: the local model version (increments on every local update or merge).
        peers: peers currently present in the namespace.
        elapsed_s: seconds since the namespace started training.
        val_accuracy: latest validation accuracy in [0, 1], or ``None`` if not evaluated.
        val_loss: latest validation loss, or ``None`` if not evaluated.
    """

    mode: OperatingMode
    samples_seen: int
    epochs_done: int
    version: int
    peers: int
    elapsed_s: float
    val_accuracy: float | None = None
    val_loss: float | None = None


@runtime_checkable
class Policy(Protocol):
    """Decides the operating mode from a :class:`PolicyState` (``None``: no opinion)."""

    def __call__(self, state: PolicyState) -> OperatingMode | None:
        """Return the wanted mode, or ``None`` to leave the mode alone."""
        ...


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{name} must be an integer >= 0, got {value!r}")


@dataclass(frozen=True)
class LeechUntil:
    """The paper's example: ``LEECHING`` until ``samples`` local samples were seen, then ``then``.

    Args:
        samples: threshold on ``samples_seen`` (>= 0); reached when ``samples_seen >= samples``.
        then: the mode once the threshold is reached (default ``PEER``).

    Raises:
        ConfigurationError: ``samples`` is negative or not an integer.
    """

    samples: int
    then: OperatingMode = OperatingMode.PEER

    def __post_init__(self) -> None:
        _check_count("LeechUntil samples", self.samples)

    def __call__(self, state: PolicyState) -> OperatingMode:
        """Return ``LEECHING`` below the threshold, ``then`` from it on."""
        return self.then if state.samples_seen >= self.samples else OperatingMode.LEECHING


@dataclass(frozen=True)
class AfterEpochs:
    """``before`` until ``epochs`` local epochs are done, then ``then``.

    Args:
        epochs: threshold on ``epochs_done`` (>= 0).
        then: the mode from then on.
        before: the mode before (``None``: no opinion before).

    Raises:
        ConfigurationError: ``epochs`` is negative or not an integer.
    """

    epochs: int
    then: OperatingMode
    before: OperatingMode | None = None

    def __post_init__(self) -> None:
        _check_count("AfterEpochs epochs", self.epochs)

    def __call__(self, state: PolicyState) -> OperatingMode | None:
        """Return ``then`` once ``epochs_done >= epochs``, else ``before``."""
        return self.then if state.epochs_done >= self.epochs else self.before


def after_epochs(
    epochs: int, then: OperatingMode, before: OperatingMode | None = None
) -> AfterEpochs:
    """Return :class:`AfterEpochs` (lowercase alias for configuration code)."""
    return AfterEpochs(epochs, then, before)


@dataclass(frozen=True)
class AfterSeconds:
    """``before`` until ``seconds`` have elapsed since training started, then ``then``.

    Raises:
        ConfigurationError: ``seconds`` is negative.
    """

    seconds: float
    then: OperatingMode
    before: OperatingMode | None = None

    def __post_init__(self) -> None:
        if not self.seconds >= 0:
            raise ConfigurationError(f"AfterSeconds seconds must be >= 0, got {self.seconds!r}")

    def __call__(self, state: PolicyState) -> OperatingMode | None:
        """Return ``then`` once ``elapsed_s >= seconds``, else ``before``."""
        return self.then if state.elapsed_s >= self.seconds else self.before


class ValidationThreshold:
    """``before`` until validation reaches the threshold(s), then ``then`` for good (latched).

    Every given threshold must hold at once: ``val_accuracy >= accuracy`` and
    ``val_loss <= loss``. A state without the needed metric counts as not reached. Once
    reached the policy keeps answering ``then`` even if validation gets worse again.

    Args:
        accuracy: accuracy threshold in [0, 1], or ``None``.
        loss: loss threshold, or ``None``.
        then: mode once reached (default ``PEER``).
        before: mode before (default ``LEECHING``; ``None``: no opinion).

    Raises:
        ConfigurationError: neither threshold given, or ``accuracy`` outside [0, 1].
    """

    def __init__(
        self,
        accuracy: float | None = None,
        loss: float | None = None,
        then: OperatingMode = OperatingMode.PEER,
        before: OperatingMode | None = OperatingMode.LEECHING,
    ) -> None:
        if accuracy is None and loss is None:
            raise ConfigurationError("ValidationThreshold needs accuracy=..., loss=... or both")
        if accuracy is not None and not 0.0 <= accuracy <= 1.0:
            raise ConfigurationError(
                f"ValidationThreshold accuracy must be in [0, 1], got {accuracy}"
            )
        self.accuracy = accuracy
        self.loss = loss
        self.then = then
        self.before = before
        self.reached = False

    def _holds(self, state: PolicyState) -> bool:
        if self.accuracy is not None and (
            state.val_accuracy is None or state.val_accuracy < self.accuracy
        ):
            return False
        return self.loss is None or (state.val_loss is not None and state.val_loss <= self.loss)

    def __call__(self, state: PolicyState) -> OperatingMode | None:
        """Return ``then`` once the thresholds held, else ``before``."""
        self.reached = self.reached or self._holds(state)
        return self.then if self.reached else self.before

    def __repr__(self) -> str:
        return (
            f"ValidationThreshold(accuracy={self.accuracy!r}, loss={self.loss!r}, "
            f"then={self.then!r}, before={self.before!r})"
        )


def callable_name(fn: object) -> str:
    """Return a short, address-free name for a callable, for logs and mode-switch reasons.

    A function gives its qualified name (``main.<locals>.<lambda>``), a
    :func:`functools.partial` ``partial(<name of its function>)``, a bound method
    ``Class.method``, and a callable object its class's qualified name.
    """
    if isinstance(fn, functools.partial):
        return f"partial({callable_name(fn.func)})"
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if isinstance(name, str) and name:
        return name
    return type(fn).__qualname__


def _to_mode(value: object, source: str) -> OperatingMode | None:
    if value is None or isinstance(value, OperatingMode):
        return value
    if isinstance(value, str):
        try:
            return OperatingMode.parse(value)
        except ValueError as exc:
            raise ConfigurationError(f"policy {source} returned {value!r}: {exc}") from None
    raise ConfigurationError(
        f"policy {source} must return an OperatingMode, a mode name or None, got {value!r}"
    )


class FromCallable:
    """Wraps any ``(PolicyState) -> OperatingMode | str | None`` callable as a :class:`Policy`.

    Its ``repr`` (the reason recorded with each mode switch, ``policy <repr>``) is the
    callable's qualified name, e.g. ``main.<locals>.<lambda>`` (see :func:`callable_name`).

    Raises:
        ConfigurationError: (when called) the callable returned something that is no mode.
    """

    def __init__(self, fn: Callable[[PolicyState], OperatingMode | str | None]) -> None:
        if not callable(fn):
            raise ConfigurationError(f"FromCallable needs a callable, got {fn!r}")
        self.fn = fn

    def __call__(self, state: PolicyState) -> OperatingMode | None:
        """Return the callable's answer as an :class:`OperatingMode` (or ``None``)."""
        return _to_mode(self.fn(state), callable_name(self.fn))

    def __repr__(self) -> str:
        return callable_name(self.fn)


class FirstOf:
    """The first policy (in order) that has an opinion decides.

    Raises:
        ConfigurationError: no policies given.
    """

    def __init__(self, *policies: Policy | Callable[[PolicyState], Any]) -> None:
        if not policies:
            raise ConfigurationError("FirstOf needs at least one policy")
        self.policies = tuple(as_policy(p) for p in policies)

    def __call__(self, state: PolicyState) -> OperatingMode | None:
        """Return the first non-``None`` decision, or ``None``."""
        for policy in self.policies:
            decision = policy(state)
            if decision is not None:
                return decision
        return None

    def __repr__(self) -> str:
        return f"FirstOf{self.policies!r}"


_BUILTIN = (LeechUntil, AfterEpochs, AfterSeconds, ValidationThreshold, FromCallable, FirstOf)


def as_policy(obj: Policy | Callable[[PolicyState], Any] | str | Mapping[str, Any]) -> Policy:
    """Return ``obj`` as a :class:`Policy`.

    Built-in policies pass through; a string or mapping is parsed by :func:`policy_from_spec`;
    any other callable is wrapped in :class:`FromCallable` (so it may return mode names).

    Raises:
        ConfigurationError: ``obj`` is neither callable nor a valid spec.
    """
    if isinstance(obj, _BUILTIN):
        return obj
    if isinstance(obj, (str, Mapping)):
        return policy_from_spec(obj)
    if callable(obj):
        return FromCallable(obj)
    raise ConfigurationError(f"a policy must be callable or a spec string, got {obj!r}")


def _validation_from_params(p: SpecParams) -> ValidationThreshold:
    return ValidationThreshold(
        accuracy=p.optional_number("accuracy"),
        loss=p.optional_number("loss"),
        then=p.mode("then", OperatingMode.PEER),
        before=p.optional_mode("before") if p.has("before") else OperatingMode.LEECHING,
    )


_FACTORIES: dict[str, Callable[[SpecParams], Policy]] = {
    "leech-until": lambda p: LeechUntil(
        samples=p.integer("samples"), then=p.mode("then", OperatingMode.PEER)
    ),
    "after-epochs": lambda p: AfterEpochs(
        epochs=p.integer("epochs"),
        then=p.mode("then", OperatingMode.PEER),
        before=p.optional_mode("before"),
    ),
    "after-seconds": lambda p: AfterSeconds(
        seconds=p.number("seconds"),
        then=p.mode("then", OperatingMode.PEER),
        before=p.optional_mode("before"),
    ),
    "validation-threshold": _validation_from_params,
}
#: Every parameter each factory reads (unknown ones are refused before it runs).
_PARAMETERS: dict[str, tuple[str, ...]] = {
    "leech-until": ("samples", "then"),
    "after-epochs": ("epochs", "then", "before"),
    "after-seconds": ("seconds", "then", "before"),
    "validation-threshold": ("accuracy", "loss", "then", "before"),
}


def policy_from_spec(spec: str | Mapping[str, Any]) -> Policy:
    """Build a policy from a CLI/config spec.

    Examples: ``"leech-until:samples=500"``, ``"leech-until:samples=500,then=seeding"``,
    ``"after-epochs:epochs=3,then=peer,before=leeching"``, ``"after-seconds:seconds=60"``,
    ``"validation-threshold:accuracy=0.8"`` (``then`` defaults to ``peer`` everywhere).

    Raises:
        ConfigurationError: unknown name (closest valid name suggested), unknown parameters
            or invalid values.
    """
    return build_from_spec(spec, "policy", _FACTORIES, _PARAMETERS)
