"""CandidateTable: SEEN / UPDATED / LOST with a fake clock, capacity cap, own id."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterbrained.discovery import Beacon, CandidateTable, EventKind, NamespaceAd
from scatterbrained.errors import ConfigurationError

KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


def beacon(node_id: str = "a", **changes: Any) -> Beacon:
    base = Beacon(node_id, "127.0.0.1", 5000, (NamespaceAd("ns", "peer", 0),), None, 10)
    return dataclasses.replace(base, **changes)


def test_first_beacon_is_seen_and_a_repeat_is_nothing() -> None:
    # Prepare
    table = CandidateTable(peer_timeout=5.0)
    # Execute
    first = table.observe(beacon(), now=0.0)
    repeat = table.observe(beacon(), now=1.0)
    # Assert
    assert first is not None and first.kind is EventKind.SEEN and first.beacon == beacon()
    assert repeat is None
    assert table.candidates() == [beacon()]


@pytest.mark.parametrize(
    "changes",
    [
        {"host": "10.0.0.2"},
        {"port": 5001},
        {"public_key": KEY},
        {"namespaces": (NamespaceAd("ns", "seeding", 0),)},
        {"namespaces": (NamespaceAd("ns", "peer", 0), NamespaceAd("other", "peer", 0))},
        {"namespaces": ()},
    ],
)
def test_changed_address_key_namespaces_or_mode_is_updated(changes: dict[str, Any]) -> None:
    # Prepare
    table = CandidateTable(peer_timeout=5.0)
    table.observe(beacon(), now=0.0)
    # Execute
    event = table.observe(beacon(**changes), now=1.0)
    # Assert
    assert event is not None and event.kind is EventKind.UPDATED
    assert event.beacon == beacon(**changes)
    assert table.get("a") == beacon(**changes)


def test_model_version_change_is_stored_silently() -> None:
    # Prepare
    table = CandidateTable(peer_timeout=5.0)
    table.observe(beacon(), now=0.0)
    newer = beacon(namespaces=(NamespaceAd("ns", "peer", 7),))
    # Execute
    event = table.observe(newer, now=1.0)
    # Assert
    assert event is None
    assert table.get("a") == newer


def test_new_session_is_seen_again_and_an_older_session_is_ignored() -> None:
    # Prepare
    table = CandidateTable(peer_timeout=5.0)
    table.observe(beacon(session=10), now=0.0)
    # Execute
    restarted = table.observe(beacon(session=11), now=1.0)
    stale = table.observe(beacon(session=10, port=6000), now=2.0)
    # Assert
    assert restarted is not None and restarted.kind is EventKind.SEEN
    assert stale is None
    assert table.get("a") == beacon(session=11)
    assert table.stats["dropped_stale_session"] == 1


def test_candidate_is_lost_only_after_peer_timeout_without_a_beacon() -> None:
    # Prepare
    table = CandidateTable(peer_timeout=5.0)
    table.observe(beacon("a"), now=0.0)
    table.observe(beacon("b"), now=0.0)
    table.observe(beacon("a"), now=4.0)  # a refreshed, b not
    # Execute
    at_5 = table.expire(now=5.0)
    at_6 = table.expire(now=6.0)
    at_10 = table.expire(now=10.0)
    # Assert
    assert at_5 == []
    assert [(e.kind, e.beacon.node_id) for e in at_6] == [(EventKind.LOST, "b")]
    assert [(e.kind, e.beacon.node_id) for e in at_10] == [(EventKind.LOST, "a")]
    assert len(table) == 0


def test_lost_candidate_that_returns_is_seen_again() -> None:
    # Prepare
    table = CandidateTable(peer_timeout=1.0)
    table.observe(beacon(), now=0.0)
    table.expire(now=2.0)
    # Execute
    event = table.observe(beacon(), now=3.0)
    # Assert
    assert event is not None and event.kind is EventKind.SEEN


def test_full_table_drops_new_ids_but_keeps_updating_known_ones() -> None:
    # Prepare
    table = CandidateTable(peer_timeout=5.0, capacity=2)
    table.observe(beacon("a"), now=0.0)
    table.observe(beacon("b"), now=0.0)
    # Execute
    dropped = table.observe(beacon("c"), now=1.0)
    updated = table.observe(beacon("a", port=6000), now=1.0)
    # Assert
    assert dropped is None
    assert "c" not in table
    assert updated is not None and updated.kind is EventKind.UPDATED
    assert table.stats["dropped_table_full"] == 1
    assert [b.node_id for b in table.candidates()] == ["a", "b"]


def test_own_beacons_are_ignored() -> None:
    # Prepare
    table = CandidateTable(peer_timeout=5.0, own_id="me")
    # Execute
    event = table.observe(beacon("me"), now=0.0)
    # Assert
    assert event is None
    assert len(table) == 0
    assert table.stats["ignored_own"] == 1


def test_remove_reports_lost_once() -> None:
    # Prepare
    table = CandidateTable(peer_timeout=5.0)
    table.observe(beacon(), now=0.0)
    # Execute
    first = table.remove("a")
    second = table.remove("a")
    # Assert
    assert first is not None and first.kind is EventKind.LOST
    assert second is None


@pytest.mark.parametrize(("timeout", "capacity"), [(0.0, 10), (-1.0, 10), (1.0, 0)])
def test_invalid_arguments_are_configuration_errors(timeout: float, capacity: int) -> None:
    # Execute / Assert
    with pytest.raises(ConfigurationError):
        CandidateTable(peer_timeout=timeout, capacity=capacity)


@pytest.mark.timeout(60)
@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from("abcdefgh"), st.integers(0, 2), st.floats(0.0, 3.0)),
        max_size=60,
    )
)
def test_table_matches_a_reference_model(steps: list[tuple[str, int, float]]) -> None:
    # Prepare
    table = CandidateTable(peer_timeout=2.0, capacity=4)
    model: dict[str, tuple[int, float]] = {}  # node id -> (session, last seen)
    now = 0.0
    for node_id, session, advance in steps:
        now += advance
        if node_id in model:
            if session >= model[node_id][0]:
                model[node_id] = (session, now)
        elif len(model) < 4:
            model[node_id] = (session, now)
        expected_lost = {n for n, (_, seen) in model.items() if seen < now - 2.0}
        for n in expected_lost:
            del model[n]
        # Execute
        table.observe(beacon(node_id, session=session), now)
        lost = {e.beacon.node_id for e in table.expire(now)}
        # Assert
        assert lost == expected_lost
        assert {b.node_id: b.session for b in table.candidates()} == {
            n: sess for n, (sess, _) in model.items()
        }
