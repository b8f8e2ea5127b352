"""Gradient clipping: by value, by global norm, per parameter, and adaptive (AGC).

Taught in: 03_gradient_clipping.

Clipping changes only the *update*: it runs between ``loss.backward()`` and
``optimizer.step()`` and rescales or caps the gradients. It never changes the
model's size, its speed, or its detections directly.

``clip_grad_value_`` and ``clip_grad_norm_`` have the semantics of
``torch.nn.utils`` (tested equal in ``tests/test_clipping.py``); AGC follows
Brock et al. 2021, "High-Performance Large-Scale Image Recognition Without
Normalization" (NFNets). :class:`GradNormMonitor` and :class:`GradientClipping`
plug into :func:`course_utils.train.fit` as hooks.

Thresholds are checked once, by each public function and by the hook's
constructor: a negative ``max_norm`` would flip every gradient's sign and a NaN
would turn them all into NaN, so both are refused with a ValueError that names
the value and a typical range. For valid thresholds the results equal torch's.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from .train import Hook, NonFiniteLossError, StepState, fit, get_device, seed_everything

__all__ = [
    "clip_grad_value_",
    "clip_grad_norm_",
    "clip_grad_norm_per_param_",
    "unitwise_norm",
    "adaptive_clip_grad_",
    "grad_norm",
    "GradNormMonitor",
    "GradientClipping",
    "CLIP_METHODS",
    "clip_lab_run",
]

_Params = Tensor | Iterable[Tensor]


def _real(value: Any) -> float | None:
    """``value`` as a float if it is a real number (or a one-element tensor), else None; bools are not numbers."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    return float(value)


def _check_positive(name: str, value: Any, typical: str) -> None:
    """Refuse anything but a finite number > 0, naming ``name``, the value and a ``typical`` range."""
    v = _real(value)
    if v is None or not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0 (typically {typical}); got {value!r}")


def _check_norm_type(norm_type: Any) -> None:
    v = _real(norm_type)
    if v is None or math.isnan(v) or v < 1:
        raise ValueError(f"norm_type must be a number >= 1 or math.inf (2.0: Euclidean, the usual; math.inf: "
                         f"the largest |entry|); got {norm_type!r}")


def _grads(parameters: _Params) -> list[Tensor]:
    """The ``.grad`` of every parameter that has one (parameters without grads are skipped).

    Checked: ``parameters`` is a tensor or an iterable of tensors, not a module (pass
    ``model.parameters()``)."""
    if isinstance(parameters, nn.Module):
        raise TypeError(f"pass the parameters, not the module: model.parameters() instead of a "
                        f"{type(parameters).__name__}")
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_value_(parameters: _Params, clip_value: float) -> None:
    """Clamp every gradient entry to ``[-clip_value, clip_value]``, in place.

    ``g ← min(max(g, -c), c)`` elementwise. Changes the gradient's *direction*
    whenever some entries are cut and others are not. Same as
    ``torch.nn.utils.clip_grad_value_`` (which raises for a ``clip_value`` beyond the
    gradients' dtype, e.g. 1e300 for float32; here the bound is capped at the dtype's
    largest value). Checked: ``clip_value`` finite and >= 0.
    """
    v = _real(clip_value)
    if v is None or not math.isfinite(v) or v < 0:
        raise ValueError(f"clip_value must be a finite number >= 0 (typically 0.1 to 10); got {clip_value!r}")
    _clip_value(_grads(parameters), clip_value)


def _clip_value(grads: list[Tensor], clip_value: float) -> None:
    for g in grads:
        # a bound beyond the dtype's range (1e300 for float32) clips nothing but ±inf; torch's clamp_ would raise
        bound = min(float(clip_value), torch.finfo(g.dtype).max) if g.is_floating_point() else clip_value
        g.clamp_(min=-bound, max=bound)


def grad_norm(parameters: _Params, norm_type: float = 2.0) -> Tensor:
    """Global gradient norm: the ``norm_type``-norm of all gradients as one vector.

    ``‖g‖_p = ‖(‖g_1‖_p, ..., ‖g_n‖_p)‖_p`` over the n parameters (for p = inf: the
    largest ``|entry|``). Returns ``tensor(0.)`` when no parameter has a gradient.
    Checked: ``norm_type`` >= 1 or ``math.inf``.
    """
    _check_norm_type(norm_type)
    return _total_norm(_grads(parameters), norm_type)


def _total_norm(grads: list[Tensor], norm_type: float) -> Tensor:
    if not grads:
        return torch.tensor(0.0)
    norms = torch.stack([torch.linalg.vector_norm(g.detach(), norm_type) for g in grads])
    return torch.linalg.vector_norm(norms, norm_type)


def clip_grad_norm_(
    parameters: _Params, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> Tensor:
    """Rescale all gradients together so their global norm is at most ``max_norm``.

    ``g ← g · min(1, max_norm / (‖g‖ + 1e-6))`` with ``‖g‖`` from :func:`grad_norm`.
    Keeps the gradient's *direction*. Returns the norm *before* clipping.
    If that norm is NaN or inf: raises ``RuntimeError`` when ``error_if_nonfinite``,
    otherwise scales by the non-finite factor anyway (so the gradients become
    NaN), exactly like ``torch.nn.utils.clip_grad_norm_``.
    Checked: ``max_norm`` finite and > 0, ``norm_type`` >= 1 or ``math.inf``.
    """
    _check_positive("max_norm", max_norm, "0.1 to 10")
    _check_norm_type(norm_type)
    return _clip_norm(_grads(parameters), max_norm, norm_type, error_if_nonfinite)


def _clip_norm(grads: list[Tensor], max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False) -> Tensor:
    total_norm = _total_norm(grads, norm_type)
    if not grads:
        return total_norm
    if error_if_nonfinite and not torch.isfinite(total_norm):
        raise RuntimeError(
            f"The total norm of order {float(norm_type)} for gradients is non-finite, so it cannot be clipped. "
            "Lower the learning rate or find the NaN (set error_if_nonfinite=False to scale by it anyway)."
        )
    scale = torch.clamp(max_norm / (total_norm + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.to(g.device, g.dtype))
    return total_norm


def clip_grad_norm_per_param_(parameters: _Params, max_norm: float, norm_type: float = 2.0) -> Tensor:
    """Per-layer clipping: each parameter's gradient is norm-clipped on its own.

    ``g_k ← g_k · min(1, max_norm / (‖g_k‖ + 1e-6))`` for every parameter k.
    Returns the per-parameter norms before clipping, shape (n,).
    Checked: ``max_norm`` finite and > 0, ``norm_type`` >= 1 or ``math.inf``.
    """
    _check_positive("max_norm", max_norm, "0.1 to 10")
    _check_norm_type(norm_type)
    return _clip_per_param(_grads(parameters), max_norm, norm_type)


def _clip_per_param(grads: list[Tensor], max_norm: float, norm_type: float = 2.0) -> Tensor:
    norms = []
    for g in grads:
        norm = torch.linalg.vector_norm(g.detach(), norm_type)
        g.mul_(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        norms.append(norm)
    return torch.stack(norms) if norms else torch.zeros(0)


def unitwise_norm(x: Tensor) -> Tensor:
    """L2 norm per output unit: over all dims but the first for matrices and conv kernels.

    Shapes: (out, in) -> (out, 1); (out, in, kh, kw) -> (out, 1, 1, 1);
    vectors (biases, BN weights) and scalars count as one unit -> () . Checked: ``x`` a tensor.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"unitwise_norm needs a torch.Tensor (a weight or its gradient), got {type(x).__name__}")
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


def adaptive_clip_grad_(parameters: _Params, clip_factor: float = 0.01, eps: float = 1e-3) -> Tensor:
    """Unit-wise adaptive gradient clipping (AGC, Brock et al. 2021), in place.

    For each output unit i of each parameter W with gradient G:
    ``if ‖G_i‖ / max(‖W_i‖, eps) > λ:  G_i ← λ · max(‖W_i‖, eps) / ‖G_i‖ · G_i``
    with λ = ``clip_factor``. The allowed gradient grows with the weights, so
    large layers are not throttled by a threshold tuned for small ones.
    Returns the fraction of units that were clipped (a 0-dim tensor).
    Checked: ``clip_factor`` and ``eps`` finite and > 0.
    """
    _check_positive("clip_factor", clip_factor, "0.01 to 0.16, as in NFNets")
    _check_positive("eps", eps, "1e-3")
    return _agc(parameters, clip_factor, eps)


def _agc(parameters: _Params, clip_factor: float, eps: float = 1e-3) -> Tensor:
    if isinstance(parameters, nn.Module):
        raise TypeError(f"pass the parameters, not the module: model.parameters() instead of a "
                        f"{type(parameters).__name__}")
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    clipped, total = 0, 0
    for p in parameters:
        if p.grad is None:
            continue
        w_norm = unitwise_norm(p.detach())
        w_norm = w_norm.clamp(min=min(float(eps), torch.finfo(w_norm.dtype).max))  # (an eps beyond float32 is capped)
        g_norm = unitwise_norm(p.grad.detach())
        max_norm = clip_factor * w_norm
        too_big = g_norm > max_norm
        p.grad.mul_(torch.where(too_big, max_norm / g_norm.clamp(min=1e-6), torch.ones_like(g_norm)))
        clipped += int(too_big.sum())
        total += too_big.numel()
    return torch.tensor(clipped / max(total, 1))


# --------------------------------------------------------------------------- #
# Hooks for the training loop
# --------------------------------------------------------------------------- #
class GradNormMonitor(Hook):
    """Record gradient norms every step (put it *before* a clipping hook to see raw norms).

    Appends the global L2 norm to ``state.history["grad_norm"]``; with
    ``per_layer=True`` also keeps ``self.layer_norms[name]`` (one list per parameter).
    """

    def __init__(self, per_layer: bool = False) -> None:
        self.per_layer = per_layer
        self.layer_norms: dict[str, list[float]] = {}

    def after_backward(self, state: StepState) -> None:
        params = [p for p in state.model.parameters() if p.grad is not None]
        state.history.setdefault("grad_norm", []).append(grad_norm(params).item())
        if self.per_layer:
            for name, p in state.model.named_parameters():
                if p.grad is not None:
                    self.layer_norms.setdefault(name, []).append(torch.linalg.vector_norm(p.grad.detach()).item())


#: Methods :class:`GradientClipping` knows; the threshold means a different thing for each.
CLIP_METHODS = {
    "none": "no clipping (threshold ignored)",
    "value": "clip every gradient entry to [-threshold, threshold]",
    "norm": "rescale all gradients so the global L2 norm <= threshold",
    "per_param": "rescale each parameter's gradient so its L2 norm <= threshold",
    "agc": "unit-wise adaptive clipping with clip_factor = threshold",
}


class GradientClipping(Hook):
    """Clip gradients in ``after_backward``, i.e. between ``backward()`` and ``step()``.

    Records in ``state.history["clip_active"]`` whether the clip changed anything
    this step (1.0) or not (0.0), so you can see how often it bites: a threshold
    that is active on every step is really just a smaller learning rate.
    Checked once, here: ``method`` is one of :data:`CLIP_METHODS` and, unless it is
    ``"none"``, ``threshold`` is finite and > 0.
    """

    #: what a sensible threshold looks like, per method (for error messages)
    TYPICAL = {"value": "0.1 to 10", "norm": "0.1 to 10", "per_param": "0.1 to 10", "agc": "0.01 to 0.16, as in NFNets"}

    def __init__(self, method: str = "norm", threshold: float = 1.0) -> None:
        if not isinstance(method, str) or method not in CLIP_METHODS:
            raise ValueError(f"unknown clipping method {method!r}; choose one of {sorted(CLIP_METHODS)}")
        if method != "none":
            _check_positive(f"threshold for method {method!r}", threshold, self.TYPICAL[method])
        self.method, self.threshold = method, threshold

    def clip(self, parameters: list[nn.Parameter]) -> bool:
        """Apply the clipping rule; return whether it changed any gradient."""
        if self.method == "value":
            grads = _grads(parameters)
            active = any(bool((g.abs() > self.threshold).any()) for g in grads)
            _clip_value(grads, self.threshold)
            return active
        if self.method == "norm":
            return bool(_clip_norm(_grads(parameters), self.threshold) > self.threshold)
        if self.method == "per_param":
            return bool((_clip_per_param(_grads(parameters), self.threshold) > self.threshold).any())
        if self.method == "agc":
            return bool(_agc(parameters, self.threshold) > 0)
        return False

    def after_backward(self, state: StepState) -> None:
        params = [p for p in state.model.parameters() if p.grad is not None]
        state.history.setdefault("clip_active", []).append(float(self.clip(params)))


def clip_lab_run(
    method: str = "none",
    threshold: float = 1.0,
    lr: float = 0.1,
    optimizer: str = "sgd",
    steps: int = 150,
    batch_size: int = 64,
    seed: int = 0,
) -> dict[str, Any]:
    """One short, seeded training run of :class:`~course_utils.models.DigitsCNN` with a clipping rule.

    The experiment behind notebook 03's clip explorer: about a second on a CPU.
    ``optimizer`` is ``"sgd"`` (momentum 0.9) or ``"adam"``. Never raises on
    divergence: returns ``{"loss", "grad_norm", "clip_active": per-step lists,
    "diverged": bool, "accuracy": test accuracy (nan if diverged)}``.
    Checked up front: ``method``/``threshold`` (as :class:`GradientClipping`), ``lr`` > 0,
    ``optimizer``, and ``steps``, ``batch_size`` positive ints (0 steps would report an
    untrained model's accuracy as if it were a result), ``seed`` an int in ``0 .. 2**32 - 1``.
    """
    from torch.utils.data import DataLoader

    from .data import collate_detection, load_digits
    from .models import DigitsCNN

    _check_positive("learning rate lr", lr, "1e-3 to 0.1 here")
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
    for name, value, typical in (("steps", steps, "150"), ("batch_size", batch_size, "64")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive int (e.g. {typical}); got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in 0 .. 2**32 - 1 (numpy's limit), got {seed!r}")
    seed = int(seed)  # numpy integers too: torch.Generator.manual_seed takes only Python ints
    clipping = GradientClipping(method, threshold)
    seed_everything(seed)
    device = get_device()
    model = DigitsCNN()
    opt = (torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=lr))
    loader = DataLoader(load_digits("train"), batch_size=batch_size, shuffle=True, collate_fn=collate_detection,
                        generator=torch.Generator().manual_seed(seed))
    hooks = [GradNormMonitor(), clipping]
    diverged, epochs = False, math.ceil(steps / len(loader))
    try:
        history = fit(model, loader, opt, epochs, device=device, hooks=hooks, progress=False, max_steps=steps)
    except NonFiniteLossError as err:
        diverged, history = True, err.history
    accuracy = math.nan
    if not diverged:
        test = load_digits("test")
        with torch.inference_mode():
            logits = model.eval()(torch.stack([img for img, _ in test]).to(device))
        accuracy = (logits.argmax(1).cpu() == torch.stack([t["labels"] for _, t in test])).float().mean().item()
    return {"loss": history.get("loss", []), "grad_norm": history.get("grad_norm", []),
            "clip_active": history.get("clip_active", []), "diverged": diverged, "accuracy": accuracy}
