"""Integer-only arithmetic: what an int8 convolution really computes (Jacob et al. 2018, sec. 2).

Taught in: 09_integer_inference.

A quantized layer never touches a float at run time. With ``r = S (q − Z)`` for the input x,
the weight w (symmetric: Z_w = 0) and the output y, a convolution ``y = Σ w·x + b`` becomes

    q_y = Z_y + (S_w S_x / S_y) · (Σ q_w (q_x − Z_x) + q_b)          q_b = round(b / (S_w S_x))

* the sum is an **int32 accumulator** of int8 × uint8 products (:func:`integer_conv2d`);
* the bias is stored as int32 at scale ``S_w S_x`` so it adds straight onto it (:func:`quantize_bias`);
* the one real number left, ``M = S_w S_x / S_y``, is applied as a **fixed-point multiplier**
  ``M = M0 · 2⁻ⁿ`` with ``M0 ∈ [0.5, 1)`` stored as the int32 ``m0 = round(M0 · 2³¹)``
  (:func:`fixed_point_multiplier`), so ``acc · M = (acc · m0) >> (31 + n)``: one int64
  product and one rounding shift (:func:`requantize`);
* saturation clamps to the output's integer range, and a ReLU is the same clamp with its lower
  end raised to ``Z_y`` (real 0) -- fused for free.

Rounding: :func:`requantize` rounds ``acc · m0 / 2^(31+n)`` once, exactly, half away from zero.
gemmlowp and TFLite round twice (a rounding doubling high multiply, then a rounding shift), so
they can differ from it by one unit at exact ties. ONNX Runtime's x86 kernels requantize in
float32 instead, ``round_half_even(float32(acc) · M)``, so they agree with it except where
``acc · M`` lies within float32 error of a .5 tie: at most one unit, counted in the tests and in
notebook 09. (On an x86 CPU *without* VNNI, ONNX Runtime's u8 × s8 kernel adds pairs of products in
16 bits with saturation -- ``vpmaddubsw``, :func:`pairwise_int16_sums` -- which can change results further; the exact
comparisons here assume AVX-512 VNNI or AVX-VNNI.)

Integer addition (the detector's FPN adds two feature maps of different scales) follows TFLite:
both inputs are shifted left by 20 bits, rescaled to a common scale with fixed-point multipliers,
summed, and requantized to the output (:func:`integer_add`).

Every function here takes and returns integer tensors; the float scales only appear when a layer is
built (:meth:`IntegerConv.from_float`), never while it runs.
"""

from __future__ import annotations

import math

import numbers
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "fixed_point_multiplier",
    "rounding_shift",
    "requantize",
    "quantize_bias",
    "integer_conv2d",
    "integer_add",
    "pairwise_int16_sums",
    "IntegerConv",
    "IntegerAdd",
]

_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)
ADD_LEFT_SHIFT = 20  # TFLite's headroom for integer addition: inputs are 8-bit, so 20 more bits fit in int32


def _check_int_tensor(x: Any, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be an integer tensor, got {type(x).__name__}")
    if x.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must be an integer tensor (int8, uint8, int32, ...), got {x.dtype}: quantize it "
                        "first (course_utils.quant.quantize) -- integer kernels never see floats")


def fixed_point_multiplier(m: float | Tensor) -> tuple[Tensor, Tensor]:
    """``M = M0 · 2⁻ⁿ`` with ``M0 ∈ [0.5, 1)``, returned as ``(m0, n)`` where ``m0 = round(M0 · 2³¹)``.

    Derivation: ``frexp`` writes ``M = f · 2^e`` with ``f ∈ [0.5, 1)``; so ``n = −e`` and
    ``M0 = f``. Stored in 31 fractional bits, ``m0`` is an int32 in ``[2³⁰, 2³¹)``; if rounding
    carries ``m0`` up to ``2³¹`` it becomes ``2³⁰`` with ``n − 1``. Then
    ``M ≈ m0 · 2^−(31 + n)`` with relative error below ``2⁻³¹``.
    Shapes: ``m`` a scalar or a (C,) tensor (per output channel); ``m0`` and ``n`` int64 of the same
    shape. Checked: every ``M`` finite and > 0, and ``M < 2³⁰`` (else no int32 accumulator could use it).
    """
    try:
        m_t = torch.as_tensor(m, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"fixed_point_multiplier needs a number or a tensor of multipliers M > 0, got {m!r}") from None
    if not bool(torch.isfinite(m_t).all()) or bool((m_t <= 0).any()):
        raise ValueError(f"fixed_point_multiplier needs real multipliers M > 0 (M = S_w·S_x/S_y), got {m!r}")
    if bool((m_t >= 2.0**30).any()):
        raise ValueError(f"fixed_point_multiplier: M = {float(m_t.max())} is too large (>= 2^30); the scales are broken")
    mantissa, exponent = torch.frexp(m_t)
    m0 = torch.round(mantissa * 2.0**31).to(torch.int64)
    n = (-exponent).to(torch.int64)
    carry = m0 == 2**31
    m0 = torch.where(carry, m0 // 2, m0)
    n = torch.where(carry, n - 1, n)
    return m0, n


def rounding_shift(x: Tensor, shift: Tensor | int) -> Tensor:
    """``round(x / 2^shift)`` in integers, rounding half away from zero; ``shift >= 1``.

    ``(|x| + 2^(shift−1)) >> shift`` with the sign put back; a shift of 63 or more gives 0, since
    ``|x| < 2⁶²`` (an int32 accumulator times an int32 multiplier). Shapes broadcast. int64 out.
    Checked: ``x`` an integer tensor with ``|x| < 2⁶²``, every ``shift >= 1``.
    """
    _check_int_tensor(x, "x")
    x = x.to(torch.int64)
    shift = torch.as_tensor(shift, dtype=torch.int64, device=x.device)
    if bool((shift < 1).any()):
        raise ValueError(f"rounding_shift needs shift >= 1 (a division by 2^shift), got {int(shift.min())}; "
                         "for shift 0 use x itself, for a left shift multiply")
    if x.numel() and int(x.abs().max()) >= 2**62:
        raise ValueError(f"rounding_shift: |x| = {int(x.abs().max())} is beyond 2^62, the most an int32 accumulator "
                         "times an int32 multiplier reaches; the int64 arithmetic would overflow")
    wide = shift >= 63
    safe = torch.where(wide, torch.ones_like(shift), shift)
    half = torch.ones_like(safe) << (safe - 1)
    magnitude = torch.where(wide, torch.zeros_like(x), (x.abs() + half) >> safe)
    return torch.where(x < 0, -magnitude, magnitude)


def requantize(acc: Tensor, m0: Tensor, n: Tensor, zero_point: int, q_min: int, q_max: int,
               channel_axis: int = 1) -> Tensor:
    """``q = clamp(Z + round(acc · m0 / 2^(31 + n)), q_min, q_max)``: an int32 accumulator to the output grid.

    ``m0, n`` from :func:`fixed_point_multiplier` (scalars, or one per channel along
    ``channel_axis``). The product is exact in int64 (``|acc| < 2³¹``, ``m0 < 2³¹``); the
    rounding is half away from zero (:func:`rounding_shift`). Returns int64 (cast it to the
    output's int8/uint8). Shapes: acc (B, C, H, W) or any shape with C on ``channel_axis``.
    """
    _check_int_tensor(acc, "acc")
    m0, n = torch.as_tensor(m0, dtype=torch.int64), torch.as_tensor(n, dtype=torch.int64)
    if m0.ndim == 1:
        view = [1] * acc.ndim
        view[channel_axis] = -1
        m0, n = m0.reshape(view), n.reshape(view)
    shift = 31 + n
    if bool((shift < 1).any()):
        raise ValueError("requantize: 31 + n must be >= 1 (M < 2^30); use fixed_point_multiplier(M) for (m0, n)")
    scaled = rounding_shift(acc.to(torch.int64) * m0.to(acc.device), shift.to(acc.device))
    return torch.clamp(scaled + zero_point, q_min, q_max)


def quantize_bias(bias: Tensor, x_scale: float, w_scale: Tensor) -> Tensor:
    """The bias as an int32 at the accumulator's scale: ``q_b = round(b / (S_w · S_x))`` per output channel.

    Shapes: bias (C,), w_scale (C,) or a scalar. Rounding half to even (as ONNX Runtime's
    quantizer). Checked: the result fits int32.
    """
    if not isinstance(bias, Tensor):
        raise TypeError(f"quantize_bias: bias must be a tensor (C,), got {type(bias).__name__}; use torch.tensor(bias)")
    for name, scale in (("x_scale", x_scale), ("w_scale", w_scale)):
        try:
            values = torch.as_tensor(scale, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            values = torch.tensor([float("nan")])
        if not bool((torch.isfinite(values) & (values > 0)).all()):
            raise ValueError(f"quantize_bias: {name} must be finite and > 0 (a quantization step), got {scale!r}")
    if not bool(torch.isfinite(bias.double()).all()):
        raise ValueError(f"quantize_bias: the bias holds NaN or infinite values ({bias.flatten()[:4].tolist()} ...); "
                         "a trained layer's bias must be finite: find where it came from")
    scaled = torch.round(bias.double() / (torch.as_tensor(w_scale, dtype=torch.float64) * float(x_scale)))
    if not bool(torch.isfinite(scaled).all()) or bool((scaled.abs() > 2**31 - 1).any()):
        raise ValueError(f"quantize_bias: a bias of {float(bias.abs().max())} at scale S_w·S_x does not fit int32; "
                         "the input or weight scale is too small for this layer")
    return scaled.to(torch.int32)


def integer_conv2d(q_x: Tensor, x_zero_point: int, q_w: Tensor, q_bias: Tensor | None, stride: int = 1,
                   padding: int = 0) -> Tensor:
    """The int32 accumulator of a quantized convolution: ``acc = Σ q_w · (q_x − Z_x) + q_b``.

    Weights symmetric (``Z_w = 0``). Padding pads ``q_x − Z_x`` with 0, i.e. ``q_x`` with
    ``Z_x``: real zero, as the float model pads. Each product is int8 × (uint8 − Z) and the sum of
    ``C_in · k²`` of them fits int32 for every layer of the course (``255 · 128 · 9 · 256 < 2³¹``).
    Shapes: q_x (B, C_in, H, W) uint8/int8, q_w (C_out, C_in, k, k) int8, q_bias (C_out,) int32;
    returns (B, C_out, H', W') int32.
    """
    _check_int_tensor(q_x, "q_x")
    _check_int_tensor(q_w, "q_w")
    if q_x.ndim != 4 or q_w.ndim != 4 or q_x.shape[1] != q_w.shape[1]:
        raise ValueError(f"integer_conv2d: need q_x (B, C_in, H, W) and q_w (C_out, C_in, k, k) with the same C_in, got "
                         f"{tuple(q_x.shape)} and {tuple(q_w.shape)}")
    if q_bias is not None and (not isinstance(q_bias, Tensor) or q_bias.shape != (q_w.shape[0],)):
        shape = tuple(q_bias.shape) if isinstance(q_bias, Tensor) else type(q_bias).__name__
        raise ValueError(f"integer_conv2d: q_bias must be ({q_w.shape[0]},), one int32 per output channel, got {shape}")
    x = q_x.to(torch.int32) - int(x_zero_point)
    # The largest |acc| these inputs can give: Σ|q_w| of an output channel · max|q_x − Z_x| + |q_b|.
    worst = int(q_w.to(torch.int64).abs().flatten(1).sum(1).max()) * int(x.abs().max()) if x.numel() and q_w.numel() else 0
    worst += int(q_bias.to(torch.int64).abs().max()) if q_bias is not None and q_bias.numel() else 0
    if worst > 2**31 - 1:
        raise ValueError(f"integer_conv2d: the int32 accumulator could reach {worst} (> 2^31 - 1) with {q_w.shape[1]} input "
                         f"channels and {q_w.shape[2]}x{q_w.shape[3]} kernels at these values; it would wrap. Split the "
                         "input channels into groups and add the partial sums in int64")
    acc = F.conv2d(x, q_w.to(torch.int32), None, stride, padding)
    if q_bias is not None:
        _check_int_tensor(q_bias, "q_bias")
        acc = acc + q_bias.to(torch.int32).reshape(1, -1, 1, 1)
    return acc


def pairwise_int16_sums(q_x: Tensor, q_w: Tensor) -> tuple[Tensor, Tensor]:
    """What x86's ``vpmaddubsw`` computes on a CPU without VNNI: pairs of u8 × s8 products, summed in int16.

    ``q_x`` uint8 values in [0, 255] and ``q_w`` int8 values in [-128, 127], both (..., K) with K even::

        p_i = clamp(x_{2i} w_{2i} + x_{2i+1} w_{2i+1}, -32768, 32767)        (..., K/2)

    Returns ``(p, saturated)``: the int16-clamped sums as int32 and a bool mask of the pairs that were
    clamped. A pair can exceed int16 only when both products are large and of one sign (at most
    2 · 255 · 128 = 65,280, or 64,770 with symmetric weights in [-127, 127]); with weights in [-64, 64]
    (ONNX Runtime's ``reduce_range``) the largest is 2 · 255 · 64 = 32,640 and nothing saturates. VNNI's ``vpdpbusd`` sums four products straight into int32.
    """
    _check_int_tensor(q_x, "q_x")
    _check_int_tensor(q_w, "q_w")
    if q_x.shape != q_w.shape or q_x.ndim == 0 or q_x.shape[-1] % 2:
        raise ValueError(f"q_x and q_w must have one shape (..., K) with K even, got {tuple(q_x.shape)} and {tuple(q_w.shape)}")
    x, w = q_x.long(), q_w.long()
    if int(x.min()) < 0 or int(x.max()) > 255 or int(w.min()) < -128 or int(w.max()) > 127:
        raise ValueError("q_x must hold uint8 values (0..255) and q_w int8 values (-128..127), as the instruction takes them")
    pairs = (x * w).unflatten(-1, (-1, 2)).sum(-1)
    clamped = pairs.clamp(-32768, 32767)
    return clamped.int(), clamped != pairs


def integer_add(q_a: Tensor, q_b: Tensor, add: "IntegerAdd") -> Tensor:
    """``q_y = clamp(Z_y + round((S_a (q_a − Z_a) + S_b (q_b − Z_b)) / S_y))`` in integers (TFLite's scheme).

    With ``2S = 2 · max(S_a, S_b)``: each input is shifted left by 20 bits,
    ``â = ((q_a − Z_a) << 20) · (S_a / 2S)``, likewise ``b̂``, each multiplier applied as a
    fixed-point multiplier; the sum is requantized with ``M = 2S / (2²⁰ · S_y)``.
    Shapes: q_a and q_b the same shape; returns int64 of that shape.
    """
    _check_int_tensor(q_a, "q_a")
    _check_int_tensor(q_b, "q_b")
    if q_a.shape != q_b.shape:
        raise ValueError(f"integer_add: the two inputs must have the same shape, got {tuple(q_a.shape)} and {tuple(q_b.shape)}")
    a = requantize((q_a.to(torch.int64) - add.a_zero_point) << ADD_LEFT_SHIFT, *add.a_multiplier, 0, -2**62, 2**62)
    b = requantize((q_b.to(torch.int64) - add.b_zero_point) << ADD_LEFT_SHIFT, *add.b_multiplier, 0, -2**62, 2**62)
    return requantize(a + b, *add.y_multiplier, add.y_zero_point, add.q_min, add.q_max)


def _int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, Tensor)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    return int(value)


@dataclass
class IntegerConv:
    """One quantized Conv2d (+ optional fused ReLU), integers only at run time.

    ``weight`` (C_out, C_in, k, k) int8, ``bias`` (C_out,) int32 at scale ``S_w S_x``,
    ``m0, n`` (C_out,) the fixed-point form of ``M_c = S_w,c S_x / S_y``, and the output grid
    ``[q_min, q_max]`` (``q_min = Z_y`` when a ReLU is fused). The float scales are kept only to
    export the layer (ONNX) and to dequantize the network's outputs.
    """

    weight: Tensor
    bias: Tensor
    m0: Tensor
    n: Tensor
    x_zero_point: int
    y_zero_point: int
    q_min: int
    q_max: int
    stride: int
    padding: int
    x_scale: float
    w_scale: Tensor
    y_scale: float
    relu: bool

    @classmethod
    def from_float(cls, weight: Tensor, bias: Tensor | None, x_scale: float, x_zero_point: int, w_scale: Tensor,
                   y_scale: float, y_zero_point: int, relu: bool, stride: int = 1, padding: int = 0,
                   y_range: tuple[int, int] = (0, 255), w_range: tuple[int, int] = (-128, 127)) -> "IntegerConv":
        """Quantize a float conv with given scales: ``q_w = clamp(round(W / S_w))``, ``q_b`` = :func:`quantize_bias`,
        ``(m0, n)`` = :func:`fixed_point_multiplier` of ``S_w S_x / S_y``. Shapes: weight (C_out, C_in, k, k),
        w_scale (C_out,)."""
        w_scale = torch.as_tensor(w_scale, dtype=torch.float32).reshape(-1).expand(weight.shape[0]).clone()
        q_w = torch.clamp(torch.round(weight.detach().float() / w_scale.reshape(-1, 1, 1, 1)), *w_range).to(torch.int8)
        b = torch.zeros(weight.shape[0]) if bias is None else bias.detach().float()
        q_b = quantize_bias(b, float(x_scale), w_scale)
        m0, n = fixed_point_multiplier(w_scale.double() * float(x_scale) / float(y_scale))
        y_zp = _int(y_zero_point, "y_zero_point")
        q_min = max(y_range[0], y_zp) if relu else y_range[0]
        return cls(q_w, q_b, m0, n, _int(x_zero_point, "x_zero_point"), y_zp, q_min, y_range[1], int(stride),
                   int(padding), float(x_scale), w_scale, float(y_scale), bool(relu))

    def accumulate(self, q_x: Tensor) -> Tensor:
        """The int32 accumulator (:func:`integer_conv2d`)."""
        return integer_conv2d(q_x, self.x_zero_point, self.weight, self.bias, self.stride, self.padding)

    def __call__(self, q_x: Tensor) -> Tensor:
        """uint8 (B, C_in, H, W) -> output grid (B, C_out, H', W'), in the dtype of the output range."""
        out = requantize(self.accumulate(q_x), self.m0, self.n, self.y_zero_point, self.q_min, self.q_max)
        return out.to(torch.uint8 if self.q_min >= 0 else torch.int8)


@dataclass
class IntegerAdd:
    """Parameters of :func:`integer_add`: the inputs' and output's scales as fixed-point multipliers."""

    a_zero_point: int
    b_zero_point: int
    y_zero_point: int
    a_multiplier: tuple[Tensor, Tensor]
    b_multiplier: tuple[Tensor, Tensor]
    y_multiplier: tuple[Tensor, Tensor]
    q_min: int
    q_max: int
    a_scale: float
    b_scale: float
    y_scale: float

    @classmethod
    def from_scales(cls, a_scale: float, a_zero_point: int, b_scale: float, b_zero_point: int, y_scale: float,
                    y_zero_point: int, y_range: tuple[int, int] = (0, 255)) -> "IntegerAdd":
        """TFLite's multipliers: ``S_a / 2S``, ``S_b / 2S`` and ``2S / (2²⁰ S_y)`` with ``2S = 2 max(S_a, S_b)``.

        Every scale must be a finite number > 0 (``ValueError`` otherwise)."""
        for name, scale in (("a_scale", a_scale), ("b_scale", b_scale), ("y_scale", y_scale)):
            if isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not (math.isfinite(scale) and scale > 0):
                raise ValueError(f"IntegerAdd.from_scales: {name} must be a finite number > 0 (a quantization step, "
                                 f"e.g. 0.05), got {scale!r}")
        twice_max = 2 * max(float(a_scale), float(b_scale))
        return cls(_int(a_zero_point, "a_zero_point"), _int(b_zero_point, "b_zero_point"), _int(y_zero_point, "y_zero_point"),
                   fixed_point_multiplier(float(a_scale) / twice_max), fixed_point_multiplier(float(b_scale) / twice_max),
                   fixed_point_multiplier(twice_max / (2**ADD_LEFT_SHIFT * float(y_scale))), y_range[0], y_range[1],
                   float(a_scale), float(b_scale), float(y_scale))

    def __call__(self, q_a: Tensor, q_b: Tensor) -> Tensor:
        out = integer_add(q_a, q_b, self)
        return out.to(torch.uint8 if self.q_min >= 0 else torch.int8)

