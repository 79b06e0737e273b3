"""Tests of scatterbrained.federation.policies."""

from __future__ import annotations

import dataclasses
import functools

import pytest

from scatterbrained.errors import ConfigurationError
from scatterbrained.federation.modes import ModeController
from scatterbrained.federation.policies import (
    AfterEpochs,
    AfterSeconds,
    FirstOf,
    FromCallable,
    LeechUntil,
    PolicyState,
    ValidationThreshold,
    after_epochs,
    as_policy,
    policy_from_spec,
)
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


def test_leech_until_switches_exactly_at_the_threshold() -> None:
    policy = LeechUntil(samples=500)
    assert policy(state(samples_seen=0)) is LEECHING
    assert policy(state(samples_seen=499)) is LEECHING
    assert policy(state(samples_seen=500)) is PEER
    assert LeechUntil(500, then=SEEDING)(state(samples_seen=501)) is SEEDING


def test_after_epochs_and_alias() -> None:
    policy = after_epochs(3, then=PEER, before=OFFLINE)
    assert policy == AfterEpochs(3, PEER, OFFLINE)
    assert policy(state(epochs_done=2)) is OFFLINE
    assert policy(state(epochs_done=3)) is PEER
    assert AfterEpochs(3, PEER)(state(epochs_done=1)) is None


def test_after_seconds() -> None:
    policy = AfterSeconds(60.0, then=SEEDING)
    assert policy(state(elapsed_s=59.9)) is None
    assert policy(state(elapsed_s=60.0)) is SEEDING


def test_validation_threshold_latches_once_reached() -> None:
    # Prepare
    policy = ValidationThreshold(accuracy=0.8)
    # Execute
    decisions = [
        policy(state(val_accuracy=None)),
        policy(state(val_accuracy=0.79)),
        policy(state(val_accuracy=0.8)),
        policy(state(val_accuracy=0.1)),
    ]
    # Assert
    assert decisions == [LEECHING, LEECHING, PEER, PEER]


def test_validation_threshold_needs_every_given_threshold() -> None:
    policy = ValidationThreshold(accuracy=0.5, loss=1.0, before=None)
    assert policy(state(val_accuracy=0.9, val_loss=2.0)) is None
    assert policy(state(val_accuracy=0.9, val_loss=None)) is None
    assert policy(state(val_accuracy=0.9, val_loss=0.5)) is PEER


def test_from_callable_accepts_mode_names_and_rejects_junk() -> None:
    by_name = FromCallable(lambda s: "seeding" if s.peers > 2 else None)
    junk = FromCallable(lambda s: 42)  # type: ignore[arg-type,return-value]
    typo = FromCallable(lambda s: "peeer")
    assert by_name(state(peers=3)) is SEEDING
    assert by_name(state(peers=1)) is None
    with pytest.raises(ConfigurationError, match="42"):
        junk(state())
    with pytest.raises(ConfigurationError, match="peeer"):
        typo(state())


def test_first_of_takes_first_opinion() -> None:
    policy = FirstOf(AfterEpochs(5, OFFLINE), lambda s: "leeching")
    assert policy(state(epochs_done=5)) is OFFLINE
    assert policy(state(epochs_done=1)) is LEECHING
    with pytest.raises(ConfigurationError):
        FirstOf()


def test_as_policy() -> None:
    leech = LeechUntil(10)
    assert as_policy(leech) is leech
    assert as_policy("leech-until:samples=10") == leech
    assert isinstance(as_policy(lambda s: None), FromCallable)
    with pytest.raises(ConfigurationError, match="callable"):
        as_policy(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("leech-until:samples=500", LeechUntil(500)),
        ("leech_until:samples=5,then=seeding", LeechUntil(5, SEEDING)),
        ("after-epochs:epochs=3,then=peer,before=leeching", AfterEpochs(3, PEER, LEECHING)),
        ("after-epochs:epochs=3", AfterEpochs(3, PEER)),
        ("after-seconds:seconds=1.5", AfterSeconds(1.5, PEER)),
        ({"name": "leech-until", "samples": 7}, LeechUntil(7)),
    ],
)
def test_policy_from_spec(spec: object, expected: object) -> None:
    assert policy_from_spec(spec) == expected  # type: ignore[arg-type]


def test_policy_from_spec_validation_threshold() -> None:
    policy = policy_from_spec("validation-threshold:accuracy=0.9,then=seeding")
    assert isinstance(policy, ValidationThreshold)
    assert (policy.accuracy, policy.loss, policy.then) == (0.9, None, SEEDING)
    assert policy.before is LEECHING
    no_opinion = policy_from_spec("validation-threshold:loss=0.5,before=none")
    assert isinstance(no_opinion, ValidationThreshold) and no_opinion.before is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("leech-untl:samples=1", "did you mean 'leech-until'"),
        ("leech-until", "needs parameter 'samples'"),
        ("leech-until:samples=-1", ">= 0"),
        ("leech-until:samples=1,then=sideways", "unknown operating mode"),
        ("validation-threshold", "accuracy"),
        ("validation-threshold:accuracy=2", r"\[0, 1\]"),
        ("after-seconds:seconds=soon", "number"),
    ],
)
def test_policy_from_spec_rejects(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        policy_from_spec(spec)


# ------------------------------------------------------------- names of custom policies


def _named_policy(state: PolicyState) -> str:
    return "seeding"


class _CallablePolicy:
    def __call__(self, state: PolicyState) -> str:
        return "peer"


def test_custom_policies_are_named_without_addresses() -> None:
    def main() -> FromCallable:
        return FromCallable(lambda s: "peer")

    shown = {
        repr(main()),
        repr(FromCallable(_named_policy)),
        repr(FromCallable(functools.partial(_named_policy))),
        repr(FromCallable(_CallablePolicy())),
        repr(as_policy(lambda s: None)),
    }

    assert shown == {
        "test_custom_policies_are_named_without_addresses.<locals>.main.<locals>.<lambda>",
        "_named_policy",
        "partial(_named_policy)",
        "_CallablePolicy",
        "test_custom_policies_are_named_without_addresses.<locals>.<lambda>",
    }
    assert not any("0x" in text or "function" in text for text in shown)


def test_a_mode_switch_by_a_custom_policy_names_the_function() -> None:
    def main() -> ModeController:
        return ModeController(PEER, lambda s: "offline" if s.peers == 0 else "peer")

    modes = main()
    switch = modes.evaluate(state(peers=0))

    assert switch is not None and switch.new is OFFLINE
    assert switch.reason == (
        "policy test_a_mode_switch_by_a_custom_policy_names_the_function.<locals>.main."
        "<locals>.<lambda>"
    )


def test_an_invalid_answer_names_the_policy_function() -> None:
    with pytest.raises(ConfigurationError, match=r"^policy _bad_policy returned 'peeer'"):
        FromCallable(_bad_policy)(state())


def _bad_policy(state: PolicyState) -> str:
    return "peeer"


# ------------------------------------------------------------- spec parameter typos


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "leech-until:sampels=5",
            "policy 'leech-until' does not take parameter(s) sampels (did you mean 'samples'?); "
            "valid parameters: samples, then",
        ),
        (
            "validation-threshold:acuracy=0.8",
            "policy 'validation-threshold' does not take parameter(s) acuracy (did you mean "
            "'accuracy'?); valid parameters: accuracy, loss, then, before",
        ),
        ("after-epochs:epochs=2,thne=seeding", "thne (did you mean 'then'?)"),
    ],
)
def test_a_misspelt_parameter_is_named_not_reported_missing(spec: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        policy_from_spec(spec)
    assert message in str(caught.value)
