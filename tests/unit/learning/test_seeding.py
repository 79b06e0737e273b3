"""A SEEDING centre's ledger: one round per version, a few copies, a fresh start per peer."""

from __future__ import annotations

import pytest

from scatterbrained.federation.rounds import RESEND_AFTER_S, SeedLedger

pytestmark = pytest.mark.timeout(10)


def test_a_version_keeps_one_round_that_follows_every_earlier_round() -> None:
    ledger = SeedLedger()

    first = ledger.round_for(version=0, global_round=-1)
    again = ledger.round_for(version=0, global_round=first)  # a newcomer: same round
    newer = ledger.round_for(version=5, global_round=first)
    after_rounds = ledger.round_for(version=6, global_round=40)

    assert (first, again, newer, after_rounds) == (0, 0, 5, 41)


def test_a_delivered_version_is_copied_on_schedule_then_no_more() -> None:
    ledger = SeedLedger()
    assert ledger.due("a", 1, now=0.0)
    ledger.delivered("a", 1, now=0.0)
    sends_at = []
    now = 0.0

    while now < 100.0:
        now += 0.5
        if ledger.due("a", 1, now):
            ledger.delivered("a", 1, now)
            sends_at.append(now)

    expected, at = [], 0.0
    for wait in RESEND_AFTER_S:
        at += wait
        expected.append(at)
    assert sends_at == expected


def test_a_new_version_is_due_at_once() -> None:
    ledger = SeedLedger()
    ledger.delivered("a", 1, now=0.0)

    assert not ledger.due("a", 1, now=0.1)
    assert ledger.due("a", 2, now=0.1)


def test_a_forgotten_peer_is_due_again() -> None:
    ledger = SeedLedger()
    for copy in range(len(RESEND_AFTER_S) + 1):
        ledger.delivered("a", 1, now=float(copy))
    assert not ledger.due("a", 1, now=1e6)

    ledger.forget("a")

    assert ledger.due("a", 1, now=1e6)
