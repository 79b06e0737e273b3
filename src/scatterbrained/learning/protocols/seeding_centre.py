"""A write-only centre: a ``Star`` whose centre is SEEDING distributes its model.

Such a centre cannot aggregate (it merges nothing), so instead of rounds it sends each
receiving client every new version of its published model. A version keeps one round number,
so a client that already adopted it ignores copies; copies are sent a few more times after a
delivered send (:data:`~scatterbrained.federation.rounds.RESEND_AFTER_S`) because
"delivered" only means "queued to the peer's connection": the client may still drop it (it
had not yet seen the centre's Hello). A client that leaves or restarts is sent the model
again when it is back. Clients never wait for it.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from ...federation.rounds import SeedLedger

if TYPE_CHECKING:
    from ..exchange import Exchange

__all__ = ["seed_as_center"]

logger = logging.getLogger(__name__)


async def seed_as_center(exchange: Exchange, ledger: SeedLedger) -> None:
    """Send the published model to every receiving client that is due for it."""
    state = exchange.state
    published = state.published
    if published is None or not exchange.port.mode.sends:
        return
    now = time.monotonic()
    version = state.version
    receivers = [p for p in exchange.members_that_receive() if ledger.due(p, version, now)]
    if not receivers:
        return
    exchange.global_round = ledger.round_for(version, exchange.global_round)
    await exchange.push(
        receivers,
        published,
        exchange.global_round,
        on_delivered=lambda peer: ledger.delivered(peer, version, now),
    )
    logger.debug("namespace %s: seeding v%d to %s", exchange.port.name, version, receivers)
