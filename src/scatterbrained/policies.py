"""Mode policies: rules that switch a node's operating mode (``sb.policies.LeechUntil``, ...).

The public names of :mod:`scatterbrained.federation.policies`, importable as
``import scatterbrained.policies``::

    import scatterbrained as sb

    node.namespace("MyNetwork", model, policy=sb.policies.LeechUntil(samples=1000))
"""

from __future__ import annotations

from .federation import policies as _impl
from .federation.policies import *  # noqa: F403

__all__: list[str] = []
__all__ += _impl.__all__
