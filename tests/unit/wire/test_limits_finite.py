"""check_all_finite: the fast summed check and its exact fallback agree with np.isfinite."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scatterbrained.errors import WireError
from scatterbrained.wire.limits import check_all_finite

FLOAT_DTYPES = ("<f2", "<f4", "<f8")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_large_finite_values_whose_sum_overflows_pass(dtype: str) -> None:
    # Prepare: finite values whose plain sum overflows to inf in the array's dtype
    big = np.finfo(np.dtype(dtype)).max
    array = np.full(1000, big, dtype=dtype)

    # Execute / Assert: the exact fallback accepts them
    check_all_finite(array, "w")


@pytest.mark.timeout(10)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_non_finite_element_among_huge_values_is_caught(dtype: str, bad: float) -> None:
    # Prepare: an overflowing sum (so the fallback runs) plus one bad element
    big = np.finfo(np.dtype(dtype)).max
    array = np.full(1000, big, dtype=dtype)
    array[500] = bad

    # Execute / Assert
    with pytest.raises(WireError) as caught:
        check_all_finite(array, "w")
    assert caught.value.reason == "non_finite"


@pytest.mark.timeout(10)
def test_opposite_infinities_are_caught() -> None:
    # Prepare: +inf and -inf, whose sum is NaN
    array = np.array([np.inf, -np.inf, 1.0], dtype=np.float32)

    # Execute / Assert
    with pytest.raises(WireError):
        check_all_finite(array, "w")


@pytest.mark.timeout(10)
def test_integer_and_empty_arrays_pass() -> None:
    # Prepare / Execute / Assert: nothing to check, nothing raised
    check_all_finite(np.arange(10, dtype=np.int64), "i")
    check_all_finite(np.zeros((0, 3), dtype=np.float32), "e")


@pytest.mark.timeout(60)
@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(FLOAT_DTYPES),
        shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=8),
        elements={"allow_nan": True, "allow_infinity": True},
    )
)
def test_agrees_with_isfinite(array: np.ndarray) -> None:
    # Prepare
    expected_ok = bool(np.isfinite(array).all())

    # Execute
    try:
        check_all_finite(array, "w")
        ok = True
    except WireError:
        ok = False

    # Assert
    assert ok == expected_ok
