"""Tests of UpdateStore: which received updates gossip and synchronous rounds merge."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterbrained.federation.rounds import StoredUpdate, UpdateStore

pytestmark = pytest.mark.timeout(10)


def update(sender: str, round_: int, at: float = 0.0, samples: int = 1) -> StoredUpdate:
    return StoredUpdate(sender, round_, samples, {"w": np.full(2, round_, np.float32)}, at)


def rounds_of(updates: list[StoredUpdate]) -> list[tuple[str, int]]:
    return [(u.sender, u.round) for u in updates]


def test_take_fresh_takes_the_newest_per_sender_sorted_by_sender() -> None:
    store = UpdateStore()
    for sender, round_ in [("b", 1), ("a", 4), ("b", 3), ("a", 2)]:
        assert store.offer(update(sender, round_))

    taken = store.take_fresh(["b", "a", "absent"], now=0.0)

    assert rounds_of(taken) == [("a", 4), ("b", 3)]
    assert len(store) == 0  # the taken ones and everything older are gone
    assert store.take_fresh(["a", "b"], now=0.0) == []
    assert store.stats.taken == 2


def test_take_fresh_only_looks_at_the_requested_senders() -> None:
    store = UpdateStore()
    store.offer(update("a", 1))
    store.offer(update("b", 1))

    assert rounds_of(store.take_fresh(["a"], now=0.0)) == [("a", 1)]
    assert rounds_of(store.take_fresh(["a", "b"], now=0.0)) == [("b", 1)]


def test_an_update_not_newer_than_the_last_taken_is_stale() -> None:
    store = UpdateStore()
    store.offer(update("a", 5))
    store.take_fresh(["a"], now=0.0)

    assert not store.offer(update("a", 5))
    assert not store.offer(update("a", 3))
    assert store.offer(update("a", 6))
    assert store.stats.stale == 2 and store.stats.offered == 4


def test_keep_rounds_evicts_the_oldest_rounds() -> None:
    store = UpdateStore(keep_rounds=2)
    for round_ in (1, 2, 3):
        store.offer(update("a", round_))

    assert len(store) == 2 and store.stats.evicted == 1
    assert rounds_of(store.take_round(["a"], 1, now=0.0)) == [("a", 2)]


def test_a_repeated_round_replaces_the_stored_update() -> None:
    store = UpdateStore()
    store.offer(update("a", 1, samples=3))
    store.offer(update("a", 1, samples=7))

    (taken,) = store.take_fresh(["a"], now=0.0)

    assert taken.samples == 7 and len(store) == 0


def test_take_round_takes_exactly_the_round_else_the_next_later() -> None:
    store = UpdateStore()
    for sender, round_ in [("a", 1), ("a", 2), ("a", 3), ("b", 3), ("c", 0)]:
        store.offer(update(sender, round_))

    taken = store.take_round(["a", "b", "c"], 2, now=0.0)

    assert rounds_of(taken) == [("a", 2), ("b", 3)]  # c has only an older round: skipped
    assert rounds_of(store.take_fresh(["a", "c"], now=0.0)) == [("a", 3), ("c", 0)]


def test_take_for_round_takes_the_round_else_the_next_later_else_the_freshest() -> None:
    # Prepare: a ran ahead (rounds 4-6), b skipped round 4 (5, 7), c is behind (1, 2).
    store = UpdateStore()
    for sender, rounds in (("a", (4, 5, 6)), ("b", (5, 7)), ("c", (1, 2))):
        for round_ in rounds:
            store.offer(update(sender, round_))

    # Execute
    taken = store.take_for_round("abc", 4, now=0.0, max_lead=8)

    # Assert: the later rounds of a and b stay for the next exchanges.
    assert rounds_of(taken) == [("a", 4), ("b", 5), ("c", 2)]
    assert rounds_of(store.take_for_round("abc", 5, now=0.0, max_lead=8)) == [("a", 5), ("b", 7)]


def test_take_for_round_takes_the_freshest_of_a_sender_further_ahead_than_max_lead() -> None:
    # Prepare: a is 5 rounds ahead of round 1 (rounds 1-6 kept).
    store = UpdateStore()
    for round_ in range(1, 7):
        store.offer(update("a", round_))

    # Execute / Assert: within the lead, round 1; past it, the freshest (and all older go).
    assert rounds_of(store.take_for_round("a", 1, now=0.0, max_lead=5)) == [("a", 1)]
    assert rounds_of(store.take_for_round("a", 2, now=0.0, max_lead=3)) == [("a", 6)]
    assert len(store) == 0


def test_a_sender_that_runs_ahead_keeps_64_rounds_when_they_fit_in_the_byte_budget() -> None:
    # Prepare: 70 rounds of a small model from one sender.
    store = UpdateStore()
    for round_ in range(70):
        store.offer(update("a", round_))

    # Assert: the last 64 are all there, so no round is skipped.
    assert len(store) == 64 and store.stats.evicted == 6
    assert rounds_of(store.take_round(["a"], 6, now=0.0)) == [("a", 6)]


def test_the_byte_budget_bounds_a_sender_past_three_rounds() -> None:
    # Prepare: a budget of 40 bytes per sender; each update holds 8 (2 float32).
    store = UpdateStore(max_sender_bytes=40)
    for round_ in range(10):
        store.offer(update("a", round_))
    tight = UpdateStore(max_sender_bytes=1)
    for round_ in range(10):
        tight.offer(update("a", round_))

    # Assert: five fit in 40 bytes; never fewer than three, whatever their size.
    assert len(store) == 5
    assert len(tight) == 3
    assert rounds_of(tight.take_fresh(["a"], now=0.0)) == [("a", 9)]


def test_the_total_byte_budget_trims_the_sender_furthest_ahead_first() -> None:
    # Prepare: a budget of 80 bytes in all (10 updates); a runs 8 rounds, b and c 3.
    store = UpdateStore(max_total_bytes=80)
    for round_ in range(8):
        store.offer(update("a", round_))
    for sender in "bc":
        for round_ in range(3):
            store.offer(update(sender, round_))

    # Assert: a lost its oldest rounds; b and c keep their three.
    assert store.stored_bytes() == 80 and len(store) == 10
    assert rounds_of(store.take_round(["a"], 0, now=0.0)) == [("a", 4)]
    assert rounds_of(store.take_fresh("bc", now=0.0)) == [("b", 2), ("c", 2)]


def test_senders_with_round_counts_later_rounds_too() -> None:
    store = UpdateStore()
    store.offer(update("a", 2))
    store.offer(update("b", 5))
    store.offer(update("c", 1))

    assert store.senders_with_round(["a", "b", "c", "d"], 2) == {"a", "b"}
    assert store.senders_with_round(["a", "b"], 6) == set()


def test_too_old_updates_are_consumed_but_not_returned() -> None:
    store = UpdateStore(max_age_s=10.0)
    store.offer(update("old", 1, at=0.0))
    store.offer(update("new", 1, at=95.0))

    taken = store.take_fresh(["old", "new"], now=100.0)

    assert rounds_of(taken) == [("new", 1)]
    assert len(store) == 0
    assert store.stats.stale == 1 and store.stats.taken == 1
    assert not store.offer(update("old", 1, at=100.0))  # still counts as taken


def test_no_age_bound_when_max_age_is_none() -> None:
    store = UpdateStore(max_age_s=None)
    store.offer(update("a", 1, at=0.0))

    assert rounds_of(store.take_fresh(["a"], now=1e9)) == [("a", 1)]


def test_any_age_takes_an_update_however_old() -> None:
    store = UpdateStore(max_age_s=10.0)
    store.offer(update("seed", 3, at=0.0))

    taken = store.take_fresh(["seed"], now=1000.0, any_age=True)

    assert rounds_of(taken) == [("seed", 3)]
    assert store.stats.stale == 0


def test_forget_drops_stored_updates_but_remembers_what_was_merged() -> None:
    store = UpdateStore()
    store.offer(update("a", 4))
    store.take_fresh(["a"], now=0.0)
    store.offer(update("a", 5))

    store.forget("a")

    assert len(store) == 0
    assert not store.offer(update("a", 2))


def test_reset_sender_forgets_what_was_merged_for_a_restarted_sender() -> None:
    store = UpdateStore()
    store.offer(update("a", 4))
    store.take_fresh(["a"], now=0.0)

    store.reset_sender("a")

    assert store.offer(update("a", 0))  # a restarted node counts from 0 again
    assert rounds_of(store.take_fresh(["a"], now=0.0)) == [("a", 0)]


def test_arrays_are_stored_as_given() -> None:
    store = UpdateStore()
    sent = update("a", 3)
    store.offer(sent)

    (taken,) = store.take_round(["a"], 3, now=0.0)

    assert taken is sent
    np.testing.assert_array_equal(taken.arrays["w"], np.full(2, 3, np.float32))


operations = st.lists(
    st.one_of(
        st.tuples(st.just("offer"), st.sampled_from("ab"), st.integers(0, 8)),
        st.tuples(st.just("fresh"), st.just(""), st.just(0)),
        st.tuples(st.just("round"), st.just(""), st.integers(0, 8)),
        st.tuples(st.just("for_round"), st.just(""), st.integers(0, 8)),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(operations)
def test_merged_rounds_strictly_increase_per_sender_and_memory_is_bounded(
    ops: list[tuple[str, str, int]],
) -> None:
    store = UpdateStore(keep_rounds=3, max_age_s=None)
    last: dict[str, int] = {}

    for op, sender, value in ops:
        if op == "offer":
            accepted = store.offer(update(sender, value))
            assert accepted == (value > last.get(sender, -1))
        else:
            if op == "fresh":
                taken = store.take_fresh("ab", now=0.0)
            elif op == "round":
                taken = store.take_round("ab", value, now=0.0)
            else:
                taken = store.take_for_round("ab", value, now=0.0, max_lead=2)
            assert [u.sender for u in taken] == sorted({u.sender for u in taken})
            for u in taken:
                assert u.round > last.get(u.sender, -1)
                if op == "round":
                    assert u.round >= value
                if op == "for_round" and u.round < value:  # a sender behind: its freshest
                    assert store.newest_round(u.sender) == u.round
                last[u.sender] = u.round
        assert all(len(r) <= 3 for r in store._by_sender.values())
        assert store.stored_bytes() == 8 * len(store)  # 2 float32 each, counted as it goes
