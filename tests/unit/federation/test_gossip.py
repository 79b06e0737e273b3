"""Tests of scatterbrained.federation.gossip."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterbrained.errors import ConfigurationError
from scatterbrained.federation.gossip import ReceivedUpdate, RoundCollector, UpdateBuffer

pytestmark = pytest.mark.timeout(30)


def update(
    sender: str, version: int = 1, at: float = 0.0, round: int = -1, samples: int = 10
) -> ReceivedUpdate:
    arrays = {"w": np.full(2, float(version), np.float32)}
    return ReceivedUpdate(sender, version, samples, arrays, received_at=at, round=round)


def test_freshest_update_per_sender_wins() -> None:
    # Prepare
    buffer = UpdateBuffer(max_age_s=None)
    # Execute
    accepted = [
        buffer.offer(update("a", version=2, at=1.0)),
        buffer.offer(update("a", version=1, at=5.0)),  # older version: refused
        buffer.offer(update("a", version=2, at=0.5)),  # same version, earlier: refused
        buffer.offer(update("a", version=2, at=1.0)),  # same version, same time: refused
        buffer.offer(update("a", version=2, at=3.0)),  # same version, newer: wins
        buffer.offer(update("b", version=1, at=0.0)),
    ]
    taken = buffer.take({"a", "b"}, now=4.0, local_version=0)
    # Assert
    assert accepted == [True, False, False, False, True, True]
    assert [(u.sender, u.version, u.received_at) for u in taken] == [("a", 2, 3.0), ("b", 1, 0.0)]
    assert len(buffer) == 0
    assert buffer.stats.rejected_older == 3 and buffer.stats.replaced == 1
    assert buffer.stats.taken == 2


def test_take_only_inbound_and_keeps_the_rest() -> None:
    buffer = UpdateBuffer()
    for sender in ("c", "a", "b"):
        buffer.offer(update(sender))
    taken = buffer.take(["c", "a", "zz"], now=1.0, local_version=0)
    assert [u.sender for u in taken] == ["a", "c"]
    assert buffer.senders() == frozenset({"b"})
    assert buffer.take(["a"], now=1.0, local_version=0) == []


def test_stale_updates_are_discarded_and_counted() -> None:
    # Prepare
    buffer = UpdateBuffer(max_age_s=10.0, max_version_lag=3)
    buffer.offer(update("old", version=9, at=0.0))
    buffer.offer(update("lagging", version=5, at=95.0))
    buffer.offer(update("fresh", version=7, at=95.0))
    buffer.offer(update("elsewhere", version=9, at=0.0))  # stale, not inbound: purged too
    # Execute
    taken = buffer.take(["old", "lagging", "fresh"], now=100.0, local_version=10)
    # Assert
    assert [u.sender for u in taken] == ["fresh"]
    assert buffer.stats.stale_by_age == 2
    assert buffer.stats.stale_by_version == 1
    assert len(buffer) == 0


def test_age_limit_is_inclusive() -> None:
    buffer = UpdateBuffer(max_age_s=10.0)
    buffer.offer(update("a", at=0.0))
    assert len(buffer.take(["a"], now=10.0, local_version=0)) == 1


def test_forget_and_clear() -> None:
    buffer = UpdateBuffer()
    buffer.offer(update("a"))
    buffer.offer(update("b"))
    buffer.forget("a")
    buffer.forget("never-seen")
    assert buffer.senders() == frozenset({"b"})
    buffer.clear()
    assert len(buffer) == 0


@settings(max_examples=50, deadline=None)
@given(
    offers=st.lists(
        st.tuples(st.sampled_from("abcd"), st.integers(0, 20), st.floats(0, 100)), max_size=60
    )
)
def test_buffer_holds_at_most_one_update_per_sender_the_freshest(
    offers: list[tuple[str, int, float]],
) -> None:
    buffer = UpdateBuffer(max_age_s=None)
    for sender, version, at in offers:
        buffer.offer(update(sender, version, at))
    assert len(buffer) == len({s for s, _, _ in offers})
    for got in buffer.take("abcd", now=0.0, local_version=0):
        best = max((v, t) for s, v, t in offers if s == got.sender)
        assert (got.version, got.received_at) == best


def test_buffer_validates_limits() -> None:
    with pytest.raises(ConfigurationError, match="max_age_s"):
        UpdateBuffer(max_age_s=-1.0)
    with pytest.raises(ConfigurationError, match="max_version_lag"):
        UpdateBuffer(max_version_lag=-1)


def test_round_collector_accepts_only_its_round_and_expected_senders() -> None:
    # Prepare
    collector = RoundCollector(round=3, expected={"a", "b", "c"}, min_peers=3)
    # Execute
    results = [
        collector.offer(update("a", round=3)),
        collector.offer(update("a", round=2)),
        collector.offer(update("x", round=3)),
        collector.offer(update("b", round=4)),
        collector.offer(update("a", version=1, round=3, at=-1.0)),  # not fresher
        collector.offer(update("a", version=2, round=3)),  # fresher: replaces
    ]
    # Assert
    assert results == [True, False, False, False, False, True]
    assert len(collector) == 1
    assert collector.updates()[0].version == 2
    assert collector.missing == frozenset({"b", "c"})
    assert not collector.ready


def test_round_collector_ready_on_all_expected_or_min_peers() -> None:
    everyone = RoundCollector(round=0, expected={"a", "b"}, min_peers=5)
    enough = RoundCollector(round=0, expected={"a", "b", "c"}, min_peers=2)
    nobody = RoundCollector(round=0, expected=set(), min_peers=1)
    everyone.offer(update("b", round=0))
    enough.offer(update("c", round=0))
    assert not everyone.ready and not enough.ready
    everyone.offer(update("a", round=0))
    enough.offer(update("a", round=0))
    assert everyone.ready and enough.ready
    assert [u.sender for u in everyone.updates()] == ["a", "b"]
    assert nobody.ready
    with pytest.raises(ConfigurationError, match="min_peers"):
        RoundCollector(round=0, expected={"a"}, min_peers=-1)
