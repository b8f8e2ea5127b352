"""The integer path at its limits (issue: nothing silently wrong): every value right, or a clear refusal.

Each reproduction from the hostile-user pass is a test here, and hypothesis checks the arithmetic
against Python's exact integers (``fractions.Fraction``) across dtypes and extremes.
"""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from course_utils.quant import dequantize, quantize
from course_utils.quant.integer import fixed_point_multiplier, integer_conv2d, quantize_bias, requantize, rounding_shift

INT_DTYPES = {torch.uint8: (0, 255), torch.int8: (-128, 127), torch.int16: (-2**15, 2**15 - 1),
              torch.int32: (-2**31, 2**31 - 1), torch.int64: (-2**62, 2**62)}


def round_half_away(value: Fraction) -> int:
    magnitude = int(abs(value) + Fraction(1, 2))
    return -magnitude if value < 0 else magnitude


def test_dequantize_of_uint8_subtracts_the_zero_point_before_any_wrap():
    got = dequantize(torch.tensor([0, 255], dtype=torch.uint8), 0.1, 128)
    assert torch.allclose(got, torch.tensor([-12.8, 12.7]))


@given(st.sampled_from(list(INT_DTYPES)), st.data(), st.integers(-300, 300), st.floats(1e-4, 10.0))
def test_dequantize_is_exact_for_every_integer_dtype(dtype, data, zero_point, scale):
    lo, hi = INT_DTYPES[dtype]
    q = data.draw(st.lists(st.integers(lo, min(hi, 2**40)), min_size=1, max_size=8))
    got = dequantize(torch.tensor(q, dtype=dtype), scale, zero_point)
    want = torch.tensor([float(v - zero_point) for v in q], dtype=torch.float32) * torch.tensor(scale, dtype=torch.float32)
    assert torch.equal(got, want)


def test_requantize_with_a_tiny_multiplier_gives_zero():
    m0, n = fixed_point_multiplier(0.7 * 2**-34)
    assert requantize(torch.tensor([-(2**31) + 1, 2**31 - 1]), m0, n, 0, -128, 127).tolist() == [0, 0]


@given(st.lists(st.integers(-(2**31) + 1, 2**31 - 1), min_size=1, max_size=6), st.floats(2.0**-60, 2.0**29),
       st.integers(-128, 127))
def test_requantize_is_exact_rounding_for_any_multiplier(acc, m, zero_point):
    m0, n = fixed_point_multiplier(m)
    got = requantize(torch.tensor(acc, dtype=torch.int64), m0, n, zero_point, -2**31, 2**31 - 1).tolist()
    want = [max(-2**31, min(2**31 - 1, zero_point + round_half_away(Fraction(a * int(m0), 2 ** (31 + int(n))))))
            for a in acc]
    assert got == want


@given(st.lists(st.integers(-(2**62) + 1, 2**62 - 1), min_size=1, max_size=6), st.integers(1, 100))
def test_rounding_shift_matches_exact_rounding_for_any_shift(values, shift):
    got = rounding_shift(torch.tensor(values, dtype=torch.int64), shift).tolist()
    assert got == [round_half_away(Fraction(v, 2**shift)) for v in values]


@pytest.mark.parametrize("shift", [0, -1])
def test_rounding_shift_refuses_a_shift_below_one(shift):
    with pytest.raises(ValueError, match="shift >= 1"):
        rounding_shift(torch.tensor([5, -5]), shift)


def test_rounding_shift_refuses_values_beyond_the_int64_headroom():
    with pytest.raises(ValueError, match="2\\^62"):
        rounding_shift(torch.tensor([2**62]), 3)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_quantize_bias_refuses_non_finite(bad):
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantize_bias(torch.tensor([0.5, bad]), 0.1, torch.tensor([0.1, 0.1]))


def test_integer_conv2d_refuses_an_accumulator_that_would_wrap_and_is_exact_below():
    x = torch.full((1, 8192, 3, 3), 255, dtype=torch.uint8)
    w = torch.full((1, 8192, 3, 3), 127, dtype=torch.int8)
    with pytest.raises(ValueError, match="would wrap"):
        integer_conv2d(x, 0, w, None)
    small_x, small_w = x[:, :128], w[:, :128]  # 128 · 9 · 255 · 127 fits int32: computed exactly
    acc = integer_conv2d(small_x, 0, small_w, torch.tensor([7], dtype=torch.int32))
    assert acc.item() == 128 * 9 * 255 * 127 + 7


def test_quantize_refuses_a_q_range_beyond_int32():
    with pytest.raises(ValueError, match="beyond int32"):
        quantize(torch.tensor([1.0]), 1.0, 0, -(2**40), 2**40)
    assert quantize(torch.tensor([1e12, -1e12]), 1.0, 0, -(2**31), 2**31 - 1).tolist() == [2**31 - 1, -(2**31)]
