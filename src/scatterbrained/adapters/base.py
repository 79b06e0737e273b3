"""The model adapter Protocol: a model as named arrays that can train and be evaluated.

The federation layer never sees a model, only ``dict[str, np.ndarray]``. Adapters:
:mod:`.torch` (PyTorch ``nn.Module``) and :mod:`.sklearn` (NumPy / scikit-learn linear models).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..wire.messages import Architecture

__all__ = ["EpochResult", "EvalResult", "ModelAdapter", "SharedThreadTuning", "StepHook"]

#: Called by ``train_epoch`` after every optimizer step with the number of steps done so far
#: in this epoch. It may raise to stop the epoch (the node's hook does when ``train`` is
#: cancelled).
StepHook = Callable[[int], None]


@dataclass(frozen=True)
class EpochResult:
    """Outcome of one local training epoch.

    Attributes:
        loss: mean training loss over the epoch's samples.
        samples: samples processed.
        steps: optimizer steps taken.
    """

    loss: float
    samples: int
    steps: int


@dataclass(frozen=True)
class EvalResult:
    """Outcome of an evaluation pass.

    Attributes:
        loss: mean loss over the samples.
        accuracy: fraction of correct class predictions, or ``None`` when targets are not
            class labels.
        samples: samples evaluated.
    """

    loss: float
    accuracy: float | None
    samples: int


@runtime_checkable
class ModelAdapter(Protocol):
    """A trainable model seen as named arrays.

    Thread-safety: ``train_epoch`` and ``evaluate`` run on the training lane's thread
    (:mod:`scatterbrained.learning.lane`); the node calls ``get_arrays`` / ``set_arrays`` on
    the event loop's thread, only between two ``train_epoch`` calls, never concurrently with
    a training step. Neither should start a multi-threaded kernel there (copy through NumPy).
    """

    @property
    def model(self) -> Any:
        """The wrapped model object (trained in place)."""
        ...

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Return a copy of the model's parameters and buffers as named C-contiguous arrays."""
        ...

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Load named arrays into the model in place.

        Raises:
            ConfigurationError: names, shapes or dtypes differ from the model's.
        """
        ...

    def array_specs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Name -> (dtype string, shape) of every array, as ``get_arrays`` would return."""
        ...

    def train_epoch(
        self, loader: Iterable[Any], *, step_hook: StepHook | None = None
    ) -> EpochResult:
        """Train one pass over ``loader`` in place."""
        ...

    def evaluate(self, loader: Iterable[Any]) -> EvalResult:
        """Evaluate on ``loader`` without changing the model."""
        ...

    def export_architecture(self) -> Architecture | None:
        """Return the architecture in a code-free format, or ``None`` when not exportable."""
        ...

    def checkpoint_state(self) -> dict[str, Any]:
        """Return optimizer (and other local training) state for a local checkpoint."""
        ...

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`checkpoint_state` returned."""
        ...


@runtime_checkable
class SharedThreadTuning(Protocol):
    """An optional adapter capability: tune the training thread when learners share it."""

    def tune_shared_thread(self) -> None:
        """Called once on the training lane's thread when several learners of one event loop
        share it (an in-process federation): e.g. make this thread's kernels
        single-threaded, since the learners take turns and their steps are small."""
        ...
