"""Topologies: who sends to whom (``sb.topology.Ring()``, ``sb.topology.Graph(...)``, ...).

The public names of :mod:`scatterbrained.federation.topology`, importable as
``import scatterbrained.topology``::

    import scatterbrained as sb

    node.namespace("MyNetwork", model, topology=sb.topology.RandomRegular(k=4, seed=1))
"""

from __future__ import annotations

from .federation import topology as _impl
from .federation.topology import *  # noqa: F403

__all__: list[str] = []
__all__ += _impl.__all__
