"""Fake-quantized layers: a quantizer module and the Conv2d/Linear wrappers that use it.

Taught in: 04_quantization_math (PTQ) and 05_qat_and_int8 (QAT).

``FakeQuantize`` = an observer + fake quantization; ``QuantConv2d`` and
``QuantLinear`` see fake-quantized inputs (per tensor) and weights (per output
channel). The private helpers swap every layer of a model for its wrapper.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .affine import _fake_quantize, _fake_quantize_per_channel
from .observers import Observer, _resize_buffers_from, make_observer

__all__ = ["FakeQuantize", "QuantConv2d", "QuantLinear"]


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
