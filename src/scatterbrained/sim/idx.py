"""A small, strict reader of IDX files (the MNIST / Fashion-MNIST container format).

An IDX file is a 4-byte magic number ``00 00 <dtype> <ndim>``, ``ndim`` big-endian ``uint32``
dimensions, then the data in C order. Only unsigned bytes (dtype ``0x08``) are supported, which
is what the (Fashion-)MNIST files hold. Files named ``*.gz`` are read through gzip.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import DatasetNotFoundError

__all__ = ["IDX_MAX_BYTES", "read_idx"]

#: Largest payload accepted, in bytes (guards against absurd dimensions in a damaged header).
IDX_MAX_BYTES = 1 << 31

_IDX_UBYTE = 0x08
_IDX_MAX_DIMS = 4
_DEFAULT_FIX = "replace it with a good copy"


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def read_idx(path: Path, *, limit: int | None = None, fix_hint: str = _DEFAULT_FIX) -> np.ndarray:
    """Read an unsigned-byte IDX file (optionally gzip-compressed) into a ``uint8`` array.

    Args:
        path: the file; a ``.gz`` suffix means gzip.
        limit: read only the first ``limit`` records (``None``: all of them, and then the file
            must end exactly after them).
        fix_hint: what the error message tells the user to do about a bad file.

    Returns:
        A read-only ``uint8`` array of shape ``(records, *dims)``.

    Raises:
        DatasetNotFoundError: the file is missing, is not gzip although named ``.gz``, is
            truncated or has trailing bytes, or its header (magic number, dtype, dimensions)
            is invalid. The message names the file, the problem and ``fix_hint``.
    """
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb") as stream:
            return _parse_idx(stream, path, limit, fix_hint)
    except DatasetNotFoundError:
        raise
    except FileNotFoundError as error:
        raise DatasetNotFoundError(f"{path} does not exist; {fix_hint}") from error
    except (OSError, EOFError, zlib.error) as error:
        raise _corrupt(path, f"cannot be read: {error}", fix_hint) from error


def _corrupt(path: Path, detail: str, fix_hint: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"{path} is not a valid IDX file ({detail}); {fix_hint}")


def _read_exact(stream: _Readable, size: int, path: Path, what: str, fix_hint: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        detail = f"{what}: expected {size} bytes, the file ends after {len(data)}"
        raise _corrupt(path, detail, fix_hint)
    return data


def _parse_idx(stream: _Readable, path: Path, limit: int | None, fix_hint: str) -> np.ndarray:
    magic = _read_exact(stream, 4, path, "magic number", fix_hint)
    if magic[:2] != b"\x00\x00" or magic[2] != _IDX_UBYTE or not 1 <= magic[3] <= _IDX_MAX_DIMS:
        detail = f"magic number {magic.hex()} is not 000008 0n (unsigned bytes, 1 to 4 dims)"
        raise _corrupt(path, detail, fix_hint)
    header = _read_exact(stream, 4 * magic[3], path, "dimensions", fix_hint)
    dims = [int(d) for d in np.frombuffer(header, dtype=">u4")]
    count = dims[0] if limit is None else min(limit, dims[0])
    record = math.prod(dims[1:])
    if count * record > IDX_MAX_BYTES:
        detail = f"dimensions {dims} exceed the {IDX_MAX_BYTES}-byte limit"
        raise _corrupt(path, detail, fix_hint)
    what = f"{count} records of {record} bytes"
    data = _read_exact(stream, count * record, path, what, fix_hint)
    if limit is None and stream.read(1):
        raise _corrupt(path, f"trailing bytes after {dims[0]} records of {record} bytes", fix_hint)
    return np.frombuffer(data, dtype=np.uint8).reshape(count, *dims[1:])
