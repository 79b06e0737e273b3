"""Address challenges: cookies and the reply budget (the handshake: ``test_membership.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scatterbrained.challenge import AddressChallenge, ReplyBudget

pytestmark = pytest.mark.timeout(20)


@given(st.text(max_size=80), st.text(max_size=80))
def test_a_cookie_is_62_bits_non_zero_and_verifies_only_its_own_address(a: str, b: str) -> None:
    challenge = AddressChallenge(b"k" * 32)
    cookie = challenge.cookie(a)
    assert 0 < cookie < 2**62
    assert challenge.verifies(cookie, a)
    assert not challenge.verifies(0, a)
    if a != b:
        assert not challenge.verifies(cookie, b) or challenge.cookie(b) == cookie


def test_another_node_s_secret_makes_other_cookies() -> None:
    assert AddressChallenge().cookie("tcp://h:1") != AddressChallenge().cookie("tcp://h:1")


def test_the_reply_budget_refills_each_interval() -> None:
    budget = ReplyBudget(limit=3)
    assert [budget.take(10.0, 1.0) for _ in range(4)] == [True, True, True, False]
    assert budget.take(10.5, 1.0) is False
    assert budget.take(11.0, 1.0) is True
