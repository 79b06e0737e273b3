"""Tests of scatterbrained.federation.modes."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import pytest

from scatterbrained.errors import ConfigurationError
from scatterbrained.federation.modes import ModeController, ModeSwitch
from scatterbrained.federation.policies import AfterEpochs, LeechUntil, PolicyState
from scatterbrained.types import OperatingMode

pytestmark = pytest.mark.timeout(10)

PEER, SEEDING, LEECHING, OFFLINE = (
    OperatingMode.PEER,
    OperatingMode.SEEDING,
    OperatingMode.LEECHING,
    OperatingMode.OFFLINE,
)


def state(**changes: object) -> PolicyState:
    base = PolicyState(mode=PEER, samples_seen=0, epochs_done=0, version=0, peers=0, elapsed_s=0.0)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def fake_clock() -> Iterator[float]:
    t = 100.0
    while True:
        yield t
        t += 1.0


def controller(policy: object = None, initial: OperatingMode = PEER) -> ModeController:
    ticks = fake_clock()
    return ModeController(initial, policy, clock=lambda: next(ticks))  # type: ignore[arg-type]


def test_without_policy_mode_only_changes_by_hand() -> None:
    modes = controller()
    assert modes.evaluate(state(samples_seen=10**6)) is None
    switch = modes.set_manual("seeding", "operator")
    assert modes.mode is SEEDING
    assert switch == ModeSwitch(0, PEER, SEEDING, "manual: operator", 100.0)
    assert modes.set_manual(SEEDING) is None  # already there: nothing recorded
    assert modes.history == [switch]


def test_leech_until_switches_exactly_at_threshold() -> None:
    # Prepare
    modes = controller(LeechUntil(samples=100))
    # Execute
    first = modes.evaluate(state(samples_seen=0, epochs_done=0))
    middle = modes.evaluate(state(samples_seen=99, epochs_done=1))
    mode_before = modes.mode
    last = modes.evaluate(state(samples_seen=100, epochs_done=2))
    # Assert
    assert first is not None and (first.old, first.new) == (PEER, LEECHING)
    assert middle is None and mode_before is LEECHING
    assert last is not None and (last.old, last.new, last.at_epoch) == (LEECHING, PEER, 2)
    assert modes.mode is PEER
    assert [s.new for s in modes.history] == [LEECHING, PEER]


def test_manual_override_stays_until_policy_changes_its_mind() -> None:
    # Prepare
    modes = controller(AfterEpochs(3, then=PEER, before=LEECHING))
    modes.evaluate(state(epochs_done=0))
    # Execute
    modes.set_manual(OFFLINE, "maintenance")
    still_offline = [modes.evaluate(state(epochs_done=e)) for e in (1, 2)]
    mode_while_policy_unchanged = modes.mode
    back = modes.evaluate(state(epochs_done=3))
    # Assert
    assert still_offline == [None, None]
    assert mode_while_policy_unchanged is OFFLINE
    assert back is not None and (back.old, back.new) == (OFFLINE, PEER)
    assert [(s.old, s.new) for s in modes.history] == [
        (PEER, LEECHING),
        (LEECHING, OFFLINE),
        (OFFLINE, PEER),
    ]
    assert modes.history[1].at_epoch == 0


def test_no_opinion_does_not_reset_the_last_decision() -> None:
    decisions = iter([LEECHING, None, LEECHING, PEER])
    modes = controller(lambda s: next(decisions))
    modes.evaluate(state())
    modes.set_manual(SEEDING)
    assert modes.evaluate(state()) is None
    assert modes.evaluate(state()) is None
    assert modes.mode is SEEDING
    assert modes.evaluate(state()) is not None and modes.mode is PEER


def test_new_policy_applies_its_first_opinion() -> None:
    modes = controller(LeechUntil(10))
    modes.evaluate(state(samples_seen=50))
    assert modes.mode is PEER
    modes.policy = lambda s: "seeding"
    assert modes.evaluate(state()) is not None
    assert modes.mode is SEEDING


def test_switches_are_logged_at_info(caplog: pytest.LogCaptureFixture) -> None:
    modes = controller()
    with caplog.at_level(logging.INFO, logger="scatterbrained.federation.modes"):
        modes.set_manual(LEECHING, "test")
    assert any(
        r.levelno == logging.INFO and "peer -> leeching" in r.getMessage() for r in caplog.records
    )


def test_invalid_modes_raise_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown operating mode"):
        ModeController("sideways")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        controller().set_manual("nope")
    bad = controller(lambda s: "nope")
    with pytest.raises(ConfigurationError):
        bad.evaluate(state())
