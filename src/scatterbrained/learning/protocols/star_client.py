"""A client of a synchronous star (centralized FedAvg): push to the centre, adopt its model.

The client pushes its update to the centre when the centre aggregates (its mode receives),
then waits (at most ``round_timeout``) for the centre's global model of a round it has not
adopted yet. A centre that does not aggregate (SEEDING) sends its model when it changes: a
client takes a new one if it came, and never waits for a round result that is never
computed.
"""

from __future__ import annotations

import logging
import time

from ...events import RoundTimedOut
from ..exchange import Exchange

__all__ = ["step"]

logger = logging.getLogger(__name__)


async def step(exchange: Exchange, trained: bool) -> list[str]:
    """One client round; returns ``[centre]`` when its model was adopted."""
    center = exchange.center()
    exchange.round += 1
    port, state = exchange.port, exchange.state
    center_mode = port.peer_modes().get(center or "")
    if center is None or center_mode is None:
        logger.info("namespace %s: centre %s absent; training alone", port.name, center)
        return []
    aggregates = center_mode.receives
    mode = exchange.effective_mode()
    if mode.sends and aggregates:
        await exchange.push([center], exchange.outgoing(state.current()), exchange.round - 1)
    if not mode.receives:
        return []
    deadline = time.monotonic() + (exchange.options.round_timeout if aggregates else 0.0)
    while True:
        # A seeding centre's model is current until it sends a newer one: no age bound.
        taken = exchange.store.take_fresh([center], time.monotonic(), any_age=not aggregates)
        updates = [u for u in exchange.finite(taken) if u.round > exchange.global_round]
        if updates:
            newest = updates[-1]
            state.commit("adopt", newest.arrays)
            exchange.global_round, exchange.global_source = newest.round, center
            return [center]
        if not await exchange.arrival.wait_until(deadline) or not exchange.still_sends(center):
            if aggregates:
                port.emit(RoundTimedOut(port.node_id, port.name, exchange.round - 1, (center,), ()))
                logger.info("namespace %s: no global model from %s in time", port.name, center)
            return []
