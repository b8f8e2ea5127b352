"""Quantization-aware training: a conv+BN that trains through its folded, fake-quantized weight, the
model preparation, and the schedule that freezes BN statistics and ranges late in training.

Taught in: 05_qat_and_int8.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from ..train import Hook
from .folding import conv_bn_pairs
from .modules import FakeQuantize, QuantConv2d, QuantLinear, _check_skip, _input_fq, _skip_set, _swap_layers, _weight_fq

__all__ = ["QuantConvBn2d", "prepare_qat", "freeze_bn_stats", "set_observing_activations", "to_float_folded",
           "QATSchedule"]


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
