"""``serve``: keep federating without training, as a relay, a centre or a seed.

A serving node merges fresh updates from its in-neighbours as they arrive and pushes its
model only when it changed (through a merge that moved it beyond the merge tolerance, or
through training before), never an echo of what it just received: a network of nodes that
only serve goes quiet once it agrees. In synchronous rounds it answers the round its
neighbours are in (so they never wait a ``round_timeout`` for it); as the centre of a
synchronous star it aggregates rounds, or, when SEEDING, distributes its model
(:mod:`.seeding_centre`). ``sync_model`` requests are answered whenever the namespace is
open, serving or not.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ...types import OperatingMode
from ..exchange import Exchange
from . import star_centre
from .seeding_centre import seed_as_center

__all__ = ["serve", "serve_pass"]


async def serve(
    exchange: Exchange,
    duration: float | None = None,
    closed: Callable[[], bool] | None = None,
) -> None:
    """Serve until cancelled, or for ``duration`` seconds.

    Serves at once, then again on every arrival or membership change, at least every
    ``serve_interval`` seconds, and a last time at the end of ``duration``. A namespace
    without a model, or OFFLINE, idles (it may get one from ``sync_model`` or a mode change
    meanwhile).
    """
    deadline = None if duration is None else time.monotonic() + duration
    while closed is None or not closed():
        if exchange.state.has_model and exchange.port.mode is not OperatingMode.OFFLINE:
            async with exchange.lock:
                await serve_pass(exchange)
        step_end = time.monotonic() + exchange.options.serve_interval
        if deadline is not None:
            if time.monotonic() >= deadline:
                return
            step_end = min(step_end, deadline)
        await exchange.arrival.wait_until(step_end)


async def serve_pass(exchange: Exchange) -> None:
    """Merge and push once (the caller holds ``exchange.lock``)."""
    port = exchange.port
    center = exchange.center()
    if center is not None:
        if center == port.node_id:
            if port.mode.receives:
                await star_centre.step(exchange, False)
            else:
                await seed_as_center(exchange, exchange.seeds)
        return
    targets, sources = exchange.neighbours()
    if exchange.options.sync:
        await _serve_round(exchange, targets, sources)
        return
    mode = exchange.effective_mode()
    # Answer in the round the neighbours are in, so gossiping trainers waiting for it
    # need not wait their bound.
    round_ = max(exchange.round, exchange.store.latest_round(sources) or 0)
    if mode.receives and sources:
        updates = exchange.finite(exchange.store.take_fresh(sources, time.monotonic()))
        exchange.merge(updates, round_)
    if await _push_if_changed(exchange, targets, round_):
        exchange.round = round_ + 1


async def _push_if_changed(exchange: Exchange, targets: list[str], round_: int) -> bool:
    """Push the published model to the targets that have not been sent this version."""
    state = exchange.state
    if not exchange.effective_mode().sends or state.published is None:
        return False
    due = [t for t in targets if exchange.pushed.get(t) != state.version]
    if due:
        await exchange.push(due, exchange.outgoing(state.published), round_)
    return bool(due)


async def _serve_round(exchange: Exchange, targets: list[str], sources: list[str]) -> None:
    """In synchronous rounds, a serving node answers the round its neighbours are in.

    Without this, neighbours that train would wait ``round_timeout`` for it every round.
    """
    newest = exchange.store.latest_round(sources)
    published = exchange.state.published
    if newest is None or newest < exchange.round or published is None:
        return
    mode = exchange.effective_mode()
    if mode.sends and targets:
        await exchange.push(targets, exchange.outgoing(published), newest)
    if mode.receives:
        updates = exchange.finite(exchange.store.take_round(sources, newest, time.monotonic()))
        exchange.merge(updates, newest)
    exchange.round = newest + 1
