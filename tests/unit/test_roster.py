"""Sessions that scale with neighbours: the roster, and nodes on a ring that greet neighbours."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

import scatterbrained as sb
from scatterbrained.discovery.base import Beacon, NamespaceAd
from scatterbrained.errors import ConfigurationError
from scatterbrained.roster import FULL_SESSIONS_MAX, REFRESH_S, Roster
from scatterbrained.types import OperatingMode

pytestmark = pytest.mark.timeout(60)

Run = Callable[..., None]


def beacons(count: int, mode: str = "peer") -> list[Beacon]:
    return [
        Beacon(f"n{i:04d}", "127.0.0.1", 6000 + i, (NamespaceAd("X", mode),)) for i in range(count)
    ]


def ring_of(me: str) -> Callable[[Mapping[str, OperatingMode]], Iterable[str]]:
    """The neighbours of ``me`` on a ring over a roster (what the exchange would compute)."""

    def neighbours(modes: Mapping[str, OperatingMode]) -> Iterable[str]:
        nb = sb.topology.Ring().neighbours(me, set(modes) | {me})
        return nb.out | nb.inbound

    return neighbours


def test_small_rosters_keep_sessions_with_everybody() -> None:
    roster = Roster("n0000", "X")

    roster.refresh(0.0, beacons(FULL_SESSIONS_MAX + 1), {}, ring_of("n0000"))  # 64 others
    roster.refresh(1.0, beacons(FULL_SESSIONS_MAX + 1), {}, ring_of("n0000"))

    assert not roster.scoped and roster.settled
    assert roster.wants("n0033") and roster.scope() is None  # everybody


def test_large_rosters_greet_neighbours_once_the_roster_held_still() -> None:
    roster = Roster("n0000", "X")
    many = beacons(200)

    roster.refresh(0.0, many, {}, ring_of("n0000"))
    before = (roster.scoped, roster.settled, roster.wants("n0001"))
    roster.refresh(0.1, many + beacons(1), {}, ring_of("n0000"))  # not due yet: ignored
    roster.refresh(REFRESH_S, many, {}, ring_of("n0000"))  # the same roster: draw

    assert before == (True, False, False)  # scoped, but nothing drawn while it may change
    assert roster.settled
    assert roster.wanted == {"n0001", "n0199"}
    assert roster.wants("n0199") and not roster.wants("n0100")


def test_offline_and_unknown_modes_are_not_in_the_roster() -> None:
    roster = Roster("me", "X", sessions="neighbours")
    odd = [
        *beacons(2, "offline"),
        Beacon("x", "h", 1, (NamespaceAd("X", "weird"),)),
        Beacon("y", "h", 2, (NamespaceAd("Other", "peer"),)),
        Beacon("z", "h", 3, (NamespaceAd("X", "seeding"),)),
        Beacon("me", "h", 4, (NamespaceAd("X", "peer"),)),
    ]

    roster.refresh(0.0, odd, {"m": OperatingMode.PEER}, ring_of("me"))

    assert roster.modes({"m": OperatingMode.PEER}) == {
        "z": OperatingMode.SEEDING,
        "m": OperatingMode.PEER,
    }


def test_an_unknown_sessions_value_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="sessions must be one of"):
        Roster("me", "X", sessions="some")


def test_nodes_on_a_ring_keep_sessions_with_their_neighbours_and_still_learn(
    arun: Run, cluster_factory: Any, mlp: Any, digit_loader: Any, eventually: Any
) -> None:
    ids = [f"n{i}" for i in range(8)]
    ring = sb.topology.Ring()

    def neighbours_of(node: str) -> set[str]:
        nb = ring.neighbours(node, ids)
        return set(nb.out | nb.inbound)

    async def main() -> None:
        async with cluster_factory() as cluster:
            nodes = await cluster.start(*ids)
            namespaces = [
                n.namespace("X", mlp(i), topology=ring, sessions="neighbours", sync=True)
                for i, n in enumerate(nodes)
            ]
            for ns in namespaces:
                await ns.open()
            await eventually(
                lambda: all(
                    {p.id for p in ns.peers} == neighbours_of(i)
                    for i, ns in zip(ids, namespaces, strict=True)
                ),
                timeout=20,
                what="every node with exactly its two ring neighbours",
            )
            histories = await asyncio.gather(
                *(ns.train(2, digit_loader(i, 8, 64)) for i, ns in enumerate(namespaces))
            )
            for node_id, history in zip(ids, histories, strict=True):
                merged = {p for record in history for p in record.merged_from}
                assert merged == neighbours_of(node_id), node_id
            for node, node_id in zip(nodes, ids, strict=True):  # no session with the others
                greeted = {r.id for r in node.peers.records() if r.greeted}
                assert greeted == neighbours_of(node_id), node_id

    arun(main, timeout=50)
