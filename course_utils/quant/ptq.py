"""Post-training quantization: fold, wrap every layer, calibrate the ranges on a few batches.

Taught in: 04_quantization_math and 05_qat_and_int8.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .folding import fuse_conv_bn
from .modules import FakeQuantize, QuantConv2d, QuantLinear, _check_skip, _input_fq, _skip_set, _swap_layers, _weight_fq

__all__ = ["quantize_model", "set_observing", "calibrate", "post_training_quantize", "layer_sensitivity",
           "capture_activations"]


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
    layer_bits: Mapping[str, int] | None = None,
) -> nn.Module:
    """A fake-quantized copy of ``model`` for post-training quantization (PTQ).

    Every Conv2d/Linear becomes :class:`QuantConv2d`/:class:`QuantLinear`.
    Weights: ``weight_bits``, signed, per output channel (or per tensor),
    ``weight_observer``. Inputs to each layer: ``act_bits`` unsigned asymmetric,
    per tensor, ``act_observer`` (``act_bits=None``: weights only;
    ``symmetric_acts=True``: signed symmetric instead). Layers whose
    qualified name is in ``skip`` stay float (e.g. the first and last layer); ``layer_bits``
    ``{name: bits}`` gives some layers other weight bits (mixed precision, :mod:`.mixed`).
    BatchNorm is folded first (as an int8 deployment does), unless
    ``fold_batch_norm=False``. Every new module takes the mode of the layer it
    replaces, so a folded copy is in eval mode through and through: its quantizers
    do not observe what it sees, and using it before :func:`calibrate` raises
    instead of silently calibrating on that data. Run :func:`calibrate` next.
    """
    skip = _skip_set(skip)
    _check_skip(model, skip)
    layer_bits = dict(layer_bits or {})
    _check_skip(model, set(layer_bits))
    model = fuse_conv_bn(model) if fold_batch_norm else copy.deepcopy(model)

    def wrap(name: str, layer: nn.Module) -> nn.Module:
        w_fq = _weight_fq(layer_bits.get(name, weight_bits), weight_observer, per_channel, symmetric_weights)
        a_fq = _input_fq(act_bits, act_observer, symmetric_acts)
        return QuantConv2d(layer, w_fq, a_fq) if isinstance(layer, nn.Conv2d) else QuantLinear(layer, w_fq, a_fq)

    _swap_layers(model, wrap, skip)
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
