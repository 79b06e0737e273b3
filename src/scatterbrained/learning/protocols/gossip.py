"""Asynchronous gossip (the default): push, then merge the freshest unseen updates.

No barrier: a node pushes its weights to its out-neighbours that receive and merges, with
the aggregator, the freshest update of each in-neighbour that it has not merged yet (at most
``max_staleness_s`` old), after waiting at most ``gossip_wait`` seconds for fresh ones.
"""

from __future__ import annotations

import time

from ..exchange import ANY_ROUND, Exchange

__all__ = ["step"]

#: The round field of a gossip update: receivers order a sender's updates by its version.
GOSSIP_ROUND = -1


async def step(exchange: Exchange, trained: bool) -> list[str]:
    """One gossip exchange; returns the senders merged from."""
    state = exchange.state
    mode = exchange.effective_mode()
    targets, sources = exchange.neighbours()
    round_ = exchange.round
    exchange.round += 1
    published = state.published
    if mode.sends and targets and published is not None:
        await exchange.push(targets, exchange.outgoing(published), GOSSIP_ROUND)
    if not mode.receives or not sources:
        return []
    if exchange.options.gossip_wait > 0:
        await exchange.wait_for(sources, ANY_ROUND, exchange.options.gossip_wait)
    updates = exchange.finite(exchange.store.take_fresh(sources, time.monotonic()))
    return exchange.merge(updates, round_)
