"""Asynchronous gossip (the default): push round r, wait a bounded time, merge what is fresh.

No barrier: a node pushes its weights for its round ``r`` to its out-neighbours that
receive, waits for round ``r`` from the in-neighbours that keep up, within a bound that
adapts to how long they usually take (:mod:`..pacing`; ``gossip_wait`` fixes it), and
merges, with the aggregator, each in-neighbour's update of round ``r`` (else its closest
later one, else, from one behind, its freshest; the freshest also from one more rounds ahead
than there are members; at most ``max_staleness_s`` old, never one merged before).
A node behind its neighbours adopts their round, so rounds stay aligned after a restart or a
late join; a straggler is merged a round late.
"""

from __future__ import annotations

import time

from ...federation.rounds import KEEP_ROUNDS
from ..exchange import Exchange
from ..pacing import RECENT_ROUNDS

__all__ = ["step"]


async def step(exchange: Exchange, trained: bool) -> list[str]:
    """One gossip exchange; returns the senders merged from."""
    state = exchange.state
    mode = exchange.effective_mode()
    targets, sources = exchange.neighbours()
    round_ = exchange.round
    exchange.round += 1
    published = state.published
    if mode.sends and targets and published is not None:
        await exchange.push(
            targets, exchange.outgoing(published), round_, push_sum=exchange.uses_push_sum()
        )
    if not mode.receives or not sources:
        return []
    await exchange.wait_gossip(sources, round_)
    # Round r with round r: the freshest would skip the mixing steps of an in-neighbour that
    # ran ahead (on a one-way cycle nothing holds it back, up to the cycle's length) and make
    # this node jump rounds. One further ahead than the members could explain is faster:
    # its freshest is merged.
    lead = min(KEEP_ROUNDS - 1, exchange.port.peer_count())
    taken = exchange.store.take_for_round(sources, round_, time.monotonic(), max_lead=lead)
    updates = exchange.finite(taken)
    newest = max((u.round for u in updates), default=round_)
    if newest > round_ + RECENT_ROUNDS:  # far behind (a restart, a late join): catch up
        exchange.round = newest
    return exchange.merge(updates, round_)
