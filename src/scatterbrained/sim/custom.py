"""Bring your own model and data to the simulator.

Besides the registered names (``digits``, ``fashion-mnist``; ``mlp``, ``cnn``, ``logreg``) a
:class:`~scatterbrained.sim.config.SimConfig` accepts:

* ``model = "pkg.module:make_model"``: a factory called with the keyword arguments it declares
  among ``input_shape`` (tuple, one sample's shape), ``input_dim`` (int, its product),
  ``num_classes`` (int) and ``hidden`` (the config's ``hidden``); it returns a fresh
  ``torch.nn.Module`` whose output is ``(batch, num_classes)`` logits. Every node builds its
  model the same way under the same torch seed, so all start from the same weights.
* ``dataset = "pkg.module:load"``: a loader called without arguments; it returns a
  :class:`~scatterbrained.sim.datasets.Dataset` (e.g. ``from_arrays(x, y)``), the tuple
  ``(x_train, y_train, x_test, y_test)``, the pair ``(x, y)`` (split 80/20 by class, seeded by
  the config's ``seed``), or map-style torch datasets ``(train, test)`` / ``train`` of
  ``(input, label)`` items. Arrays may be NumPy arrays, torch tensors or nested lists; inputs
  become ``float32`` of any shape ``(n, ...)``, labels ``int64`` in ``[0, classes)``. In the
  ``process`` backend every node process calls the loader, so it must return the same data
  each time (seed any shuffle).
* ``dataset = "path/to/data.npz"``: arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``
  (optional ``num_classes`` and ``name``), read with ``allow_pickle=False``.
* from Python only, in-memory data: ``SimConfig(dataset=from_arrays(x, y))``, ``(x, y)`` or
  ``(x_train, y_train, x_test, y_test)``; a run saves it as ``dataset.npz`` in the run folder.

Modules are looked up like ``python -m`` does: the working folder comes first on the path.
"""

from __future__ import annotations

import importlib
import inspect
import math
import os
import re
import reprlib
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigurationError
from .datasets import Dataset, from_arrays, from_torch

__all__ = [
    "DATASET_FORMS",
    "MODEL_ARGUMENTS",
    "as_dataset",
    "build_spec_model",
    "call_user",
    "describe",
    "from_split",
    "import_object",
    "import_root",
    "is_spec",
    "load_npz",
    "load_spec_dataset",
    "model_arguments",
    "raised_message",
    "save_npz",
]

_NAME = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_SPEC = re.compile(rf"^{_NAME}:{_NAME}$")
_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60
_PACKAGE = str(Path(__file__).resolve().parents[1])
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")

#: What a dataset loader (or ``SimConfig(dataset=...)``) may return, for error messages.
DATASET_FORMS = (
    "a Dataset (e.g. from_arrays(x, y)), (x_train, y_train, x_test, y_test), (x, y), "
    "or torch datasets (train, test)"
)
#: Keyword arguments the simulator offers a model factory.
MODEL_ARGUMENTS = ("input_shape", "input_dim", "num_classes", "hidden")


def is_spec(value: object) -> bool:
    """True when ``value`` is a ``module:attribute`` string (``pkg.mod:make_model``)."""
    return isinstance(value, str) and _SPEC.match(value.strip()) is not None


def describe(value: object) -> str:
    """A short description of ``value`` for error messages (arrays by shape, never dumped).

    ``<ndarray shape=(1797, 64) float32>`` for anything with a shape and a dtype, sequences
    item by item (at most 4), everything else as a ``repr`` cut to about 60 characters.
    """
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None and not isinstance(value, (str, bytes)):
        return f"<{type(value).__name__} shape={tuple(shape)} {dtype}>"
    if isinstance(value, (tuple, list)):
        items = [describe(item) for item in value[:4]] + (["..."] if len(value) > 4 else [])
        inner = ", ".join(items)
        return (
            f"({inner}{',' if len(value) == 1 else ''})"
            if isinstance(value, tuple)
            else (f"[{inner}]")
        )
    if isinstance(value, Dataset):
        return repr(value)
    return _REPR.repr(value)


# ---------------------------------------------------------------------------- importing


def import_object(spec: str, what: str) -> Any:
    """Import ``module:attribute`` (the attribute may be dotted), the working folder first.

    Args:
        spec: ``pkg.module:name``.
        what: the config key, for messages (``model``, ``dataset``).

    Raises:
        ConfigurationError: the spec is malformed, or the module or attribute is missing.
    """
    if not is_spec(spec):
        raise ConfigurationError(
            f"{what} = {describe(spec)} is not module:function; write e.g. "
            f'{what} = "mymodule:{"make_model" if what == "model" else "load"}"'
        )
    module_name, _, attribute = spec.strip().partition(":")
    if os.getcwd() not in sys.path:  # like `python -m`: modules of the working folder
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"{what} = {spec!r}: cannot import {module_name!r} ({exc}); run from the folder "
            f"that holds {module_name.split('.')[0]} or add its folder to PYTHONPATH"
        ) from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigurationError(
                f"{what} = {spec!r}: module {module_name!r} has no attribute {attribute!r}; "
                f"define it in {getattr(importlib.import_module(module_name), '__file__', '?')}"
            )
        target = getattr(target, part)
    if not callable(target):
        raise ConfigurationError(f"{what} = {spec!r} is {describe(target)}, not a function")
    return target


def raised_message(what: str, spec: str, exc: BaseException) -> str:
    """One line for an exception raised by the user's ``spec``: its type, its text (cut to
    about 200 characters) and the line of the user's code that raised it (outside this
    package)."""
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if not frame.filename.startswith(_PACKAGE):
            where = f" at {frame.filename}:{frame.lineno}"
            break
    text = " ".join(str(exc).split())
    text = text if len(text) <= 200 else text[:197] + "..."
    named = f"{what} {spec!r}" if what.startswith("-") else f"{what} = {spec!r}"
    return f"{named} raised {type(exc).__name__}: {text}{where}; fix it and run again"


def call_user(function: Callable[..., Any], spec: str, what: str, **kwargs: Any) -> Any:
    """Call the user's ``function`` (named ``spec`` by config key ``what``) with ``kwargs``.

    Raises:
        ConfigurationError: the function raised; the message is :func:`raised_message`'s.
    """
    try:
        return function(**kwargs)
    except Exception as exc:
        raise ConfigurationError(raised_message(what, spec, exc)) from None


def import_root(spec: str) -> str | None:
    """The folder that must be on ``sys.path`` for another process to import ``spec``.

    ``None`` when the module cannot be found or has no file (a built-in).
    """
    top = spec.strip().partition(":")[0].split(".")[0]
    try:
        module = importlib.import_module(top)
    except ImportError:
        return None
    locations = list(getattr(module, "__path__", []) or [])
    if locations:  # a package: its parent folder
        return str(Path(locations[0]).resolve().parent)
    file = getattr(module, "__file__", None)
    return str(Path(file).resolve().parent) if file else None


# ---------------------------------------------------------------------------- data


def _numpy(value: Any, what: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{what} = {describe(value)} is not an array: {exc}") from None


def _labels(y: np.ndarray, what: str) -> np.ndarray:
    if y.ndim != 1:
        raise ConfigurationError(f"{what}: labels must have shape (n,), got {y.shape}")
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and np.array_equal(y, np.round(y))):
        raise ConfigurationError(f"{what}: labels must be integers, got dtype {y.dtype}")
    if len(y) and int(y.min()) < 0:
        raise ConfigurationError(f"{what}: labels must be non-negative, got minimum {y.min()}")
    return y.astype(np.int64)


def from_split(
    x_train: Any,
    y_train: Any,
    x_test: Any,
    y_test: Any,
    *,
    name: str = "custom",
    num_classes: int | None = None,
) -> Dataset:
    """A :class:`Dataset` from train and test arrays (NumPy, torch tensors or lists).

    Raises:
        ConfigurationError: lengths or sample shapes differ, labels are not non-negative
            integers, or a split is empty.
    """
    xs = [_numpy(x_train, "x_train").astype(np.float32), _numpy(x_test, "x_test")]
    xs[1] = xs[1].astype(np.float32)
    ys = [
        _labels(_numpy(y_train, "y_train"), "y_train"),
        _labels(_numpy(y_test, "y_test"), "y_test"),
    ]
    for split, x, y in (("train", xs[0], ys[0]), ("test", xs[1], ys[1])):
        if x.ndim < 1 or len(x) != len(y) or len(y) == 0:
            raise ConfigurationError(
                f"{name} ({split}): expected inputs (n, ...) and labels (n,) with n >= 1, got "
                f"{x.shape} and {y.shape}"
            )
    if xs[0].shape[1:] != xs[1].shape[1:]:
        raise ConfigurationError(
            f"{name}: train and test samples differ in shape: {xs[0].shape[1:]} and "
            f"{xs[1].shape[1:]}"
        )
    classes = int(max(ys[0].max(), ys[1].max())) + 1 if num_classes is None else num_classes
    shape = tuple(int(d) for d in xs[0].shape[1:])
    return Dataset(name, np.ascontiguousarray(xs[0]), ys[0], xs[1], ys[1], classes, shape)


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") or isinstance(value, list)


def _is_map_dataset(value: Any) -> bool:
    return hasattr(value, "__len__") and hasattr(value, "__getitem__") and not _is_array(value)


def as_dataset(
    value: Any, *, name: str = "custom", seed: int = 0, what: str = "dataset"
) -> Dataset:
    """Turn what a loader returned (or ``SimConfig(dataset=...)`` got) into a :class:`Dataset`.

    Args:
        value: one of :data:`DATASET_FORMS`.
        name: the dataset's name when ``value`` is not a Dataset.
        seed: seed of the train/test split of ``(x, y)`` and of a single torch dataset.
        what: where the value came from, for messages.

    Raises:
        ConfigurationError: the value has none of those forms (the message describes it
            without dumping arrays), or its arrays disagree.
    """
    if isinstance(value, Dataset):
        return value
    if isinstance(value, (tuple, list)) and len(value) == 4 and all(map(_is_array, value)):
        return from_split(*value, name=name)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        if all(map(_is_array, value)):
            x, y = _numpy(value[0], "x"), _numpy(value[1], "y")
            return from_arrays(x, y, name=name, seed=seed)
        if all(map(_is_map_dataset, value)):
            return from_torch(value[0], value[1], name=name)
    if _is_map_dataset(value) and not isinstance(value, (tuple, list, str, dict)):
        return from_torch(value, name=name, seed=seed)
    raise ConfigurationError(f"{what} = {describe(value)}: expected {DATASET_FORMS}")


def load_spec_dataset(spec: str, *, seed: int = 0) -> Dataset:
    """Call the loader ``spec`` (``module:function``, no arguments) and check what it returns.

    Raises:
        ConfigurationError: the loader cannot be imported, or returned something that is
            none of :data:`DATASET_FORMS`.
    """
    loader = import_object(spec, "dataset")
    name = spec.strip().partition(":")[0].split(".")[-1]
    returned = call_user(loader, spec, "dataset")
    try:
        return as_dataset(returned, name=name, seed=seed, what=f"{spec}()")
    except ConfigurationError as exc:
        text = str(exc)
        if text.startswith(f"{spec}()"):
            raise
        raise ConfigurationError(
            f"dataset = {spec!r} returned data that does not fit: {text}"
        ) from None


def save_npz(dataset: Dataset, path: Path) -> Path:
    """Write ``dataset`` as an ``.npz`` file that :func:`load_npz` reads back; return ``path``."""
    arrays = {key: getattr(dataset, key) for key in _ARRAYS}
    with path.open("wb") as handle:
        np.savez(
            handle,
            num_classes=np.int64(dataset.num_classes),
            name=np.str_(dataset.name),
            **arrays,
        )
    return path


def load_npz(path: str | Path) -> Dataset:
    """Read a dataset from an ``.npz`` file (no pickles are loaded).

    The file holds ``x_train``, ``y_train``, ``x_test``, ``y_test``, and optionally
    ``num_classes`` and ``name``.

    Raises:
        ConfigurationError: the file is missing, unreadable, or lacks an array.
    """
    source = Path(path)
    if not source.is_file():
        raise ConfigurationError(f"dataset file {source} does not exist; check the path")
    try:
        with np.load(source, allow_pickle=False) as data:
            missing = [key for key in _ARRAYS if key not in data.files]
            if missing:
                raise ConfigurationError(
                    f"dataset file {source} lacks {', '.join(missing)}; it needs arrays "
                    f"{', '.join(_ARRAYS)}"
                )
            arrays = [data[key] for key in _ARRAYS]
            classes = int(data["num_classes"]) if "num_classes" in data.files else None
            name = str(data["name"]) if "name" in data.files else source.stem
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read dataset file {source}: {exc}") from None
    return from_split(*arrays, name=name, num_classes=classes)


# ---------------------------------------------------------------------------- models


def _factory_kwargs(
    factory: Callable[..., Any], spec: str, offered: dict[str, Any]
) -> dict[str, Any]:
    """The keyword arguments of ``offered`` that ``factory`` declares (all with ``**kw``)."""
    try:
        parameters: Sequence[inspect.Parameter] = list(
            inspect.signature(factory).parameters.values()
        )
    except (TypeError, ValueError):  # no signature (a builtin): call it with nothing
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return dict(offered)
    chosen: dict[str, Any] = {}
    for p in parameters:
        if p.name in offered and p.kind is not p.POSITIONAL_ONLY:
            chosen[p.name] = offered[p.name]
        elif p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise ConfigurationError(
                f"model = {spec!r} needs argument {p.name!r}, which the simulator cannot "
                f"give; it passes {', '.join(MODEL_ARGUMENTS)} by keyword: rename it or "
                f"give it a default"
            )
    return chosen


def model_arguments(input_shape: tuple[int, ...], num_classes: int, hidden: int) -> dict[str, Any]:
    """What the simulator offers a model factory (see :data:`MODEL_ARGUMENTS`)."""
    return {
        "input_shape": tuple(input_shape),
        "input_dim": math.prod(input_shape),
        "num_classes": num_classes,
        "hidden": hidden,
    }


def build_spec_model(spec: str, offered: dict[str, Any], seed: int | None = None) -> Any:
    """Build a model with the factory ``spec`` (``module:function``).

    With ``seed`` the weights depend on the seed alone and the global torch RNG is left as
    it was.

    Raises:
        ConfigurationError: the factory cannot be imported, needs an argument the simulator
            cannot give, or returned something that is not a ``torch.nn.Module``.
    """
    factory = import_object(spec, "model")
    kwargs = _factory_kwargs(factory, spec, offered)
    if seed is None:
        model = call_user(factory, spec, "model", **kwargs)
    else:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = call_user(factory, spec, "model", **kwargs)
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ConfigurationError(
            f"model = {spec!r} returned {describe(model)}; return a torch.nn.Module"
        )
    return model
