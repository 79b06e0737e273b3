"""The one owner of a namespace's model state: weights, version, published snapshot, digest.

Every change of the weights or of the version goes through :meth:`ModelState.commit` (or
:meth:`ModelState.install` for a model that arrives from a peer), which snapshots the
weights that are served and pushed from then on, and emits one
:class:`~scatterbrained.events.ModelChanged`. The namespace re-advertises its version from
that event, so what peers see can never drift from what the model is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigurationError
from ..events import Event, ModelChanged
from ..wire.codec import compute_digest

if TYPE_CHECKING:
    from ..adapters.base import ModelAdapter

__all__ = ["MERGE_TOLERANCE", "Arrays", "ModelState", "max_abs_change"]

logger = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]

#: A merge that moves no float weight by more than this (relative to the weight's scale,
#: ``tol * (1 + |w|)``) does not change the model: its version stays, nothing is pushed.
#: This is what lets a network of nodes that only serve go quiet once they agree.
MERGE_TOLERANCE = 1e-6


def max_abs_change(before: Mapping[str, np.ndarray], after: Mapping[str, np.ndarray]) -> float:
    """The largest relative change ``|a - b| / (1 + |b|)`` over the float arrays."""
    worst = 0.0
    for name, old in before.items():
        new = after.get(name)
        if new is None or not np.issubdtype(np.asarray(old).dtype, np.floating):
            continue
        old64 = np.asarray(old, dtype=np.float64)
        diff = np.abs(np.asarray(new, dtype=np.float64) - old64) / (1.0 + np.abs(old64))
        if diff.size:
            worst = max(worst, float(diff.max()))
    return worst


class ModelState:
    """The adapter, the model version, the published weights and their digest.

    Args:
        adapter: the model adapter, or ``None`` for a namespace that will ``sync_model``.
        emit: where :class:`~scatterbrained.events.ModelChanged` events go.
        node: this node's id (for events).
        namespace: the namespace's name (for events).
    """

    def __init__(
        self,
        adapter: ModelAdapter | None,
        emit: Callable[[Event], None],
        node: str,
        namespace: str,
    ) -> None:
        self.adapter = adapter
        self._emit = emit
        self._node = node
        self._namespace = namespace
        self.version = 0
        #: Local training samples of the last epoch (the FedAvg weight of this node).
        self.local_samples = 0
        #: Local training samples seen in all epochs so far.
        self.samples_seen = 0
        self._published: Arrays | None = None
        self._digest: bytes | None = None
        self._specs: dict[str, tuple[str, tuple[int, ...]]] | None = None

    @property
    def model(self) -> Any:
        """The wrapped model, or ``None``."""
        return self.adapter.model if self.adapter is not None else None

    @property
    def has_model(self) -> bool:
        """True once there is a model (given, restored or synced)."""
        return self.adapter is not None

    @property
    def published(self) -> Arrays | None:
        """The weights served and pushed until the next commit (``None`` without a model)."""
        return self._published

    def digest(self) -> bytes:
        """The SHA-256 digest of the published weights, computed once per commit.

        Raises:
            ConfigurationError: nothing is published yet (no model).
        """
        if self._published is None:
            raise ConfigurationError(f"namespace {self._namespace!r} has published no model yet")
        if self._digest is None:
            self._digest = compute_digest(self._published)
        return self._digest

    def specs(self) -> dict[str, tuple[str, tuple[int, ...]]] | None:
        """Name -> (dtype, shape) of the published weights, what a peer's update must match
        (``None`` without a model). Computed once per commit, not per update received."""
        if self._published is None:
            return None
        if self._specs is None:
            self._specs = {n: (a.dtype.str, a.shape) for n, a in self._published.items()}
        return self._specs

    def current(self) -> Arrays:
        """A copy of the adapter's weights now (training may have moved them since publish).

        Raises:
            ConfigurationError: there is no model.
        """
        return self._require().get_arrays()

    def publish_initial(self) -> None:
        """Publish the weights as they are, without a version change (on open)."""
        if self.adapter is not None:
            self._published = self.adapter.get_arrays()
            self._digest = self._specs = None

    def commit(
        self,
        reason: str,
        arrays: Mapping[str, np.ndarray] | None = None,
        *,
        version: int | None = None,
        tolerance: float | None = None,
    ) -> bool:
        """Change the model: set ``arrays`` (if given), move the version, publish, emit.

        Args:
            reason: why (``train``, ``merge``, ``adopt``, ``restore``, ``round``...).
            arrays: new weights; ``None`` keeps the adapter's (e.g. after local training).
            version: the new version; default (and at least) one more than now.
            tolerance: with ``arrays``, a change no larger than this (see
                :func:`max_abs_change`) is no change: nothing is set, the version stays,
                and False is returned.

        Returns:
            True when the model changed (and an event was emitted).

        Raises:
            ConfigurationError: there is no model.
        """
        adapter = self._require()
        if arrays is not None:
            published = self._published
            unchanged = (
                tolerance is not None
                and published is not None
                and max_abs_change(published, arrays) <= tolerance
            )
            if unchanged:
                return False
            adapter.set_arrays(arrays)
        self.version = self.version + 1 if version is None else max(self.version + 1, version)
        self._published = adapter.get_arrays()
        self._digest = self._specs = None
        self._emit(ModelChanged(self._node, self._namespace, self.version, reason))
        return True

    def install(self, adapter: ModelAdapter) -> None:
        """Take a model built from a peer's architecture (``sync_model`` of a newcomer)."""
        self.adapter = adapter

    def _require(self) -> ModelAdapter:
        if self.adapter is None:
            raise ConfigurationError(
                f"namespace {self._namespace!r} has no model: pass model= to node.namespace() "
                "or call `await ns.sync_model()` first"
            )
        return self.adapter
