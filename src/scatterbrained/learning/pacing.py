"""How long asynchronous gossip waits for its in-neighbours: bounded and adaptive.

Gossip has no barrier, but merging whatever happens to have arrived makes nodes merge models
of different ages, and a node that finishes its epoch first merges nothing new: on 16 nodes
with label-skewed data that cost 5-8 points on the mean and 25-41 on the worst node against
synchronous rounds (``benchmarks/convergence.py``). So at each sync
point a gossiping node waits for the *same round* from the in-neighbours that keep up,
but never longer than a bound that follows how long they usually take:

* only sources that delivered an update within the last :data:`RECENT_ROUNDS` rounds are
  waited for (one that stopped training, left for serving or fell far behind is not);
* first, until none of them is more than :data:`STALENESS` round behind (stale-synchronous
  parallel, at most :data:`MAX_WAIT_S`), so no node runs ahead and training ends with
  every node's last models merged;
* the bound is ``FACTOR`` times the typical lag (an exponential average of how long past
  complete waits took), between :data:`MIN_WAIT_S` and :data:`MAX_WAIT_S`; a wait that ran
  into the bound does not raise it, so one straggler never slows the rest: its update is
  merged a round later (bounded staleness);
* ``gossip_wait=<seconds>`` fixes the bound instead (``0``: merge what is there).
"""

from __future__ import annotations

__all__ = ["FACTOR", "MAX_WAIT_S", "MIN_WAIT_S", "RECENT_ROUNDS", "STALENESS", "GossipPacer"]

#: The bound over the typical lag of a complete wait.
FACTOR = 4.0
#: The shortest bound (seconds).
MIN_WAIT_S = 0.1
#: The longest bound (seconds).
MAX_WAIT_S = 5.0
#: The bound before any wait completed (seconds).
INITIAL_WAIT_S = 1.0
#: Sources that delivered nothing for this many rounds are not waited for.
RECENT_ROUNDS = 2
#: A node waits (at most :data:`MAX_WAIT_S`) until the sources that keep up are at most
#: this many rounds behind it: stale-synchronous parallel, so nobody runs ahead.
STALENESS = 1
#: Weight of the newest lag in the average.
SMOOTHING = 0.3
#: Newcomers tracked at once (the table starts over past it).
MAX_TRACKED = 4096


class GossipPacer:
    """The bound of a gossip wait, learned from past waits.

    Args:
        fixed: a fixed bound in seconds (``gossip_wait``), or ``None`` to adapt.
    """

    def __init__(self, fixed: float | None = None) -> None:
        self.fixed = fixed
        self._lag: float | None = None
        self._first_round: dict[str, int] = {}  # sources never heard from: when first seen

    def bound(self) -> float:
        """Seconds the next wait may last."""
        if self.fixed is not None:
            return self.fixed
        if self._lag is None:
            return INITIAL_WAIT_S
        return min(MAX_WAIT_S, max(MIN_WAIT_S, FACTOR * self._lag))

    def observe(self, waited: float, complete: bool) -> None:
        """Learn from a wait of ``waited`` seconds; ``complete``: every source came."""
        if not complete:
            return
        if self._lag is None:
            self._lag = waited
        else:
            self._lag += SMOOTHING * (waited - self._lag)

    def keeps_up(self, source: str, newest_round: int | None, round_: int) -> bool:
        """Whether ``source``, whose newest update is ``newest_round``, is waited for in
        ``round_``: one heard from lately is; one never heard from (a newcomer, a restarted
        peer) only in its first :data:`RECENT_ROUNDS` rounds here, so a silent member costs
        a bounded wait twice, not every round."""
        if newest_round is not None:
            return newest_round >= round_ - RECENT_ROUNDS
        if len(self._first_round) >= MAX_TRACKED and source not in self._first_round:
            self._first_round.clear()
        first = self._first_round.setdefault(source, round_)
        return round_ - first < RECENT_ROUNDS

    def forget(self, source: str) -> None:
        """``source`` left or restarted: it counts as a newcomer again."""
        self._first_round.pop(source, None)
