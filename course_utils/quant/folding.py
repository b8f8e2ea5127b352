"""Batch-norm folding: a Conv2d followed by an eval-mode BatchNorm2d is one conv.

Taught in: 05_qat_and_int8 (every int8 deployment folds BN first).
"""

from __future__ import annotations

import copy

import torch
import torch.fx
from torch import nn

__all__ = ["fold_bn", "conv_bn_pairs", "fuse_conv_bn"]


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
