"""The affine map of quantization and fake quantization with the straight-through estimator.

Taught in: 04_quantization_math.

Jacob et al. 2018 ("Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference"), eq. 1:

    r = S · (q − Z)          real value r, integer q, scale S > 0, zero point Z

* :func:`qrange` -- the integer grid ``[q_min, q_max]`` of a bit width;
* :func:`calc_qparams` -- ``(S, Z)`` from a range ``[x_min, x_max]``;
* :func:`quantize` / :func:`dequantize` -- the two directions of the map;
* :func:`fake_quantize` / :func:`fake_quantize_per_channel` -- quantize then
  dequantize in float, with the STE as backward; bit-exact against
  ``torch.fake_quantize_per_tensor_affine`` / ``..._per_channel_affine``.

Arguments are checked once, here, by the public functions: a scale must be
finite and > 0, a zero point an integer inside ``[q_min, q_max]``, ``q_min <
q_max`` integers, and the tensor free of NaN.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor

__all__ = ["qrange", "calc_qparams", "quantize", "dequantize", "fake_quantize", "fake_quantize_per_channel"]

_EPS = torch.finfo(torch.float32).eps  # smallest scale, as torch's observers use


def qrange(num_bits: int, signed: bool) -> tuple[int, int]:
    """The integer range of a ``num_bits`` integer.

    signed: ``[-2^(b-1), 2^(b-1) - 1]`` (int8: -128..127);
    unsigned: ``[0, 2^b - 1]`` (uint8: 0..255).
    """
    if isinstance(num_bits, bool) or not isinstance(num_bits, numbers.Integral) or not 2 <= num_bits <= 16:
        raise ValueError(f"num_bits must be an integer in 2..16 (8 for int8, 4 for int4), got {num_bits!r}")
    num_bits = int(num_bits)
    if signed:
        return -(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1
    return 0, 2**num_bits - 1


def calc_qparams(
    x_min: Tensor | float, x_max: Tensor | float, num_bits: int = 8, symmetric: bool = False, signed: bool = False
) -> tuple[Tensor, Tensor]:
    """Scale and zero point for the range ``[x_min, x_max]`` (scalars or per-channel vectors).

    The range is first widened to contain 0, so that real 0 (zero padding, ReLU
    zeros) maps to the integer ``Z`` exactly and dequantizes to exactly 0.

    * asymmetric: ``S = (x_max - x_min) / (q_max - q_min)``, ``Z = q_min - round(x_min / S)``;
    * symmetric: ``Z`` is fixed at the middle of the integer range (0 signed,
      2^(b-1) unsigned) and ``S = max(|x_min|, |x_max|) / (q_max - Z)``.

    Rounding ``Z`` shifts the grid by up to half a step, so ``S`` is then
    widened just enough that ``S (q_min - Z) <= x_min`` and ``S (q_max - Z) >= x_max``:
    the whole range is covered (torch's observers skip this last step and let
    one end clip by up to S/2). Returns ``(scale float32, zero_point int32)``,
    both shaped like the inputs. Checked: ``num_bits`` in 2..16, a finite range whose
    end levels stay finite in float32, ``x_min <= x_max`` element-wise (swapped
    arguments would collapse the range to [0, 0]), same shapes (else ValueError).
    """
    try:
        lo, hi = torch.as_tensor(x_min, dtype=torch.float32), torch.as_tensor(x_max, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"calc_qparams needs numbers or tensors for x_min and x_max, got {x_min!r}, {x_max!r}") from err
    if lo.shape != hi.shape and lo.numel() != 1 and hi.numel() != 1:
        raise ValueError(f"calc_qparams: x_min and x_max must have the same shape (one pair per channel), got "
                         f"{tuple(lo.shape)} and {tuple(hi.shape)}")
    swapped = lo > hi
    if bool(swapped.any()):
        raise ValueError(f"calc_qparams got x_min > x_max ({float(lo.broadcast_to(swapped.shape)[swapped].flatten()[0])} > "
                         f"{float(hi.broadcast_to(swapped.shape)[swapped].flatten()[0])}); the arguments are "
                         "calc_qparams(x_min, x_max, ...) -- are they swapped?")
    return _calc_qparams(x_min, x_max, num_bits, symmetric, signed)


def _calc_qparams(
    x_min: Tensor | float, x_max: Tensor | float, num_bits: int = 8, symmetric: bool = False, signed: bool = False
) -> tuple[Tensor, Tensor]:
    """:func:`calc_qparams` without the ``x_min <= x_max`` check (observers always have min <= max)."""
    q_min, q_max = qrange(num_bits, signed)
    lo = torch.clamp(torch.as_tensor(x_min, dtype=torch.float32), max=0.0)
    hi = torch.clamp(torch.as_tensor(x_max, dtype=torch.float32), min=0.0)
    if torch.isnan(lo).any() or torch.isnan(hi).any() or torch.isinf(lo).any() or torch.isinf(hi).any():
        raise ValueError("calc_qparams got a NaN or infinite range; check the observed tensor for NaN/inf")
    if symmetric:
        zp = torch.full_like(lo, (q_min + q_max + 1) // 2).to(torch.int64)
        scale = torch.maximum(-lo / (zp - q_min), hi / (q_max - zp))
    else:
        scale0 = torch.clamp((hi - lo) / (q_max - q_min), min=_EPS)
        zp = q_min + torch.round(-lo / scale0).to(torch.int64)
        # keep at least one level on each side that has a non-zero range
        zp = torch.where(lo < 0, torch.clamp(zp, min=q_min + 1), zp)
        zp = torch.where(hi > 0, torch.clamp(zp, max=q_max - 1), zp)
        up = torch.where(zp < q_max, hi / (q_max - zp).clamp(min=1), torch.zeros_like(hi))
        down = torch.where(zp > q_min, -lo / (zp - q_min).clamp(min=1), torch.zeros_like(lo))
        scale = torch.maximum(up, down)
    scale = torch.clamp(scale, min=_EPS).to(torch.float32)
    # float rounding can leave an end a hair outside; nudge the scale up one ulp until covered
    for _ in range(4):
        short = (scale * (q_max - zp) < hi) | (scale * (q_min - zp) > lo)
        if not short.any():
            break
        scale = torch.where(short, torch.nextafter(scale, torch.full_like(scale, math.inf)), scale)
    if not bool(torch.isfinite(scale * (q_max - zp)).all() & torch.isfinite(scale * (q_min - zp)).all()):
        raise ValueError(f"calc_qparams: the range [{float(lo.min())}, {float(hi.max())}] is too wide for float32: its end "
                         "levels S·(q − Z) overflow to inf; ranges this close to float32's limit (3.4e38) mean the "
                         "observed tensor is broken")
    return scale, zp.to(torch.int32)


def _is_real(value: Any) -> bool:
    """A real number (numpy scalars too), not a bool."""
    return not isinstance(value, bool) and isinstance(value, numbers.Real)


def _check_tensor(x: Any, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")


def _check_no_nan(x: Tensor, what: str) -> None:
    if x.is_floating_point() and bool(torch.isnan(x).any()):
        raise ValueError(f"{what} holds {int(torch.isnan(x).sum())} NaN values of {x.numel()}: NaN has no integer "
                         "level; find where it comes from (a diverged model, a bad input) before quantizing")


def _check_range(q_min: Any, q_max: Any) -> None:
    for name, q in (("q_min", q_min), ("q_max", q_max)):
        if isinstance(q, bool) or not isinstance(q, numbers.Integral):
            raise ValueError(f"{name} must be an integer, got {q!r}; take both from qrange(num_bits, signed)")
    if q_min >= q_max:
        raise ValueError(f"need q_min < q_max, got {q_min}, {q_max}; take both from qrange(num_bits, signed)")
    if q_min < -(2**31) or q_max > 2**31 - 1:
        raise ValueError(f"q_min, q_max = {q_min}, {q_max} reach beyond int32, the integers the course quantizes to "
                         "(at most 32 bits); take both from qrange(num_bits, signed) with num_bits <= 32")


def _check_qparams(scale: Any, zero_point: Any, q_min: int | None = None, q_max: int | None = None) -> None:
    """Scale finite and > 0 everywhere; zero point integer-valued (and inside [q_min, q_max] when given)."""
    try:
        s = torch.as_tensor(scale).detach()
        z = torch.as_tensor(zero_point).detach()
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"scale and zero_point must be numbers or tensors, got {scale!r}, {zero_point!r}") from err
    if s.is_complex() or s.dtype == torch.bool or s.numel() == 0:
        raise ValueError(f"scale must be real numbers > 0, got {scale!r}")
    s32 = s.to(torch.float32)  # the arithmetic runs in float32 and multiplies by 1 / S
    bad = ~(torch.isfinite(s.double()) & (s.double() > 0))
    if bool(bad.any()):
        value = s.double()[bad].flatten()[0].item()
        raise ValueError(f"scale must be finite and > 0 (S = range / (q_max - q_min), e.g. calc_qparams(x.min(), x.max())); "
                         f"got {value!r}" + ("" if s.numel() == 1 else f" in {int(bad.sum())} of {s.numel()} channels"))
    tiny = ~(torch.isfinite(s32) & torch.isfinite(1.0 / s32) & (s32 > 0))
    if bool(tiny.any()):
        value = s.double()[tiny].flatten()[0].item()
        raise ValueError(f"scale must be > 0 and finite in float32, and so must 1 / scale (use {float(1 / torch.finfo(torch.float32).max):.3g} "
                         f"<= scale <= {float(torch.finfo(torch.float32).max):.3g}; calc_qparams never goes below {_EPS:.3g}); "
                         f"got {value!r}")
    if z.is_complex() or z.dtype == torch.bool or z.numel() == 0:
        raise ValueError(f"zero_point must be integers, got {zero_point!r}")
    zd = z.double()
    bad = ~(torch.isfinite(zd) & (zd == zd.round()))
    if q_min is not None and q_max is not None:
        bad |= ~((zd >= q_min) & (zd <= q_max))
    if bool(bad.any()):
        value = zd[bad].flatten()[0].item()
        span = f"an integer in {q_min}..{q_max}" if q_min is not None else "an integer"
        raise ValueError(f"zero_point must be {span} (the integer that real 0 maps to); got {value!r}")


def _reciprocal(scale: Tensor | float) -> Tensor:
    """``1 / S`` in float32 -- torch multiplies by it (it does not divide), and so do we."""
    return 1.0 / torch.as_tensor(scale, dtype=torch.float32)


def quantize(x: Tensor, scale: Tensor | float, zero_point: Tensor | int, q_min: int, q_max: int) -> Tensor:
    """``q = clamp(round(x / S) + Z, q_min, q_max)`` as int32 (round half to even).

    ``scale``/``zero_point`` broadcast against ``x`` (a scalar, or shaped for
    per-channel use). Shapes: x (...) -> q (...). Checked: ``q_min < q_max``, scale
    finite and > 0, zero point an integer in ``[q_min, q_max]``, no NaN in ``x``.
    """
    _check_tensor(x)
    _check_range(q_min, q_max)
    _check_qparams(scale, zero_point, q_min, q_max)
    _check_no_nan(x, "the tensor to quantize")
    zp = torch.as_tensor(zero_point, device=x.device)
    q = torch.round(x * _reciprocal(scale).to(x.device)) + zp
    # Clamp again in int64: float32 cannot hold 2^31 - 1 and would round it up to 2^31, which wraps in int32.
    return torch.clamp(q, q_min, q_max).to(torch.int64).clamp(q_min, q_max).to(torch.int32)


def dequantize(q: Tensor, scale: Tensor | float, zero_point: Tensor | int) -> Tensor:
    """``r = S · (q − Z)`` in float32. Shapes: q (...) -> r (...). Checked: scale finite and > 0, zero point an integer."""
    _check_tensor(q, "q")
    _check_qparams(scale, zero_point)
    zp = torch.as_tensor(zero_point, device=q.device)
    # Integers in int64: uint8 - 128 must not wrap around before the zero point is subtracted.
    wide = q if q.is_floating_point() else q.to(torch.int64)
    return (wide - zp.to(wide.dtype)).to(torch.float32) * torch.as_tensor(scale, dtype=torch.float32, device=q.device)


class _FakeQuantizeSTE(torch.autograd.Function):
    """Quantize-dequantize with a straight-through gradient.

    forward:  ``y = S · (clamp(round(x / S) + Z, q_min, q_max) − Z)``
    backward: ``dL/dx = dL/dy · 1[q_min <= round(x / S) + Z <= q_max]``

    ``round`` has zero derivative almost everywhere, which would stop all
    learning; the STE (Bengio et al. 2013) pretends it is the identity inside
    the range, and passes no gradient where the clamp is active.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: Tensor, zero_point: Tensor, q_min: int, q_max: int,
                in_float32: bool = True) -> Tensor:
        # torch computes x * (1/S), the rounding and S * (q - Z) in float32 for float16, bfloat16
        # (and, per tensor, float64) inputs, then casts back; so do we, or half precision rounds
        # some values to the wrong level. Integer inputs give float32, as before.
        cast = in_float32 and x.is_floating_point() and x.dtype != torch.float32
        q = torch.round((x.to(torch.float32) if cast else x) * _reciprocal(scale).to(x.device)) + zero_point
        inside = (q >= q_min) & (q <= q_max)
        ctx.save_for_backward(inside)
        y = (torch.clamp(q, q_min, q_max) - zero_point) * scale
        return y.to(x.dtype) if x.is_floating_point() else y

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:
        (inside,) = ctx.saved_tensors
        return grad_out * inside, None, None, None, None, None


def fake_quantize(x: Tensor, scale: Tensor | float, zero_point: Tensor | int, q_min: int, q_max: int) -> Tensor:
    """Per-tensor fake quantization with the STE (see :class:`_FakeQuantizeSTE`).

    Equal, forward and backward, to ``torch.fake_quantize_per_tensor_affine``.
    Shapes: x (...) -> (...), same dtype. Checked: one scale, finite and > 0; the
    zero point an integer in ``[q_min, q_max]``; no NaN in ``x`` (±inf saturate).
    """
    _check_tensor(x)
    _check_range(q_min, q_max)
    _check_qparams(scale, zero_point, q_min, q_max)
    if torch.as_tensor(scale).numel() != 1 or torch.as_tensor(zero_point).numel() != 1:
        raise ValueError(f"fake_quantize takes one scale and one zero point (per tensor), got "
                         f"{torch.as_tensor(scale).numel()} and {torch.as_tensor(zero_point).numel()}; "
                         "use fake_quantize_per_channel for one per channel")
    _check_no_nan(x, "the tensor to fake-quantize")
    return _fake_quantize(x, scale, zero_point, q_min, q_max)


def _fake_quantize(x: Tensor, scale: Tensor | float, zero_point: Tensor | int, q_min: int, q_max: int) -> Tensor:
    """:func:`fake_quantize` without the checks (for qparams from :func:`calc_qparams`)."""
    s = torch.as_tensor(scale, dtype=torch.float32, device=x.device).reshape(())
    z = torch.as_tensor(zero_point, device=x.device).reshape(()).to(torch.float32)
    return _FakeQuantizeSTE.apply(x, s, z, q_min, q_max)


def _along(v: Tensor, axis: int, ndim: int) -> Tensor:
    """Reshape a per-channel vector (C,) to broadcast along ``axis`` of an ``ndim`` tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


def fake_quantize_per_channel(
    x: Tensor, scale: Tensor, zero_point: Tensor, axis: int, q_min: int, q_max: int
) -> Tensor:
    """Per-channel fake quantization: channel ``c`` along ``axis`` uses ``(S_c, Z_c)``.

    Same formula and STE as :func:`fake_quantize`; equal to
    ``torch.fake_quantize_per_channel_affine``. Shapes: x (..., C at axis, ...),
    scale and zero_point (C,) -> like x. Checked as :func:`fake_quantize`, per channel,
    and ``-x.ndim <= axis < x.ndim``.
    """
    _check_tensor(x)
    _check_tensor(scale, "scale")
    _check_tensor(zero_point, "zero_point")
    _check_range(q_min, q_max)
    if x.ndim == 0:
        raise ValueError("fake_quantize_per_channel needs a tensor with a channel axis, got a 0-dim tensor; "
                         "use fake_quantize for a single value")
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -x.ndim <= axis < max(x.ndim, 1):
        raise ValueError(f"axis={axis!r} is not a dimension of x (shape {tuple(x.shape)}); channels are usually axis 0")
    axis = int(axis) % x.ndim
    if scale.numel() != x.shape[axis] or zero_point.numel() != x.shape[axis]:
        raise ValueError(f"need one scale and zero point per channel: x has {x.shape[axis]} along axis {axis}, "
                         f"got {scale.numel()} scales and {zero_point.numel()} zero points")
    _check_qparams(scale, zero_point, q_min, q_max)
    _check_no_nan(x, "the tensor to fake-quantize")
    return _fake_quantize_per_channel(x, scale, zero_point, axis, q_min, q_max)


def _fake_quantize_per_channel(x: Tensor, scale: Tensor, zero_point: Tensor, axis: int, q_min: int, q_max: int) -> Tensor:
    """:func:`fake_quantize_per_channel` without the checks (``axis`` already in ``0..ndim-1``)."""
    s = _along(scale.to(torch.float32, copy=False).to(x.device), axis, x.ndim)
    z = _along(zero_point.to(x.device).to(torch.float32), axis, x.ndim)
    # torch's per-channel kernel keeps float64 in float64 but computes half types in float32
    return _FakeQuantizeSTE.apply(x, s, z, q_min, q_max, x.dtype != torch.float64)
