"""The operating-mode state machine of one node in one namespace.

The mode is set by hand (:meth:`ModeController.set_manual`) or driven by a policy
(:meth:`ModeController.evaluate`). Policies are applied *edge-triggered*: a decision takes
effect only when it differs from the policy's previous decision. So a manual mode stays until
the policy changes its mind, instead of being overwritten at the next evaluation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigurationError
from ..types import OperatingMode
from .policies import Policy, PolicyState, as_policy

__all__ = ["ModeController", "ModeSwitch"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModeSwitch:
    """One change of operating mode.

    Attributes:
        at_epoch: local epochs done when the switch happened.
        old: the mode before.
        new: the mode after.
        reason: why (``"manual: ..."`` or ``"policy <repr>"``).
        time_s: wall-clock time of the switch (seconds since the epoch, from the clock).
    """

    at_epoch: int
    old: OperatingMode
    new: OperatingMode
    reason: str
    time_s: float


def _parse_mode(mode: OperatingMode | str) -> OperatingMode:
    try:
        return OperatingMode.parse(mode)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


class ModeController:
    """Holds a node's current operating mode and applies its policy.

    Not thread-safe: call it from one thread (the event loop).

    Args:
        initial: the starting mode (an :class:`OperatingMode` or its name).
        policy: an optional policy (any callable accepted by :func:`~.policies.as_policy`).
        clock: source of ``ModeSwitch.time_s`` (default :func:`time.time`).

    Raises:
        ConfigurationError: ``initial`` names no mode, or ``policy`` is not a policy.
    """

    def __init__(
        self,
        initial: OperatingMode | str = OperatingMode.PEER,
        policy: Policy | Callable[[PolicyState], Any] | str | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._mode = _parse_mode(initial)
        self._policy: Policy | None = None if policy is None else as_policy(policy)
        self._last_decision: OperatingMode | None = None
        self._epoch = 0
        self._clock = clock
        self.history: list[ModeSwitch] = []

    @property
    def mode(self) -> OperatingMode:
        """The current operating mode."""
        return self._mode

    @property
    def policy(self) -> Policy | None:
        """The policy driving the mode (``None``: manual only).

        Setting a new policy forgets the old one's last decision, so the new policy's first
        opinion is applied at the next :meth:`evaluate`.
        """
        return self._policy

    @policy.setter
    def policy(self, policy: Policy | Callable[[PolicyState], Any] | str | None) -> None:
        self._policy = None if policy is None else as_policy(policy)
        self._last_decision = None

    def set_manual(self, mode: OperatingMode | str, reason: str = "") -> ModeSwitch | None:
        """Set the mode by hand; it stays until the policy's decision changes.

        Args:
            mode: the new mode (or its name).
            reason: free text recorded in the history.

        Returns:
            The recorded switch, or ``None`` when ``mode`` is already the current mode.

        Raises:
            ConfigurationError: ``mode`` names no mode.
        """
        new = _parse_mode(mode)
        return self._switch(new, f"manual: {reason}" if reason else "manual")

    def evaluate(self, state: PolicyState) -> ModeSwitch | None:
        """Ask the policy and apply its decision if it changed since its last decision.

        Args:
            state: the node's current progress; ``state.epochs_done`` is remembered as the
                epoch of later manual switches.

        Returns:
            The switch made, or ``None`` (no policy, no opinion, unchanged decision, or the
            decision equals the current mode).

        Raises:
            ConfigurationError: the policy returned something that is not a mode.
        """
        self._epoch = state.epochs_done
        if self._policy is None:
            return None
        decision = self._policy(state)
        if decision is None or decision == self._last_decision:
            return None
        self._last_decision = _parse_mode(decision)
        return self._switch(self._last_decision, f"policy {self._policy!r}")

    def _switch(self, new: OperatingMode, reason: str) -> ModeSwitch | None:
        if new == self._mode:
            return None
        switch = ModeSwitch(self._epoch, self._mode, new, reason, self._clock())
        self._mode = new
        self.history.append(switch)
        logger.info(
            "operating mode %s -> %s at epoch %d (%s)",
            switch.old.value,
            switch.new.value,
            switch.at_epoch,
            reason,
        )
        return switch

    def __repr__(self) -> str:
        return f"ModeController(mode={self._mode.value!r}, policy={self._policy!r})"
