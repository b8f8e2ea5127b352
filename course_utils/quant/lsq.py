"""Learned step size quantization (LSQ, Esser et al. 2020): the step is a trained parameter.

Taught in: 04_quantization_math.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import Tensor, nn

from .affine import _EPS, _check_tensor, qrange

__all__ = ["lsq_init_step", "lsq_fake_quantize", "LSQQuantizer"]


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
