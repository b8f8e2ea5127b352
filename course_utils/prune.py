"""Pruning: zero single weights (unstructured) or remove whole channels (structured).

Taught in: 07_pruning.

Two families, two different payoffs:

* **unstructured magnitude pruning** (Han et al. 2015, "Learning both Weights
  and Connections") -- zero the weights with the smallest ``|w|``, either with
  one threshold for the whole network (``scope="global"``) or the same fraction
  in every layer (``scope="layer"``). The tensors keep their shape, so a dense
  GPU/CPU kernel does exactly as many multiply-adds as before: the model gets
  *sparser*, not faster (:func:`count_flops` does not change). Masks are kept
  through fine-tuning either by torch's re-parametrisation (:func:`apply_masks`,
  ``w = w_orig ⊙ m`` before every forward) or by the :class:`MaskHook` for
  :func:`course_utils.train.fit` (``w ← w ⊙ m`` after every optimizer step).
* **structured channel pruning** -- score every output channel (L1 norm of its
  filter, Li et al. 2017, "Pruning Filters for Efficient ConvNets"; or the BN
  scale ``|γ|``, Liu et al. 2017, "Network Slimming"), then *physically* cut
  the channel out of its producer conv + BN and out of the input of every conv
  that reads it. The result is a smaller dense :class:`TinyDetector` that is
  really faster.

A *channel group* (:class:`ChannelGroup`) is one set of channels that must be
removed together: the producers whose output channels they are and the
consumers that read them. For :class:`TinyDetector` (see
:func:`detector_channel_groups`) every Conv-BN-ReLU block's output is a group,
and so is the **neck**: ``p3 = lateral3(c3) + up(lateral4(c4))`` adds the two
laterals channel by channel, so channel ``j`` of both laterals and input ``j``
of ``smooth`` go together. The class and box output convs never lose outputs.

Why cutting is *exact*: :func:`mask_channels` zeroes a removed channel's filter
(and bias) and its BN ``γ`` and ``β``, so the channel's output is
``ReLU(0·x̂ + 0) = 0`` (for the neck: ``0·x + 0`` from both laterals). A
consumer conv multiplies that channel by its weights and gets 0, so dropping
the consumer's input slice changes nothing. :func:`prune_channels` gives the
same outputs as the masked model (tested to 1e-5) with fewer parameters.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from .models import TinyDetector, count_parameters
from .train import Hook, StepState, check_training_run, fit, make_optimizer

__all__ = [
    "prunable_weights",
    "magnitude_masks",
    "apply_masks",
    "remove_masks",
    "MaskHook",
    "sparsity",
    "layer_sparsity",
    "ChannelGroup",
    "detector_channel_groups",
    "channel_counts",
    "l1_filter_importance",
    "bn_scale_importance",
    "folded_l1_importance",
    "group_importance",
    "channel_masks",
    "mask_channels",
    "prune_channels",
    "prune_detector",
    "shrink_to_state_dict",
    "bn_l1_penalty",
    "SlimmingPenalty",
    "count_flops",
    "sensitivity_scan",
    "iterative_prune",
]

CRITERIA = ("l1", "bn", "l1_folded", "random")
SCOPES = ("global", "layer")


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def _check_keep_ratio(keep_ratio: float) -> None:
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, numbers.Real) or not 0 < keep_ratio <= 1:
        raise ValueError(
            f"keep_ratio must be in (0, 1] -- the fraction of channels to KEEP in each group "
            f"(1.0 keeps everything; at least one channel always stays); got {keep_ratio}"
        )


def _check_multiple_of(multiple_of: int, channels: dict[str, int]) -> None:
    """``multiple_of`` is a positive int no larger than any group: a group of C < m channels could never be cut
    (at least one multiple of m is kept), so ``prune_detector`` would silently leave it whole."""
    if isinstance(multiple_of, bool) or not isinstance(multiple_of, numbers.Integral) or multiple_of < 1:
        raise ValueError(f"multiple_of must be a positive int (1: no rounding; 8 or 16 for CPU kernels), got {multiple_of!r}")
    too_small = {name: c for name, c in channels.items() if c < multiple_of}
    if too_small:
        name, c = min(too_small.items(), key=lambda item: item[1])
        raise ValueError(f"multiple_of={multiple_of} is larger than group {name!r} ({c} channels; "
                         f"{len(too_small)} group(s) this small): kept counts are rounded to multiples of "
                         f"{multiple_of}, so nothing could be pruned there. Use multiple_of <= {min(channels.values())} "
                         "(the smallest group), e.g. 8")


def _keep_top(scores: Tensor, k: int) -> Tensor:
    """Boolean mask keeping the ``k`` largest scores. Shapes: (N,) -> (N,) bool."""
    mask = torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)
    mask[scores.topk(k).indices] = True
    return mask


# ===================================================================== unstructured
def prunable_weights(model: nn.Module, include: Callable[[str, nn.Module], bool] | None = None) -> dict[str, Tensor]:
    """The weights unstructured pruning acts on: ``{"<module>.weight": weight}``.

    Default: every ``Conv2d`` and ``Linear`` weight (biases and BatchNorm are
    tiny and left alone). ``include(module_name, module) -> bool`` picks other
    modules (they need a ``weight``). Reads ``module.weight``, so under
    :func:`apply_masks` these are the masked weights ``w_orig ⊙ m``.
    """
    include = include or (lambda name, m: isinstance(m, (nn.Conv2d, nn.Linear)))
    selected = ((name, m) for name, m in model.named_modules() if include(name, m))
    return {f"{name}.weight": m.weight for name, m in selected if isinstance(getattr(m, "weight", None), Tensor)}


def magnitude_masks(
    model: nn.Module, sparsity: float, scope: str = "global", include: Callable[[str, nn.Module], bool] | None = None
) -> dict[str, Tensor]:
    """Keep-masks (True = keep) that zero the ``sparsity`` fraction of smallest ``|w|``.

    * ``"global"``: one threshold over all selected weights together: the
      ``round(s · N)`` smallest ``|w|`` of all ``N`` weights go (layers with
      small weights lose more -- an untrained TinyDetector's ``box_out``, initialised
      with std 0.01, can lose every weight; keep output layers out with
      ``include``). Same choice as ``torch.nn.utils.prune.global_unstructured``
      with ``L1Unstructured``.
    * ``"layer"``: ``round(s · n_l)`` smallest in each layer of ``n_l`` weights.

    Returns ``{"<module>.weight": bool mask shaped like the weight}``.
    Checked: ``0 <= sparsity < 1`` *after* rounding -- a sparsity so close to 1
    that ``round(s · n)`` reaches ``n`` would zero a whole layer (``"layer"``) or the
    whole network (``"global"``), which is refused with the largest sparsity that
    still keeps a weight; the weights must be finite.
    """
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real) or not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1) -- the fraction of weights to ZERO (0.9 = keep 10%); got {sparsity!r}")
    _check_choice("scope", scope, SCOPES)
    weights = {name: w.detach() for name, w in prunable_weights(model, include).items()}
    if not weights:
        raise ValueError("no weights selected for pruning: the model has no Conv2d/Linear, or `include` rejects every module")
    for name, w in weights.items():
        if not bool(torch.isfinite(w).all()):
            raise ValueError(f"{name} holds NaN or infinite weights: magnitudes cannot rank them (did training diverge?)")
    sizes = {name: w.numel() for name, w in weights.items()} if scope == "layer" else {"all selected layers": sum(
        w.numel() for w in weights.values())}
    emptied = [(n, name) for name, n in sizes.items() if n - round(sparsity * n) < 1]
    if emptied:
        n, name = min(emptied)
        raise ValueError(f"sparsity {sparsity!r} keeps 0 of {n} weights in {name} (round({sparsity!r} * {n}) = {n}); "
                         f"use at most {(n - 1) / n:.6g} (keeps 1), or keep that layer out with `include`")
    if scope == "layer":
        return {name: _keep_top(w.abs().flatten(), w.numel() - round(sparsity * w.numel())).view_as(w) for name, w in weights.items()}
    flat = torch.cat([w.abs().flatten() for w in weights.values()])  # (N,)
    keep = _keep_top(flat, len(flat) - round(sparsity * len(flat)))
    parts = keep.split([w.numel() for w in weights.values()])
    return {name: part.view_as(w) for (name, w), part in zip(weights.items(), parts)}


def _masked_module(model: nn.Module, name: str, mask: Tensor) -> nn.Module:
    module_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(module_name)
    except AttributeError:
        raise ValueError(f"mask {name!r} names no module of this model; make masks with magnitude_masks(model, ...)") from None
    if attr != "weight" or getattr(module, "weight", None) is None or module.weight.shape != mask.shape:
        raise ValueError(f"mask {name!r} does not fit: expected '<module>.weight' with the weight's shape, got {tuple(mask.shape)}")
    return module


def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """Zero the masked weights and keep them zero in any training loop (in place).

    Uses ``torch.nn.utils.prune.custom_from_mask``: the weight becomes
    ``weight = weight_orig ⊙ weight_mask``, recomputed before every forward, so
    the gradient reaching a pruned entry of ``weight_orig`` is 0 and the used
    weight stays exactly 0 whatever the optimizer does. Applying masks twice
    multiplies them. :func:`remove_masks` bakes the zeros into plain weights.
    """
    for name, mask in masks.items():
        module = _masked_module(model, name, mask)
        torch_prune.custom_from_mask(module, "weight", mask.to(module.weight.device))
    return model


def remove_masks(model: nn.Module) -> nn.Module:
    """Make :func:`apply_masks` permanent: ``weight ← weight_orig ⊙ weight_mask`` as a plain parameter (in place).

    Afterwards the state dict has ordinary ``weight`` keys again, and the zeros
    stay only as long as nothing trains them (use :class:`MaskHook` for that).
    """
    for module in model.modules():
        if hasattr(module, "weight_orig"):
            torch_prune.remove(module, "weight")
    return model


class MaskHook(Hook):
    """Keeps unstructured masks inside :func:`course_utils.train.fit`, with no re-parametrisation.

    ``w ← w ⊙ m`` when training starts and after every ``optimizer.step()``,
    so every forward pass sees the pruned weights at exactly 0 (momentum may
    push them off zero for a moment; the next projection puts them back).
    The state dict keeps its ordinary keys. ``masks``: from :func:`magnitude_masks`.
    """

    def __init__(self, masks: dict[str, Tensor]) -> None:
        self.masks = masks

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        for name, mask in self.masks.items():
            weight = _masked_module(model, name, mask).weight
            if not isinstance(weight, nn.Parameter):
                raise ValueError(f"{name} is re-parametrised by apply_masks: use apply_masks or MaskHook, not both "
                                 "(or call remove_masks first)")
            weight.mul_(mask.to(weight))

    def on_train_start(self, state: StepState) -> None:
        self.apply(state.model)

    def after_step(self, state: StepState) -> None:
        self.apply(state.model)


def layer_sparsity(model: nn.Module, include: Callable[[str, nn.Module], bool] | None = None) -> dict[str, float]:
    """Fraction of exactly-zero entries per selected weight: ``{"<module>.weight": zeros / numel}``."""
    return {name: (w == 0).sum().item() / w.numel() for name, w in prunable_weights(model, include).items()}


def sparsity(model: nn.Module, include: Callable[[str, nn.Module], bool] | None = None) -> float:
    """Fraction of exactly-zero entries over all selected weights together (Conv2d/Linear by default)."""
    weights = list(prunable_weights(model, include).values())
    total = sum(w.numel() for w in weights)
    return sum((w == 0).sum().item() for w in weights) / max(total, 1)


# ===================================================================== channel groups
@dataclass
class ChannelGroup:
    """Channels that must be removed together (module names as in ``model.named_modules()``).

    ``producers``: convs whose *output* channels these are (several when their
    outputs are added, as in the neck); ``norms``: the BN after each producer
    (empty without BN); ``consumers``: convs whose *input* channels these are.
    """

    name: str
    producers: list[str]
    norms: list[str]
    consumers: list[str]


def detector_channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """The prunable channel groups of a :class:`TinyDetector`, input to output.

    ``stem`` -> ``stage2.0 .. stage4.<depth>`` (each block's output) -> ``neck``
    (``lateral3`` + ``lateral4`` outputs = ``smooth``'s input) -> ``smooth`` ->
    ``tower.0``, ``tower.1`` (read by ``cls_out`` and ``box_out``). The last
    ``stage3`` block (C3) feeds both ``stage4`` and ``lateral3``; the last
    ``stage4`` block feeds only ``lateral4``. ``cls_out``/``box_out`` keep their
    outputs (K classes, 4 offsets), so they appear only as consumers. Checked: a TinyDetector
    that is not fake-quantized (prune first, then quantize).
    """
    if not isinstance(model, TinyDetector):
        raise TypeError(f"channel pruning knows the layout of TinyDetector only, got {type(model).__name__}")
    if model.levels != 1:
        raise ValueError(f"channel pruning knows the one-level TinyDetector's layout only, got levels={model.levels}; "
                         "prune weights instead (magnitude_masks / apply_masks work on any model)")
    if any(layer is not module for module, layer in _counted_layers(model).items()):
        raise TypeError("this TinyDetector is fake-quantized (quantize_model / prepare_qat wrapped its layers): prune the "
                        "float model first, then quantize the pruned one")

    def block(name: str) -> tuple[list[str], list[str]]:  # a ConvBNReLU: (conv, [BN] or [])
        return [f"{name}.0"], [f"{name}.1"] if isinstance(model.get_submodule(name)[1], nn.BatchNorm2d) else []

    def chain(names: list[str], last_consumers: list[str]) -> list[ChannelGroup]:
        nexts = [[f"{n}.0"] for n in names[1:]] + [last_consumers]
        return [ChannelGroup(n, *block(n), consumers) for n, consumers in zip(names, nexts)]

    backbone = ["stem"] + [f"{stage}.{i}" for stage in ("stage2", "stage3", "stage4") for i in range(len(getattr(model, stage)))]
    groups = chain(backbone, ["lateral4"])
    next(g for g in groups if g.name == f"stage3.{len(model.stage3) - 1}").consumers.append("lateral3")  # C3 also feeds the FPN
    groups.append(ChannelGroup("neck", ["lateral3", "lateral4"], [], ["smooth.0"]))
    return groups + chain(["smooth"] + [f"tower.{i}" for i in range(len(model.tower))], ["cls_out", "box_out"])


def channel_counts(model: nn.Module) -> dict[str, int]:
    """Channels per group: ``{group name: output channels of its producer}``."""
    return {g.name: model.get_submodule(g.producers[0]).out_channels for g in detector_channel_groups(model)}


# ===================================================================== importance criteria
def l1_filter_importance(conv: nn.Conv2d) -> Tensor:
    """L1 norm of each output filter (Li et al. 2017): ``s_j = Σ_{c,u,v} |W[j, c, u, v]|``.

    Shapes: weight (C_out, C_in, k, k) -> (C_out,). Small filters produce weak
    feature maps and are removed first.
    """
    return conv.weight.detach().abs().sum(dim=(1, 2, 3))


def bn_scale_importance(bn: nn.BatchNorm2d) -> Tensor:
    """BN scale magnitude (Network Slimming, Liu et al. 2017): ``s_j = |γ_j|``.

    Shapes: (C,) -> (C,). BN outputs ``γ_j · x̂_j + β_j``; a channel with
    ``γ_j ≈ 0`` carries (almost) no signal. Train with :class:`SlimmingPenalty`
    so that many ``γ`` are pushed to 0 and this ranking becomes sharp.
    """
    return bn.weight.detach().abs()


def folded_l1_importance(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> Tensor:
    """L1 norm of each filter *after* folding the BN that follows it: ``s_j = |γ_j| / √(σ²_j + ε) · Σ_{c,u,v} |W[j, c, u, v]|``.

    Shapes: (C_out,). A conv followed by BN can have any filter scale -- BN divides
    it out -- so the raw L1 norm says little there; the folded filter
    ``W_j · γ_j / √(σ²_j + ε)`` is what the deployed network multiplies with.
    """
    factor = bn.weight.detach().abs() / torch.sqrt(bn.running_var.detach() + bn.eps)
    return factor * l1_filter_importance(conv)


def group_importance(model: nn.Module, group: ChannelGroup, criterion: str = "l1",
                     generator: torch.Generator | None = None) -> Tensor:
    """One score per channel of ``group``. Shape: (C,).

    ``"l1"``: sum of :func:`l1_filter_importance` over the producers (the neck
    sums both laterals). ``"bn"``: :func:`bn_scale_importance` of the group's
    BN. ``"l1_folded"``: :func:`folded_l1_importance` (the filters with their BN
    folded in). ``"random"``: uniform random scores drawn from ``generator`` --
    the control every criterion must beat. A group without BN (the neck) falls
    back to ``"l1"`` under ``"bn"`` and ``"l1_folded"``.
    """
    _check_choice("criterion", criterion, CRITERIA)
    if criterion == "random":
        channels = model.get_submodule(group.producers[0]).out_channels
        return torch.rand(channels, generator=generator)
    if criterion == "bn" and group.norms:
        return sum(bn_scale_importance(model.get_submodule(n)) for n in group.norms)
    if criterion == "l1_folded" and group.norms:
        return sum(folded_l1_importance(model.get_submodule(c), model.get_submodule(b))
                   for c, b in zip(group.producers, group.norms))
    return sum(l1_filter_importance(model.get_submodule(n)) for n in group.producers)


def _check_finite_scores(scores: dict[str, Tensor], criterion: str) -> None:
    """Refuse NaN/inf channel scores: ``topk`` ranks NaN as the largest, so a broken filter would be kept."""
    for name, score in scores.items():
        bad = ~torch.isfinite(score.detach())
        if bool(bad.any()):
            raise ValueError(f"channel group {name!r} has {int(bad.sum())} channel(s) whose {criterion!r} score is NaN or "
                             f"infinite (first: channel {int(bad.nonzero()[0])}): its weights (or BN) hold NaN/inf -- "
                             "did training diverge? Scores cannot rank them")


def _kept_channels(channels: int, keep_ratio: float, multiple_of: int) -> int:
    """``round(r · C)`` rounded to a multiple of ``multiple_of`` (at least one multiple, at most ``C``)."""
    if multiple_of < 1:
        raise ValueError(f"multiple_of must be >= 1, got {multiple_of}")
    return min(channels, max(multiple_of, round(keep_ratio * channels / multiple_of) * multiple_of))


def channel_masks(model: nn.Module, keep_ratio: float, criterion: str = "l1", scope: str = "layer",
                  multiple_of: int = 1, seed: int = 0) -> dict[str, Tensor]:
    """Which channels to keep: ``{group name: (C,) bool, True = keep}``.

    ``criterion`` ranks the channels (:func:`group_importance`; ``seed`` seeds
    ``"random"``).

    * ``"layer"``: each group keeps its ``k = max(1, round(r · C))`` most important
      channels; with ``multiple_of = m``, ``k`` is rounded to a multiple of ``m``
      instead (CPU/GPU kernels process channels in blocks of 8 or 16, so odd counts
      such as 19 or 77 can be far slower than their multiply-adds suggest).
    * ``"global"``: one threshold over all groups: the ``round(r · ΣC)`` best
      scores survive (with ``multiple_of = m``, each group's surviving count ``k_g``
      is then rounded to a multiple of ``m`` and its top ``k_g`` kept, so the total
      moves slightly). Scores must be comparable across layers: ``"bn"`` uses raw
      ``|γ|`` (as Network Slimming does); ``"l1"`` and ``"l1_folded"`` divide each
      group's norms by their mean (fan-in and init scale differ per layer);
      ``"random"`` scores are uniform everywhere. A group that
      would lose everything keeps its best channel, and a group without BN
      under ``"bn"`` (the neck) is pruned per layer.

    Checked: ``0 < keep_ratio <= 1``; ``multiple_of`` a positive int no larger than
    the smallest group (a group with fewer channels could never be cut); every
    channel's score finite (NaN or inf weights cannot be ranked).
    """
    _check_keep_ratio(keep_ratio)
    _check_choice("criterion", criterion, CRITERIA)
    _check_choice("scope", scope, SCOPES)
    groups = detector_channel_groups(model)
    _check_multiple_of(multiple_of, {g.name: model.get_submodule(g.producers[0]).out_channels for g in groups})
    if criterion in ("bn", "l1_folded") and not any(g.norms for g in groups):
        raise ValueError(f"criterion={criterion!r} needs BatchNorm layers and this model has none (batch_norm=False); "
                         "use criterion='l1'")
    generator = torch.Generator().manual_seed(seed)
    scores = {g.name: group_importance(model, g, criterion, generator) for g in groups}
    _check_finite_scores(scores, criterion)
    pooled = [g.name for g in groups if scope == "global" and (criterion in ("l1", "random") or g.norms)]
    masks = {n: _keep_top(s, _kept_channels(len(s), keep_ratio, multiple_of)) for n, s in scores.items() if n not in pooled}
    if pooled:
        normed = [scores[n] / scores[n].mean().clamp(min=1e-12) if criterion in ("l1", "l1_folded") else scores[n]
                  for n in pooled]
        flat = torch.cat(normed)  # (ΣC,)
        kept = _keep_top(flat, max(1, round(keep_ratio * len(flat)))).split([len(s) for s in normed])
        for name, mask in zip(pooled, kept):
            masks[name] = mask.clone()
            masks[name][scores[name].argmax()] = True  # never empty a group
            if multiple_of > 1:
                count = _kept_channels(len(mask), int(masks[name].sum()) / len(mask), multiple_of)
                masks[name] = _keep_top(scores[name], count)
    return {g.name: masks[g.name] for g in groups}


# ===================================================================== masking and cutting
def _checked_groups(model: nn.Module, masks: dict[str, Tensor]) -> list[tuple[ChannelGroup, Tensor]]:
    """Pair each group named in ``masks`` with its mask, after checking it fits (missing groups stay whole)."""
    groups = {g.name: g for g in detector_channel_groups(model)}
    unknown = sorted(set(masks) - set(groups))
    if unknown:
        raise ValueError(f"unknown channel groups {unknown}; this model's groups are {list(groups)}")
    pairs = []
    for name, mask in masks.items():
        channels = model.get_submodule(groups[name].producers[0]).out_channels
        if mask.dtype != torch.bool or mask.shape != (channels,):
            raise ValueError(f"mask for group {name!r} must be a bool tensor of shape ({channels},), got {mask.dtype} {tuple(mask.shape)}")
        if not mask.any():
            raise ValueError(f"mask for group {name!r} removes every channel; keep at least one (the next layer needs an input)")
        pairs.append((groups[name], mask.cpu()))
    return pairs


def mask_channels(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """A copy of ``model`` whose removed channels output exactly 0 (same shapes).

    For each removed channel ``j``: producer filter ``W[j] = 0`` and bias
    ``b[j] = 0``, BN ``γ_j = β_j = 0`` -> output ``ReLU(0 · x̂ + 0) = 0``
    (zeroing ``γ`` alone would leave ``ReLU(β_j)``). This "masked model" shows
    the damage of pruning; :func:`prune_channels` then cuts the zeros away exactly.
    """
    model = copy.deepcopy(model)
    with torch.no_grad():
        for group, mask in _checked_groups(model, masks):
            drop = ~mask
            for name in group.producers + group.norms:
                module = model.get_submodule(name)
                module.weight[drop.to(module.weight.device)] = 0
                if module.bias is not None:
                    module.bias[drop.to(module.bias.device)] = 0
    return model


def _sliced_conv(conv: nn.Conv2d, out_idx: Tensor | None = None, in_idx: Tensor | None = None) -> nn.Conv2d:
    """A new Conv2d with only output channels ``out_idx`` and/or input channels ``in_idx``."""
    if conv.groups != 1:
        raise ValueError("channel pruning supports ordinary convs only (groups=1)")
    weight, bias = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
    if out_idx is not None:
        out_idx = out_idx.to(weight.device)
        weight, bias = weight[out_idx], None if bias is None else bias[out_idx]
    if in_idx is not None:
        weight = weight[:, in_idx.to(weight.device)]
    new = nn.Conv2d(weight.shape[1], weight.shape[0], conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    bias=bias is not None, padding_mode=conv.padding_mode, device=weight.device, dtype=weight.dtype)
    new.weight = nn.Parameter(weight.clone())
    if bias is not None:
        new.bias = nn.Parameter(bias.clone())
    return new.train(conv.training)


def _sliced_bn(bn: nn.BatchNorm2d, idx: Tensor) -> nn.BatchNorm2d:
    """A new BatchNorm2d over channels ``idx``: γ, β, running mean and variance copied."""
    new = nn.BatchNorm2d(len(idx), bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                         device=bn.running_mean.device, dtype=bn.running_mean.dtype)
    idx = idx.to(bn.running_mean.device)
    with torch.no_grad():
        for key in ("weight", "bias", "running_mean", "running_var"):
            if getattr(bn, key) is not None:
                getattr(new, key).copy_(getattr(bn, key)[idx])
        if bn.num_batches_tracked is not None:
            new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new.train(bn.training)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def prune_channels(model: nn.Module, masks: dict[str, Tensor]) -> nn.Module:
    """A new, smaller detector: the removed channels are cut out of every layer that touches them.

    Per group with kept indices ``idx``: producer ``W ← W[idx]``, ``b ← b[idx]``
    (C_out shrinks); BN ``γ, β, μ, σ² ← [idx]``; consumer ``W ← W[:, idx]``
    (C_in shrinks). Groups not in ``masks`` stay whole. Outputs equal
    :func:`mask_channels` ``(model, masks)`` exactly (up to float summation
    order); the result is still a TinyDetector, so ``forward``, ``loss``,
    ``postprocess`` and :func:`course_utils.train.fit` work unchanged.
    """
    if any(hasattr(m, "weight_orig") for m in model.modules()):
        raise ValueError("the model still carries unstructured masks (apply_masks); call remove_masks(model) first")
    model = copy.deepcopy(model)
    for group, mask in _checked_groups(model, masks):
        idx = mask.nonzero().squeeze(1)
        if len(idx) == len(mask):
            continue
        for name in group.producers:
            _replace(model, name, _sliced_conv(model.get_submodule(name), out_idx=idx))
        for name in group.norms:
            _replace(model, name, _sliced_bn(model.get_submodule(name), idx))
        for name in group.consumers:
            _replace(model, name, _sliced_conv(model.get_submodule(name), in_idx=idx))
    return model


def prune_detector(model: nn.Module, keep_ratio: float, criterion: str = "l1", scope: str = "layer",
                   multiple_of: int = 1, seed: int = 0) -> nn.Module:
    """Rank channels and cut: ``prune_channels(model, channel_masks(model, keep_ratio, criterion, scope, multiple_of, seed))``."""
    return prune_channels(model, channel_masks(model, keep_ratio, criterion, scope, multiple_of, seed))


def shrink_to_state_dict(model: nn.Module, state_dict: dict[str, Tensor]) -> nn.Module:
    """A copy of ``model`` with the channel counts found in ``state_dict`` (to load a pruned checkpoint).

    A pruned detector's weights do not fit a fresh ``TinyDetector(...)``; this
    shrinks the fresh one to the saved shapes (keeping its first channels, whose
    values are then overwritten): ``shrink_to_state_dict(TinyDetector(...), sd).load_state_dict(sd)``.
    """
    masks = {}
    own = model.state_dict()
    extra = sorted(set(state_dict) - set(own))
    if extra:
        raise ValueError(f"state_dict has {len(extra)} entries this model lacks (e.g. {extra[0]!r}): it is from a detector "
                         "of another depth or kind; build that one (e.g. TinyDetector(depth=...)) before shrinking")
    for group in detector_channel_groups(model):
        key = f"{group.producers[0]}.weight"
        if key not in state_dict:
            raise ValueError(f"state_dict has no {key!r}: it is not from a TinyDetector with this depth")
        channels = model.get_submodule(group.producers[0]).out_channels
        if state_dict[key].shape[0] > channels:
            raise ValueError(f"state_dict's {key!r} has {state_dict[key].shape[0]} channels, this model only {channels}: "
                             "the checkpoint is from a wider detector; build one at least as wide (e.g. TinyDetector(width=2))")
        masks[group.name] = torch.arange(channels) < state_dict[key].shape[0]
    return prune_channels(model, masks)


# ===================================================================== network slimming
def bn_l1_penalty(model: nn.Module, strength: float) -> Tensor:
    """Network Slimming's sparsity term: ``λ · Σ_BN Σ_j |γ_j|`` (a scalar).

    Its (sub)gradient on each ``γ_j`` is ``λ · sign(γ_j)``: a constant pull
    towards 0, so channels the task does not need end with ``γ ≈ 0``. (With
    Adam/AdamW the step is normalised per parameter, so λ is not comparable
    with the paper's SGD values.)
    """
    if strength < 0:
        raise ValueError(f"strength (λ) must be >= 0, got {strength}; the paper uses about 1e-5 to 1e-4")
    gammas = [m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.weight is not None]
    if not gammas:
        raise ValueError("the model has no BatchNorm with a learnable γ; network slimming needs batch_norm=True")
    return strength * sum(g.abs().sum() for g in gammas)


class SlimmingPenalty(Hook):
    """Adds ``{"loss_slim": λ · Σ|γ|}`` (:func:`bn_l1_penalty`) to the loss inside :func:`course_utils.train.fit`."""

    def __init__(self, strength: float = 1e-4) -> None:
        """Checked: ``strength`` a finite number >= 0."""
        if (isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not math.isfinite(strength)
                or strength < 0):
            raise ValueError(f"strength (λ) must be a finite number >= 0, got {strength!r}; the paper uses about 1e-5 to 1e-4")
        self.strength = strength

    def extra_losses(self, state: StepState) -> dict[str, Tensor]:
        return {"loss_slim": bn_l1_penalty(state.model, self.strength)}


# ===================================================================== cost
def count_flops(model: nn.Module, image_size: tuple[int, int] = (128, 128), in_channels: int = 3) -> int:
    """Multiply-accumulates (MACs) of all Conv2d and Linear layers for ONE image.

    Conv2d: ``MACs = C_out · H_out · W_out · (C_in / groups) · k_h · k_w``;
    Linear: ``MACs = (outputs per image) · in_features``. Biases, BN, ReLU and
    post-processing are not counted; FLOPs ≈ 2 · MACs. Zeros inside a dense
    weight are counted like any value: unstructured sparsity does not lower this
    number, removing channels does. Measured with forward hooks on a zero image
    of shape (1, in_channels, H, W); ``forward_raw`` is used when the model has it.
    Checked: ``image_size`` a pair of positive ints, ``in_channels`` a positive int.
    The fake-quantized wrappers of :mod:`course_utils.quant` (``QuantConv2d``,
    ``QuantLinear``, ``QuantConvBn2d``) count as the conv or linear layer they wrap.
    """
    image_size, in_channels = _check_image_size(image_size, in_channels)
    macs: list[int] = []
    layers = _counted_layers(model)

    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        per_image = output[0].numel()  # output of the first (only) image
        layer = layers[module]
        if isinstance(layer, nn.Conv2d):
            k_h, k_w = layer.kernel_size
            macs.append(per_image * (layer.in_channels // layer.groups) * k_h * k_w)
        else:
            macs.append(per_image * layer.in_features)

    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = model.training
    first = next(iter(model.parameters()), None)
    dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32  # e.g. a bfloat16 model
    x = torch.zeros(1, in_channels, *image_size, device=first.device if first is not None else "cpu", dtype=dtype)
    try:
        model.eval()
        with torch.no_grad():
            model.forward_raw(x) if hasattr(model, "forward_raw") else model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return sum(macs)


def _check_image_size(image_size: Any, in_channels: Any) -> tuple[tuple[int, int], int]:
    """``(H, W)`` positive ints (numpy ints too) and ``in_channels`` a positive int, as plain ints."""
    def positive_int(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, numbers.Integral) and v >= 1

    if isinstance(image_size, numbers.Integral) or not isinstance(image_size, Sequence) or len(image_size) != 2 \
            or not all(positive_int(v) for v in image_size):
        hint = f" -- for a square image pass ({image_size}, {image_size})" if positive_int(image_size) else ""
        raise ValueError(f"image_size must be a pair (H, W) of positive ints, got {image_size!r}{hint}")
    if not positive_int(in_channels):
        raise ValueError(f"in_channels must be a positive int (3 for RGB), got {in_channels!r}")
    return (int(image_size[0]), int(image_size[1])), int(in_channels)


def _counted_layers(model: nn.Module) -> dict[nn.Module, nn.Module]:
    """``{module to hook: the Conv2d/Linear whose MACs it costs}``: plain layers map to themselves;
    a quantization wrapper maps to the layer it wraps (it calls that layer's weights directly, so
    the wrapped layer's own forward hook never fires)."""
    from .quant import QuantConv2d, QuantConvBn2d, QuantLinear  # quant imports train, which prune imports too

    layers: dict[nn.Module, nn.Module] = {}
    wrapped: set[int] = set()
    for m in model.modules():
        if isinstance(m, (QuantConv2d, QuantConvBn2d)):
            layers[m] = m.conv
            wrapped.add(id(m.conv))
        elif isinstance(m, QuantLinear):
            layers[m] = m.linear
            wrapped.add(id(m.linear))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)) and id(m) not in wrapped:
            layers[m] = m
    return layers


# ===================================================================== experiments
def sensitivity_scan(
    model: nn.Module, evaluate_fn: Callable[[nn.Module], float], ratios: Sequence[float] = (0.75, 0.5, 0.25),
    criterion: str = "l1", groups: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Prune ONE group at a time, at each keep ratio, and score it (no fine-tuning).

    Returns ``{"ratios": [r...], "baseline": score of the unpruned model,
    "scores": {group: [score at each r]}}`` -- one curve per group for a plot.
    Groups whose curve stays flat can be pruned hard; steep ones should be spared.
    ``evaluate_fn(model) -> float``, e.g. mAP on a few validation batches.
    """
    if not ratios:
        raise ValueError("ratios is empty; give the keep ratios to try, e.g. (0.75, 0.5, 0.25)")
    all_names = [g.name for g in detector_channel_groups(model)]
    if isinstance(groups, str):
        raise ValueError(f"groups must be a list of group names, got the string {groups!r}; pass groups=[{groups!r}]")
    names = all_names if groups is None else list(groups)
    unknown = [n for n in names if n not in all_names]
    if unknown:
        raise ValueError(f"unknown channel groups {unknown}; choose from {all_names}")
    masks = {r: channel_masks(model, r, criterion, "layer") for r in ratios}
    result = {"ratios": list(ratios), "baseline": _score(evaluate_fn(model)), "scores": {}}
    for name in names:
        result["scores"][name] = [_score(evaluate_fn(prune_channels(model, {name: masks[r][name]}))) for r in ratios]
    return result


def _score(value: Any) -> float:
    """``evaluate_fn``'s result as a float; a dict (e.g. ``evaluate()``'s) is refused with the fix."""
    if isinstance(value, dict):
        raise TypeError(f"evaluate_fn must return one number, got a dict with keys {sorted(value)[:6]}; return "
                        "one entry, e.g. lambda m: evaluate(m, ...)['map']")
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"evaluate_fn must return one number, got {value!r}") from err


def iterative_prune(
    model: nn.Module, train_loader: Iterable, keep_ratios: Sequence[float], epochs: int = 1, lr: float = 1e-3,
    criterion: str = "l1", scope: str = "layer", evaluate_fn: Callable[[nn.Module], float] | None = None,
    hooks: Sequence[Hook] = (), device: torch.device | None = None, max_steps: int | None = None,
    image_size: tuple[int, int] = (128, 128), progress: bool = False,
) -> tuple[nn.Module, dict[str, list[float]]]:
    """Prune -> fine-tune with :func:`course_utils.train.fit`, repeated over a schedule.

    ``keep_ratios`` are fractions of the ORIGINAL channels, non-increasing, e.g.
    ``[0.75, 0.5, 0.35]``: round ``t`` keeps ``r_t / r_{t-1}`` of the current
    channels (equal up to rounding), then trains ``epochs`` epochs (or
    ``max_steps`` steps) with :func:`course_utils.train.make_optimizer`. Small
    steps let the network recover between cuts (Han et al. 2015; Li et al. 2017).
    Returns ``(pruned model, history)``: per round ``keep_ratio``, ``params``,
    ``macs``, ``loss`` (mean of the round) and ``score`` (if ``evaluate_fn``).
    Checked before anything is pruned: the whole schedule, ``criterion``, ``scope``
    and the training settings (:func:`course_utils.train.check_training_run`).
    """
    ratios = list(keep_ratios)
    if not ratios or any(b > a for a, b in zip([1.0] + ratios, ratios)):
        raise ValueError(f"keep_ratios must be a non-empty, non-increasing schedule in (0, 1], e.g. [0.75, 0.5]; got {ratios}")
    for ratio in ratios:  # all of them before the first round trains, not after
        _check_keep_ratio(ratio)
    _check_choice("criterion", criterion, CRITERIA)
    _check_choice("scope", scope, SCOPES)
    check_training_run(train_loader, epochs, max_steps)
    if not hasattr(train_loader, "__len__"):
        raise ValueError(f"iterative_prune needs a loader it can iterate once per round and once per epoch, with a "
                         f"length (a DataLoader or a list of batches); got a {type(train_loader).__name__}, which "
                         "would be used up after the first epoch -- pass list(batches) or a DataLoader")
    history: dict[str, list[float]] = {"keep_ratio": [], "params": [], "macs": [], "loss": [], "score": []}
    previous = 1.0
    for ratio in ratios:
        model = prune_detector(model, ratio / previous, criterion, scope)
        previous = ratio
        total = epochs * len(train_loader) if max_steps is None else min(max_steps, epochs * len(train_loader))
        optimizer, scheduler = make_optimizer(model, lr, total_steps=max(total, 1))
        run = fit(model, train_loader, optimizer, epochs, device, hooks, scheduler, progress=progress, max_steps=max_steps)
        history["keep_ratio"].append(ratio)
        history["params"].append(count_parameters(model))
        history["macs"].append(count_flops(model, image_size))
        history["loss"].append(sum(run["loss"]) / max(len(run["loss"]), 1))
        if evaluate_fn is not None:
            history["score"].append(_score(evaluate_fn(model)))
    return model, history
