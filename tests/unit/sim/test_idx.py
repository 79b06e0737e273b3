"""Tests of scatterbrained.sim.idx: the strict IDX reader."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scatterbrained.errors import DatasetNotFoundError
from scatterbrained.sim.idx import IDX_MAX_BYTES, read_idx


def _idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=1, max_size=4),
    gz=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_round_trip_any_shape(tmp_path_factory: pytest.TempPathFactory, shape: list[int],
                              gz: bool, seed: int) -> None:  # fmt: skip
    # Prepare
    array = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    data = _idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    # Execute
    loaded = read_idx(path)
    # Assert
    assert loaded.dtype == np.uint8 and loaded.shape == tuple(shape)
    np.testing.assert_array_equal(loaded, array)


def test_limit_reads_only_leading_records(tmp_path: Path) -> None:
    # Prepare
    array = np.arange(60, dtype=np.uint8).reshape(10, 3, 2)
    path = tmp_path / "x.idx"
    path.write_bytes(_idx_bytes(array) + b"junk after the records is ignored with a limit")
    # Execute
    head = read_idx(path, limit=4)
    beyond = read_idx(path, limit=50)
    # Assert
    np.testing.assert_array_equal(head, array[:4])
    np.testing.assert_array_equal(beyond, array)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "magic number: expected 4 bytes"),
        (b"\x00\x00\x0b\x01" + b"\x00" * 8, "magic number 00000b01"),
        (b"\x00\x00\x08\x05" + b"\x00" * 20, "magic number"),
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "magic number"),
        (b"\x00\x00\x08\x02\x00\x00\x00\x02", "dimensions: expected 8 bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x01\x02", "the file ends after 2"),
        (b"\x00\x00\x08\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", "byte limit"),
    ],
)
def test_bad_files_raise_with_path_and_hint(tmp_path: Path, content: bytes, message: str) -> None:
    # Prepare
    path = tmp_path / "bad.idx"
    path.write_bytes(content)
    # Execute
    with pytest.raises(DatasetNotFoundError, match=message) as caught:
        read_idx(path, fix_hint="fetch it again")
    # Assert
    assert str(path) in str(caught.value) and "fetch it again" in str(caught.value)


def test_missing_and_non_gzip_files(tmp_path: Path) -> None:
    # Prepare
    fake_gz = tmp_path / "x.gz"
    fake_gz.write_bytes(b"plain bytes")
    # Execute / Assert
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        read_idx(tmp_path / "absent.idx")
    with pytest.raises(DatasetNotFoundError, match="cannot be read"):
        read_idx(fake_gz)
    assert IDX_MAX_BYTES >= 60_000 * 28 * 28
