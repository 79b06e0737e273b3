"""Tests of the node's peer bookkeeping: addresses, records, the peer table, the replay guard."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterbrained.peers import PeerRecord, PeerTable, ReplayGuard, split_address
from scatterbrained.types import Identity, OperatingMode
from scatterbrained.wire.messages import Hello, NamespaceInfo

pytestmark = pytest.mark.timeout(10)


def hello(*namespaces: tuple[str, str], key: str | None = None) -> Hello:
    return Hello("tcp://h:1", tuple(NamespaceInfo(n, m) for n, m in namespaces), key)


# ---------------------------------------------------------------------- split_address


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("tcp://10.0.0.5:5555", ("10.0.0.5", 5555)),
        ("tcp://:1", ("", 1)),
        ("tcp://[::1]:65535", ("::1", 65535)),
        ("tcp://memory:7", ("memory", 7)),
    ],
)
def test_split_address_accepts_tcp_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize(
    "address",
    ["udp://h:1", "tcp://h", "tcp://h:0", "tcp://h:65536", "tcp://h:-1", "tcp://h:x", "h:1"],
)
def test_split_address_rejects_malformed(address: str) -> None:
    with pytest.raises(ValueError, match="tcp://host:port"):
        split_address(address)


# ---------------------------------------------------------------------- PeerRecord


def test_record_identity_and_mode_in() -> None:
    record = PeerRecord("p", "h", 9, namespaces={"A": NamespaceInfo("A", "Seeding")})

    assert record.address == "tcp://h:9"
    assert record.identity("A") == Identity("p", "A", "h", 9)
    assert record.mode_in("A") is OperatingMode.SEEDING
    assert record.mode_in("B") is None


def test_record_mode_in_is_none_for_an_unknown_mode_name() -> None:
    record = PeerRecord("p", "h", 9, namespaces={"A": NamespaceInfo("A", "warp-drive")})

    assert record.mode_in("A") is None


# ---------------------------------------------------------------------- PeerTable


def test_upsert_creates_refreshes_and_keeps_host_when_empty() -> None:
    table = PeerTable()

    first = table.upsert("p", "h1", 1, now=5.0)
    again = table.upsert("p", "", 2, now=3.0)  # empty host: keep the old address

    assert first is again and first is not None
    assert (first.host, first.port) == ("h1", 1)
    assert first.last_seen == 5.0  # never moves backwards
    table.upsert("p", "h2", 3, now=6.0)
    assert (first.address, first.last_seen) == ("tcp://h2:3", 6.0)
    assert len(table) == 1 and "p" in table


def test_upsert_refuses_new_ids_when_full_but_refreshes_known() -> None:
    table = PeerTable(capacity=2)
    table.upsert("a", "h", 1, 0.0)
    table.upsert("b", "h", 2, 0.0)

    assert table.upsert("c", "h", 3, 0.0) is None
    assert table.upsert("a", "h", 1, 1.0) is not None
    assert [r.id for r in table.records()] == ["a", "b"]


def test_records_are_sorted_by_id() -> None:
    table = PeerTable()
    for peer in ("c", "a", "b"):
        table.upsert(peer, "h", 1, 0.0)

    assert [r.id for r in table.records()] == ["a", "b", "c"]


def test_apply_hello_reports_joined_left_and_mode_changes_only() -> None:
    table = PeerTable()
    record = table.upsert("p", "h", 1, 0.0)
    assert record is not None

    joined = table.apply_hello(record, hello(("A", "peer"), ("B", "peer")), session=7)
    same = table.apply_hello(record, hello(("A", "peer"), ("B", "peer")), session=7)
    changed = table.apply_hello(record, hello(("A", "leeching"), ("C", "peer")), session=7)

    assert joined == {"A", "B"}
    assert same == set()
    assert changed == {"A", "B", "C"}  # A changed mode, B left, C joined
    assert not record.greeted and record.session == 7  # greeted only by an echoed challenge
    assert set(record.namespaces) == {"A", "C"}


def test_apply_hello_never_lowers_the_session_and_keeps_a_known_key() -> None:
    table = PeerTable()
    record = table.upsert("p", "h", 1, 0.0)
    assert record is not None
    table.apply_hello(record, hello(("A", "peer"), key="K1"), session=9)

    table.apply_hello(record, hello(("A", "peer")), session=3)

    assert record.session == 9
    assert record.public_key == "K1"


def test_bind_key_binds_once() -> None:
    table = PeerTable()

    assert table.bind_key("K", "a")
    assert table.bind_key("K", "a")
    assert not table.bind_key("K", "b")
    assert table.bound_id("K") == "a"
    assert table.bound_id("other") is None


def test_expired_touch_and_remove() -> None:
    table = PeerTable()
    table.upsert("old", "h", 1, now=0.0)
    table.upsert("new", "h", 2, now=9.0)

    assert [r.id for r in table.expired(now=10.0, timeout=5.0)] == ["old"]
    table.touch("old", 8.0)
    table.touch("ghost", 8.0)  # unknown: no-op
    assert table.expired(now=10.0, timeout=5.0) == []
    removed = table.remove("old")
    assert removed is not None and removed.id == "old"
    assert table.remove("old") is None
    assert table.get("old") is None and "ghost" not in table


def test_an_id_belongs_to_the_first_key_while_its_record_lives() -> None:
    table = PeerTable()
    table.upsert("a", "h", 1, now=0.0)
    assert table.bind_key("K1", "a")

    assert not table.may_bind("K2", "a")  # another key cannot take "a"
    assert not table.bind_key("K2", "a")
    table.remove("a")  # the record expired or left: the id is free again

    assert table.bound_id("K1") is None
    assert table.bind_key("K2", "a")


# ---------------------------------------------------------------------- ReplayGuard


def test_replay_guard_accepts_increasing_and_rejects_repeats() -> None:
    guard = ReplayGuard()

    assert guard.accept("a", 1, 1)
    assert guard.accept("a", 1, 5)  # gaps are fine (lost messages)
    assert not guard.accept("a", 1, 5)  # exact duplicate
    assert not guard.accept("a", 1, 3)  # reordered old
    assert guard.accept("b", 1, 1)  # senders are independent


def test_replay_guard_new_session_restarts_sequence_and_old_session_is_refused() -> None:
    guard = ReplayGuard()
    guard.accept("a", 100, 50)

    assert guard.accept("a", 200, 1)  # restarted sender: low seq in a newer session
    assert not guard.accept("a", 100, 51)  # anything from the old session is now a replay
    assert not guard.accept("a", 200, 1)


def test_replay_guard_capacity_forgets_the_oldest_sender() -> None:
    guard = ReplayGuard(capacity=2)
    guard.accept("a", 1, 10)
    guard.accept("b", 1, 10)

    guard.accept("c", 1, 10)  # evicts "a"

    assert guard.accept("a", 1, 10)  # forgotten, so accepted again
    assert not guard.accept("c", 1, 10)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 20)), max_size=40))
def test_replay_guard_accepts_exactly_the_strictly_increasing_prefix_maxima(
    messages: list[tuple[int, int]],
) -> None:
    guard = ReplayGuard()
    best: tuple[int, int] | None = None

    for session, seq in messages:
        expected = best is None or (session, seq) > best

        assert guard.accept("s", session, seq) is expected
        if expected:
            best = (session, seq)


def test_replay_guard_without_keys_forgets_a_sender_silent_for_reset_after() -> None:
    guard = ReplayGuard()
    assert guard.accept("a", 1, 2**60, now=0.0, reset_after=5.0)  # a forged jump ahead

    assert not guard.accept("a", 1, 7, now=4.0, reset_after=5.0)  # still a "replay"
    assert guard.accept("a", 1, 8, now=6.0, reset_after=5.0)  # nothing accepted for 5 s
    assert not guard.accept("a", 1, 8, now=6.1, reset_after=5.0)  # duplicates still refused


def test_replay_guard_forget_starts_a_sender_afresh() -> None:
    guard = ReplayGuard()
    guard.accept("a", 100, 50)

    guard.forget("a")

    assert guard.accept("a", 1, 1)
