"""Quantization from first principles: the affine map, fake quantization, observers, LSQ.

Taught in: 04_quantization_math (and 05_qat_and_int8 builds QAT on it).

Everything follows the affine scheme of Jacob et al. 2018 ("Quantization and
Training of Neural Networks for Efficient Integer-Arithmetic-Only Inference"):

    r = S · (q − Z)          real value r, integer q, scale S > 0, zero point Z

* :func:`quantize` / :func:`dequantize` -- the two directions of that map;
* :func:`fake_quantize` -- quantize then dequantize in float, with the
  straight-through estimator (STE) as its backward. Same numbers, forward and
  backward, as ``torch.fake_quantize_per_tensor_affine`` (tested bit-exactly);
  :func:`fake_quantize_per_channel` likewise equals
  ``torch.fake_quantize_per_channel_affine``;
* observers pick the range ``[x_min, x_max]`` that :func:`calc_qparams` turns
  into ``(S, Z)``: min-max, moving-average min-max, percentile, MSE-optimal;
* :func:`lsq_fake_quantize` -- learned step size quantization (Esser et al. 2020);
* :func:`quant_mse` and :func:`sqnr_db` -- how much a quantizer hurts;
* :func:`fuse_conv_bn` and :func:`quantize_model` -- the whole network under
  post-training fake quantization (weights per channel, activations per tensor).

``x % Q`` is *not* quantization (it wraps values around instead of rounding
them to a grid), and there is no "sub-gradient method" in QAT: the STE below is
the whole trick.

Arguments are checked once, by the public functions (:func:`quantize`,
:func:`dequantize`, :func:`fake_quantize`, :func:`fake_quantize_per_channel`,
:func:`quantize_tensor`, :func:`qrange`): a scale must be finite and > 0, a zero
point an integer inside ``[q_min, q_max]`` (as torch requires), ``q_min < q_max``
integers, and the tensor to quantize free of NaN (torch's fake quantization
silently maps NaN to the zero point; here it is an error). The modules call
the same arithmetic without re-checking what their observers produced.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from .train import Hook

__all__ = [
    "qrange",
    "calc_qparams",
    "quantize",
    "dequantize",
    "fake_quantize",
    "fake_quantize_per_channel",
    "Observer",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PercentileObserver",
    "MSEObserver",
    "OBSERVERS",
    "make_observer",
    "lsq_init_step",
    "lsq_fake_quantize",
    "LSQQuantizer",
    "quant_mse",
    "sqnr_db",
    "quantize_tensor",
    "range_tradeoff",
    "fold_bn",
    "fuse_conv_bn",
    "FakeQuantize",
    "QuantConv2d",
    "QuantLinear",
    "QuantConvBn2d",
    "conv_bn_pairs",
    "quantize_model",
    "prepare_qat",
    "freeze_bn_stats",
    "set_observing_activations",
    "to_float_folded",
    "QATSchedule",
    "calibrate",
    "set_observing",
    "post_training_quantize",
    "layer_sensitivity",
    "capture_activations",
]

_EPS = torch.finfo(torch.float32).eps  # smallest scale, as torch's observers use


# --------------------------------------------------------------------- the affine map
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
    return torch.clamp(q, q_min, q_max).to(torch.int32)


def dequantize(q: Tensor, scale: Tensor | float, zero_point: Tensor | int) -> Tensor:
    """``r = S · (q − Z)`` in float32. Shapes: q (...) -> r (...). Checked: scale finite and > 0, zero point an integer."""
    _check_tensor(q, "q")
    _check_qparams(scale, zero_point)
    zp = torch.as_tensor(zero_point, device=q.device)
    return (q - zp).to(torch.float32) * torch.as_tensor(scale, dtype=torch.float32, device=q.device)


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


# --------------------------------------------------------------------- observers
def _reduce_dims(x: Tensor, ch_axis: int | None) -> Tensor:
    """``x`` as (C, rest) for per-channel statistics, or (1, all) per tensor."""
    if ch_axis is None:
        return x.reshape(1, -1)
    return x.movedim(ch_axis, 0).reshape(x.shape[ch_axis], -1)


def _resize_buffers_from(module: nn.Module, state_dict: dict[str, Any], prefix: str, names: Iterable[str]) -> None:
    """Quantizer buffers start empty and take their shape when first observed; give them the
    saved shape before loading, so a saved QAT/PTQ model loads into a freshly prepared one."""
    for name in names:
        key = prefix + name
        if key in state_dict and getattr(module, name).shape != state_dict[key].shape:
            setattr(module, name, torch.empty_like(state_dict[key], device=getattr(module, name).device))


class Observer(nn.Module):
    """Watches tensors and proposes a quantization range; the base of all observers.

    Subclasses implement :meth:`update` (fold a batch into ``min_val``/``max_val``).
    :meth:`calculate_qparams` turns the range into ``(S, Z)`` with :func:`calc_qparams`.
    ``ch_axis=None`` is per-tensor; an int is per-channel along that axis.
    Calling the observer records ``x`` and returns it unchanged.
    """

    def __init__(self, num_bits: int = 8, symmetric: bool = False, signed: bool | None = None,
                 ch_axis: int | None = None) -> None:
        super().__init__()
        if ch_axis is not None and (isinstance(ch_axis, bool) or not isinstance(ch_axis, numbers.Integral)):
            raise ValueError(f"ch_axis must be None (per tensor) or an int axis (per channel), got {ch_axis!r}")
        ch_axis = None if ch_axis is None else int(ch_axis)
        self.num_bits, self.symmetric, self.ch_axis = num_bits, symmetric, ch_axis
        self.signed = symmetric if signed is None else signed
        self.q_min, self.q_max = qrange(num_bits, self.signed)
        self.register_buffer("min_val", torch.tensor([]))
        self.register_buffer("max_val", torch.tensor([]))

    def forward(self, x: Tensor) -> Tensor:
        if x.numel() == 0:
            raise ValueError(f"{type(self).__name__} got an empty tensor (shape {tuple(x.shape)}): nothing to take a range from")
        if self.ch_axis is not None and not -x.ndim <= self.ch_axis < x.ndim:
            raise ValueError(f"{type(self).__name__}(ch_axis={self.ch_axis}) got a tensor of shape {tuple(x.shape)}, "
                             "which has no such axis; use ch_axis=0 for the output channels of a weight, or None")
        x_d = x.detach().float()
        if not torch.isfinite(x_d).all():
            raise ValueError(f"{type(self).__name__} saw NaN or inf values; the model or its input is broken")
        self.update(_reduce_dims(x_d, self.ch_axis))
        return x

    def update(self, rows: Tensor) -> None:
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        _resize_buffers_from(self, state_dict, prefix, ("min_val", "max_val"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def reset(self) -> None:
        """Forget everything observed so far."""
        self.min_val, self.max_val = torch.tensor([]), torch.tensor([])
        self.batches, self._samples = 0, None

    def _merge(self, lo: Tensor, hi: Tensor) -> None:
        if self.min_val.numel() == 0:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val, self.max_val = torch.minimum(self.min_val, lo), torch.maximum(self.max_val, hi)

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        """``(scale, zero_point)`` for what has been observed so far: shapes () or (C,)."""
        if self.min_val.numel() == 0:
            raise RuntimeError(f"{type(self).__name__} has observed nothing yet: run calibration data through it first")
        lo, hi = self.min_val, self.max_val
        scale, zp = _calc_qparams(lo, hi, self.num_bits, self.symmetric, self.signed)
        return (scale, zp) if self.ch_axis is not None else (scale.reshape(()), zp.reshape(()))

    def extra_repr(self) -> str:
        kind = "per-tensor" if self.ch_axis is None else f"per-channel(axis={self.ch_axis})"
        return f"bits={self.num_bits}, {'symmetric' if self.symmetric else 'asymmetric'}, {kind}"


class MinMaxObserver(Observer):
    """Range = the smallest and largest value ever seen: ``[min x, max x]``.

    Never clips, so a single outlier stretches the grid for everyone.
    """

    def update(self, rows: Tensor) -> None:
        self._merge(rows.min(dim=1).values, rows.max(dim=1).values)


class MovingAverageMinMaxObserver(Observer):
    """Range = exponential moving average of each batch's min and max.

    ``m ← (1 − c) · m + c · min(batch)`` (same for max), ``c = averaging_constant``.
    Used for activations during QAT, where ranges drift as the weights learn.
    """

    def __init__(self, averaging_constant: float = 0.01, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not _is_real(averaging_constant) or not 0 < averaging_constant <= 1:
            raise ValueError(f"averaging_constant must be a number in (0, 1] (0.01 is usual), got {averaging_constant!r}")
        self.c = averaging_constant

    def update(self, rows: Tensor) -> None:
        lo, hi = rows.min(dim=1).values, rows.max(dim=1).values
        if self.min_val.numel() == 0:
            self.min_val, self.max_val = lo, hi
        else:
            self.min_val = self.min_val + self.c * (lo - self.min_val)
            self.max_val = self.max_val + self.c * (hi - self.max_val)


def _kth_quantile(rows: Tensor, q: float) -> Tensor:
    """The q-quantile of each row: the value at sorted position ``ceil(q · (n − 1))`` (0-based).

    Same as ``torch.quantile(rows, q, dim=1, interpolation="higher")``, but by
    order statistic, so it has no input-size limit.
    """
    n = rows.shape[1]
    rank = float(torch.tensor(q, dtype=torch.float32)) * (n - 1)  # q rounded to float32 first, as torch does
    k = min(n, int(math.ceil(rank)) + 1)
    return rows.kthvalue(k, dim=1).values


class PercentileObserver(Observer):
    """Range = the ``(100 − p)``-th to ``p``-th percentile, averaged over batches.

    Clips the rare outliers (they saturate at the grid's ends) so the common
    values get finer steps.
    """

    def __init__(self, percentile: float = 99.99, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not _is_real(percentile) or not 50 < percentile <= 100:
            raise ValueError(f"percentile must be a number in (50, 100] (99.99 is usual), got {percentile!r}")
        self.percentile = percentile
        self.batches = 0

    def update(self, rows: Tensor) -> None:
        p = self.percentile / 100
        lo, hi = _kth_quantile(rows, 1 - p), _kth_quantile(rows, p)
        if self.min_val.numel() == 0:
            self.min_val, self.max_val = lo, hi
        else:  # running mean of the per-batch percentiles
            w = 1 / (self.batches + 1)
            self.min_val, self.max_val = self.min_val + w * (lo - self.min_val), self.max_val + w * (hi - self.max_val)
        self.batches += 1


class MSEObserver(Observer):
    """Range = the shrunken min-max range ``α · [min, max]`` that minimises the quantization MSE.

    ``α* = argmin_α mean((x − fq(x; α·min, α·max))²)`` over ``num_candidates``
    values of α in ``[min_ratio, 1]``, per channel when per-channel. Keeps a
    fixed random sample of at most ``max_samples`` values per channel to search on.
    """

    def __init__(self, num_candidates: int = 40, min_ratio: float = 0.2, max_samples: int = 1 << 16, **kwargs: Any) -> None:
        """Checked: ``num_candidates`` and ``max_samples`` integers >= 1, ``0 < min_ratio <= 1``."""
        for name, value in (("num_candidates", num_candidates), ("max_samples", max_samples)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"MSEObserver: {name} must be an integer >= 1, got {value!r} "
                                 f"(the default is {40 if name == 'num_candidates' else 1 << 16})")
        if isinstance(min_ratio, bool) or not isinstance(min_ratio, numbers.Real) or not 0 < min_ratio <= 1:
            raise ValueError(f"MSEObserver: min_ratio must be a number in (0, 1] (the smallest shrink of the range "
                             f"tried), got {min_ratio!r}")
        num_candidates, max_samples = int(num_candidates), int(max_samples)
        super().__init__(**kwargs)
        self.alphas = torch.linspace(min_ratio, 1.0, num_candidates)
        self.max_samples = max_samples
        self._samples: Tensor | None = None

    def update(self, rows: Tensor) -> None:
        self._merge(rows.min(dim=1).values, rows.max(dim=1).values)
        n = rows.shape[1]
        if n > self.max_samples:  # a fixed random subset: a stride could alias with the tensor's layout
            rows = rows[:, torch.randperm(n, generator=torch.Generator().manual_seed(n))[: self.max_samples].to(rows.device)]
        sample = rows
        self._samples = sample if self._samples is None else torch.cat([self._samples, sample], 1)[:, -self.max_samples:]

    def calculate_qparams(self) -> tuple[Tensor, Tensor]:
        if self._samples is None:
            raise RuntimeError("MSEObserver has observed nothing yet: run calibration data through it first")
        x = self._samples
        best_err = torch.full((x.shape[0],), math.inf, device=x.device)
        best = (self.min_val.clone(), self.max_val.clone())
        for a in self.alphas.tolist():
            s, z = _calc_qparams(a * self.min_val, a * self.max_val, self.num_bits, self.symmetric, self.signed)
            err = (x - _fake_quantize_per_channel(x, s, z, 0, self.q_min, self.q_max)).pow(2).mean(1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = (torch.where(better, a * self.min_val, best[0]), torch.where(better, a * self.max_val, best[1]))
        scale, zp = _calc_qparams(best[0], best[1], self.num_bits, self.symmetric, self.signed)
        return (scale, zp) if self.ch_axis is not None else (scale.reshape(()), zp.reshape(()))


OBSERVERS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "moving_average": MovingAverageMinMaxObserver,
    "percentile": PercentileObserver,
    "mse": MSEObserver,
}


def make_observer(name: str, **kwargs: Any) -> Observer:
    """An observer by name: one of ``OBSERVERS`` ("minmax", "moving_average", "percentile", "mse")."""
    if name not in OBSERVERS:
        raise ValueError(f"unknown observer {name!r}; choose one of {sorted(OBSERVERS)}")
    return OBSERVERS[name](**kwargs)


# --------------------------------------------------------------------- LSQ
def lsq_init_step(v: Tensor, q_p: int) -> Tensor:
    """LSQ's initial step: ``s₀ = max(2 · mean(|v|) / √Q_P, ε)`` (Esser et al. 2020, sec. 2).

    ε is float32's machine epsilon (the smallest scale torch's observers use): an
    all-zero ``v`` would otherwise give a step of 0, and ``v / 0`` NaN forever after.
    Checked: ``v`` non-empty and finite, ``q_p`` a positive int.
    """
    _check_tensor(v, "v")
    if isinstance(q_p, bool) or not isinstance(q_p, numbers.Integral) or q_p < 1:
        raise ValueError(f"q_p must be a positive int (the top integer level, e.g. 7 for signed 4-bit), got {q_p!r}")
    if v.numel() == 0 or not bool(torch.isfinite(v.detach()).all()):
        raise ValueError(f"lsq_init_step needs a non-empty, finite tensor to size the step from; got shape "
                         f"{tuple(v.shape)}" + ("" if v.numel() == 0 else " with NaN or inf values"))
    return torch.clamp(2 * v.detach().abs().mean() / math.sqrt(q_p), min=_EPS)


def _scale_grad(x: Tensor, g: float) -> Tensor:
    """Identity forward; multiplies the gradient by ``g`` (LSQ's ``gradscale``)."""
    return (x - x * g).detach() + x * g


def _round_ste(x: Tensor) -> Tensor:
    """``round(x)`` forward, identity gradient (LSQ's ``roundpass``)."""
    return (x.round() - x).detach() + x


def lsq_fake_quantize(v: Tensor, step: Tensor, q_n: int, q_p: int, grad_scale: float | None = None) -> Tensor:
    """Learned step size quantization (Esser et al. 2020): ``v̂ = round(clamp(v/s, −Q_N, Q_P)) · s``.

    The step ``s`` is a trainable parameter. Its gradient is

        ∂v̂/∂s = −v/s + round(v/s)   if −Q_N < v/s < Q_P
                 −Q_N                if v/s <= −Q_N
                  Q_P                if v/s >=  Q_P

    multiplied by ``g = 1/√(N · Q_P)`` (N = number of elements of ``v``) so the
    step learns at the pace of the weights. ``v`` gets the STE gradient (1
    inside the range, 0 outside). Shapes: v (...), step () -> (...).

    (torch's ``_fake_quantize_learnable_per_tensor_affine`` rounds before it
    clamps, so it differs from this only for ``v/s`` within half a step outside
    the range.) Checked: ``v`` and ``step`` tensors, ``step`` finite and > 0 everywhere,
    ``q_n >= 0`` and ``q_p >= 1`` integers (``q_n`` is the *magnitude* of the lowest
    level: ``-q_min`` of :func:`qrange`).
    """
    _check_tensor(v, "v")
    _check_tensor(step, "step")
    _check_lsq_levels(q_n, q_p)
    bad = ~(torch.isfinite(step.detach()) & (step.detach() > 0))
    if step.numel() == 0 or bool(bad.any()):
        raise ValueError(f"lsq_fake_quantize: step must be finite and > 0, got {step.detach().flatten()[:4].tolist()}; "
                         "start it from lsq_init_step(v, q_p)")
    return _lsq_fake_quantize(v, step, int(q_n), int(q_p), grad_scale)


def _check_lsq_levels(q_n: Any, q_p: Any) -> None:
    for name, q, low in (("q_n", q_n, 0), ("q_p", q_p, 1)):
        if isinstance(q, bool) or not isinstance(q, numbers.Integral) or q < low:
            raise ValueError(f"lsq_fake_quantize: {name} must be an integer >= {low}, got {q!r}; the range is "
                             "[-q_n, q_p], so from q_min, q_max = qrange(bits, signed) pass q_n=-q_min, q_p=q_max")


def _lsq_fake_quantize(v: Tensor, step: Tensor, q_n: int, q_p: int, grad_scale: float | None = None) -> Tensor:
    """:func:`lsq_fake_quantize` without the checks (the learned step of :class:`LSQQuantizer`)."""
    g = 1.0 / math.sqrt(v.numel() * q_p) if grad_scale is None else grad_scale
    s = _scale_grad(step, g)
    return _round_ste(torch.clamp(v / s, -q_n, q_p)) * s


class LSQQuantizer(nn.Module):
    """A fake quantizer whose step is learned (see :func:`lsq_fake_quantize`).

    The step is initialised with :func:`lsq_init_step` from the first tensor it sees
    that is not all zeros (an all-zero tensor quantizes to zeros with any step, and
    would say nothing about the scale; a dead ReLU layer at the start is common).
    """

    def __init__(self, num_bits: int = 4, signed: bool = True) -> None:
        super().__init__()
        q_min, q_max = qrange(num_bits, signed)
        self.q_n, self.q_p = -q_min, q_max
        self.step = nn.Parameter(torch.tensor(1.0))
        self.register_buffer("initialized", torch.tensor(False))

    def forward(self, v: Tensor) -> Tensor:
        if not self.initialized and bool((v.detach() != 0).any()):
            with torch.no_grad():
                self.step.copy_(lsq_init_step(v, self.q_p))
                self.initialized.fill_(True)
        return _lsq_fake_quantize(v, self.step, self.q_n, self.q_p)


# --------------------------------------------------------------------- error measures
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


# --------------------------------------------------------------------- whole networks
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new conv equal to ``bn(conv(x))`` in eval mode (batch-norm folding).

    With ``γ, β, μ, σ² = bn.weight, bn.bias, bn.running_mean, bn.running_var``:
    ``W' = W · γ / √(σ² + ε)`` (per output channel) and
    ``b' = (b − μ) · γ / √(σ² + ε) + β``. Shapes: W (C_out, C_in, k, k).
    A BN without affine parameters (``affine=False``) has ``γ = 1, β = 0``. Checked: the BN
    keeps running statistics (``track_running_stats=False`` normalises with each batch's
    statistics even in eval mode, which no fixed conv can reproduce), else ValueError.
    """
    if not _foldable(bn):
        raise ValueError(f"fold_bn: {bn} has no running statistics (track_running_stats=False), so it normalises "
                         "with each batch's statistics even in eval mode and cannot be folded into a conv")
    fused = copy.deepcopy(conv)
    mean = bn.running_mean
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(mean)
    factor = gamma / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(mean)
    fused.weight = nn.Parameter(conv.weight.detach() * factor.reshape(-1, 1, 1, 1))
    fused.bias = nn.Parameter((bias - mean) * factor + beta)
    return fused


def _foldable(bn: nn.Module) -> bool:
    """A BN with running statistics (what eval mode uses, and what folding bakes in)."""
    return getattr(bn, "running_mean", None) is not None and getattr(bn, "running_var", None) is not None


def _feeds_directly(parent: nn.Module, a: str, b: str) -> bool:
    """Whether ``parent`` applies child ``b`` right to child ``a``'s output, and uses that output nowhere else.

    ``nn.Sequential`` applies its children in registration order. Other modules are traced with
    ``torch.fx``; one that cannot be traced is taken at its registration order (as before)."""
    if isinstance(parent, nn.Sequential):
        return True
    try:
        graph = torch.fx.symbolic_trace(parent).graph
    except Exception:  # control flow, unsupported ops: keep the registration-order convention
        return True
    calls = {name: [n for n in graph.nodes if n.op == "call_module" and n.target == name] for name in (a, b)}
    if len(calls[a]) != 1 or len(calls[b]) != 1:
        return False
    conv_node, bn_node = calls[a][0], calls[b][0]
    return list(conv_node.users) == [bn_node] and bn_node.args[:1] == (conv_node,)


_BN_TYPES: tuple[type, ...] = (nn.BatchNorm2d,)
try:  # torchvision's detectors use a BN with fixed statistics
    from torchvision.ops.misc import FrozenBatchNorm2d

    _BN_TYPES = (nn.BatchNorm2d, FrozenBatchNorm2d)
except ImportError:  # pragma: no cover
    pass


def conv_bn_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """Every (parent, conv name, bn name) where a BatchNorm2d is registered right after a Conv2d
    with matching channels. That is how ``nn.Sequential`` blocks, torchvision's
    ``Conv2dNormActivation`` and ResNet blocks (``conv1``, ``bn1``, ...) are written. Checked, for a
    parent that is not an ``nn.Sequential``: its forward (traced with ``torch.fx``) applies the BN
    directly to the conv's output and uses that output nowhere else -- a block registered as
    (conv, bn) but run as conv → ReLU → bn is not a pair. BNs without running statistics
    (``track_running_stats=False``) are not pairs either: they cannot be folded."""
    pairs = []
    for parent in model.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if (isinstance(conv, nn.Conv2d) and isinstance(bn, _BN_TYPES) and bn.num_features == conv.out_channels
                    and _foldable(bn) and _feeds_directly(parent, a, b)):
                pairs.append((parent, a, b))
    return pairs


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) with every Conv2d→BatchNorm2d pair (see :func:`conv_bn_pairs`)
    folded into one conv (:func:`fold_bn`); each BN becomes ``nn.Identity``."""
    model = copy.deepcopy(model).eval()
    for parent, a, b in conv_bn_pairs(model):
        parent._modules[a] = fold_bn(parent._modules[a], parent._modules[b])
        parent._modules[b] = nn.Identity().train(parent._modules[b].training)
    return model


class FakeQuantize(nn.Module):
    """An observer plus fake quantization: ``y = fq(x; S, Z)`` with ``(S, Z)`` from the observer.

    * ``observing`` -- record inputs and update ``(S, Z)``, but only in training
      mode (:func:`calibrate` switches these modules to training mode while the
      rest of the model stays in eval), so evaluation never moves the ranges;
    * ``dynamic`` -- for weights during QAT: recompute the range from the current
      tensor on every call, in any mode (the weights move every step);
    * ``enabled`` -- apply fake quantization (off: identity).
    """

    def __init__(self, observer: Observer, dynamic: bool = False) -> None:
        super().__init__()
        self.observer, self.dynamic = observer, dynamic
        self.observing, self.enabled = True, True
        self.register_buffer("scale", torch.tensor([]))
        self.register_buffer("zero_point", torch.tensor([], dtype=torch.int32))

    def forward(self, x: Tensor) -> Tensor:
        if self.dynamic:
            self.observer.reset()
        if self.dynamic or (self.observing and self.training):
            self.observer(x)
            self.scale, self.zero_point = (t.to(x.device) for t in self.observer.calculate_qparams())
        if not self.enabled:
            return x
        if self.scale.numel() == 0:
            why = "it is in eval mode, where quantizers never observe" if not self.training else "observing is off"
            raise RuntimeError(f"FakeQuantize has no scale yet: it was never calibrated, and {why}. Run "
                               "course_utils.quant.calibrate(model, batches) first (post_training_quantize does both "
                               "steps), or load a calibrated checkpoint")
        q_min, q_max = self.observer.q_min, self.observer.q_max
        if self.observer.ch_axis is None:
            return _fake_quantize(x, self.scale, self.zero_point, q_min, q_max)
        return _fake_quantize_per_channel(x, self.scale, self.zero_point, self.observer.ch_axis % x.ndim, q_min, q_max)

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        _resize_buffers_from(self, state_dict, prefix, ("scale", "zero_point"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return f"observing={self.observing}, dynamic={self.dynamic}, enabled={self.enabled}"


class QuantConv2d(nn.Module):
    """``conv(fq_a(x), fq_w(W)) + b``: a conv that sees fake-quantized inputs and weights.

    Weights per output channel (axis 0), inputs per tensor; the bias stays in
    float (an int8 backend keeps it as int32 with scale ``S_x · S_w``).
    """

    def __init__(self, conv: nn.Conv2d, weight_fq: FakeQuantize, input_fq: FakeQuantize | None) -> None:
        super().__init__()
        self.conv, self.weight_fq, self.input_fq = conv, weight_fq, input_fq

    def forward(self, x: Tensor) -> Tensor:
        if self.input_fq is not None:
            x = self.input_fq(x)
        return self.conv._conv_forward(x, self.weight_fq(self.conv.weight), self.conv.bias)


class QuantLinear(nn.Module):
    """``linear(fq_a(x), fq_w(W)) + b``, as :class:`QuantConv2d` for ``nn.Linear``."""

    def __init__(self, linear: nn.Linear, weight_fq: FakeQuantize, input_fq: FakeQuantize | None) -> None:
        super().__init__()
        self.linear, self.weight_fq, self.input_fq = linear, weight_fq, input_fq

    def forward(self, x: Tensor) -> Tensor:
        if self.input_fq is not None:
            x = self.input_fq(x)
        return F.linear(x, self.weight_fq(self.linear.weight), self.linear.bias)


class QuantConvBn2d(nn.Module):
    """Conv followed by BatchNorm for QAT: fold, then fake-quantize.

    The scheme of Krishnamoorthi 2018 ("Quantizing deep convolutional networks for
    efficient inference: a whitepaper") and PyTorch's ``ConvBn2d``, which fold with
    BN's *running* variance; Jacob et al. 2018 (sec. 3.2) fold with batch statistics.

    With ``f = γ / √(σ²_running + ε)`` the conv runs with the weight an int8 model
    will hold, ``fq_w(W · f)``. Then:

    * training, BN not frozen: ``y = BN_batch(conv(x, fq_w(W·f)) / f + b)`` -- undo
      the fold so batch norm normalises with *batch* statistics (and keeps
      updating its running ones), as in PyTorch's ``ConvBn2d``;
    * eval, or after :meth:`freeze_bn`: ``y = conv(x, fq_w(W·f)) + (b − μ)·f + β``
      -- exactly the folded conv that deployment runs.

    Freezing BN statistics for the last part of QAT removes the train/deploy mismatch.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.Module, weight_fq: FakeQuantize, input_fq: FakeQuantize | None) -> None:
        super().__init__()
        self.conv, self.bn, self.weight_fq, self.input_fq = conv, bn, weight_fq, input_fq
        self.bn_frozen = not isinstance(bn, nn.BatchNorm2d)  # torchvision's FrozenBatchNorm2d never updates

    def freeze_bn(self, frozen: bool = True) -> None:
        """Stop (or resume) using batch statistics and updating the running ones."""
        self.bn_frozen = frozen or not isinstance(self.bn, nn.BatchNorm2d)

    def _factor(self) -> Tensor:
        return self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)

    def folded(self) -> tuple[Tensor, Tensor]:
        """``(W · f, (b − μ) · f + β)``: the float weight and bias that deployment quantizes."""
        f = self._factor()
        b = self.conv.bias if self.conv.bias is not None else torch.zeros_like(self.bn.running_mean)
        return self.conv.weight * f.reshape(-1, 1, 1, 1), (b - self.bn.running_mean) * f + self.bn.bias

    def forward(self, x: Tensor) -> Tensor:
        if self.input_fq is not None:
            x = self.input_fq(x)
        weight, bias = self.folded()
        y = self.conv._conv_forward(x, self.weight_fq(weight), None)
        if self.training and not self.bn_frozen:
            f = self._factor().reshape(1, -1, 1, 1)
            y = y / f
            if self.conv.bias is not None:
                y = y + self.conv.bias.reshape(1, -1, 1, 1)
            return self.bn(y)
        return y + bias.reshape(1, -1, 1, 1)


def _weight_fq(bits: int, observer: str, per_channel: bool, symmetric: bool, dynamic: bool = False) -> FakeQuantize:
    return FakeQuantize(make_observer(observer, num_bits=bits, symmetric=symmetric, signed=True,
                                      ch_axis=0 if per_channel else None), dynamic=dynamic)


def _input_fq(bits: int | None, observer: str, symmetric: bool) -> FakeQuantize | None:
    if bits is None:
        return None
    return FakeQuantize(make_observer(observer, num_bits=bits, symmetric=symmetric, signed=symmetric))


def _swap_layers(model: nn.Module, wrap: Callable[[str, nn.Module], nn.Module | None], skip: set[str]) -> int:
    """Replace each Conv2d/Linear child (not in ``skip``) by ``wrap(name, layer)``; returns how many."""
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if full in skip or not isinstance(child, (nn.Conv2d, nn.Linear)):
                continue
            new = wrap(full, child)
            if new is not None:
                new.train(child.training)  # fresh modules start in training mode; take the replaced layer's
                setattr(module, child_name, new)
                count += 1
    return count


def _skip_set(skip: Iterable[str]) -> set[str]:
    """``skip`` as a set of layer names; a bare string is refused (it would be split into characters)."""
    if isinstance(skip, str):
        raise ValueError(f"skip must be a list of layer names, got the string {skip!r}; pass skip=[{skip!r}]")
    return set(skip)


def _check_skip(model: nn.Module, skip: set[str]) -> None:
    names = {n for n, _ in model.named_modules()}
    unknown = sorted(skip - names)
    if unknown:
        raise KeyError(f"skip names {unknown} are not layers of the model; e.g. {sorted(names - {''})[:6]}")


def quantize_model(
    model: nn.Module,
    weight_bits: int = 8,
    act_bits: int | None = 8,
    weight_observer: str = "minmax",
    act_observer: str = "minmax",
    per_channel: bool = True,
    symmetric_weights: bool = True,
    symmetric_acts: bool = False,
    skip: Iterable[str] = (),
    fold_batch_norm: bool = True,
) -> nn.Module:
    """A fake-quantized copy of ``model`` for post-training quantization (PTQ).

    Every Conv2d/Linear becomes :class:`QuantConv2d`/:class:`QuantLinear`.
    Weights: ``weight_bits``, signed, per output channel (or per tensor),
    ``weight_observer``. Inputs to each layer: ``act_bits`` unsigned asymmetric,
    per tensor, ``act_observer`` (``act_bits=None``: weights only;
    ``symmetric_acts=True``: signed symmetric instead). Layers whose
    qualified name is in ``skip`` stay float (e.g. the first and last layer).
    BatchNorm is folded first (as an int8 deployment does), unless
    ``fold_batch_norm=False``. Every new module takes the mode of the layer it
    replaces, so a folded copy is in eval mode through and through: its quantizers
    do not observe what it sees, and using it before :func:`calibrate` raises
    instead of silently calibrating on that data. Run :func:`calibrate` next.
    """
    skip = _skip_set(skip)
    _check_skip(model, skip)
    model = fuse_conv_bn(model) if fold_batch_norm else copy.deepcopy(model)

    def wrap(name: str, layer: nn.Module) -> nn.Module:
        w_fq = _weight_fq(weight_bits, weight_observer, per_channel, symmetric_weights)
        a_fq = _input_fq(act_bits, act_observer, symmetric_acts)
        return QuantConv2d(layer, w_fq, a_fq) if isinstance(layer, nn.Conv2d) else QuantLinear(layer, w_fq, a_fq)

    _swap_layers(model, wrap, skip)
    return model


def prepare_qat(
    model: nn.Module,
    weight_bits: int = 8,
    act_bits: int | None = 8,
    weight_observer: str = "minmax",
    act_observer: str = "moving_average",
    per_channel: bool = True,
    skip: Iterable[str] = (),
) -> nn.Module:
    """A copy of ``model`` ready for quantization-aware training (QAT).

    Each Conv2d followed by a BatchNorm becomes :class:`QuantConvBn2d` (the BN
    moves inside, its old slot becomes Identity); other Conv2d/Linear layers
    become :class:`QuantConv2d`/:class:`QuantLinear`. Weights are fake-quantized
    per channel, signed symmetric, with ranges re-observed every step (they
    move while training); layer inputs unsigned asymmetric with a moving-average
    observer. Works on any model built from Conv/Linear/BN/ReLU blocks.
    New modules take the mode of the layer they replace (a copy of an eval model
    is in eval mode throughout). Calibrate once (:func:`calibrate`), then train
    with :func:`course_utils.train.fit` and a :class:`QATSchedule` hook.
    """
    skip = _skip_set(skip)
    _check_skip(model, skip)
    model = copy.deepcopy(model)
    names = {id(m): n for n, m in model.named_modules()}
    paired: dict[int, nn.Module] = {}
    for parent, a, b in conv_bn_pairs(model):
        conv_name = f"{names[id(parent)]}.{a}" if names[id(parent)] else a
        if conv_name not in skip and getattr(parent._modules[b], "weight", None) is not None:  # affine BNs only
            paired[id(parent._modules[a])] = parent._modules[b]
            parent._modules[b] = nn.Identity().train(parent._modules[b].training)

    def wrap(name: str, layer: nn.Module) -> nn.Module:
        w_fq = _weight_fq(weight_bits, weight_observer, per_channel, symmetric=True, dynamic=True)
        a_fq = _input_fq(act_bits, act_observer, symmetric=False)
        if id(layer) in paired:
            return QuantConvBn2d(layer, paired[id(layer)], w_fq, a_fq)
        return QuantConv2d(layer, w_fq, a_fq) if isinstance(layer, nn.Conv2d) else QuantLinear(layer, w_fq, a_fq)

    _swap_layers(model, wrap, skip)
    return model


def freeze_bn_stats(model: nn.Module, frozen: bool = True) -> nn.Module:
    """Freeze (or unfreeze) the BN statistics of every :class:`QuantConvBn2d`."""
    for m in model.modules():
        if isinstance(m, QuantConvBn2d):
            m.freeze_bn(frozen)
    return model


def set_observing_activations(model: nn.Module, observing: bool) -> nn.Module:
    """Turn the *input* (activation) observers on or off; weight observers keep tracking the weights."""
    for m in model.modules():
        if isinstance(m, (QuantConv2d, QuantLinear, QuantConvBn2d)) and m.input_fq is not None:
            m.input_fq.observing = observing
    return model


def to_float_folded(model: nn.Module) -> nn.Module:
    """The float model an int8 toolchain should convert: every Quant wrapper replaced by a plain
    layer holding its (BN-folded) float weight and bias. ``model`` is left unchanged."""
    model = copy.deepcopy(model).eval()
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, QuantConvBn2d):
                weight, bias = child.folded()
                conv = copy.deepcopy(child.conv)
                conv.weight, conv.bias = nn.Parameter(weight.detach().clone()), nn.Parameter(bias.detach().clone())
                setattr(parent, name, conv)
            elif isinstance(child, QuantConv2d):
                setattr(parent, name, child.conv)
            elif isinstance(child, QuantLinear):
                setattr(parent, name, child.linear)
    return model


def set_observing(model: nn.Module, observing: bool) -> nn.Module:
    """Turn every :class:`FakeQuantize` observer on (calibrate) or off (freeze ranges)."""
    for m in model.modules():
        if isinstance(m, FakeQuantize):
            m.observing = observing
    return model


def calibrate(model: nn.Module, batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any] | None = None) -> nn.Module:
    """Post-training calibration: run ``batches`` through ``model`` with observers on, then freeze them.

    ``forward(model, batch)`` runs one batch (default: ``model(batch)``). The
    model is put in eval mode; no gradients are computed. Checked: ``model`` holds
    at least one :class:`FakeQuantize` (a float model has nothing to calibrate), and at
    least one batch came.
    """
    if isinstance(batches, Tensor):
        raise TypeError(f"calibrate takes an iterable of batches, got one tensor of shape {tuple(batches.shape)} "
                        "(iterating it would feed single images); pass [images] or a list of batches")
    if not any(isinstance(m, FakeQuantize) for m in model.modules()):
        raise ValueError("calibrate: the model has no quantizers (FakeQuantize), so there is nothing to calibrate; "
                         "call quantize_model(model) (PTQ) or prepare_qat(model) (QAT) first and calibrate the "
                         "copy it returns (or use post_training_quantize)")
    forward = forward or (lambda m, b: m(b))
    model.eval()
    set_observing(model, True)
    for m in model.modules():
        if isinstance(m, FakeQuantize):
            m.train()  # observers record in training mode only; BN etc. stay in eval
    with torch.no_grad():
        seen = 0
        for batch in batches:
            forward(model, batch)
            seen += 1
    model.eval()
    if seen == 0:
        raise ValueError("calibrate got no batches: pass a non-empty calibration set")
    return set_observing(model, False)


def post_training_quantize(model: nn.Module, calibration_batches: Iterable[Any],
                           forward: Callable[[nn.Module, Any], Any] | None = None, **settings: Any) -> nn.Module:
    """Post-training quantization (PTQ) in one call: :func:`quantize_model` with ``settings``, then
    :func:`calibrate` on ``calibration_batches``. Returns the fake-quantized copy, observers frozen."""
    return calibrate(quantize_model(model, **settings), calibration_batches, forward)


def layer_sensitivity(model: nn.Module, score: Callable[[nn.Module], float], calibration_batches: Iterable[Any],
                      forward: Callable[[nn.Module, Any], Any] | None = None, **settings: Any) -> dict[str, float]:
    """``score`` of the model with only one Conv/Linear layer quantized (PTQ with ``settings``), for each layer.

    Returns ``{layer name: score}``, in the model's layer order. Compare with the
    float score to see which layers hurt most when quantized.
    """
    batches = list(calibration_batches)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return {name: score(post_training_quantize(model, batches, forward, skip=[n for n in names if n != name], **settings))
            for name in names}


def capture_activations(model: nn.Module, module_name: str, batches: Iterable[Any],
                        forward: Callable[[nn.Module, Any], Any] | None = None) -> Tensor:
    """The inputs that the layer ``module_name`` receives over ``batches``, concatenated on dim 0.

    These are the activations an input observer of that layer would see.
    Shapes: (N, C, H, W) for a conv layer.
    """
    modules = dict(model.named_modules())
    if module_name not in modules:
        raise KeyError(f"no layer named {module_name!r}; some names: {list(modules)[1:8]}")
    seen: list[Tensor] = []
    handle = modules[module_name].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    forward = forward or (lambda m, b: m(b))
    try:
        with torch.no_grad():
            model.eval()
            for batch in batches:
                forward(model, batch)
    finally:
        handle.remove()
    if not seen:
        raise ValueError("capture_activations got no batches")
    return torch.cat(seen)


class QATSchedule(Hook):
    """Training-loop hook for QAT: freeze BN statistics and activation ranges late in training.

    After ``freeze_bn_epoch`` epochs BN uses its running statistics (so training
    sees exactly the folded model that will be deployed); after
    ``freeze_observer_epoch`` epochs the activation ranges stop moving.
    ``None`` never freezes. Plug into :func:`course_utils.train.fit` via ``hooks=[...]``.
    Checked: each epoch None or an integer >= 0.
    """

    def __init__(self, freeze_bn_epoch: int | None = 1, freeze_observer_epoch: int | None = None) -> None:
        for name, value in (("freeze_bn_epoch", freeze_bn_epoch), ("freeze_observer_epoch", freeze_observer_epoch)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0):
                raise ValueError(f"QATSchedule: {name} must be None (never) or an integer >= 0 (epochs trained "
                                 f"before freezing), got {value!r}")
        self.freeze_bn_epoch, self.freeze_observer_epoch = freeze_bn_epoch, freeze_observer_epoch

    def on_train_start(self, state: Any) -> None:
        set_observing_activations(state.model, True)
        self._apply(state.model, 0)

    def on_epoch_end(self, state: Any) -> None:
        self._apply(state.model, state.epoch + 1)

    def _apply(self, model: nn.Module, epochs_done: int) -> None:
        if self.freeze_bn_epoch is not None and epochs_done >= self.freeze_bn_epoch:
            freeze_bn_stats(model)
        if self.freeze_observer_epoch is not None and epochs_done >= self.freeze_observer_epoch:
            set_observing_activations(model, False)
