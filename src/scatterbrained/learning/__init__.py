"""Training and federating inside a namespace: ``train``, ``serve``, ``sync_model``.

The :class:`Learner` runs local training in a worker thread and the federation on the event
loop. At each sync point (end of an epoch, or every ``share_every`` optimizer steps) it
shares and merges as the namespace's mode and topology say:

* gossip (default): push the current weights to the out-neighbours that receive, then merge
  the freshest unseen update of each in-neighbour that sends, with the aggregator;
* synchronous rounds (``sync=True``): the same, but wait (at most ``round_timeout``) for
  every in-neighbour's update of this round, which makes seeded runs reproducible;
* centralized (``sync=True`` on a topology with a centre, e.g. ``Star``): clients push to
  the centre, the centre aggregates and sends the global model back, clients adopt it.

Modules: :mod:`.learner` (the learner and its training loop), :mod:`.exchange` (sharing and
merging), :mod:`.serving` (``serve``), :mod:`.model_sharing` (``sync_model`` and answering
requests), :mod:`.checkpointing` (``checkpoint``/``restore``).
"""

from __future__ import annotations

from ..learning_options import LearningOptions
from .learner import Learner

__all__ = ["Learner", "LearningOptions"]
