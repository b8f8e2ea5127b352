"""How much a quantizer hurts: squared error, SQNR, and the rounding-vs-clamping trade-off.

Taught in: 04_quantization_math.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from .affine import _check_no_nan, _check_tensor, _fake_quantize, _fake_quantize_per_channel, calc_qparams, qrange
from .observers import make_observer

__all__ = ["quant_mse", "sqnr_db", "quantize_tensor", "range_tradeoff"]


def _check_pair(x: Any, x_q: Any, fn: str) -> None:
    """Both tensors, same shape (no broadcasting), non-empty."""
    _check_tensor(x, "x")
    _check_tensor(x_q, "x_q")
    if x.shape != x_q.shape:
        raise ValueError(f"{fn}: x and x_q must have the same shape, got {tuple(x.shape)} and {tuple(x_q.shape)} "
                         "(they would broadcast to a different tensor); reshape one to the other")
    if x.numel() == 0:
        raise ValueError(f"{fn} got empty tensors (shape {tuple(x.shape)}): there is no error to measure")


def quant_mse(x: Tensor, x_q: Tensor) -> float:
    """Mean squared quantization error ``mean((x − x̂)²)``. Checked: same shape, non-empty."""
    _check_pair(x, x_q, "quant_mse")
    return float((x.double() - x_q.double()).pow(2).mean())


def sqnr_db(x: Tensor, x_q: Tensor) -> float:
    """Signal-to-quantization-noise ratio ``10 · log10(Σx² / Σ(x − x̂)²)`` in dB (inf if exact).

    Each extra bit halves the step, quartering the noise power: ≈ 6.02 dB per bit.
    Checked: same shape, non-empty.
    """
    _check_pair(x, x_q, "sqnr_db")
    noise = (x.double() - x_q.double()).pow(2).sum()
    return math.inf if noise == 0 else float(10 * torch.log10(x.double().pow(2).sum() / noise))


def quantize_tensor(x: Tensor, num_bits: int = 8, symmetric: bool = True, signed: bool | None = None,
                    ch_axis: int | None = None, observer: str = "minmax") -> tuple[Tensor, Tensor, Tensor]:
    """Fake-quantize one tensor with a fresh observer: returns ``(x̂, scale, zero_point)``.

    ``ch_axis=None`` is per-tensor (scale shape ()), an int per-channel (scale (C,)).
    ``signed`` defaults to ``symmetric``. Checked: ``x`` a non-empty tensor without
    NaN or inf, ``num_bits`` in 2..16, ``ch_axis`` None or a dimension of ``x``.
    """
    _check_tensor(x)
    if x.numel() == 0:
        raise ValueError(f"quantize_tensor got an empty tensor (shape {tuple(x.shape)}): there is no range to quantize")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"quantize_tensor needs a real-valued tensor, got dtype {x.dtype}")
    bad = ~torch.isfinite(x.detach())
    if bool(bad.any()):
        raise ValueError(f"quantize_tensor got {int(bad.sum())} NaN or infinite values of {x.numel()} (first: "
                         f"{x.detach()[bad].flatten()[0].item()}); a range needs finite values -- find where they come from")
    if ch_axis is not None and (isinstance(ch_axis, bool) or not isinstance(ch_axis, numbers.Integral)
                                or not -x.ndim <= ch_axis < x.ndim):
        raise ValueError(f"ch_axis={ch_axis!r} is not a dimension of x (shape {tuple(x.shape)}); use None for per-tensor "
                         "or 0 for the output channels of a weight")
    obs = make_observer(observer, num_bits=num_bits, symmetric=symmetric, signed=signed, ch_axis=ch_axis)
    obs(x)
    scale, zp = obs.calculate_qparams()
    if ch_axis is None:
        return _fake_quantize(x, scale, zp, obs.q_min, obs.q_max), scale, zp
    return _fake_quantize_per_channel(x, scale, zp, int(ch_axis) % x.ndim, obs.q_min, obs.q_max), scale, zp


def range_tradeoff(x: Tensor, num_bits: int, tops: Iterable[float]) -> tuple[list[float], list[float]]:
    """Rounding vs clamping error of unsigned quantization of ``x >= 0`` over the range ``[0, c]``, per ``c``.

    For each top ``c``: ``S, Z = calc_qparams(0, c)``; the squared error ``(x − x̂)²``
    is split into values inside the range (rounding error) and above it (clamping
    error), each summed and divided by ``x.numel()`` (so the two add up to the MSE).
    Checked: ``x`` a non-empty tensor without NaN and without negative values, ``num_bits``
    in 2..16, every top a finite number > 0.
    """
    _check_tensor(x)
    _, q_max = qrange(num_bits, signed=False)
    if x.numel() == 0:
        raise ValueError("range_tradeoff got an empty tensor: there is no error to measure")
    _check_no_nan(x, "x")
    if bool((x < 0).any()):
        raise ValueError(f"range_tradeoff is for x >= 0 (e.g. ReLU outputs) but x has {int((x < 0).sum())} negative "
                         f"values (min {float(x.min())}); pass x.abs() or x.clamp(min=0)")
    tops = list(tops)
    for c in tops:
        try:
            top = float(c)
        except (TypeError, ValueError, RuntimeError):
            top = math.nan
        if isinstance(c, (bool, str)) or not math.isfinite(top) or top <= 0:
            raise ValueError(f"range_tradeoff: every top must be a finite number > 0 (the range is [0, top]), got {c!r}")
    rounding, clamping = [], []
    for c in tops:
        scale, zp = calc_qparams(0.0, float(c), num_bits)
        err = (x - _fake_quantize(x, scale, zp, 0, q_max)).pow(2)
        inside = x <= float(scale) * (q_max - int(zp))
        rounding.append(float(err[inside].sum()) / x.numel())
        clamping.append(float(err[~inside].sum()) / x.numel())
    return rounding, clamping
