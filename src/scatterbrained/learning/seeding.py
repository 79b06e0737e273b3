"""A write-only centre: a ``Star`` whose centre is SEEDING distributes its model.

Such a centre cannot aggregate (it merges nothing), so instead of rounds it sends each
receiving client every new version of its published model. A version keeps one round number,
so a client that already adopted it ignores copies; copies are sent a few more times after a
delivered send (:data:`RESEND_AFTER_S`) because "delivered" only means "queued to the peer's
connection": the client may still drop it (it had not yet seen the centre's Hello). A client
that leaves or restarts is sent the model again when it is back. Clients never wait for it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .exchange import Exchange

__all__ = ["RESEND_AFTER_S", "SeedLedger", "seed_as_center"]

logger = logging.getLogger(__name__)

#: Seconds after each delivered send of a version before the next copy (then no more).
RESEND_AFTER_S = (1.0, 4.0, 16.0)


@dataclass
class _Sent:
    version: int
    at: float
    copies: int = 0


class SeedLedger:
    """What a seeding centre sent to whom, and the round number of its current version."""

    def __init__(self) -> None:
        self._sent: dict[str, _Sent] = {}
        self._version = -1
        self._round = -1

    def round_for(self, version: int, global_round: int) -> int:
        """The round a version is sent as: fixed per version, after every earlier round."""
        if version != self._version:
            self._version, self._round = version, max(global_round + 1, version)
        return self._round

    def due(self, peer: str, version: int, now: float) -> bool:
        """True when ``peer`` should be sent ``version`` now (``now`` in monotonic seconds)."""
        sent = self._sent.get(peer)
        if sent is None or sent.version != version:
            return True
        return sent.copies < len(RESEND_AFTER_S) and now - sent.at >= RESEND_AFTER_S[sent.copies]

    def delivered(self, peer: str, version: int, now: float) -> None:
        """Record a send of ``version`` to ``peer`` that the transport accepted."""
        sent = self._sent.get(peer)
        if sent is not None and sent.version == version:
            sent.at, sent.copies = now, sent.copies + 1
        else:
            self._sent[peer] = _Sent(version, now)

    def forget(self, peer: str) -> None:
        """``peer`` left or restarted: it is sent the current version again when back."""
        self._sent.pop(peer, None)


async def seed_as_center(exchange: Exchange) -> None:
    """Send the published model to every receiving client that is due for it."""
    learner, ns = exchange.learner, exchange.ns
    published = learner.published
    if published is None or not ns.mode.sends:
        return
    now = time.monotonic()
    version = learner.version
    ledger = exchange.seeds
    receivers = [p for p in exchange.members_that_receive() if ledger.due(p, version, now)]
    if not receivers:
        return
    exchange.global_round = ledger.round_for(version, exchange.global_round)
    delivered = await exchange.push(receivers, published, exchange.global_round)
    for peer in delivered:
        ledger.delivered(peer, version, now)
    logger.debug("namespace %s: seeded v%d to %s", ns.name, version, delivered)
