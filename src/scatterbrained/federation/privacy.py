"""Privacy helpers: clipping plus Gaussian noise on what a node sends, and the pairing rule.

:class:`ClipAndNoise` is the Gaussian mechanism of DP-FedAvg applied to a model update (the
whole local dataset is the unit protected: node-level DP). Every release (each privatized
model sent) is accounted with the RDP accountant of Google's ``dp-accounting`` library
(:func:`gaussian_epsilon`); the learner records epsilon per epoch in the history.
:class:`PairingRule` is the paper's rule: never send to and receive from the same partner in
the same epoch.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import numpy as np

from ..errors import ConfigurationError
from .topology import Neighbours

__all__ = ["ClipAndNoise", "PairingRule", "gaussian_epsilon"]


def _is_float(array: np.ndarray) -> bool:
    return bool(np.issubdtype(array.dtype, np.floating))


class ClipAndNoise:
    """Clips the update ``arrays - reference`` to an L2 norm and adds Gaussian noise.

    The norm is global over all float arrays together. Non-float arrays are sent unchanged.

    Args:
        clip_norm: maximum L2 norm of the update (> 0), in parameter units.
        noise_multiplier: noise standard deviation as a multiple of ``clip_norm`` (>= 0).
        seed: seed of the noise generator (``None``: fresh OS entropy). Each call draws new
            noise from the same generator.
        delta: the delta at which epsilon is reported (0 < delta < 1; ``1e-5`` by default,
            below one over the number of nodes of any federation this library runs).

    Raises:
        ConfigurationError: ``clip_norm <= 0``, ``noise_multiplier < 0`` or ``delta`` out of
            range.
    """

    def __init__(
        self,
        clip_norm: float,
        noise_multiplier: float = 0.0,
        seed: int | None = None,
        delta: float = 1e-5,
    ) -> None:
        if not clip_norm > 0:
            raise ConfigurationError(f"ClipAndNoise clip_norm must be > 0, got {clip_norm!r}")
        if not noise_multiplier >= 0:
            raise ConfigurationError(
                f"ClipAndNoise noise_multiplier must be >= 0, got {noise_multiplier!r}"
            )
        if not 0 < delta < 1:
            raise ConfigurationError(f"ClipAndNoise delta must be in (0, 1), got {delta!r}")
        self.clip_norm = float(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.delta = float(delta)
        self._rng = np.random.default_rng(seed)

    def epsilon(self, releases: int) -> float:
        """Epsilon (at :attr:`delta`) spent by ``releases`` privatized models sent.

        ``math.inf`` without noise, ``0.0`` before the first release.
        """
        return gaussian_epsilon(self.noise_multiplier, releases, self.delta)

    def apply(
        self, arrays: Mapping[str, np.ndarray], reference: Mapping[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        """Return ``reference + clip(arrays - reference) + noise`` (dtypes of ``arrays``).

        Args:
            arrays: the model about to be sent.
            reference: the model the update is measured from (e.g. the last merged model).

        Raises:
            ConfigurationError: names or shapes of ``arrays`` and ``reference`` differ.
        """
        if set(arrays) != set(reference):
            raise ConfigurationError(
                f"ClipAndNoise: arrays and reference must have the same names; "
                f"differ in {sorted(set(arrays) ^ set(reference))}"
            )
        deltas: dict[str, np.ndarray] = {}
        for name, array in arrays.items():
            array = np.asarray(array)
            if not _is_float(array):
                continue
            ref = np.asarray(reference[name], dtype=np.float64)
            if ref.shape != array.shape:
                raise ConfigurationError(
                    f"ClipAndNoise: array {name!r} has shape {array.shape}, reference {ref.shape}"
                )
            deltas[name] = array.astype(np.float64) - ref
        norm = float(np.sqrt(sum(float(np.square(d).sum()) for d in deltas.values())))
        scale = min(1.0, self.clip_norm / norm) if norm > 0 else 1.0
        sigma = self.noise_multiplier * self.clip_norm
        result: dict[str, np.ndarray] = {}
        for name, array in arrays.items():
            array = np.asarray(array)
            if name not in deltas:
                result[name] = array.copy()
                continue
            delta = deltas[name] * scale
            if sigma > 0:
                delta = delta + self._rng.normal(0.0, sigma, size=delta.shape)
            ref = np.asarray(reference[name], dtype=np.float64)
            result[name] = (ref + delta).astype(array.dtype, copy=False)
        return result

    def __repr__(self) -> str:
        return (
            f"ClipAndNoise(clip_norm={self.clip_norm}, "
            f"noise_multiplier={self.noise_multiplier}, delta={self.delta})"
        )


def gaussian_epsilon(
    noise_multiplier: float, releases: int, delta: float, sampling_rate: float = 1.0
) -> float:
    """Epsilon of ``releases`` compositions of the (Poisson-subsampled) Gaussian mechanism.

    Computed by the RDP accountant of Google's ``dp-accounting`` library (not by hand).

    Args:
        noise_multiplier: noise standard deviation over the clipping norm (>= 0).
        releases: how many times the mechanism ran (>= 0).
        delta: the target delta, 0 < delta < 1.
        sampling_rate: the probability that a unit takes part in one release (1: always).

    Returns:
        Epsilon; ``0.0`` for no release, ``math.inf`` without noise.

    Raises:
        ConfigurationError: an argument is out of range.
    """
    if releases < 0 or not 0 < delta < 1 or not 0 < sampling_rate <= 1 or noise_multiplier < 0:
        raise ConfigurationError(
            "gaussian_epsilon needs releases >= 0, 0 < delta < 1, 0 < sampling_rate <= 1 and "
            f"noise_multiplier >= 0; got {releases!r}, {delta!r}, {sampling_rate!r}, "
            f"{noise_multiplier!r}"
        )
    if releases == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    import dp_accounting
    from dp_accounting import rdp

    event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_rate < 1:
        event = dp_accounting.PoissonSampledDpEvent(sampling_rate, event)
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.SelfComposedDpEvent(event, releases))
    return float(accountant.get_epsilon(delta))


class PairingRule:
    """Never send to and receive from the same partner in the same epoch.

    For every partner linked both ways, only one direction is kept per epoch. The direction
    is ``(epoch + crc32(smaller_id, larger_id)) % 2``: ``0`` means the smaller id sends. It
    alternates every epoch, differs between pairs (so no node only sends), and both sides
    compute the same answer without talking. One-way links are kept as they are.
    """

    @staticmethod
    def smaller_sends(a: str, b: str, epoch: int) -> bool:
        """Return ``True`` when, in ``epoch``, the smaller of ids ``a`` and ``b`` sends."""
        low, high = sorted((a, b))
        pair_bit = zlib.crc32(f"{low}\x00{high}".encode()) & 1
        return (epoch + pair_bit) % 2 == 0

    def split(self, node: str, neighbours: Neighbours, epoch: int) -> Neighbours:
        """Return ``neighbours`` with one direction kept per two-way partner.

        Args:
            node: this node's id.
            neighbours: its neighbours from the topology.
            epoch: the current epoch (the same number on both sides).
        """
        out = set(neighbours.out)
        inbound = set(neighbours.inbound)
        for partner in neighbours.out & neighbours.inbound:
            node_sends = self.smaller_sends(node, partner, epoch) == (node < partner)
            (inbound if node_sends else out).discard(partner)
        return Neighbours(out=frozenset(out), inbound=frozenset(inbound))

    def __repr__(self) -> str:
        return "PairingRule()"
