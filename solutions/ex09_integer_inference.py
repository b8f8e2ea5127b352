"""Solutions for notebook 09_integer_inference."""

import math

import torch


def fixed_point_multiplier(m):
    """Exercise 1: M = M0 · 2^-n with M0 in [0.5, 1); m0 = round(M0 · 2^31), carrying 2^31 back to 2^30."""
    mantissa, exponent = math.frexp(m)  # m = mantissa · 2^exponent, mantissa in [0.5, 1)
    m0, n = round(mantissa * 2**31), -exponent
    if m0 == 2**31:
        m0, n = 2**30, n - 1
    return m0, n


def int32_bias(bias, x_scale, w_scale):
    """Exercise 2: q_b = round(b / (S_x · S_w)) per output channel, as int32."""
    return torch.round(bias.double() / (w_scale.double() * x_scale)).to(torch.int32)
