"""Datasets for simulations: in-memory NumPy arrays, offline sources only.

Two sources ship with the machine, so nothing is ever downloaded at run time:

* ``digits``: scikit-learn's bundled 1,797 8x8 handwritten digits (fast tests).
* ``fashion-mnist``: the 60,000 + 10,000 28x28 IDX files that Debian's package
  ``dataset-fashion-mnist`` installs under ``/usr/share/datasets/fashion-mnist``.

Arrays follow one convention: inputs ``float32`` scaled to ``[0, 1]``, labels ``int64`` in
``[0, num_classes)``. :class:`ArrayLoader` turns arrays into a re-iterable of ``(x, y)`` NumPy
batches, which the model adapters accept directly (no torch needed here).
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from ..errors import ConfigurationError, DatasetNotFoundError
from .idx import read_idx
from .loaders import ArrayLoader, batches

__all__ = [
    "DATASET_LOADERS",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_FILES",
    "FASHION_MNIST_INSTALL_HINT",
    "ArrayLoader",
    "Dataset",
    "batches",
    "default_fashion_mnist_root",
    "from_arrays",
    "from_torch",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
]

#: Environment variable naming a folder with the Fashion-MNIST IDX files.
FASHION_MNIST_ENV = "SCATTERBRAINED_FASHION_MNIST"
#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
FASHION_MNIST_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
#: Split -> (images file, labels file); each may also carry a ``.gz`` suffix.
FASHION_MNIST_FILES: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
)
FASHION_MNIST_INSTALL_HINT = (
    "install them with `sudo apt-get install dataset-fashion-mnist`, "
    f"or set {FASHION_MNIST_ENV}=DIR to a folder holding these IDX files"
)

_REINSTALL_HINT = (
    "reinstall it with `sudo apt-get install --reinstall dataset-fashion-mnist`, "
    f"or set {FASHION_MNIST_ENV}=DIR to a folder holding good copies"
)
_IMAGE_SIDE = 28


@dataclass(frozen=True)
class Dataset:
    """A labelled classification dataset held in memory, already split into train and test.

    Attributes:
        name: short name (``"digits"``, ``"fashion-mnist"``, ...).
        x_train: training inputs, ``float32``, shape ``(n_train, *input_shape)``.
        y_train: training labels, ``int64``, shape ``(n_train,)``.
        x_test: test inputs, ``float32``, shape ``(n_test, *input_shape)``.
        y_test: test labels, ``int64``, shape ``(n_test,)``.
        num_classes: number of classes; labels lie in ``[0, num_classes)``.
        input_shape: shape of one input sample.

    Raises:
        ConfigurationError: on construction, when shapes, dtypes or labels disagree.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            _check_split(self.name, split, x, y, self.input_shape, self.num_classes)

    def __repr__(self) -> str:
        """Names the arrays by shape, never dumps them (error messages quote datasets)."""
        return (
            f"<Dataset {self.name!r}: train {self.x_train.shape} {self.x_train.dtype}, "
            f"test {self.x_test.shape}, {self.num_classes} classes>"
        )

    @property
    def input_dim(self) -> int:
        """Number of input features of one sample (the product of ``input_shape``)."""
        return math.prod(self.input_shape)

    def flattened(self) -> Dataset:
        """Return a copy whose inputs are flat vectors of shape ``(n, input_dim)``."""
        return Dataset(
            name=self.name,
            x_train=self.x_train.reshape(len(self.x_train), self.input_dim),
            y_train=self.y_train,
            x_test=self.x_test.reshape(len(self.x_test), self.input_dim),
            y_test=self.y_test,
            num_classes=self.num_classes,
            input_shape=(self.input_dim,),
        )


def _check_split(
    name: str,
    split: str,
    x: np.ndarray,
    y: np.ndarray,
    input_shape: tuple[int, ...],
    num_classes: int,
) -> None:
    where = f"dataset {name!r} ({split})"
    if x.dtype != np.float32 or y.dtype != np.int64:
        raise ConfigurationError(
            f"{where}: expected float32 inputs and int64 labels, got {x.dtype} and {y.dtype}"
        )
    if x.shape[1:] != tuple(input_shape) or y.shape != (len(x),):
        raise ConfigurationError(
            f"{where}: expected inputs (n, *{tuple(input_shape)}) and labels (n,), "
            f"got {x.shape} and {y.shape}"
        )
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ConfigurationError(
            f"{where}: labels must lie in [0, {num_classes}), got [{y.min()}, {y.max()}]"
        )


def _check_fraction(test_fraction: float) -> None:
    if not isinstance(test_fraction, (int, float)) or not 0.0 <= test_fraction < 1.0:
        raise ConfigurationError(f"test_fraction must lie in [0, 1), got {test_fraction!r}")


def _stratified_split(
    labels: np.ndarray, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted (train, test) index arrays; each class keeps at least one train sample."""
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = min(round(len(members) * test_fraction), len(members) - 1)
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    name: str = "custom",
    test_fraction: float = 0.2,
    seed: int = 0,
    num_classes: int | None = None,
) -> Dataset:
    """Build a :class:`Dataset` from arrays with a stratified, seeded train/test split.

    Args:
        x: inputs, shape ``(n, ...)``; cast to ``float32`` (values are not rescaled).
        y: integer class labels, shape ``(n,)``, non-negative.
        name: the dataset's name.
        test_fraction: share of each class held out for testing, in ``[0, 1)``.
        seed: seed of the split.
        num_classes: number of classes (default: ``max(y) + 1``).

    Raises:
        ConfigurationError: lengths differ, fewer than 2 samples, labels not non-negative
            integers, ``test_fraction`` outside ``[0, 1)`` or ``num_classes`` too small.
    """
    _check_fraction(test_fraction)
    x_arr = np.asarray(x, dtype=np.float32)
    y_raw = np.asarray(y)
    if x_arr.ndim < 1 or y_raw.ndim != 1 or len(x_arr) != len(y_raw) or len(y_raw) < 2:
        raise ConfigurationError(
            "expected inputs of shape (n, ...) and labels of shape (n,) with n >= 2, "
            f"got {x_arr.shape} and {y_raw.shape}"
        )
    if y_raw.dtype.kind not in "iub" and not np.array_equal(y_raw, np.round(y_raw)):
        raise ConfigurationError(f"labels must be integers, got dtype {y_raw.dtype}")
    y_arr = y_raw.astype(np.int64)
    if int(y_arr.min()) < 0:
        raise ConfigurationError(f"labels must be non-negative, got minimum {y_arr.min()}")
    classes = int(y_arr.max()) + 1 if num_classes is None else num_classes
    train, test = _stratified_split(y_arr, test_fraction, seed)
    return Dataset(
        name=name,
        x_train=np.ascontiguousarray(x_arr[train]),
        y_train=y_arr[train],
        x_test=np.ascontiguousarray(x_arr[test]),
        y_test=y_arr[test],
        num_classes=classes,
        input_shape=tuple(int(d) for d in x_arr.shape[1:]),
    )


def _stack_pairs(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """Stack a map-style dataset of ``(input, label)`` pairs into NumPy arrays."""
    inputs: list[np.ndarray] = []
    labels: list[int] = []
    for index in range(len(dataset)):
        item = dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ConfigurationError(
                f"expected dataset items to be (input, label) pairs, item {index} is "
                f"{type(item).__name__}"
            )
        sample, label = item[0], item[1]
        if hasattr(sample, "detach"):  # a torch.Tensor, without importing torch
            sample = sample.detach().cpu().numpy()
        inputs.append(np.asarray(sample, dtype=np.float32))
        labels.append(int(label))
    if not inputs:
        raise ConfigurationError("the dataset is empty")
    return np.stack(inputs), np.asarray(labels, dtype=np.int64)


def from_torch(
    train: Any,
    test: Any | None = None,
    *,
    name: str = "torch",
    test_fraction: float = 0.2,
    seed: int = 0,
    num_classes: int | None = None,
) -> Dataset:
    """Build a :class:`Dataset` from map-style torch datasets of ``(tensor, int)`` pairs.

    Any object with ``__len__`` and ``__getitem__`` returning ``(input, label)`` works; tensors
    are converted with ``.detach().cpu().numpy()``, so torch is never imported here.

    Args:
        train: the training dataset (or the whole dataset when ``test`` is ``None``).
        test: an optional separate test dataset; without it ``train`` is split.
        name: the dataset's name.
        test_fraction: share held out when ``test`` is ``None``, in ``[0, 1)``.
        seed: seed of that split.
        num_classes: number of classes (default: largest label + 1).

    Raises:
        ConfigurationError: items are not pairs, a dataset is empty, or shapes differ.
    """
    x, y = _stack_pairs(train)
    if test is None:
        return from_arrays(
            x, y, name=name, test_fraction=test_fraction, seed=seed, num_classes=num_classes
        )
    x_test, y_test = _stack_pairs(test)
    if x_test.shape[1:] != x.shape[1:]:
        raise ConfigurationError(
            f"train and test inputs differ in shape: {x.shape[1:]} and {x_test.shape[1:]}"
        )
    classes = num_classes if num_classes is not None else int(max(y.max(), y_test.max())) + 1
    return Dataset(name, x, y, x_test, y_test, classes, tuple(int(d) for d in x.shape[1:]))


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Load scikit-learn's bundled 8x8 digits (1,797 samples, 10 classes).

    Inputs are flat ``float32`` vectors of 64 pixels scaled to ``[0, 1]`` (use
    ``Dataset.x_train.reshape(-1, 1, 8, 8)`` for an image view). The split is stratified and
    deterministic for a seed.

    Args:
        test_fraction: share of each class held out for testing, in ``[0, 1)``.
        seed: seed of the split.

    Raises:
        ConfigurationError: ``test_fraction`` outside ``[0, 1)``.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    return from_arrays(x, y, name="digits", test_fraction=test_fraction, seed=seed, num_classes=10)


def default_fashion_mnist_root() -> Path:
    """Return the Fashion-MNIST folder to use when none is given.

    That is ``$SCATTERBRAINED_FASHION_MNIST`` when set and non-empty, else Debian's
    ``/usr/share/datasets/fashion-mnist``. Read at every call (nothing is cached).
    """
    from_env = os.environ.get(FASHION_MNIST_ENV)
    return Path(from_env) if from_env else FASHION_MNIST_DEFAULT_ROOT


def _find_idx_file(root: Path, stem: str) -> Path | None:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _check_limit(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError(f"{name} must be a positive integer or None, got {value!r}")


def _find_fashion_files(folder: Path) -> dict[str, Path]:
    """Return stem -> path of all four files, or raise naming the missing ones."""
    stems = [stem for pair in FASHION_MNIST_FILES.values() for stem in pair]
    found = {stem: _find_idx_file(folder, stem) for stem in stems}
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        listed = ", ".join(f"{stem}[.gz]" for stem in missing)
        raise DatasetNotFoundError(
            f"Fashion-MNIST not found: looked for {listed} in {folder}; "
            f"{FASHION_MNIST_INSTALL_HINT}"
        )
    return {stem: path for stem, path in found.items() if path is not None}


def _load_fashion_split(
    images_path: Path, labels_path: Path, limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, limit=limit, fix_hint=_REINSTALL_HINT)
    labels = read_idx(labels_path, limit=limit, fix_hint=_REINSTALL_HINT)
    if images.shape[1:] != (_IMAGE_SIDE, _IMAGE_SIDE):
        detail = f"expected 28x28 images, got records of shape {images.shape[1:]}"
        raise DatasetNotFoundError(f"{images_path}: {detail}; {_REINSTALL_HINT}")
    if labels.shape != (len(images),) or (len(labels) and int(labels.max()) > 9):
        detail = f"expected {len(images)} labels in 0..9, got shape {labels.shape}"
        raise DatasetNotFoundError(f"{labels_path}: {detail}; {_REINSTALL_HINT}")
    x = (images.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, _IMAGE_SIDE, _IMAGE_SIDE)
    return x, labels.astype(np.int64)


def load_fashion_mnist(
    root: str | Path | None = None,
    *,
    train_limit: int | None = None,
    test_limit: int | None = None,
) -> Dataset:
    """Load Fashion-MNIST from its IDX files (plain or ``.gz``); nothing is cached.

    Inputs are ``float32`` in ``[0, 1]`` with shape ``(n, 1, 28, 28)``; 10 classes.

    Args:
        root: folder with ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
            ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` (each optionally
            ``.gz``). Default: :func:`default_fashion_mnist_root`.
        train_limit: keep only the first ``train_limit`` training samples (the files' order).
        test_limit: keep only the first ``test_limit`` test samples.

    Raises:
        DatasetNotFoundError: files are missing (the message lists them and how to install
            them) or corrupt.
        ConfigurationError: a limit is not a positive integer.
    """
    _check_limit("train_limit", train_limit)
    _check_limit("test_limit", test_limit)
    folder = Path(root) if root is not None else default_fashion_mnist_root()
    paths = _find_fashion_files(folder)
    train_images, train_labels = (paths[stem] for stem in FASHION_MNIST_FILES["train"])
    test_images, test_labels = (paths[stem] for stem in FASHION_MNIST_FILES["test"])
    x_train, y_train = _load_fashion_split(train_images, train_labels, train_limit)
    x_test, y_test = _load_fashion_split(test_images, test_labels, test_limit)
    return Dataset("fashion-mnist", x_train, y_train, x_test, y_test, 10, (1, 28, 28))


#: Dataset name -> loader; used by :func:`load_dataset`, the CLI and config files.
DATASET_LOADERS: Mapping[str, Callable[..., Dataset]] = MappingProxyType(
    {"digits": load_digits, "fashion-mnist": load_fashion_mnist}
)


def load_dataset(name: str, **kwargs: Any) -> Dataset:
    """Load a dataset by registered name (``"digits"`` or ``"fashion-mnist"``).

    Names are case-insensitive and ``_`` is read as ``-``.

    Args:
        name: the registered name.
        **kwargs: keyword arguments of the loader (see :data:`DATASET_LOADERS`).

    Raises:
        ConfigurationError: unknown name (with a did-you-mean) or unknown keyword arguments.
        DatasetNotFoundError: the dataset's files are not on this machine.
    """
    key = str(name).strip().lower().replace("_", "-")
    loader = DATASET_LOADERS.get(key)
    if loader is None:
        known = ", ".join(sorted(DATASET_LOADERS))
        close = difflib.get_close_matches(key, list(DATASET_LOADERS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigurationError(f"unknown dataset {name!r}; expected one of {known}{hint}")
    signature = inspect.signature(loader)
    try:
        signature.bind(**kwargs)
    except TypeError as error:
        raise ConfigurationError(
            f"dataset {key!r} does not accept {sorted(kwargs)}: {error}; "
            f"its options are {list(signature.parameters)}"
        ) from None
    return loader(**kwargs)
