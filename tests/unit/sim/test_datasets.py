"""Tests of scatterbrained.sim.datasets: Dataset, digits, Fashion-MNIST, custom arrays, registry."""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from scatterbrained.errors import ConfigurationError, DatasetNotFoundError, ScatterbrainedError
from scatterbrained.sim import datasets
from scatterbrained.sim.datasets import (
    FASHION_MNIST_ENV,
    Dataset,
    from_arrays,
    from_torch,
    load_dataset,
    load_digits,
    load_fashion_mnist,
)

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")
HAS_SYSTEM_FASHION = all(
    (SYSTEM_FASHION / f"{stem}.gz").is_file() or (SYSTEM_FASHION / stem).is_file()
    for pair in datasets.FASHION_MNIST_FILES.values()
    for stem in pair
)


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write_fake_fashion(root: Path, train: int = 30, test: int = 10, gz: bool = True) -> None:
    """Write four small, valid Fashion-MNIST-shaped IDX files with known contents."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("test", test)):
        images_stem, labels_stem = datasets.FASHION_MNIST_FILES[split]
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 0, 255
        labels = np.arange(count, dtype=np.uint8) % 10
        for stem, array in ((images_stem, images), (labels_stem, labels)):
            data = _idx_bytes(array)
            if gz:
                (root / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (root / stem).write_bytes(data)


# --------------------------------------------------------------------------- Dataset


def test_dataset_rejects_mismatched_labels() -> None:
    # Prepare
    x = np.zeros((4, 3), dtype=np.float32)
    y = np.array([0, 1, 2, 3], dtype=np.int64)
    # Execute / Assert
    with pytest.raises(ConfigurationError, match=r"labels must lie in \[0, 3\)"):
        Dataset("bad", x, y, x, y, num_classes=3, input_shape=(3,))
    with pytest.raises(ConfigurationError, match="float32"):
        Dataset("bad", x.astype(np.float64), y, x, y, num_classes=4, input_shape=(3,))
    with pytest.raises(ConfigurationError, match="expected inputs"):
        Dataset("bad", x, y, x, y, num_classes=4, input_shape=(4,))


def test_flattened_keeps_values_and_sets_input_shape() -> None:
    # Prepare
    x = np.arange(2 * 1 * 2 * 2, dtype=np.float32).reshape(2, 1, 2, 2)
    y = np.array([0, 1], dtype=np.int64)
    image = Dataset("img", x, y, x, y, num_classes=2, input_shape=(1, 2, 2))
    # Execute
    flat = image.flattened()
    # Assert
    assert flat.input_shape == (4,) and flat.input_dim == 4
    assert flat.x_train.shape == (2, 4)
    np.testing.assert_array_equal(flat.x_train.ravel(), x.ravel())


# --------------------------------------------------------------------------- digits


@pytest.mark.timeout(20)
def test_load_digits_shapes_range_and_stratified_split() -> None:
    # Execute
    digits = load_digits(test_fraction=0.25, seed=0)
    # Assert
    assert digits.name == "digits" and digits.num_classes == 10 and digits.input_shape == (64,)
    assert digits.x_train.dtype == np.float32 and digits.y_train.dtype == np.int64
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert digits.x_train.min() >= 0.0 and digits.x_train.max() == pytest.approx(1.0)
    train_share = np.bincount(digits.y_train, minlength=10) / len(digits.y_train)
    test_share = np.bincount(digits.y_test, minlength=10) / len(digits.y_test)
    np.testing.assert_allclose(train_share, test_share, atol=0.01)
    assert len(digits.x_test) == pytest.approx(0.25 * 1797, abs=10)


@pytest.mark.timeout(20)
def test_load_digits_is_deterministic_per_seed() -> None:
    # Execute
    first, again, other = load_digits(seed=3), load_digits(seed=3), load_digits(seed=4)
    # Assert
    np.testing.assert_array_equal(first.x_train, again.x_train)
    np.testing.assert_array_equal(first.y_test, again.y_test)
    assert not np.array_equal(first.y_train, other.y_train)


def test_load_digits_rejects_bad_fraction() -> None:
    with pytest.raises(ConfigurationError, match=r"test_fraction must lie in \[0, 1\)"):
        load_digits(test_fraction=1.0)


# --------------------------------------------------------------------------- from_arrays


def test_from_arrays_splits_every_class_and_keeps_one_train_sample() -> None:
    # Prepare: class 2 has a single sample, which must stay in the training split
    x = np.arange(21, dtype=np.float64).reshape(21, 1)
    y = np.array([0] * 10 + [1] * 10 + [2])
    # Execute
    data = from_arrays(x, y, name="tiny", test_fraction=0.5, seed=1)
    # Assert
    assert data.x_train.dtype == np.float32 and data.num_classes == 3
    assert sorted(np.concatenate([data.x_train, data.x_test]).ravel()) == list(range(21))
    assert np.bincount(data.y_test, minlength=3).tolist() == [5, 5, 0]
    assert 2 in data.y_train


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((3, 2)), np.array([0, 1]), "expected inputs of shape"),
        (np.zeros((2, 2)), np.array([0.5, 1.0]), "labels must be integers"),
        (np.zeros((2, 2)), np.array([0, -1]), "non-negative"),
        (np.zeros((1, 2)), np.array([0]), "n >= 2"),
    ],
)
def test_from_arrays_rejects_bad_input(x: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        from_arrays(x, y)


# --------------------------------------------------------------------------- from_torch


class _PairDataset:
    """A map-style dataset like torch's, returning (tensor, int) pairs."""

    def __init__(self, items: Sequence[tuple[object, int]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[object, int]:
        return self.items[index]


@pytest.mark.timeout(30)
def test_from_torch_stacks_tensor_pairs() -> None:
    # Prepare
    torch = pytest.importorskip("torch")
    train = _PairDataset([(torch.full((1, 2, 2), float(i)), i % 3) for i in range(12)])
    test = _PairDataset([(torch.zeros(1, 2, 2), 1), (torch.ones(1, 2, 2), 2)])
    # Execute
    split = from_torch(train, name="t", test_fraction=0.25, seed=0)
    separate = from_torch(train, test)
    # Assert
    assert split.input_shape == (1, 2, 2) and split.num_classes == 3
    assert len(split.x_train) + len(split.x_test) == 12
    assert separate.x_test.shape == (2, 1, 2, 2) and separate.y_test.tolist() == [1, 2]
    assert separate.x_train.dtype == np.float32 and separate.y_train.dtype == np.int64


def test_from_torch_rejects_non_pairs_and_empty() -> None:
    with pytest.raises(ConfigurationError, match="pairs"):
        from_torch(_PairDataset([np.zeros(2)]))  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="empty"):
        from_torch(_PairDataset([]))


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_reads_small_idx_files(tmp_path: Path, gz: bool) -> None:
    # Prepare
    _write_fake_fashion(tmp_path, train=30, test=10, gz=gz)
    # Execute
    data = load_fashion_mnist(tmp_path)
    # Assert
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (10, 1, 28, 28)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.x_train[0, 0, 0, 0] == 0.0 and data.x_train[0, 0, 0, 1] == 1.0
    assert data.y_train.tolist() == [i % 10 for i in range(30)]


def test_load_fashion_mnist_limits_and_env_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    _write_fake_fashion(tmp_path, train=30, test=10)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(tmp_path))
    # Execute
    data = load_fashion_mnist(train_limit=7, test_limit=100)
    # Assert
    assert len(data.y_train) == 7 and len(data.y_test) == 10


def test_missing_fashion_mnist_says_what_and_how(tmp_path: Path) -> None:
    # Prepare
    empty = tmp_path / "nothing-here"
    # Execute
    with pytest.raises(DatasetNotFoundError) as caught:
        load_fashion_mnist(empty)
    # Assert
    message = str(caught.value)
    assert str(empty) in message
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        assert f"{stem}[.gz]" in message
    assert "sudo apt-get install dataset-fashion-mnist" in message
    assert f"{FASHION_MNIST_ENV}=DIR" in message
    assert isinstance(caught.value, FileNotFoundError)


def test_missing_single_file_names_only_that_file(tmp_path: Path) -> None:
    # Prepare
    _write_fake_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    # Execute / Assert
    with pytest.raises(DatasetNotFoundError, match=r"looked for t10k-labels-idx1-ubyte\[\.gz\] in"):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: b"\x00\x00\x0d\x03" + data[4:], "magic number"),
        (lambda data: data[:-100], "the file ends after"),
        (lambda data: data + b"\x00", "trailing bytes"),
        (lambda data: data[:6], "dimensions"),
    ],
)
def test_corrupt_fashion_mnist_raises_clear_error(
    tmp_path: Path, damage: object, message: str
) -> None:
    # Prepare
    _write_fake_fashion(tmp_path, gz=False)
    target = tmp_path / "train-images-idx3-ubyte"
    target.write_bytes(damage(target.read_bytes()))  # type: ignore[operator]
    # Execute
    with pytest.raises(DatasetNotFoundError, match=message) as caught:
        load_fashion_mnist(tmp_path)
    # Assert
    assert str(target) in str(caught.value)
    assert "--reinstall dataset-fashion-mnist" in str(caught.value)


def test_not_gzip_and_wrong_record_shape_are_reported(tmp_path: Path) -> None:
    # Prepare
    _write_fake_fashion(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"definitely not gzip")
    # Execute / Assert
    with pytest.raises(ScatterbrainedError, match="cannot be read"):
        load_fashion_mnist(tmp_path)
    # Prepare: 14x14 images instead of 28x28
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(_idx_bytes(np.zeros((10, 14, 14), dtype=np.uint8)))
    )
    with pytest.raises(DatasetNotFoundError, match="expected 28x28 images"):
        load_fashion_mnist(tmp_path)


def test_label_count_mismatch_is_reported(tmp_path: Path) -> None:
    # Prepare
    _write_fake_fashion(tmp_path, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(3, dtype=np.uint8)))
    # Execute / Assert
    with pytest.raises(DatasetNotFoundError, match="expected 10 labels"):
        load_fashion_mnist(tmp_path)


def test_fashion_limits_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="train_limit"):
        load_fashion_mnist(tmp_path, train_limit=0)


@pytest.mark.timeout(30)
@pytest.mark.skipif(not HAS_SYSTEM_FASHION, reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist_with_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a copy of the installed files, to also check that the folder argument is used
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    for source in SYSTEM_FASHION.iterdir():
        shutil.copy(source, tmp_path / source.name)
    # Execute
    data = load_fashion_mnist(train_limit=500, test_limit=200)
    copy = load_fashion_mnist(tmp_path, train_limit=500, test_limit=200)
    # Assert
    assert data.x_train.shape == (500, 1, 28, 28) and data.x_test.shape == (200, 1, 28, 28)
    assert data.x_train.min() == 0.0 and data.x_train.max() == 1.0
    assert set(np.unique(data.y_train).tolist()) == set(range(10))
    np.testing.assert_array_equal(data.x_train, copy.x_train)
    np.testing.assert_array_equal(data.y_test, copy.y_test)


# --------------------------------------------------------------------------- registry


def test_load_dataset_by_name_and_alias() -> None:
    # Execute
    digits = load_dataset("Digits", test_fraction=0.5, seed=2)
    # Assert
    assert digits.name == "digits" and len(digits.x_test) == pytest.approx(898, abs=10)
    assert set(datasets.DATASET_LOADERS) == {"digits", "fashion-mnist"}


def test_load_dataset_fashion_alias_reaches_the_loader(tmp_path: Path) -> None:
    # Prepare
    _write_fake_fashion(tmp_path)
    # Execute
    data = load_dataset("fashion_mnist", root=tmp_path, train_limit=5)
    # Assert
    assert data.name == "fashion-mnist" and len(data.y_train) == 5


def test_load_dataset_unknown_name_suggests() -> None:
    with pytest.raises(ConfigurationError, match=r"did you mean 'digits'\?"):
        load_dataset("digit")
    with pytest.raises(ConfigurationError, match="expected one of digits, fashion-mnist"):
        load_dataset("cifar10")


def test_load_dataset_rejects_unknown_options() -> None:
    with pytest.raises(ConfigurationError, match="does not accept"):
        load_dataset("digits", train_limit=5)


def test_registry_is_read_only() -> None:
    with pytest.raises(TypeError):
        datasets.DATASET_LOADERS["x"] = load_digits  # type: ignore[index]
