"""Round protocols: one file each, chosen in one place (:func:`choose_step`).

Each protocol is one ``async step(exchange, trained) -> list[str]`` over the toolkit of
:class:`~scatterbrained.learning.exchange.Exchange` (push, wait, take, finite, merge); it
returns the senders whose weights the model now contains, and keeps the exchange's round
counter. :mod:`.serving` is the loop of a node that only serves.

========================= ===================== ===========================================
protocol                  chosen when           what one step does
========================= ===================== ===========================================
:mod:`.gossip`            default               push, merge the freshest unseen updates
:mod:`.sync_gossip`       ``sync=True``         push round r, wait for every source's r
:mod:`.star_client`       ``sync=True``, centre push to the centre, adopt its model
:mod:`.star_centre`       this node is centre   wait for clients, aggregate, send back
:mod:`.seeding_centre`    centre is SEEDING     send each client every new version once
========================= ===================== ===========================================
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ...types import OperatingMode
from ..exchange import Exchange
from . import gossip, star_centre, star_client, sync_gossip

__all__ = ["Step", "choose_step"]

#: One exchange at a sync point: ``(exchange, trained) -> senders merged from``.
Step = Callable[[Exchange, bool], Awaitable[list[str]]]


async def _nothing(exchange: Exchange, trained: bool) -> list[str]:
    exchange.round += 1
    return []


def choose_step(exchange: Exchange) -> Step:
    """The protocol of this sync point, from the options, the topology and the mode."""
    if exchange.port.mode is OperatingMode.OFFLINE or not exchange.state.has_model:
        return _nothing
    center = exchange.center()
    if center is not None:
        return star_centre.step if center == exchange.port.node_id else star_client.step
    return sync_gossip.step if exchange.options.sync else gossip.step
