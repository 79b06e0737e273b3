"""``serve``: keep federating without training, as a relay, a centre or a seed.

A serving node merges fresh updates from its in-neighbours as they arrive, pushes its model
when it changed, answers the synchronous round its neighbours are in (so they never wait a
``round_timeout`` for it), and, as the centre of a synchronous star, aggregates rounds.
``sync_model`` requests are answered whenever the namespace is open, serving or not.
"""

from __future__ import annotations

import time

from ..types import OperatingMode
from .exchange import Exchange
from .seeding import seed_as_center

__all__ = ["serve"]


async def serve(exchange: Exchange, duration: float | None = None) -> None:
    """Serve until cancelled, or for ``duration`` seconds.

    Serves at once, then again on every arrival or membership change, at least every
    ``serve_interval`` seconds, and a last time at the end of ``duration``. A namespace
    without a model, or OFFLINE, idles (it may get one from ``sync_model`` or a mode change
    meanwhile). A SEEDING centre of a synchronous star distributes its model
    (:mod:`.seeding`).
    """
    learner = exchange.learner
    deadline = None if duration is None else time.monotonic() + duration
    pushed_version = -1
    while True:
        if learner.adapter is not None and exchange.ns.mode is not OperatingMode.OFFLINE:
            pushed_version = await _serve_pass(exchange, pushed_version)
        step_end = time.monotonic() + exchange.options.serve_interval
        if deadline is not None:
            if time.monotonic() >= deadline:
                return
            step_end = min(step_end, deadline)
        await exchange.arrival.wait_until(step_end)


async def _serve_pass(exchange: Exchange, pushed_version: int) -> int:
    """Merge and push once; return the version last pushed to the out-neighbours."""
    learner, ns = exchange.learner, exchange.ns
    assert learner.adapter is not None
    center = exchange.center()
    if center is not None:
        if center == ns.node.id:
            async with exchange.lock:
                if not ns.mode.receives:
                    await seed_as_center(exchange)
                elif await exchange.aggregate_as_center(trained=False):
                    learner.version += 1
                    learner.publish()
        return pushed_version
    async with exchange.lock:
        targets, sources = exchange.neighbours()
        if exchange.options.sync:
            return await _serve_round(exchange, targets, sources, pushed_version)
        if ns.mode.receives and sources:
            updates = exchange.finite(exchange.store.take_fresh(sources, time.monotonic()))
            if exchange.merge(learner.adapter.get_arrays(), updates):
                learner.version += 1
                learner.publish()
        if ns.mode.sends and targets and learner.version != pushed_version:
            published = learner.published
            assert published is not None
            await exchange.push(targets, exchange.outgoing(published), learner.version)
            return learner.version
    return pushed_version


async def _serve_round(
    exchange: Exchange, targets: list[str], sources: list[str], pushed: int
) -> int:
    """In synchronous rounds, a serving node answers the round its neighbours are in.

    Without this, neighbours that train would wait ``round_timeout`` for it every round.
    """
    learner, ns = exchange.learner, exchange.ns
    published = learner.published
    assert learner.adapter is not None and published is not None
    newest = exchange.store.latest_round(sources)
    if newest is None or newest < learner.version:
        return pushed
    if ns.mode.sends and targets:
        await exchange.push(targets, exchange.outgoing(published), newest)
    if ns.mode.receives:
        updates = exchange.finite(exchange.store.take_round(sources, newest, time.monotonic()))
        exchange.merge(learner.adapter.get_arrays(), updates)
    learner.version = newest + 1
    learner.publish()
    return learner.version
