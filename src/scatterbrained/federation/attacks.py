"""Byzantine attack models: what a hostile node sends instead of its honest model.

Pure functions over named arrays (no I/O): :meth:`Attack.forge` turns the attacker's own
weights, and the honest weights it has received from its neighbours, into the weights it
sends; :attr:`Attack.samples` is the sample count it claims (``None``: its honest count).
The simulator puts an attack between a node and its transport
(:mod:`scatterbrained.sim.attacks`); the measurements are in the README.

Specs (``attacks = {"3" = "sign-flip:scale=10"}`` in a simulation config):

=============================== ==========================================================
``sign-flip:scale=1``           ``-scale * own``
``scale:factor=10``             ``factor * own``
``gaussian:std=1``              ``own + N(0, std^2)`` per coordinate (seeded)
``alie:z=1``                    "A little is enough": ``mean - z * std`` of the honest ones
``ipm:epsilon=0.5``             inner-product manipulation: ``-epsilon * mean`` of honest
``label-flip``                  trains on labels ``C - 1 - y``; sends its model as it is
``stale``                       sends the first model it ever sent, forever
``honest``                      sends its model as it is (a control)
=============================== ==========================================================

Every spec also takes ``samples=N``: the sample count claimed with each update (sample-count
inflation, e.g. ``sign-flip:samples=1000000000``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigurationError
from ._spec import SpecParams, build_from_spec

__all__ = ["ATTACK_NAMES", "Attack", "attack_from_spec"]

Arrays = Mapping[str, np.ndarray]


@dataclass
class Attack:
    """One attack model (see the module's table).

    Attributes:
        name: the spec name (``sign-flip``, ``alie``, ...).
        samples: the sample count claimed with every update, or ``None`` for the honest one.
        flips_labels: the attacker trains on flipped labels (a data attack).
        scale: ``sign-flip``'s scale or ``scale``'s factor.
        std: ``gaussian``'s standard deviation.
        z: ``alie``'s number of standard deviations.
        epsilon: ``ipm``'s factor.
        seed: the noise generator's seed (``gaussian``).
    """

    name: str
    samples: int | None = None
    flips_labels: bool = False
    scale: float = 1.0
    std: float = 1.0
    z: float = 1.0
    epsilon: float = 0.5
    seed: int = 0
    _first: dict[str, np.ndarray] | None = field(default=None, repr=False)
    _rng: np.random.Generator | None = field(default=None, repr=False)

    def forge(self, own: Arrays, honest: Sequence[Arrays]) -> dict[str, np.ndarray]:
        """The weights to send instead of ``own``; non-float arrays pass unchanged.

        Args:
            own: the attacker's weights.
            honest: weights received from honest neighbours (may be empty: then the
                statistics of ``alie`` and ``ipm`` fall back on ``own``).
        """
        if self.name == "stale":
            if self._first is None:
                self._first = {k: np.array(v, copy=True) for k, v in own.items()}
            return {k: v.copy() for k, v in self._first.items()}
        out: dict[str, np.ndarray] = {}
        for name, array in own.items():
            array = np.asarray(array)
            if not np.issubdtype(array.dtype, np.floating):
                out[name] = array.copy()
                continue
            rows = [np.asarray(h[name], np.float64) for h in honest if _fits(h, name, array)]
            forged = self._forge_one(array.astype(np.float64), rows)
            out[name] = forged.astype(array.dtype)
        return out

    def _forge_one(self, own: np.ndarray, rows: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack(rows) if rows else own[None]
        if self.name == "sign-flip":
            return -self.scale * own
        if self.name == "scale":
            return self.scale * own
        if self.name == "gaussian":
            if self._rng is None:
                self._rng = np.random.default_rng(self.seed)
            return own + self._rng.normal(0.0, self.std, size=own.shape)
        if self.name == "alie":
            result: np.ndarray = stacked.mean(axis=0) - self.z * stacked.std(axis=0)
            return result
        if self.name == "ipm":
            ipm: np.ndarray = -self.epsilon * stacked.mean(axis=0)
            return ipm
        return own  # honest, label-flip


def _fits(arrays: Arrays, name: str, like: np.ndarray) -> bool:
    other = arrays.get(name)
    return other is not None and np.shape(other) == like.shape


def _claim(params: SpecParams) -> int | None:
    claimed = params.optional_number("samples")
    if claimed is None:
        return None
    if not 0 <= claimed < 2**62:
        raise ConfigurationError(f"attack samples must be in 0..2**62, got {claimed!r}")
    return int(claimed)


_FACTORIES: dict[str, Callable[[SpecParams], Attack]] = {
    "sign-flip": lambda p: Attack("sign-flip", _claim(p), scale=p.number("scale", 1.0)),
    "scale": lambda p: Attack("scale", _claim(p), scale=p.number("factor", 10.0)),
    "gaussian": lambda p: Attack(
        "gaussian", _claim(p), std=p.number("std", 1.0), seed=p.integer("seed", 0)
    ),
    "alie": lambda p: Attack("alie", _claim(p), z=p.number("z", 1.0)),
    "ipm": lambda p: Attack("ipm", _claim(p), epsilon=p.number("epsilon", 0.5)),
    "label-flip": lambda p: Attack("label-flip", _claim(p), flips_labels=True),
    "stale": lambda p: Attack("stale", _claim(p)),
    "honest": lambda p: Attack("honest", _claim(p)),
}

#: The attack spec names.
ATTACK_NAMES = tuple(_FACTORIES)


def attack_from_spec(spec: str | Mapping[str, object]) -> Attack:
    """Build an :class:`Attack` from ``"name:key=value,..."`` (see the module's table).

    Raises:
        ConfigurationError: unknown name (the closest one suggested) or parameter, or a bad
            value.
    """
    attack = build_from_spec(spec, "attack", _FACTORIES)
    if (
        attack.std < 0
        or not np.isfinite([attack.scale, attack.std, attack.z, attack.epsilon]).all()
    ):
        raise ConfigurationError(f"attack {attack.name!r}: parameters must be finite, std >= 0")
    return attack
