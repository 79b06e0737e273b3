"""Address challenges: cookies, the reply budget, and the handshake over a fake host."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scatterbrained.challenge import MAX_UNVERIFIED_REPLIES, AddressChallenge, ReplyBudget
from scatterbrained.membership import Membership
from scatterbrained.peers import PeerTable
from scatterbrained.transport.base import Envelope
from scatterbrained.wire.messages import Hello, Message, NamespaceInfo

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


class Host:
    """A MembershipHost recording the Hellos it would post, by address."""

    id = "me"
    session = 1
    heartbeat_interval = 1.0
    public_key = None
    peer_timeout = 5.0
    discovery = None

    def __init__(self) -> None:
        self.posted: list[tuple[str, Any]] = []
        self.dropped: list[str] = []

    def advertised_address(self) -> tuple[str, int]:
        return "127.0.0.1", 5000

    def namespace_infos(self) -> tuple[NamespaceInfo, ...]:
        return (NamespaceInfo("X", "peer", 0, True),)

    def member_changed(self, *_: Any) -> None:
        return None

    def peer_restarted(self, peer_id: str) -> None:
        return None

    def drop(self, reason: str, detail: str = "") -> None:
        self.dropped.append(reason)

    def post(self, address: str, namespace: str, body: Any, *, server_key: str | None) -> Any:
        self.posted.append((address, body))

    def forget_address(self, address: str) -> None:
        return None


def hello_from(
    sender: str, address: str, seq: int, **fields: Any
) -> tuple[Message, Hello, Envelope]:
    body = Hello(address, (NamespaceInfo("X", "peer", 1, True),), **fields)
    return Message(sender, "", 7, seq, body), body, Envelope(frames=[], peer_host="127.0.0.1")


def test_a_peer_is_a_member_only_after_echoing_the_challenge_sent_to_its_address() -> None:
    # Prepare
    host = Host()
    membership = Membership(host, PeerTable(), [], None, authenticated=False)  # type: ignore[arg-type]
    # Execute: a Hello asking for a reply, then the echo of what was sent to its address
    membership.on_hello(*hello_from("p", "tcp://127.0.0.1:7000", 1, want_reply=True))
    unverified = membership.peers.get("p")
    ((address, reply),) = host.posted
    membership.on_hello(*hello_from("p", "tcp://127.0.0.1:7000", 2, echo=reply.challenge))
    # Assert
    assert unverified is not None
    assert address == "tcp://127.0.0.1:7000"
    assert reply.want_reply and reply.challenge
    assert membership.peers.get("p").greeted  # type: ignore[union-attr]


def test_an_echo_for_another_address_or_a_guess_verifies_nobody() -> None:
    host = Host()
    membership = Membership(host, PeerTable(), [], None, authenticated=False)  # type: ignore[arg-type]
    membership.on_hello(*hello_from("m", "tcp://127.0.0.1:7001", 1, want_reply=True))
    mine = membership.challenges.cookie("tcp://127.0.0.1:7002")  # an address m does control

    membership.on_hello(*hello_from("m", "tcp://127.0.0.1:7001", 2, echo=mine))
    membership.on_hello(*hello_from("m", "tcp://127.0.0.1:7001", 3, echo=12345))

    assert not membership.peers.get("m").greeted  # type: ignore[union-attr]


def test_a_flood_of_hellos_asking_for_replies_gets_a_bounded_number_of_them() -> None:
    host = Host()
    membership = Membership(host, PeerTable(), [], None, authenticated=False)  # type: ignore[arg-type]
    for i in range(2000):
        membership.on_hello(
            *hello_from(f"f{i}", f"tcp://127.0.0.1:{10000 + i}", 1, want_reply=True)
        )
    assert len(host.posted) == MAX_UNVERIFIED_REPLIES
    assert host.dropped.count("hello_budget") == 2000 - MAX_UNVERIFIED_REPLIES


def test_a_new_address_must_answer_the_challenge_again() -> None:
    host = Host()
    membership = Membership(host, PeerTable(), [], None, authenticated=False)  # type: ignore[arg-type]
    membership.on_hello(*hello_from("p", "tcp://127.0.0.1:7000", 1, want_reply=True))
    ((_, reply),) = host.posted
    membership.on_hello(*hello_from("p", "tcp://127.0.0.1:7000", 2, echo=reply.challenge))

    membership.on_hello(*hello_from("p", "tcp://127.0.0.1:7999", 3, echo=reply.challenge))

    assert not membership.peers.get("p").greeted  # type: ignore[union-attr]
