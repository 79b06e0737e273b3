"""The peer protocol's pure parts: bootstrap entries, where to reach a peer, LOST back-dating,
the address-challenge handshake."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from scatterbrained.challenge import MAX_UNVERIFIED_REPLIES
from scatterbrained.errors import ConfigurationError
from scatterbrained.membership import Membership, parse_bootstrap
from scatterbrained.peers import PeerTable
from scatterbrained.transport.base import Envelope
from scatterbrained.wire.messages import Hello, Message, NamespaceInfo

pytestmark = pytest.mark.timeout(20)

Run = Callable[..., None]
KEY = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("tcp://10.0.0.5:5555", ("tcp://10.0.0.5:5555", None)),
        (f"tcp://host.example:7#{KEY}", ("tcp://host.example:7", KEY)),
        ("tcp://10.0.0.5:5555#", ("tcp://10.0.0.5:5555", None)),
    ],
)
def test_bootstrap_entries_parse_into_address_and_key(
    entry: str, expected: tuple[str, str | None]
) -> None:
    assert parse_bootstrap(entry) == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [("tcp://:5555", "needs a host"), ("10.0.0.5", "bootstrap entry"), ("tcp://h:x", "entry")],
)
def test_bad_bootstrap_entries_say_what_is_expected(entry: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_bootstrap(entry)


def test_a_wildcard_peer_is_reached_where_its_hello_came_from_then_where_we_knew_it(
    arun: Run, cluster_factory: Any
) -> None:
    async def main() -> None:
        async with cluster_factory() as cluster:
            (node,) = await cluster.start("a")
            membership = node._membership

            from_source = membership.resolve_host("p", "tcp://:9000", "10.1.2.3")
            fallback = membership.resolve_host("p", "tcp://:9000", None)
            explicit = membership.resolve_host("p", "tcp://10.9.9.9:9000", "10.1.2.3")
            broken = membership.resolve_host("p", "not an address", None)

            assert from_source == ("10.1.2.3", 9000)
            assert fallback == ("127.0.0.1", 9000)
            assert explicit == ("10.9.9.9", 9000)  # an advertised host wins
            assert broken is None

    arun(main)


def test_a_lost_beacon_back_dates_the_peer_but_leaves_heartbeats_time(
    arun: Run, cluster_factory: Any
) -> None:
    async def main() -> None:
        async with cluster_factory(peer_timeout=1.0) as cluster:
            a, b = await cluster.start("a", "b", heartbeat_interval=0.2)
            for node in (a, b):
                await node.namespace("Y").open()
            await a.namespaces["Y"].wait_for_peers(1, timeout=3)
            record = a.peers.get("b")
            assert record is not None
            now = time.monotonic()
            record.last_seen = now

            a._membership.beacons_stopped("b", now)

            left = record.last_seen + a.peer_timeout - now
            assert left == pytest.approx(2 * a.heartbeat_interval, abs=1e-6)

    arun(main)


class _FakeDiscovery:
    peer_timeout = 5.0

    def __init__(self, beacons: list[Any]) -> None:
        self._beacons = beacons

    def candidates(self) -> list[Any]:
        return self._beacons

    def announce(self, *_: Any, **__: Any) -> None:
        return None


class _FakeHost:
    """A MembershipHost that records what would be posted."""

    id = "me"
    session = 1
    heartbeat_interval = 1.0
    public_key = None
    peer_timeout = 5.0

    def __init__(self, beacons: list[Any]) -> None:
        self.discovery = _FakeDiscovery(beacons)
        self.posted: list[str] = []  # addresses, in order
        self.sent: list[tuple[str, Any]] = []  # (address, body), in order
        self.dropped: list[str] = []  # reasons

    def advertised_address(self) -> tuple[str, int]:
        return "127.0.0.1", 5000

    def namespace_infos(self) -> tuple[Any, ...]:
        from scatterbrained.wire.messages import NamespaceInfo

        return (NamespaceInfo("X", "peer", 0, True),)

    def member_changed(self, *_: Any) -> None:
        return None

    def wanted_sessions(self) -> set[str] | None:
        return None

    def peer_restarted(self, peer_id: str) -> None:
        return None

    def drop(self, reason: str, detail: str = "") -> None:
        self.dropped.append(reason)

    def post(self, address: str, namespace: str, body: Any, *, server_key: str | None) -> Any:
        self.posted.append(address)
        self.sent.append((address, body))

    def forget_address(self, address: str) -> None:
        return None


def test_a_flood_of_forged_beacons_costs_a_bounded_number_of_greetings_per_tick() -> None:
    from scatterbrained.discovery.base import Beacon, NamespaceAd
    from scatterbrained.membership import MAX_GREETINGS_PER_TICK, Membership
    from scatterbrained.peers import PeerTable

    ad = (NamespaceAd("X", "peer"),)
    same_address = [Beacon(f"ghost-{i}", "127.0.0.1", 9, ad) for i in range(500)]
    distinct = [Beacon(f"other-{i}", "127.0.0.1", 10000 + i, ad) for i in range(500)]
    host = _FakeHost(same_address + distinct)
    membership = Membership(host, PeerTable(), [], None, authenticated=False)  # type: ignore[arg-type]

    membership.tick(100.0)
    first_tick = list(host.posted)
    membership.tick(100.5)  # within the heartbeat interval: the same addresses wait

    assert len(first_tick) == MAX_GREETINGS_PER_TICK
    assert first_tick.count("tcp://127.0.0.1:9") == 1  # one Hello per address, not per id
    assert len(host.posted) == 2 * MAX_GREETINGS_PER_TICK
    assert len(set(host.posted)) == len(host.posted)  # the second tick greets others


# ---------------------------------------------------------------- address challenges


def hello_from(
    sender: str, address: str, seq: int, **fields: Any
) -> tuple[Message, Hello, Envelope]:
    body = Hello(address, (NamespaceInfo("X", "peer", 1, True),), **fields)
    return Message(sender, "", 7, seq, body), body, Envelope(frames=[], peer_host="127.0.0.1")


def test_a_peer_is_a_member_only_after_echoing_the_challenge_sent_to_its_address() -> None:
    # Prepare
    host = _FakeHost([])
    membership = Membership(host, PeerTable(), [], None, authenticated=False)  # type: ignore[arg-type]
    # Execute: a Hello asking for a reply, then the echo of what was sent to its address
    membership.on_hello(*hello_from("p", "tcp://127.0.0.1:7000", 1, want_reply=True))
    unverified = membership.peers.get("p")
    ((address, reply),) = host.sent
    membership.on_hello(*hello_from("p", "tcp://127.0.0.1:7000", 2, echo=reply.challenge))
    # Assert
    assert unverified is not None
    assert address == "tcp://127.0.0.1:7000"
    assert reply.want_reply and reply.challenge
    assert membership.peers.get("p").greeted  # type: ignore[union-attr]


def test_an_echo_for_another_address_or_a_guess_verifies_nobody() -> None:
    host = _FakeHost([])
    membership = Membership(host, PeerTable(), [], None, authenticated=False)  # type: ignore[arg-type]
    membership.on_hello(*hello_from("m", "tcp://127.0.0.1:7001", 1, want_reply=True))
    mine = membership.challenges.cookie("tcp://127.0.0.1:7002")  # an address m does control

    membership.on_hello(*hello_from("m", "tcp://127.0.0.1:7001", 2, echo=mine))
    membership.on_hello(*hello_from("m", "tcp://127.0.0.1:7001", 3, echo=12345))

    assert not membership.peers.get("m").greeted  # type: ignore[union-attr]


def test_a_flood_of_hellos_asking_for_replies_gets_a_bounded_number_of_them() -> None:
    host = _FakeHost([])
    membership = Membership(host, PeerTable(), [], None, authenticated=False)  # type: ignore[arg-type]
    for i in range(2000):
        membership.on_hello(
            *hello_from(f"f{i}", f"tcp://127.0.0.1:{10000 + i}", 1, want_reply=True)
        )
    assert len(host.sent) == MAX_UNVERIFIED_REPLIES
    assert host.dropped.count("hello_budget") == 2000 - MAX_UNVERIFIED_REPLIES


def test_a_new_address_must_answer_the_challenge_again() -> None:
    host = _FakeHost([])
    membership = Membership(host, PeerTable(), [], None, authenticated=False)  # type: ignore[arg-type]
    membership.on_hello(*hello_from("p", "tcp://127.0.0.1:7000", 1, want_reply=True))
    ((_, reply),) = host.sent
    membership.on_hello(*hello_from("p", "tcp://127.0.0.1:7000", 2, echo=reply.challenge))

    membership.on_hello(*hello_from("p", "tcp://127.0.0.1:7999", 3, echo=reply.challenge))

    assert not membership.peers.get("p").greeted  # type: ignore[union-attr]
