"""Metrics export: TensorBoard event files and MLflow runs from the event stream.

* :class:`TensorBoardLogger` (tensorboardX) and :class:`MLflowLogger` (MLflow's client) write
  per-node and aggregated series of each epoch; both follow the :class:`MetricsLogger`
  protocol, so any object with ``log_epoch(epoch, rows)``, ``flush()`` and ``close()`` works.
* ``ns.train(..., loggers=[...])`` feeds a real node's epochs to them (see :mod:`.feed`),
  ``run_simulation(config, loggers=[...])`` a simulation's, and the ``simulate``, ``demo``
  and ``node`` commands take ``--tensorboard [DIR]`` and ``--mlflow [URI]``.

The heavy libraries are imported when a logger is created; a missing one is a
:class:`~scatterbrained.errors.ConfigurationError` that says how to install it.
"""

from __future__ import annotations

from .base import MetricsLogger, SafeLoggers, aggregate_scalars, node_scalars, record_row
from .feed import EpochFeed
from .mlflow_logger import MLflowLogger
from .tensorboard_logger import TensorBoardLogger

__all__ = [
    "EpochFeed",
    "MLflowLogger",
    "MetricsLogger",
    "SafeLoggers",
    "TensorBoardLogger",
    "aggregate_scalars",
    "node_scalars",
    "record_row",
]
