"""The centre of a synchronous star: wait for the clients, aggregate, send the result back.

One round: wait (at most ``round_timeout``) until every client that sends has delivered an
update, aggregate them with the aggregator (with the centre's own weights when it trained),
and push the global model to every client that receives, numbered by the centre's round.
"""

from __future__ import annotations

import time

from ...events import Merged
from ...federation.aggregation import Contribution, aggregate
from ..exchange import ANY_ROUND, Exchange

__all__ = ["step"]


async def step(exchange: Exchange, trained: bool) -> list[str]:
    """One round at the centre; returns the clients merged from."""
    port, state = exchange.port, exchange.state
    senders = exchange.members_that_send() if port.mode.receives else []
    await exchange.wait_for(senders, ANY_ROUND, exchange.options.round_timeout)
    if not exchange.quorum(exchange.store.senders_with_round(senders, ANY_ROUND), senders):
        exchange.round += 1
        return []
    updates = exchange.finite(exchange.store.take_fresh(senders, time.monotonic()))
    if not updates and not trained:
        return []
    contributions = [Contribution(u.arrays, u.samples, u.sender) for u in updates]
    if trained or not updates:
        result = aggregate(
            port.aggregator, exchange.own_contribution(state.current()), contributions
        )
        used = result.used
    else:
        result = aggregate(port.aggregator, contributions[0], contributions[1:])
        used = (contributions[0].sender, *result.used)
    state.commit("aggregate", result.arrays)
    # A centre numbers its rounds by its (checkpointed) model version, so clients that
    # synced from it (they expect rounds from the offered version on) or saw it before a
    # restart never wait for round numbers it already used.
    round_ = exchange.global_round = max(exchange.global_round + 1, state.version)
    exchange.round = max(exchange.round, round_) + 1
    port.emit(Merged(port.node_id, port.name, round_, tuple(u.sender for u in updates), used))
    receivers = exchange.members_that_receive()
    published = state.published
    if port.mode.sends and receivers and published is not None:
        await exchange.push(receivers, published, round_)
    return list(used)
