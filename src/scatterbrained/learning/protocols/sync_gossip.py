"""Synchronous rounds without a centre (``sync=True``): every node is one round in step.

Round ``r``: push this node's update for ``r`` to the out-neighbours, wait (at most
``round_timeout``) until every in-neighbour that still sends has delivered its update for
``r``, and merge them when at least ``min_peers`` came (else keep the own weights). A node
that fell behind (restart, pause) adopts the round its neighbours are in. Seeded runs are
reproducible: what is merged never depends on who was faster.
"""

from __future__ import annotations

import time

from ..exchange import Exchange

__all__ = ["step"]


async def step(exchange: Exchange, trained: bool) -> list[str]:
    """One synchronous round; returns the senders merged from."""
    state = exchange.state
    mode = exchange.effective_mode()
    round_ = exchange.round
    targets, sources = exchange.neighbours()
    published = state.published
    if mode.sends and targets and published is not None:
        await exchange.push(
            targets, exchange.outgoing(published), round_, push_sum=exchange.uses_push_sum()
        )
    merged: list[str] = []
    if mode.receives and sources:
        await exchange.wait_for(sources, round_, exchange.options.round_timeout)
        arrived = exchange.store.senders_with_round(sources, round_)
        if exchange.quorum(arrived, sources):
            updates = exchange.finite(exchange.store.take_round(sources, round_, time.monotonic()))
            # A node that fell behind adopts its peers' round; a SEEDING peer never waits for
            # anyone, so its round (possibly far ahead) is not adopted.
            modes = exchange.port.peer_modes()
            paced = [u.round for u in updates if (m := modes.get(u.sender)) and m.receives]
            exchange.round = max([round_, *paced])
            merged = exchange.merge(updates, exchange.round)
    exchange.round = max(exchange.round, round_) + 1
    return merged
