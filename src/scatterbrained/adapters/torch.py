"""PyTorch adapter: an ``nn.Module`` trained in place and seen as named NumPy arrays.

Importing this module imports torch; :mod:`scatterbrained.adapters` itself never does, so the
federation keeps working without torch installed.

Defaults that make ``ns.train(epochs, loader)`` work with little code:

* the optimizer factory receives the model (``lambda model: optim.AdamW(model.parameters())``)
  and defaults to ``torch.optim.Adam(model.parameters(), lr=1e-3)``, created lazily once;
* the loss is inferred from the targets when not given: integer class labels ->
  cross-entropy, floating targets -> mean squared error (the target is reshaped to the
  output's shape when the element counts agree);
* inputs are converted to tensors and cast to the model's floating dtype and device, so a
  ``float64`` NumPy batch feeds a ``float32`` model.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import ConfigurationError
from ..wire.messages import Architecture
from .base import EpochResult, EvalResult, StepHook
from .validation import check_array_names, validate_factory_kwargs, validate_factory_name

__all__ = ["LossFn", "OptimizerFactory", "TorchAdapter"]

_log = logging.getLogger(__name__)

#: Builds the optimizer from the model, e.g. ``lambda model: optim.AdamW(model.parameters())``
#: (called once, lazily).
OptimizerFactory = Callable[[nn.Module], torch.optim.Optimizer]
#: ``loss(output, target) -> scalar tensor`` averaged over the batch.
LossFn = Callable[[Tensor, Tensor], Tensor]

#: What the adapter calls on an optimizer (duck-typed: wrappers need not subclass Optimizer).
_OPTIMIZER_METHODS = ("zero_grad", "step", "state_dict", "load_state_dict")
#: Batch size of the example input kept for ``torch.export`` (2 avoids 0/1 specialisation).
_EXAMPLE_BATCH = 2


def _default_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(model.parameters(), lr=1e-3)


def _optimizer_for(create: OptimizerFactory, model: nn.Module) -> torch.optim.Optimizer:
    """Call ``create(model)`` and check that it gave an optimizer.

    Raises:
        ConfigurationError: the factory failed with a ``TypeError`` (most often a factory
            written for ``model.parameters()``) or returned something else than an optimizer.
    """
    name = getattr(create, "__qualname__", type(create).__name__)
    try:
        optimizer = create(model)
    except TypeError as exc:
        raise ConfigurationError(
            f"create_optimizer {name} failed when called with the model: {exc}; the factory "
            "receives the model, not its parameters: write e.g. "
            "create_optimizer=lambda model: torch.optim.AdamW(model.parameters())"
        ) from exc
    missing = [m for m in _OPTIMIZER_METHODS if not callable(getattr(optimizer, m, None))]
    if missing:
        raise ConfigurationError(
            f"create_optimizer {name} returned a {type(optimizer).__name__}, expected a "
            f"torch.optim.Optimizer (it has no {', '.join(missing)}); write e.g. "
            "create_optimizer=lambda model: torch.optim.AdamW(model.parameters())"
        )
    return optimizer


def numpy_dtype_of(dtype: torch.dtype) -> np.dtype[Any]:
    """Return the NumPy dtype that holds a tensor of ``dtype``.

    Raises:
        ConfigurationError: ``dtype`` has no NumPy equivalent (for example ``bfloat16``);
            cast the model (``model.float()``) before federating it.
    """
    try:
        return _numpy_dtype(dtype)
    except (TypeError, RuntimeError) as exc:
        raise ConfigurationError(
            f"tensor dtype {dtype} has no NumPy equivalent and cannot be federated; "
            "cast the model to float32/float64 first"
        ) from exc


@functools.lru_cache(maxsize=64)
def _numpy_dtype(dtype: torch.dtype) -> np.dtype[Any]:
    """The NumPy dtype of ``dtype`` (one tiny tensor per dtype, then cached)."""
    return torch.empty(0, dtype=dtype).numpy().dtype


def _batch_pair(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ConfigurationError(
        f"expected each batch to be an (inputs, targets) pair, got {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
        + "; yield (x, y) from the loader"
    )


def _as_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


class TorchAdapter:
    """A PyTorch model trained in place and exposed as named arrays (a ``ModelAdapter``).

    Args:
        model: the module to train; it is moved to ``device`` and trained in place.
        create_optimizer: ``model -> optimizer``, called with the module once, on first use,
            e.g. ``lambda model: torch.optim.AdamW(model.parameters())``; default Adam with
            learning rate 1e-3.
        loss: ``loss(output, target)`` returning the batch-mean loss; inferred when ``None``
            (integer targets -> cross-entropy, floating targets -> mean squared error).
        device: torch device the model and batches live on.
        example_input: one input batch for ``torch.export``; when ``None`` the shape and
            dtype of the first batch seen are remembered (as zeros, no data is kept).
        factory: ``(name, kwargs)`` of a registered factory that rebuilds this model; when
            given, the architecture is exported in the ``"factory"`` format.
        max_grad_norm: clip the gradients' global L2 norm to this value before each step.

    Raises:
        ConfigurationError: ``model`` is not an ``nn.Module``, ``max_grad_norm`` is not
            positive, or ``factory`` is malformed.
    """

    def __init__(
        self,
        model: nn.Module,
        create_optimizer: OptimizerFactory | None = None,
        loss: LossFn | None = None,
        *,
        device: str = "cpu",
        example_input: Tensor | np.ndarray[Any, Any] | None = None,
        factory: tuple[str, Mapping[str, object]] | None = None,
        max_grad_norm: float | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigurationError(
                f"TorchAdapter needs a torch.nn.Module, got {type(model).__name__}"
            )
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ConfigurationError(f"max_grad_norm must be > 0, got {max_grad_norm!r}")
        self._device = torch.device(device)
        self._model = model.to(self._device)
        self._create_optimizer = create_optimizer or _default_optimizer
        self._optimizer: torch.optim.Optimizer | None = None
        self._loss = loss
        self._max_grad_norm = max_grad_norm
        self._factory = _checked_factory(factory)
        self._example_input = None if example_input is None else _as_example(example_input)
        self._architecture: Architecture | None = None
        self._export_failed = False
        self._export_lock = threading.Lock()

    @property
    def model(self) -> nn.Module:
        """The wrapped module (trained in place)."""
        return self._model

    @property
    def device(self) -> torch.device:
        """The device the model and batches live on."""
        return self._device

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The optimizer, created on first access by ``create_optimizer(model)``.

        Raises:
            ConfigurationError: the factory failed with a ``TypeError`` (e.g. it expects the
                parameters, not the model) or did not return a ``torch.optim.Optimizer``.
        """
        if self._optimizer is None:
            # Under the export lock: an optimizer's first step and torch.export both import
            # torch._dynamo lazily, and two threads importing it at once can fail with a
            # partially initialised module (training in one thread, export in another).
            with self._export_lock:
                if self._optimizer is None:
                    self._optimizer = _optimizer_for(self._create_optimizer, self._model)
        return self._optimizer

    @property
    def example_input(self) -> Tensor | None:
        """The example input used for ``torch.export`` (CPU), or ``None`` when unknown."""
        return self._example_input

    # -- named arrays ---------------------------------------------------------------------

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Return copies of every ``state_dict`` entry (parameters and buffers) as arrays.

        Raises:
            ConfigurationError: an entry's dtype has no NumPy equivalent (e.g. bfloat16).
        """
        arrays: dict[str, np.ndarray] = {}
        for name, tensor in self._model.state_dict().items():
            numpy_dtype_of(tensor.dtype)
            host = tensor.detach().to("cpu")
            arrays[name] = np.array(host.numpy(), copy=True, order="C")
        return arrays

    def array_specs(self) -> dict[str, tuple[str, tuple[int, ...]]]:
        """Name -> (NumPy dtype name, shape) of every ``state_dict`` entry."""
        return {
            name: (numpy_dtype_of(t.dtype).name, tuple(t.shape))
            for name, t in self._model.state_dict().items()
        }

    def set_arrays(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy ``arrays`` into the model's tensors in place (the optimizer stays bound).

        All arrays are checked before anything is written. A floating array may have another
        floating precision (it is cast); integer and floating kinds may not be mixed.

        Raises:
            ConfigurationError: names are missing or unexpected, or a shape or dtype kind
                differs from the model's; the message names the offending entries.
        """
        state = self._model.state_dict()
        check_array_names(set(state), set(arrays))
        prepared: list[tuple[Tensor, np.ndarray]] = []
        for name, tensor in state.items():
            target_dtype = numpy_dtype_of(tensor.dtype)
            prepared.append((tensor, _checked_array(name, arrays[name], target_dtype, tensor)))
        with torch.no_grad():
            for tensor, array in prepared:
                _write(tensor, array)

    # -- training -------------------------------------------------------------------------

    def tune_shared_thread(self) -> None:
        """Make the calling thread's PyTorch kernels single-threaded; other threads keep the
        process setting (``torch.get_num_threads()``).

        Called on the training lane's thread when several learners share it. Their steps
        then run one at a time, and with a team of OpenMP threads per thread that ever ran
        a parallel kernel (the lane, the user's main thread...) the small kernels of a step
        pay a thread wake-up each: on 2 cores 16 nodes' epochs of an MLP took 1.1-1.4 s
        single-threaded against 2.4 s with two threads. ``torch.set_num_threads`` sets this
        thread's count and the process default; the default is put back from a short-lived
        thread, so threads that start later still get it.
        """
        wanted = torch.get_num_threads()
        if wanted <= 1:
            return
        torch.set_num_threads(1)
        restore = threading.Thread(target=torch.set_num_threads, args=(wanted,))
        restore.start()
        restore.join()

    def train_epoch(
        self, loader: Iterable[Any], *, step_hook: StepHook | None = None
    ) -> EpochResult:
        """Train one pass over ``loader`` (``(x, y)`` batches) in place.

        ``step_hook(steps_so_far)`` runs after every optimizer step, outside autograd, when
        the model's weights are consistent (it may call ``set_arrays``).

        Returns:
            The sample-weighted mean loss (NaN when the loader was empty), samples and steps.

        Raises:
            ConfigurationError: a batch is not an ``(inputs, targets)`` pair.
        """
        self._model.train()
        optimizer = self.optimizer
        total_loss, samples, steps = 0.0, 0, 0
        for batch in loader:
            inputs, targets = self._prepare_batch(batch)
            optimizer.zero_grad(set_to_none=True)
            loss = self._loss_value(self._model(inputs), targets)
            loss.backward()  # type: ignore[no-untyped-call]
            if self._max_grad_norm is not None:
                nn.utils.clip_grad_norm_(self._model.parameters(), self._max_grad_norm)
            optimizer.step()
            count = int(targets.shape[0]) if targets.ndim else 1
            total_loss += float(loss.detach()) * count
            samples += count
            steps += 1
            del loss
            if step_hook is not None:
                step_hook(steps)
        mean = total_loss / samples if samples else math.nan
        return EpochResult(loss=mean, samples=samples, steps=steps)

    def evaluate(self, loader: Iterable[Any]) -> EvalResult:
        """Evaluate on ``loader`` in eval mode without gradients or weight changes.

        Accuracy (argmax over dimension 1) is reported when the targets are integer class
        labels; otherwise it is ``None``.

        Raises:
            ConfigurationError: a batch is not an ``(inputs, targets)`` pair.
        """
        was_training = self._model.training
        self._model.eval()
        total_loss, samples, correct, labelled = 0.0, 0, 0, 0
        try:
            with torch.no_grad():
                for batch in loader:
                    inputs, targets = self._prepare_batch(batch)
                    outputs = self._model(inputs)
                    count = int(targets.shape[0]) if targets.ndim else 1
                    total_loss += float(self._loss_value(outputs, targets)) * count
                    samples += count
                    hits = _correct_predictions(outputs, targets)
                    if hits is not None:
                        correct += hits
                        labelled += count
        finally:
            self._model.train(was_training)
        accuracy = correct / labelled if labelled and labelled == samples else None
        return EvalResult(
            loss=total_loss / samples if samples else math.nan,
            accuracy=accuracy,
            samples=samples,
        )

    def _prepare_batch(self, batch: Any) -> tuple[Tensor, Tensor]:
        raw_inputs, raw_targets = _batch_pair(batch)
        inputs = _as_tensor(raw_inputs)
        if inputs.is_floating_point():
            inputs = inputs.to(self._floating_dtype())
        if self._example_input is None and inputs.ndim >= 1:
            shape = (_EXAMPLE_BATCH, *inputs.shape[1:])
            self._example_input = torch.zeros(shape, dtype=inputs.dtype)
        targets = _as_tensor(raw_targets)
        if targets.is_floating_point() or targets.dtype == torch.bool:
            targets = targets.to(self._floating_dtype())
        elif targets.dtype != torch.int64:
            targets = targets.to(torch.int64)
        return inputs.to(self._device), targets.to(self._device)

    def _floating_dtype(self) -> torch.dtype:
        for tensor in self._model.parameters():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    def _loss_value(self, outputs: Tensor, targets: Tensor) -> Tensor:
        if self._loss is not None:
            return self._loss(outputs, targets)
        if not targets.is_floating_point():
            return nn.functional.cross_entropy(outputs, targets)
        if targets.shape != outputs.shape and targets.numel() == outputs.numel():
            targets = targets.reshape(outputs.shape)
        return nn.functional.mse_loss(outputs, targets)

    # -- architecture and checkpoints -----------------------------------------------------

    def export_architecture(self) -> Architecture | None:
        """Return the architecture: the registered factory, else a ``torch.export`` program.

        The ``torch.export`` program is built once (from a private copy of the model, so a
        training thread is never disturbed) and cached; it needs an example input, known
        after the first batch. Returns ``None`` when no example input is known yet or the
        model cannot be exported (logged once; later calls do not retry).
        """
        if self._factory is not None:
            name, kwargs = self._factory
            return Architecture(format="factory", factory=name, kwargs=dict(kwargs))
        with self._export_lock:  # lazy torch imports: see ``optimizer``
            from .torch_export import ExportedModule

            if isinstance(self._model, ExportedModule):
                return Architecture(format="torch.export", payload=self._model.payload)
            example = self._example_input
            if self._architecture is None and example is not None and not self._export_failed:
                self._architecture = self._export_program(example)
                self._export_failed = self._architecture is None
            return self._architecture

    def _export_program(self, example: Tensor) -> Architecture | None:
        from .torch_export import export_program

        try:
            snapshot = copy.deepcopy(self._model)
            payload = export_program(snapshot, example)
        except (ConfigurationError, RuntimeError, TypeError) as exc:
            _log.warning("model architecture is not exportable (peers cannot sync it): %s", exc)
            return None
        return Architecture(format="torch.export", payload=payload)

    def checkpoint_state(self) -> dict[str, Any]:
        """Return ``{"optimizer": optimizer.state_dict() or None}`` for a local checkpoint."""
        state = self._optimizer.state_dict() if self._optimizer is not None else None
        return {"optimizer": state}

    def load_checkpoint_state(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`checkpoint_state` returned (creating the optimizer if needed).

        Raises:
            ConfigurationError: the optimizer state does not fit this optimizer.
        """
        optimizer_state = state.get("optimizer")
        if optimizer_state is None:
            return
        try:
            self.optimizer.load_state_dict(optimizer_state)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigurationError(f"optimizer checkpoint does not fit: {exc}") from exc


def _checked_factory(
    factory: tuple[str, Mapping[str, object]] | None,
) -> tuple[str, dict[str, object]] | None:
    if factory is None:
        return None
    if not isinstance(factory, tuple) or len(factory) != 2:
        raise ConfigurationError(f"factory must be a (name, kwargs) pair, got {factory!r}")
    name, kwargs = factory
    return validate_factory_name(name), validate_factory_kwargs(kwargs)


def _write(tensor: Tensor, array: np.ndarray) -> None:
    """Copy ``array`` into ``tensor`` in place.

    A contiguous CPU tensor is written through its NumPy view: a plain memory copy in the
    calling thread. ``Tensor.copy_`` would split a large copy over PyTorch's OpenMP threads,
    and an OpenMP team on the event loop's thread slows the training lane's kernels for the
    rest of the process (see :mod:`scatterbrained.learning.lane`). The tensor's version
    counter is bumped as ``copy_`` would, so autograd still refuses a graph that saved the
    old values.
    """
    if tensor.device.type == "cpu" and tensor.is_contiguous() and tensor.layout == torch.strided:
        np.copyto(tensor.numpy(), array, casting="unsafe")
        torch.autograd.graph.increment_version(tensor)
    else:
        tensor.copy_(torch.from_numpy(array))


def _checked_array(
    name: str, value: np.ndarray, target: np.dtype[Any], tensor: Tensor
) -> np.ndarray:
    array = np.asarray(value)
    if tuple(array.shape) != tuple(tensor.shape):
        raise ConfigurationError(
            f"array {name!r} has shape {tuple(array.shape)}, the model expects "
            f"{tuple(tensor.shape)}"
        )
    same_kind = (array.dtype.kind == "f") == (target.kind == "f")
    if not same_kind or array.dtype.kind not in "fiub":
        raise ConfigurationError(
            f"array {name!r} has dtype {array.dtype}, the model expects {target} "
            "(floating and integer arrays cannot stand in for each other)"
        )
    return np.array(array, dtype=target, copy=True, order="C")


def _correct_predictions(outputs: Tensor, targets: Tensor) -> int | None:
    if targets.is_floating_point() or outputs.ndim < 2 or targets.ndim != 1:
        return None
    if outputs.shape[0] != targets.shape[0]:
        return None
    return int((outputs.argmax(dim=1) == targets).sum())


def _as_example(example_input: Any) -> Tensor:
    """A CPU copy of ``example_input`` (a tensor, or anything ``torch.as_tensor`` takes).

    Raises:
        ConfigurationError: it is neither a tensor nor convertible to one.
    """
    if isinstance(example_input, Tensor):
        return example_input.detach().to("cpu").clone()
    try:
        return torch.as_tensor(np.asarray(example_input)).clone()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ConfigurationError(
            "example_input must be a torch.Tensor or an array (one batch of model inputs), "
            f"got {type(example_input).__name__}: {exc}"
        ) from None
