"""The Discovery contract, run against both twins: UdpDiscovery (loopback) and MemoryDiscovery.

Every behaviour documented in :mod:`scatterbrained.discovery.base` is checked once here, with
the ``twin`` fixture parametrised over UDP discovery in LOOPBACK scope (beacons only ever go
to 127.255.255.255, on a free test port) and the in-memory twin on one hub, so the two
cannot drift apart. The one documented difference, how soon a *closed* node is LOST, is the
twin-specific test at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from scatterbrained.discovery import (
    Beacon,
    Discovery,
    DiscoveryEvent,
    DiscoveryScope,
    EventKind,
    MemoryDiscovery,
    MemoryDiscoveryHub,
    NamespaceAd,
    NullDiscovery,
    UdpDiscovery,
)
from scatterbrained.errors import ConfigurationError, DiscoveryError

#: Seconds between beacons (UDP) or hub polls (memory).
INTERVAL = 0.05
#: Seconds of silence after which a candidate is LOST.
PEER_TIMEOUT = 0.6

pytestmark = pytest.mark.timeout(20)


def run(main: Callable[[], Awaitable[None]], timeout: float = 10.0) -> None:
    """Run one async test body under a hard timeout."""

    async def bounded() -> None:
        await asyncio.wait_for(main(), timeout)

    asyncio.run(bounded())


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def beacon(
    node_id: str, mode: str = "peer", version: int = 0, session: int = 1, host: str = ""
) -> Beacon:
    return Beacon(node_id, host, 6000, (NamespaceAd("ns", mode, version),), None, session)


class Twin:
    """Makes discoveries of one kind that hear each other (one hub, or one UDP port)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.hub = MemoryDiscoveryHub()
        self.port = free_udp_port()

    def make(self, *, peer_timeout: float = PEER_TIMEOUT, **options: Any) -> Any:
        if self.kind == "memory":
            return MemoryDiscovery(
                self.hub, interval=INTERVAL, peer_timeout=peer_timeout, **options
            )
        return UdpDiscovery(
            self.port,
            scope=DiscoveryScope.LOOPBACK,  # never "lan": nothing leaves this machine
            interval=INTERVAL,
            peer_timeout=peer_timeout,
            **options,
        )


@pytest.fixture(params=["udp", "memory"])
def twin(request: pytest.FixtureRequest) -> Iterator[Twin]:
    yield Twin(request.param)


async def wait_until(condition: Callable[[], bool], timeout: float, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what}")
        await asyncio.sleep(0.01)


async def next_matching(
    discovery: Discovery, kind: EventKind, node_id: str, timeout: float
) -> DiscoveryEvent:
    async def find() -> DiscoveryEvent:
        while True:
            event = await discovery.next_event()
            if event.kind is kind and event.beacon.node_id == node_id:
                return event

    return await asyncio.wait_for(find(), timeout)


async def no_event_within(discovery: Discovery, seconds: float) -> DiscoveryEvent | None:
    """The first event within ``seconds``, or ``None``."""
    try:
        return await asyncio.wait_for(discovery.next_event(), seconds)
    except asyncio.TimeoutError:
        return None


def ids(discovery: Discovery) -> set[str]:
    return {b.node_id for b in discovery.candidates()}


async def announcing(
    stack: contextlib.AsyncExitStack, twin: Twin, *node_ids: str, **options: Any
) -> list[Any]:
    """Started discoveries announcing ``beacon(node_id)`` each."""
    started = []
    for node_id in node_ids:
        discovery = twin.make(**options)
        discovery.announce(beacon(node_id))
        started.append(await stack.enter_async_context(discovery))
    return started


# ---------------------------------------------------------------------------- lifecycle


def test_both_twins_implement_the_protocol(twin: Twin) -> None:
    discovery: Discovery = twin.make()

    assert isinstance(discovery, Discovery)
    assert discovery.peer_timeout == PEER_TIMEOUT
    assert twin.make(peer_timeout=2.5).peer_timeout == 2.5


def test_start_and_close_are_idempotent_and_close_is_final(twin: Twin) -> None:
    async def main() -> None:
        discovery = twin.make()
        await discovery.start()
        await discovery.start()  # no-op while started
        await discovery.close()
        await discovery.close()
        with pytest.raises(DiscoveryError, match="closed"):
            await discovery.start()

        never_started = twin.make()
        await never_started.close()  # allowed before start
        with pytest.raises(DiscoveryError, match="closed"):
            await never_started.start()

    run(main)


def test_next_event_raises_after_close_and_close_wakes_a_pending_one(twin: Twin) -> None:
    async def main() -> None:
        discovery = twin.make()
        await discovery.start()
        pending = asyncio.ensure_future(discovery.next_event())
        await asyncio.sleep(0.02)  # let it start waiting

        await discovery.close()

        with pytest.raises(DiscoveryError, match="closed"):
            await asyncio.wait_for(pending, 1.0)
        with pytest.raises(DiscoveryError, match="closed"):
            await asyncio.wait_for(discovery.next_event(), 1.0)  # at once, never hangs

    run(main)


# ---------------------------------------------------------------------------- announce


def test_announced_nodes_become_candidates_with_a_seen_event(twin: Twin) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            early = twin.make()
            early.announce(beacon("early"))  # before start
            await stack.enter_async_context(early)
            late = await stack.enter_async_context(twin.make())
            late.announce(beacon("late", host="10.1.2.3"))  # after start, explicit host

            seen_late = await next_matching(early, EventKind.SEEN, "late", 3.0)
            seen_early = await next_matching(late, EventKind.SEEN, "early", 3.0)

            assert ids(early) == {"late"} and ids(late) == {"early"}  # never itself
            assert seen_early.beacon == beacon("early", host="127.0.0.1")  # filled in
            assert seen_late.beacon == beacon("late", host="10.1.2.3")  # kept
            assert early.candidates() == [seen_late.beacon]
            assert early.stats["received"] >= 1

    run(main)


def test_changes_are_updated_versions_are_silent_sessions_are_seen(twin: Twin) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            watcher, changer = await announcing(stack, twin, "w", "c")
            await next_matching(watcher, EventKind.SEEN, "c", 3.0)

            changer.announce(beacon("c", mode="seeding"))
            updated = await next_matching(watcher, EventKind.UPDATED, "c", 3.0)
            changer.announce(beacon("c", mode="seeding", version=7))
            await wait_until(
                lambda: watcher.candidates()[0].namespaces[0].version == 7, 3.0, "version"
            )
            silent = await no_event_within(watcher, 3 * INTERVAL)
            changer.announce(beacon("c", mode="seeding", version=7, session=2))
            restarted = await next_matching(watcher, EventKind.SEEN, "c", 3.0)

            assert updated.beacon.namespaces[0].mode == "seeding"
            assert silent is None
            assert restarted.beacon.session == 2

    run(main)


def test_announce_none_is_lost_after_peer_timeout_and_keeps_listening(twin: Twin) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            quiet, listener = await announcing(stack, twin, "q", "l")
            await next_matching(listener, EventKind.SEEN, "q", 3.0)
            await wait_until(lambda: ids(quiet) == {"l"}, 3.0, "quiet hears l")

            silenced_at = time.monotonic()
            quiet.announce(None)
            lost = await next_matching(listener, EventKind.LOST, "q", PEER_TIMEOUT + 3.0)
            lost_after = time.monotonic() - silenced_at

            assert lost.beacon.node_id == "q"
            assert PEER_TIMEOUT * 0.5 < lost_after < PEER_TIMEOUT + 2.0
            assert ids(listener) == set()
            assert ids(quiet) == {"l"}  # a silent node still hears the others

    run(main)


def test_announcing_again_before_the_timeout_is_never_lost(twin: Twin) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            flicker, watcher = await announcing(stack, twin, "f", "w")
            await next_matching(watcher, EventKind.SEEN, "f", 3.0)

            flicker.announce(None)
            await asyncio.sleep(PEER_TIMEOUT / 3)  # silence shorter than the timeout
            flicker.announce(beacon("f"))
            event = await no_event_within(watcher, PEER_TIMEOUT + 0.3)

            assert event is None
            assert ids(watcher) == {"f"}

    run(main)


def test_invalid_announcement_and_arguments_are_configuration_errors(twin: Twin) -> None:
    with pytest.raises(ConfigurationError):
        twin.make().announce(Beacon("bad\nid", "", 6000))
    with pytest.raises(ConfigurationError):
        twin.make().announce(dataclasses.replace(beacon("x"), port=70000))
    for options in ({"peer_timeout": 0.0}, {"capacity": 0}, {"queue_size": 0}):
        with pytest.raises(ConfigurationError):
            twin.make(**options)


# ---------------------------------------------------------------------------- bounds


def test_candidate_table_is_capped_and_never_evicts_known_nodes(twin: Twin) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            (observer,) = await announcing(stack, twin, "o", capacity=2)
            await announcing(stack, twin, "a", "b")
            await wait_until(lambda: ids(observer) == {"a", "b"}, 3.0, "a and b")
            await announcing(stack, twin, "c")
            await wait_until(
                lambda: observer.stats.get("dropped_table_full", 0) >= 1, 3.0, "c dropped"
            )

            assert ids(observer) == {"a", "b"}
            assert len(observer.candidates()) == 2

    run(main)


def test_full_event_queue_drops_the_oldest_event(twin: Twin) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            (observer,) = await announcing(stack, twin, "o", queue_size=1)
            await announcing(stack, twin, "a", "b", "c")
            await wait_until(lambda: len(observer.candidates()) == 3, 3.0, "three candidates")
            only = await asyncio.wait_for(observer.next_event(), 1.0)
            nothing_more = await no_event_within(observer, 2 * INTERVAL)

            assert only.kind is EventKind.SEEN
            assert nothing_more is None
            assert observer.stats["dropped_queue_full"] == 2

    run(main)


def test_cancelled_next_event_loses_no_event(twin: Twin) -> None:
    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            (watcher,) = await announcing(stack, twin, "w")
            started = time.monotonic()
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(watcher.next_event(), 0.2)
            elapsed = time.monotonic() - started

            await announcing(stack, twin, "a", "b")
            got: list[str] = []
            deadline = time.monotonic() + 5.0
            while len(got) < 2 and time.monotonic() < deadline:
                event = await no_event_within(watcher, 0.001)  # cancels most waits midway
                if event is not None:
                    got.append(event.beacon.node_id)

            assert 0.15 <= elapsed < 1.0
            assert sorted(got) == ["a", "b"]

    run(main)


# ---------------------------------------------------------------------------- close


def test_closed_node_is_lost_memory_at_once_udp_after_peer_timeout(twin: Twin) -> None:
    """Twin-specific by design: only the hub can know that a member closed.

    UDP cannot tell a closed node from a silent one, so it reports LOST after
    ``peer_timeout``; the memory twin reports it at once, so simulations of a crash do not
    depend on a wall-clock timeout.
    """
    peer_timeout = 30.0 if twin.kind == "memory" else PEER_TIMEOUT

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            (watcher,) = await announcing(stack, twin, "w", peer_timeout=peer_timeout)
            leaver = twin.make(peer_timeout=peer_timeout)
            leaver.announce(beacon("l"))
            await leaver.start()
            await next_matching(watcher, EventKind.SEEN, "l", 3.0)

            closed_at = time.monotonic()
            await leaver.close()
            lost = await next_matching(watcher, EventKind.LOST, "l", PEER_TIMEOUT + 3.0)
            lost_after = time.monotonic() - closed_at

            assert lost.beacon.node_id == "l"
            assert ids(watcher) == set()
            if twin.kind == "memory":
                assert lost_after < 0.5  # far below peer_timeout=30: no timeout involved
            else:
                assert PEER_TIMEOUT * 0.5 < lost_after < PEER_TIMEOUT + 2.0

    run(main)


# ---------------------------------------------------------------------------- null


def test_null_discovery_finds_nobody_and_follows_the_lifecycle() -> None:
    async def main() -> None:
        discovery = NullDiscovery(peer_timeout=3.0)
        assert isinstance(discovery, Discovery)
        async with discovery:
            discovery.announce(beacon("me"))
            assert await no_event_within(discovery, 0.05) is None
            pending = asyncio.ensure_future(discovery.next_event())
            await asyncio.sleep(0.01)

            assert discovery.candidates() == []
            assert discovery.peer_timeout == 3.0
        await discovery.close()  # idempotent
        with pytest.raises(DiscoveryError, match="closed"):
            await asyncio.wait_for(pending, 1.0)
        with pytest.raises(DiscoveryError, match="closed"):
            await discovery.start()

    run(main)
