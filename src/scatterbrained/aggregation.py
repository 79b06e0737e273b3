"""Aggregators: how received weights merge (``sb.aggregation.FedAvg()``, ``Krum(f=1)``, ...).

The public names of :mod:`scatterbrained.federation.aggregation`, importable as
``import scatterbrained.aggregation``::

    import scatterbrained as sb

    node.namespace("MyNetwork", model, aggregator=sb.aggregation.TrimmedMean(trim=0.1))
"""

from __future__ import annotations

from .federation import aggregation as _impl
from .federation.aggregation import *  # noqa: F403

__all__: list[str] = []
__all__ += _impl.__all__
