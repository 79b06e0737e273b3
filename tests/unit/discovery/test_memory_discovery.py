"""MemoryDiscovery: the socket-free twin with UdpDiscovery's semantics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from scatterbrained.discovery import (
    Beacon,
    Discovery,
    DiscoveryEvent,
    EventKind,
    MemoryDiscovery,
    MemoryDiscoveryHub,
    NamespaceAd,
)
from scatterbrained.errors import ConfigurationError, DiscoveryError


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(main: Coroutine[Any, Any, None]) -> None:
    asyncio.run(main)


def beacon(node_id: str, mode: str = "peer", version: int = 0, session: int = 1) -> Beacon:
    return Beacon(node_id, "", 6000, (NamespaceAd("ns", mode, version),), None, session)


def drain(discovery: MemoryDiscovery) -> list[tuple[EventKind, str]]:
    events: list[DiscoveryEvent] = []
    while (event := discovery._events.pop_nowait()) is not None:
        events.append(event)
    return [(event.kind, event.beacon.node_id) for event in events]


async def manual(hub: MemoryDiscoveryHub, node_id: str | None, **kwargs: Any) -> MemoryDiscovery:
    """A started discovery whose background poll never fires: the test calls tick()."""
    discovery = MemoryDiscovery(hub, interval=1e6, peer_timeout=5.0, **kwargs)
    if node_id is not None:
        discovery.announce(beacon(node_id))
    await discovery.start()
    return discovery


async def wait_until(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.01)


def test_memory_discovery_implements_the_protocol() -> None:
    # Assert
    assert isinstance(MemoryDiscovery(MemoryDiscoveryHub()), Discovery)


@pytest.mark.timeout(10)
def test_three_nodes_find_each_other_through_the_hub() -> None:
    async def main() -> None:
        # Prepare
        hub = MemoryDiscoveryHub()
        nodes = [MemoryDiscovery(hub, interval=0.01, peer_timeout=0.5) for _ in range(3)]
        async with contextlib.AsyncExitStack() as stack:
            for index, node in enumerate(nodes):
                node.announce(beacon(f"n{index}"))
                await stack.enter_async_context(node)
            # Execute
            await wait_until(lambda: all(len(n.candidates()) == 2 for n in nodes), 2.0)
            first = await asyncio.wait_for(nodes[2].next_event(), 1.0)
            found = {b.node_id for b in nodes[0].candidates()}
        # Assert
        assert found == {"n1", "n2"}
        assert first.kind is EventKind.SEEN
        assert first.beacon.host == "127.0.0.1"  # empty host filled in, like UDP's source IP

    run(main())


@pytest.mark.timeout(10)
def test_silent_node_is_lost_after_peer_timeout_not_before() -> None:
    async def main() -> None:
        # Prepare
        clock = FakeClock()
        hub = MemoryDiscoveryHub(clock=clock)
        watcher, quiet = await manual(hub, "w"), await manual(hub, "q")
        watcher.tick()
        assert drain(watcher) == [(EventKind.SEEN, "q")]
        # Execute
        clock.now = 10.0
        quiet.announce(None)
        clock.now = 15.0
        watcher.tick()
        at_timeout = drain(watcher)
        clock.now = 15.1
        watcher.tick()
        after_timeout = drain(watcher)
        await watcher.close()
        await quiet.close()
        # Assert
        assert at_timeout == []
        assert after_timeout == [(EventKind.LOST, "q")]
        assert watcher.candidates() == []

    run(main())


@pytest.mark.timeout(10)
def test_closed_node_is_lost_at_once_without_a_tick_or_the_clock_moving() -> None:
    async def main() -> None:
        # Prepare
        hub = MemoryDiscoveryHub(clock=FakeClock())
        watchers = [await manual(hub, "w1"), await manual(hub, "w2")]
        leaver = await manual(hub, "l")
        for watcher in watchers:
            watcher.tick()
            drain(watcher)
        # Execute
        await leaver.close()
        # Assert: during close(), before any tick, with the clock standing still
        assert [drain(w) for w in watchers] == [[(EventKind.LOST, "l")]] * 2
        assert [[b.node_id for b in w.candidates()] for w in watchers] == [["w2"], ["w1"]]
        for watcher in watchers:
            watcher.tick()  # reading the closed entry later reports nothing twice
        assert [drain(w) for w in watchers] == [[], []]
        for watcher in watchers:
            await watcher.close()

    run(main())


@pytest.mark.timeout(10)
def test_aborted_node_that_went_silent_first_is_lost_at_close() -> None:
    async def main() -> None:
        # Prepare: Node.abort() and Node.close() call announce(None) and then close()
        clock = FakeClock()
        hub = MemoryDiscoveryHub(clock=clock)
        watcher, leaver = await manual(hub, "w"), await manual(hub, "l")
        watcher.tick()
        drain(watcher)
        leaver.announce(None)
        clock.now = 1.0
        watcher.tick()  # the withdrawal is seen: LOST due at 6.0
        silent = drain(watcher)
        # Execute
        await leaver.close()
        # Assert
        assert silent == []
        assert drain(watcher) == [(EventKind.LOST, "l")]
        clock.now = 10.0
        watcher.tick()
        assert drain(watcher) == []  # the pending timeout was cancelled
        await watcher.close()

    run(main())


@pytest.mark.timeout(10)
def test_close_of_an_old_session_does_not_lose_the_restarted_node() -> None:
    async def main() -> None:
        # Prepare: a node restarts (new session) before its old discovery is closed
        hub = MemoryDiscoveryHub(clock=FakeClock())
        watcher = await manual(hub, "w")
        old = await manual(hub, "n")
        watcher.tick()
        new = MemoryDiscovery(hub, interval=1e6, peer_timeout=5.0)
        new.announce(beacon("n", session=2))
        await new.start()
        watcher.tick()
        # Execute
        await old.close()
        watcher.tick()
        # Assert
        assert drain(watcher) == [(EventKind.SEEN, "n"), (EventKind.SEEN, "n")]
        assert [(b.node_id, b.session) for b in watcher.candidates()] == [("n", 2)]
        for discovery in (watcher, new):
            await discovery.close()

    run(main())


@pytest.mark.timeout(10)
def test_real_clock_next_event_reports_a_closed_member_promptly() -> None:
    async def main() -> None:
        # Prepare: a long peer timeout and a slow poll: only the departure notice is fast
        hub = MemoryDiscoveryHub()
        watcher = MemoryDiscovery(hub, interval=0.01, peer_timeout=30.0)
        leaver = MemoryDiscovery(hub, interval=0.01, peer_timeout=30.0)
        watcher.announce(beacon("w"))
        leaver.announce(beacon("l"))
        async with watcher:
            await leaver.start()
            seen = await asyncio.wait_for(watcher.next_event(), 2.0)
            # Execute
            started = time.monotonic()
            await leaver.close()
            lost = await asyncio.wait_for(watcher.next_event(), 2.0)
            # Assert
            assert (seen.kind, lost.kind, lost.beacon.node_id) == (
                EventKind.SEEN,
                EventKind.LOST,
                "l",
            )
            assert time.monotonic() - started < 0.5

    run(main())


@pytest.mark.timeout(10)
def test_silent_node_that_announces_again_in_time_is_never_lost() -> None:
    async def main() -> None:
        # Prepare
        clock = FakeClock()
        hub = MemoryDiscoveryHub(clock=clock)
        watcher, flicker = await manual(hub, "w"), await manual(hub, "f")
        watcher.tick()
        drain(watcher)
        # Execute
        flicker.announce(None)
        clock.now = 1.0
        watcher.tick()
        flicker.announce(beacon("f"))
        clock.now = 20.0
        watcher.tick()
        # Assert
        assert drain(watcher) == []
        assert [b.node_id for b in watcher.candidates()] == ["f"]
        assert len(hub) == 2

    run(main())


@pytest.mark.timeout(10)
def test_mode_change_is_updated_version_change_is_silent_new_session_is_seen() -> None:
    async def main() -> None:
        # Prepare
        hub = MemoryDiscoveryHub(clock=FakeClock())
        watcher, other = await manual(hub, "w"), await manual(hub, "o")
        watcher.tick()
        drain(watcher)
        # Execute
        other.announce(beacon("o", mode="seeding"))
        watcher.tick()
        after_mode = drain(watcher)
        other.announce(beacon("o", mode="seeding", version=4))
        watcher.tick()
        after_version = drain(watcher)
        other.announce(beacon("o", mode="seeding", version=4, session=2))
        watcher.tick()
        after_session = drain(watcher)
        # Assert
        assert after_mode == [(EventKind.UPDATED, "o")]
        assert after_version == []
        assert after_session == [(EventKind.SEEN, "o")]
        assert watcher.candidates()[0].namespaces[0].version == 4

    run(main())


@pytest.mark.timeout(10)
def test_full_table_takes_a_waiting_member_once_room_frees() -> None:
    async def main() -> None:
        # Prepare
        clock = FakeClock()
        hub = MemoryDiscoveryHub(clock=clock)
        watcher = await manual(hub, "w", capacity=2)
        others = [await manual(hub, name) for name in ("a", "b", "c")]
        watcher.tick()
        first = drain(watcher)
        # Execute
        await others[0].close()
        clock.now = 6.0
        watcher.tick()  # a is LOST: room for c
        watcher.tick()
        later = drain(watcher)
        # Assert
        assert first == [(EventKind.SEEN, "a"), (EventKind.SEEN, "b")]
        assert later == [(EventKind.LOST, "a"), (EventKind.SEEN, "c")]
        assert watcher.stats["dropped_table_full"] >= 1

    run(main())


@pytest.mark.timeout(10)
def test_full_event_queue_drops_the_oldest() -> None:
    async def main() -> None:
        # Prepare
        hub = MemoryDiscoveryHub(clock=FakeClock())
        watcher = await manual(hub, "w", queue_size=2)
        for name in ("a", "b", "c"):
            await manual(hub, name)
        # Execute
        watcher.tick()
        kept = drain(watcher)
        # Assert
        assert kept == [(EventKind.SEEN, "b"), (EventKind.SEEN, "c")]
        assert watcher.stats["dropped_queue_full"] == 1

    run(main())


@pytest.mark.timeout(10)
def test_own_beacon_is_not_a_candidate() -> None:
    async def main() -> None:
        # Prepare
        hub = MemoryDiscoveryHub(clock=FakeClock())
        alone = await manual(hub, "me")
        # Execute
        alone.tick()
        # Assert
        assert alone.candidates() == []
        assert drain(alone) == []

    run(main())


@pytest.mark.timeout(30)
def test_256_nodes_converge_and_quiet_ticks_are_cheap() -> None:
    async def main() -> None:
        # Prepare
        hub = MemoryDiscoveryHub()
        nodes = [MemoryDiscovery(hub, interval=0.05, peer_timeout=5.0) for _ in range(256)]
        async with contextlib.AsyncExitStack() as stack:
            for index, node in enumerate(nodes):
                node.announce(beacon(f"n{index}"))
                await stack.enter_async_context(node)
            # Execute
            await wait_until(lambda: all(len(n.candidates()) == 255 for n in nodes), 15.0)
            started = time.perf_counter()
            for _ in range(10):
                for node in nodes:
                    node.tick()
            quiet_ticks = time.perf_counter() - started
        # Assert: 2,560 quiet ticks; O(N) work per tick would take well over a second
        assert quiet_ticks < 0.5
        assert len(hub) == 0  # every node withdrew on close

    run(main())


@pytest.mark.timeout(10)
def test_hub_forgets_withdrawals_every_member_has_seen() -> None:
    async def main() -> None:
        # Prepare
        hub = MemoryDiscoveryHub(clock=FakeClock())
        watcher = await manual(hub, "w")
        # Execute
        for index in range(300):
            transient = await manual(hub, f"t{index}")
            await transient.close()
            watcher.tick()
        entries = hub.changes_since(0, 0)
        # Assert
        assert len(entries) < 150
        assert len(hub) == 1

    run(main())


def test_invalid_announcement_and_arguments_are_configuration_errors() -> None:
    # Prepare
    discovery = MemoryDiscovery(MemoryDiscoveryHub())
    # Execute / Assert
    with pytest.raises(ConfigurationError):
        discovery.announce(Beacon("bad\nid", "", 6000))
    with pytest.raises(ConfigurationError):
        MemoryDiscovery(MemoryDiscoveryHub(), interval=0.0)
    with pytest.raises(ConfigurationError):
        MemoryDiscovery(MemoryDiscoveryHub(), peer_timeout=0.0)


@pytest.mark.timeout(10)
def test_closed_discovery_cannot_restart() -> None:
    async def main() -> None:
        # Prepare
        discovery = await manual(MemoryDiscoveryHub(), "x")
        # Execute
        await discovery.close()
        await discovery.close()
        # Assert
        with pytest.raises(DiscoveryError, match="closed"):
            await discovery.start()

    run(main())
