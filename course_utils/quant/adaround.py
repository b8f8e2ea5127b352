"""AdaRound: learn, per weight, whether to round up or down (Nagel et al. 2020).

Taught in: 09_integer_inference (post-training quantization beyond min-max and round-to-nearest).

Nagel, Amjad, van Baalen, Louizos, Blankevoort 2020, "Up or Down? Adaptive Rounding
for Post-Training Quantization" (ICML). Round-to-nearest rounds each weight on its own;
what matters is the layer's *output*. AdaRound keeps the scale ``S`` of the layer's
weight quantizer and, for each weight, learns a continuous ``V`` that chooses between
``floor(W/S)`` and ``floor(W/S) + 1``::

    h(V)   = clamp(σ(V) (ζ − γ) + γ, 0, 1)                ζ = 1.1, γ = −0.1   (rectified sigmoid)
    W̃      = S · clamp(floor(W/S) + h(V), q_min, q_max)    (the soft-quantized weight)
    loss   = ‖W x − W̃ x̂‖²  +  λ Σ_ij 1 − |2 h(V_ij) − 1|^β    λ = 0.01, β annealed 20 → 2

``x`` is the input the float model gives the layer, ``x̂`` the input the (partly)
quantized model gives it, fake-quantized by the layer's own input quantizer -- the
asymmetric reconstruction of the paper (its section 5), as AIMET implements it. The
regulariser is 0 only at ``h ∈ {0, 1}``, so as β falls it forces every ``h`` to one
side; at the end ``q = floor(W/S) + 1[h(V) >= 0.5]``. Layers are done one at a time in
network order, each on the inputs of the model whose earlier layers are already rounded.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .affine import _reciprocal
from .modules import FakeQuantize, QuantConv2d, QuantLinear
from .ptq import calibrate, quantize_model

__all__ = ["ZETA", "GAMMA", "rectified_sigmoid", "rounding_regularizer", "adaround_init", "soft_quantized_weight",
           "adaround_beta", "adaround_layer", "adaround"]

#: the stretch of the rectified sigmoid (Louizos et al. 2018's hard concrete; Nagel et al. 2020, eq. 23)
ZETA, GAMMA = 1.1, -0.1


def rectified_sigmoid(v: Tensor) -> Tensor:
    """``h(V) = clamp(σ(V) (ζ − γ) + γ, 0, 1)`` with ζ = 1.1, γ = −0.1; shapes (...) -> (...), values in [0, 1].

    Unlike σ it reaches 0 and 1 exactly (at finite V), and its gradient does not vanish near them.
    """
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def rounding_regularizer(v: Tensor, beta: float) -> Tensor:
    """``f_reg = Σ_ij 1 − |2 h(V_ij) − 1|^β`` (Nagel et al. 2020, eq. 24): 0 exactly when every h is 0 or 1.

    Large β (20) leaves h free except near 0.5's far sides; small β (2) pushes every h to 0 or 1.
    Shapes: v (...) -> a scalar.
    """
    if not isinstance(beta, numbers.Real) or isinstance(beta, bool) or not beta > 0:
        raise ValueError(f"beta must be a number > 0 (AdaRound anneals it from 20 to 2), got {beta!r}")
    return (1 - (2 * rectified_sigmoid(v) - 1).abs().pow(float(beta))).sum()


def _along_channels(scale: Tensor, weight: Tensor) -> Tensor:
    """A per-channel scale (C,) reshaped to (C, 1, ...) for ``weight`` (C, ...); a per-tensor one as is."""
    return scale.reshape(-1, *[1] * (weight.ndim - 1)) if scale.numel() > 1 else scale.reshape(())


def adaround_init(weight: Tensor, scale: Tensor) -> Tensor:
    """``V`` with ``h(V) = W/S − floor(W/S)``, so that at the start ``W̃ = W`` (within float error).

    ``σ(V) = (frac − γ) / (ζ − γ)``, i.e. ``V = logit((frac − γ) / (ζ − γ))``; finite, since
    ``frac ∈ [0, 1)`` gives σ(V) in [1/12, 11/12). Shapes: weight (C, ...), scale (C,) or () -> V like weight.
    """
    w_s = weight.detach() * _reciprocal(_along_channels(scale, weight))
    frac = w_s - torch.floor(w_s)
    return torch.logit((frac - GAMMA) / (ZETA - GAMMA))


def soft_quantized_weight(weight: Tensor, scale: Tensor, v: Tensor, q_min: int, q_max: int) -> Tensor:
    """``W̃ = S · clamp(floor(W/S) + h(V), q_min, q_max)``; differentiable in ``v``. Shapes: like ``weight``.

    With ``h`` replaced by ``1[h >= 0.5]`` this is the hard AdaRounded weight ``S · q``.
    """
    s = _along_channels(scale, weight)
    floor = torch.floor(weight.detach() * _reciprocal(s))
    return s * torch.clamp(floor + rectified_sigmoid(v), q_min, q_max)


def _hard_integers(weight: Tensor, scale: Tensor, v: Tensor, q_min: int, q_max: int) -> Tensor:
    """``q = clamp(floor(W/S) + 1[h(V) >= 0.5], q_min, q_max)`` as float (integer-valued), like ``weight``."""
    floor = torch.floor(weight.detach() * _reciprocal(_along_channels(scale, weight)))
    return torch.clamp(floor + (rectified_sigmoid(v) >= 0.5).to(weight.dtype), q_min, q_max)


def adaround_beta(step: int, iterations: int, beta_range: tuple[float, float] = (20.0, 2.0),
                  warm_start: float = 0.2) -> float | None:
    """β at ``step``: None (no regulariser) for the first ``warm_start`` of the steps, then a cosine
    from ``beta_range[0]`` down to ``beta_range[1]``: ``β = β_end + ½ (β_start − β_end)(1 + cos(π t))``,
    ``t = (step − warm) / (iterations − warm)`` (AIMET's schedule)."""
    warm = warm_start * iterations
    if step < warm:
        return None
    start, end = beta_range
    t = (step - warm) / max(iterations - warm, 1)
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))


def _patches(layer: nn.Module, x: Tensor) -> Tensor:
    """The rows the layer multiplies by its weight matrix: conv im2col (N·L, C_in·kh·kw), linear (N·…, in)."""
    if isinstance(layer, QuantLinear):
        return x.reshape(-1, x.shape[-1])
    conv = layer.conv
    cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])  # (N, K, L) -> (N·L, K)


def _check_layer(layer: Any) -> tuple[nn.Module, FakeQuantize]:
    """The wrapped float layer and its weight quantizer, after the checks AdaRound needs."""
    if not isinstance(layer, (QuantConv2d, QuantLinear)):
        raise TypeError(f"adaround_layer takes a QuantConv2d or QuantLinear (from quantize_model), got "
                        f"{type(layer).__name__}; quantize the model first")
    fq = layer.weight_fq
    if fq.scale.numel() == 0:
        raise RuntimeError("adaround_layer: the layer's weight quantizer has no scale yet; run "
                           "course_utils.quant.calibrate(model, batches) first (adaround does it for you)")
    if fq.dynamic:
        raise ValueError("adaround_layer: the weight quantizer is dynamic (a QAT layer recomputes its scale every "
                         "call); AdaRound needs a fixed scale -- use a PTQ model from quantize_model")
    if bool((fq.zero_point != 0).any()):
        raise ValueError("adaround_layer takes symmetric weights (zero point 0); build the model with "
                         "quantize_model(..., symmetric_weights=True)")
    inner = layer.linear if isinstance(layer, QuantLinear) else layer.conv
    if isinstance(layer, QuantConv2d) and (inner.groups != 1 or inner.padding_mode != "zeros"
                                           or isinstance(inner.padding, str)):
        raise ValueError(f"adaround_layer supports plain convs (groups=1, numeric zero padding), got groups="
                         f"{inner.groups}, padding={inner.padding!r}, padding_mode={inner.padding_mode!r}")
    return inner, fq


def _check_inputs(layer: nn.Module, quant_inputs: Any, float_inputs: Any) -> None:
    for name, x in (("quant_inputs", quant_inputs), ("float_inputs", float_inputs)):
        if not isinstance(x, Tensor):
            raise TypeError(f"adaround_layer: {name} must be a tensor of the layer's inputs, got {type(x).__name__}")
        want = 4 if isinstance(layer, QuantConv2d) else None
        if x.numel() == 0 or (want is not None and x.ndim != want):
            raise ValueError(f"adaround_layer: {name} has shape {tuple(x.shape)}; a conv needs (N, C, H, W) inputs, "
                             "a linear (N, in) -- what capture_activations returns")
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"adaround_layer: {name} holds NaN or inf values")
    if quant_inputs.shape != float_inputs.shape:
        raise ValueError(f"adaround_layer: quant_inputs {tuple(quant_inputs.shape)} and float_inputs "
                         f"{tuple(float_inputs.shape)} must be the same images, shaped alike")


def _sampled_rows(layer: nn.Module, quant_inputs: Tensor, float_inputs: Tensor, num_samples: int,
                  generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """The same ``num_samples`` random rows (output positions) of x̂ (through the input quantizer) and x."""
    with torch.no_grad():
        xq = layer.input_fq(quant_inputs) if layer.input_fq is not None else quant_inputs
        rows_q, rows_f = _patches(layer, xq), _patches(layer, float_inputs)
    if rows_q.shape[0] > num_samples:
        idx = torch.randperm(rows_q.shape[0], generator=generator)[:num_samples]
        rows_q, rows_f = rows_q[idx], rows_f[idx]
    return rows_q, rows_f


def _check_settings(iterations: Any, lam: Any, lr: Any, batch_size: Any, num_samples: Any) -> None:
    for name, value in (("iterations", iterations), ("batch_size", batch_size), ("num_samples", num_samples)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (("lam", lam), ("lr", lr)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number > 0 (AdaRound: lam=0.01; Adam lr about 1e-3..1e-2), got {value!r}")


def adaround_layer(layer: QuantConv2d | QuantLinear, quant_inputs: Tensor, float_inputs: Tensor | None = None,
                   iterations: int = 1000, lam: float = 0.01, beta_range: tuple[float, float] = (20.0, 2.0),
                   warm_start: float = 0.2, lr: float = 1e-2, batch_size: int = 512, num_samples: int = 8192,
                   seed: int = 0) -> dict[str, float]:
    """AdaRound one PTQ layer in place: learn V, round, write ``W ← S · q``; returns what it did.

    Minimises ``mean_rows ‖x W^T − x̂ W̃^T‖²`` (summed over output channels) ``+ lam · f_reg(V; β)``
    with Adam (``lr``) for ``iterations`` steps, each on ``batch_size`` rows drawn from ``num_samples``
    rows (im2col patches at random output positions for a conv). β follows :func:`adaround_beta`.
    ``quant_inputs``: the layer's inputs in the quantized model (before its input quantizer, which
    is applied here), ``float_inputs``: in the float model (default: the same tensor). Shapes:
    (N, C_in, H, W) for a conv, (N, in) for a linear. The bias cancels in the difference.

    At the end ``q = floor(W/S) + 1[h(V) >= 0.5]`` and the float weight becomes ``S · q``, which the
    layer's frozen weight quantizer (same ``S``) maps back to exactly ``q``. Returns
    ``{"mse_nearest", "mse_adaround"}`` (the loss's first term with round-to-nearest and with the
    AdaRounded weight, on all rows), ``"changed_fraction"`` (weights rounded unlike nearest) and
    ``"soft_fraction"`` (weights whose h(V) ended strictly between 0 and 1; near 0 once β has done its work).
    """
    inner, fq = _check_layer(layer)
    float_inputs = quant_inputs if float_inputs is None else float_inputs
    _check_inputs(layer, quant_inputs, float_inputs)
    _check_settings(iterations, lam, lr, batch_size, num_samples)
    generator = torch.Generator().manual_seed(seed)
    weight = inner.weight.detach()
    w2d = weight.reshape(weight.shape[0], -1)
    scale, q_min, q_max = fq.scale.detach().clone(), fq.observer.q_min, fq.observer.q_max
    rows_q, rows_f = _sampled_rows(layer, quant_inputs, float_inputs, num_samples, generator)
    target = rows_f @ w2d.T  # (rows, C_out): the float layer on float inputs, bias left out

    def mse(w: Tensor, rows: Tensor = rows_q, tgt: Tensor = target) -> Tensor:
        return ((rows @ w.reshape(w.shape[0], -1).T - tgt) ** 2).sum(1).mean()

    v = adaround_init(weight, scale).requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=lr)
    for step in range(iterations):
        idx = torch.randint(rows_q.shape[0], (min(batch_size, rows_q.shape[0]),), generator=generator)
        loss = mse(soft_quantized_weight(weight, scale, v, q_min, q_max), rows_q[idx], target[idx])
        beta = adaround_beta(step, iterations, beta_range, warm_start)
        if beta is not None:
            loss = loss + lam * rounding_regularizer(v, beta)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        q = _hard_integers(weight, scale, v, q_min, q_max)
        s = _along_channels(scale, weight)
        nearest = torch.clamp(torch.round(weight * _reciprocal(s)), q_min, q_max)
        stats = {"mse_nearest": float(mse(s * nearest)), "mse_adaround": float(mse(s * q)),
                 "changed_fraction": float((q != nearest).float().mean()),
                 "soft_fraction": float(((h := rectified_sigmoid(v)) > 0).logical_and(h < 1).float().mean())}
        inner.weight.copy_(s * q)
        _check_written(inner.weight, fq, scale, q)
    return stats


def _check_written(weight: Tensor, fq: FakeQuantize, scale: Tensor, q: Tensor) -> None:
    """The weight quantizer kept its scale and maps the written ``S · q`` back to exactly ``q``."""
    if not torch.equal(fq.scale, scale):
        raise RuntimeError("adaround_layer: the weight quantizer's scale changed while rounding; freeze its observer")
    back = torch.round(weight * _reciprocal(_along_channels(fq.scale, weight)))
    if not torch.equal(back, q):
        raise RuntimeError(f"adaround_layer: S · q does not fake-quantize back to q in {int((back != q).sum())} weights")


def _quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantLinear))]


def _layer_inputs(model: nn.Module, name: str, batches: list[Any], forward: Callable[[nn.Module, Any], Any],
                  quantized: bool) -> Tensor:
    """The inputs layer ``name`` receives over ``batches``, with the quantizers on (x̂) or off (x), concatenated."""
    quantizers = [m for m in model.modules() if isinstance(m, FakeQuantize)]
    enabled = [m.enabled for m in quantizers]
    seen: list[Tensor] = []
    handle = model.get_submodule(name).register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    try:
        for m in quantizers:
            m.enabled = m.enabled and quantized
        with torch.no_grad():
            for batch in batches:
                forward(model, batch)
    finally:
        handle.remove()
        for m, e in zip(quantizers, enabled):
            m.enabled = e
    return torch.cat(seen)


def _recalibrate_inputs(model: nn.Module, batches: list[Any], forward: Callable[[nn.Module, Any], Any]) -> None:
    """Observe the input quantizers afresh on the rounded model; the weight quantizers stay frozen."""
    layers = [m for _, m in _quant_layers(model) if m.input_fq is not None]
    for m in layers:
        m.input_fq.observer.reset()
        m.input_fq.observing = True
        m.input_fq.train()
    with torch.no_grad():
        for batch in batches:
            forward(model, batch)
    for m in layers:
        m.input_fq.observing = False
        m.input_fq.eval()


def adaround(model: nn.Module, calibration_batches: Iterable[Any], forward: Callable[[nn.Module, Any], Any] | None = None,
             iterations: int = 1000, lam: float = 0.01, lr: float = 1e-2, batch_size: int = 512,
             num_samples: int = 8192, seed: int = 0, log: Callable[[str, dict[str, float]], None] | None = None,
             **settings: Any) -> nn.Module:
    """Post-training quantization with AdaRounded weights (Nagel et al. 2020): a calibrated PTQ copy of ``model``.

    1. ``quantize_model(model, **settings)`` and :func:`calibrate` on ``calibration_batches``
       (weight scales from the weight observer, min-max by default; activation ranges);
    2. every QuantConv2d/QuantLinear in network order: :func:`adaround_layer` on its inputs in the
       float model (x) and in the quantized model whose earlier layers are already rounded (x̂);
    3. the input quantizers observe the calibration batches again on the rounded model (the weight
       scales stay frozen; calling :func:`calibrate` on the result would re-observe the weights too).

    ``forward(model, batch)`` runs one batch (default ``model(batch)``); ``log(name, stats)`` is called after each
    layer with :func:`adaround_layer`'s stats. The other arguments are :func:`adaround_layer`'s. Returns the model in eval mode.
    """
    if isinstance(calibration_batches, Tensor):
        raise TypeError(f"adaround takes an iterable of batches, got one tensor of shape "
                        f"{tuple(calibration_batches.shape)}; pass [images] or a list of batches")
    batches = list(calibration_batches)
    if not batches:
        raise ValueError("adaround got no calibration batches: pass a non-empty calibration set")
    if not settings.get("symmetric_weights", True):
        raise ValueError("adaround needs symmetric weights (zero point 0); drop symmetric_weights=False")
    _check_settings(iterations, lam, lr, batch_size, num_samples)
    forward = forward or (lambda m, b: m(b))
    qmodel = calibrate(quantize_model(model, **settings), batches, forward)
    layers = _quant_layers(qmodel)
    if not layers:
        raise ValueError("adaround: the model has no Conv2d/Linear layer to round (or all are in skip)")
    float_model = copy.deepcopy(qmodel)  # keeps the float weights; run with its quantizers off
    for i, (name, layer) in enumerate(layers):
        x_float = _layer_inputs(float_model, name, batches, forward, quantized=False)
        x_quant = _layer_inputs(qmodel, name, batches, forward, quantized=True)
        stats = adaround_layer(layer, x_quant, x_float, iterations=iterations, lam=lam, lr=lr, batch_size=batch_size,
                               num_samples=num_samples, seed=seed + i)
        if log is not None:
            log(name, stats)
    _recalibrate_inputs(qmodel, batches, forward)
    return qmodel.eval()
