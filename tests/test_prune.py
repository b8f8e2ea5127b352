"""course_utils.prune: exact channel surgery, magnitude masks vs torch.nn.utils.prune, MACs, slimming."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from course_utils.models import TinyDetector, count_parameters
from course_utils.prune import (
    MaskHook,
    SlimmingPenalty,
    apply_masks,
    bn_l1_penalty,
    bn_scale_importance,
    channel_counts,
    channel_masks,
    count_flops,
    detector_channel_groups,
    group_importance,
    iterative_prune,
    l1_filter_importance,
    layer_sparsity,
    magnitude_masks,
    mask_channels,
    prune_channels,
    prune_detector,
    remove_masks,
    sensitivity_scan,
    shrink_to_state_dict,
    sparsity,
)
from course_utils.train import Hook, fit, load_checkpoint, save_checkpoint

CPU = torch.device("cpu")
RATIOS = [1e-6, 0.1, 0.33, 0.5, 0.77, 1.0]


def detector(seed: int = 0, width: float = 0.5, depth: int = 0, **kwargs) -> TinyDetector:
    """A small detector with 'trained-looking' BN: γ of both signs (some near 0), β, running stats."""
    torch.manual_seed(seed)
    model = TinyDetector(num_classes=3, width=width, depth=depth, **kwargs)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(-1.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
    return model


def batch(seed: int = 0, size: int = 64) -> tuple[list[torch.Tensor], list[dict]]:
    """Two random images with one or two boxes each (no rendering: cheap)."""
    g = torch.Generator().manual_seed(seed)
    images = [torch.rand(3, size, size, generator=g) for _ in range(2)]
    targets = [
        {"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 50.0, 34.0], [30.0, 2.0, 60.0, 20.0]]), "labels": torch.tensor([2, 3])},
    ]
    return images, targets


# ----------------------------------------------------------------- structured: shapes
@pytest.mark.parametrize("depth", [0, 1])
@pytest.mark.parametrize("keep_ratio", [1e-6, 0.33, 0.77])
def test_pruned_channel_counts_per_group(depth: int, keep_ratio: float) -> None:
    model = detector(depth=depth)
    before = channel_counts(model)
    assert len(before) == 3 * (depth + 1) + 1 + 1 + 1 + 2  # stem, blocks, neck, smooth, tower
    pruned = prune_detector(model, keep_ratio, "l1", "layer")
    after = channel_counts(pruned)
    for name, c in before.items():
        assert after[name] == max(1, round(keep_ratio * c)), name
    # every conv's input agrees with the group that feeds it, outputs of the head are untouched
    for g in detector_channel_groups(pruned):
        for consumer in g.consumers:
            assert pruned.get_submodule(consumer).in_channels == after[g.name], (g.name, consumer)
        for norm in g.norms:
            bn = pruned.get_submodule(norm)
            assert bn.num_features == bn.running_mean.numel() == after[g.name]
    assert pruned.cls_out.out_channels == 3 and pruned.box_out.out_channels == 4
    assert isinstance(pruned, TinyDetector) and count_parameters(pruned) < count_parameters(model)
    assert channel_counts(model) == before  # the original is not touched


def test_global_scope_bn_uses_one_threshold_on_gamma() -> None:
    model = detector(depth=1)
    masks = channel_masks(model, 0.4, "bn", "global")
    groups = [g for g in detector_channel_groups(model) if g.norms]
    gammas = {g.name: model.get_submodule(g.norms[0]).weight.detach().abs() for g in groups}
    kept = torch.cat([gammas[g.name][masks[g.name]] for g in groups])
    dropped = torch.cat([gammas[g.name][~masks[g.name]] for g in groups])
    total = sum(len(v) for v in gammas.values())
    assert abs(len(kept) - round(0.4 * total)) <= len(groups)  # + at most one forced channel per group
    forced = {g.name for g in groups if masks[g.name].sum() == 1}
    unforced_kept = torch.cat([gammas[n][masks[n]] for n in gammas if n not in forced])
    assert unforced_kept.min() >= dropped.max()
    sizes = {n: int(masks[n].sum()) / len(masks[n]) for n in gammas}
    assert len(set(sizes.values())) > 1, "a global threshold should prune groups unevenly"
    # the neck has no BN: it is pruned per layer by L1 under the 'bn' criterion
    assert int(masks["neck"].sum()) == round(0.4 * len(masks["neck"]))


def test_layer_scope_l1_keeps_the_largest_filters() -> None:
    model = detector()
    masks = channel_masks(model, 0.5, "l1", "layer")
    for g in detector_channel_groups(model):
        norms = sum(model.get_submodule(p).weight.detach().flatten(1).norm(p=1, dim=1) for p in g.producers)
        expected = set(norms.argsort(descending=True)[: round(0.5 * len(norms))].tolist())
        assert set(masks[g.name].nonzero().squeeze(1).tolist()) == expected, g.name


# ----------------------------------------------------------------- structured: exactness
def _assert_pruned_equals_masked(model: TinyDetector, masks: dict, x: torch.Tensor) -> None:
    masked, pruned = mask_channels(model, masks).eval(), prune_channels(model, masks).eval()
    with torch.no_grad():
        a, b, original = masked.forward_raw(x), pruned.forward_raw(x), model.eval().forward_raw(x)
    for key in ("logits", "deltas"):
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-5, msg=key)
    kept = masks["smooth"]
    torch.testing.assert_close(b["features"], a["features"][:, kept], atol=1e-5, rtol=1e-5)
    assert (a["features"][:, ~kept] == 0).all(), "removed channels of the masked model must output exactly 0"
    assert not torch.allclose(a["logits"], original["logits"], atol=1e-4), "masking should change the outputs"


@pytest.mark.parametrize("depth", [0, 1])
@pytest.mark.parametrize("criterion", ["l1", "bn", "l1_folded", "random"])
@pytest.mark.parametrize("scope", ["layer", "global"])
def test_pruned_model_equals_masked_model(depth: int, criterion: str, scope: str) -> None:
    model = detector(seed=depth, depth=depth)
    masks = channel_masks(model, 0.5, criterion, scope)
    assert all(0 < m.sum() < len(m) for m in masks.values())
    _assert_pruned_equals_masked(model, masks, torch.rand(2, 3, 64, 64))


def test_pruned_equals_masked_in_train_mode_loss() -> None:
    model = detector(depth=1)
    masks = channel_masks(model, 0.4, "bn", "layer")
    images, targets = batch()
    masked, pruned = mask_channels(model, masks).train(), prune_channels(model, masks).train()
    la, lb = masked(images, targets), pruned(images, targets)  # BN on batch statistics
    for key in la:
        torch.testing.assert_close(lb[key], la[key], atol=1e-5, rtol=1e-4, msg=key)


def test_plain_detector_without_batchnorm_prunes_exactly() -> None:
    model = detector(batch_norm=False, depth=1)
    _assert_pruned_equals_masked(model, channel_masks(model, 0.5, "l1"), torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="criterion='l1'"):
        channel_masks(model, 0.5, "bn")
    with pytest.raises(ValueError, match="criterion='l1_folded' needs BatchNorm"):
        channel_masks(model, 0.5, "l1_folded")


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
@pytest.mark.parametrize("criterion", ["l1", "bn", "l1_folded", "random"])
def test_pruning_never_breaks_the_detector(criterion: str) -> None:
    model = detector(depth=1)
    images, targets = batch()
    for keep_ratio in RATIOS:
        pruned = prune_detector(model, keep_ratio, criterion, "global")
        assert min(channel_counts(pruned).values()) >= 1
        losses = pruned.train()(images, targets)
        total = sum(losses.values())
        assert math.isfinite(total.item()), keep_ratio
        total.backward()
        detections = pruned.eval()(images)
        assert len(detections) == 2 and all(set(d) == {"boxes", "scores", "labels"} for d in detections)


def test_keep_ratio_one_changes_nothing() -> None:
    model = detector(depth=1).eval()
    for criterion in ("l1", "bn"):
        for scope in ("layer", "global"):
            pruned = prune_detector(model, 1.0, criterion, scope).eval()
            assert count_parameters(pruned) == count_parameters(model)
            assert count_flops(pruned, (64, 64)) == count_flops(model, (64, 64))
            x = torch.rand(2, 3, 64, 64)
            with torch.no_grad():
                a, b = model.forward_raw(x), pruned.forward_raw(x)
            assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.0001, 2, float("nan")])
def test_bad_keep_ratio_raises_helpfully(bad: float) -> None:
    with pytest.raises(ValueError, match=r"keep_ratio must be in \(0, 1\]"):
        prune_detector(detector(), bad)


def test_bad_arguments_raise_helpfully() -> None:
    model = detector()
    with pytest.raises(ValueError, match="criterion must be one of 'l1', 'bn', 'l1_folded', 'random'"):
        channel_masks(model, 0.5, "l2")
    with pytest.raises(ValueError, match="scope must be one of"):
        channel_masks(model, 0.5, "l1", "network")
    masks = channel_masks(model, 0.5)
    with pytest.raises(ValueError, match="unknown channel groups"):
        prune_channels(model, {"stage9": masks["stem"]})
    with pytest.raises(ValueError, match="keep at least one"):
        prune_channels(model, {"stem": torch.zeros_like(masks["stem"])})
    with pytest.raises(ValueError, match="bool tensor of shape"):
        mask_channels(model, {"stem": masks["stem"][:-1]})
    with pytest.raises(TypeError, match="TinyDetector"):
        channel_masks(nn.Sequential(nn.Conv2d(3, 4, 3)), 0.5)
    with pytest.raises(ValueError, match="non-increasing"):
        iterative_prune(model, [batch()], [0.5, 0.75])
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
            magnitude_masks(model, bad)
    with pytest.raises(ValueError, match="scope must be one of"):
        magnitude_masks(model, 0.5, "per-channel")
    with pytest.raises(ValueError, match="strength"):
        SlimmingPenalty(-1.0)


# ----------------------------------------------------------------- importance and cost
def test_importance_criteria_are_the_papers_formulas() -> None:
    model = detector()
    conv, bn = model.stage3[0][0], model.stage3[0][1]
    assert torch.equal(l1_filter_importance(conv), conv.weight.detach().abs().sum(dim=(1, 2, 3)))
    assert torch.equal(bn_scale_importance(bn), bn.weight.detach().abs())


def test_count_flops_equals_hand_computation() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),  # 16x16 -> 8x8
        nn.Conv2d(8, 8, 3, padding=1, groups=4),
        nn.Conv2d(8, 4, 1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10),
    )
    by_hand = (
        8 * 8 * 8 * 3 * 3 * 3  # C_out·H_out·W_out·C_in·k·k
        + 8 * 8 * 8 * (8 // 4) * 3 * 3  # grouped: C_in/groups per output
        + 4 * 8 * 8 * 8 * 1 * 1
        + 10 * 256  # linear: outputs · inputs
    )
    assert count_flops(model, image_size=(16, 16)) == by_hand
    # a detector: only channel pruning lowers MACs; unstructured zeros do not
    det = detector()
    dense = count_flops(det, (64, 64))
    assert count_flops(apply_masks(copy.deepcopy(det), magnitude_masks(det, 0.8)), (64, 64)) == dense
    assert count_flops(prune_detector(det, 0.5), (64, 64)) < 0.5 * dense


# ----------------------------------------------------------------- unstructured
def test_magnitude_masks_reach_the_requested_sparsity() -> None:
    for scope in ("global", "layer"):
        model = detector()
        assert sparsity(model) == 0.0
        apply_masks(model, magnitude_masks(model, 0.6, scope))
        per_layer = layer_sparsity(model)
        sizes = {name: w.numel() for name, w in ((n, model.get_submodule(n[: -len(".weight")]).weight) for n in per_layer)}
        if scope == "layer":
            for name, s in per_layer.items():
                assert s == round(0.6 * sizes[name]) / sizes[name], name
        else:
            total = sum(sizes.values())
            assert sparsity(model) == round(0.6 * total) / total
            assert max(per_layer.values()) - min(per_layer.values()) > 0.1, "one global threshold prunes layers unevenly"


@pytest.mark.parametrize("amount", [0.3, 0.75])
def test_magnitude_masks_match_torch_prune(amount: float) -> None:
    model = detector(depth=1)
    ours_global, ours_layer = magnitude_masks(model, amount, "global"), magnitude_masks(model, amount, "layer")
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    ref = copy.deepcopy(model)
    torch_prune.global_unstructured([(ref.get_submodule(n), "weight") for n in names],
                                    pruning_method=torch_prune.L1Unstructured, amount=amount)
    ref_layer = copy.deepcopy(model)
    for n in names:
        torch_prune.l1_unstructured(ref_layer.get_submodule(n), "weight", amount=amount)
    assert set(ours_global) == {f"{n}.weight" for n in names}
    for n in names:
        assert torch.equal(ours_global[f"{n}.weight"], ref.get_submodule(n).weight_mask.bool()), n
        assert torch.equal(ours_layer[f"{n}.weight"], ref_layer.get_submodule(n).weight_mask.bool()), n


@pytest.mark.parametrize("mechanism", ["apply_masks", "MaskHook"])
def test_masks_survive_fine_tuning_with_fit(mechanism: str) -> None:
    model = detector()
    masks = magnitude_masks(model, 0.7, "global")
    before = {n: w.detach().clone() for n, w in ((n, model.get_submodule(n[:-7]).weight) for n in masks)}
    hooks = []
    if mechanism == "apply_masks":
        apply_masks(model, masks)
    else:
        hooks = [MaskHook(masks)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    fit(model, [batch(0), batch(1)], optimizer, epochs=2, device=CPU, hooks=hooks, progress=False)
    if mechanism == "apply_masks":
        remove_masks(model)
        assert not any(k.endswith(("weight_orig", "weight_mask")) for k in model.state_dict())
    for name, mask in masks.items():
        weight = model.get_submodule(name[:-7]).weight.detach()
        assert (weight[~mask] == 0).all(), f"{name}: a pruned weight came back after fine-tuning"
        if mask.any():  # (global pruning may empty a layer of small weights, e.g. box_out at init std 0.01)
            assert not torch.equal(weight[mask], before[name][mask]), f"{name}: kept weights should have trained"
    total = sum(m.numel() for m in masks.values())
    assert sparsity(model) >= sum(int((~m).sum()) for m in masks.values()) / total


# ----------------------------------------------------------------- network slimming
def test_slimming_penalty_gradient_is_strength_times_sign() -> None:
    model, strength = detector(), 1e-3
    bn_l1_penalty(model, strength).backward()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            torch.testing.assert_close(m.weight.grad, strength * m.weight.detach().sign(), rtol=0, atol=1e-9)


class GammaGrads(Hook):
    def __init__(self) -> None:
        self.grads: list[torch.Tensor] = []

    def after_backward(self, state) -> None:
        self.grads = [m.weight.grad.clone() for m in state.model.modules() if isinstance(m, nn.BatchNorm2d)]


def test_slimming_hook_adds_exactly_the_penalty_gradient_in_fit() -> None:
    strength, runs = 1e-2, {}
    for with_penalty in (False, True):
        model = detector(seed=3)
        recorder = GammaGrads()
        hooks = [SlimmingPenalty(strength), recorder] if with_penalty else [recorder]
        history = fit(model, [batch()], torch.optim.SGD(model.parameters(), lr=0.0), epochs=1, device=CPU,
                      hooks=hooks, progress=False)
        runs[with_penalty] = recorder.grads
        assert ("loss_slim" in history) == with_penalty
    gammas = [m.weight.detach() for m in detector(seed=3).modules() if isinstance(m, nn.BatchNorm2d)]
    for g0, g1, gamma in zip(runs[False], runs[True], gammas):
        torch.testing.assert_close(g1 - g0, strength * gamma.sign(), rtol=0, atol=1e-6)


# ----------------------------------------------------------------- experiments and checkpoints
def test_sensitivity_scan_prunes_one_group_at_a_time() -> None:
    model = detector().eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        reference = model.forward_raw(x)["logits"]

    def agreement(m: nn.Module) -> float:  # higher is better, 0 for the unpruned model
        with torch.no_grad():
            return -(m.eval().forward_raw(x)["logits"] - reference).abs().mean().item()

    scan = sensitivity_scan(model, agreement, ratios=[1.0, 0.5, 0.1], criterion="bn", groups=["stem", "neck", "tower.1"])
    assert scan["baseline"] == 0.0 and scan["ratios"] == [1.0, 0.5, 0.1]
    assert list(scan["scores"]) == ["stem", "neck", "tower.1"]
    for name, scores in scan["scores"].items():
        assert scores[0] == scan["baseline"], f"{name}: keep ratio 1.0 must change nothing"
        assert scores[2] < scores[0], f"{name}: pruning 90% of a group should change the outputs"
    with pytest.raises(ValueError, match="unknown channel groups"):
        sensitivity_scan(model, agreement, ratios=[0.5], groups=["backbone"])


def test_iterative_prune_follows_the_schedule_and_trains() -> None:
    model = detector()
    original = channel_counts(model)
    pruned, history = iterative_prune(model, [batch(0), batch(1)], [0.75, 0.5], epochs=1, lr=1e-3,
                                      evaluate_fn=lambda m: 1.0, device=CPU, image_size=(64, 64))
    assert history["keep_ratio"] == [0.75, 0.5] and history["score"] == [1.0, 1.0]
    assert history["params"][0] > history["params"][1] == count_parameters(pruned)
    assert history["macs"][0] > history["macs"][1] and all(math.isfinite(v) for v in history["loss"])
    for name, c in channel_counts(pruned).items():
        assert abs(c - max(1, round(0.5 * original[name]))) <= 1, name
    assert channel_counts(model) == original


def test_pruned_checkpoint_round_trip(tmp_path) -> None:
    pruned = prune_detector(detector(depth=1), 0.4, "bn", "global").eval()
    path = save_checkpoint(tmp_path / "pruned.pt", pruned, keep_ratio=0.4)
    payload = torch.load(path, weights_only=True)
    fresh = shrink_to_state_dict(TinyDetector(num_classes=3, width=0.5, depth=1), payload["model"])
    load_checkpoint(path, fresh)
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh.eval().forward_raw(x)["logits"], pruned.forward_raw(x)["logits"])


def test_multiple_of_rounds_kept_channels_to_hardware_friendly_counts() -> None:
    from course_utils.prune import channel_counts, channel_masks, prune_detector

    model = TinyDetector(width=1.0).eval()
    before = channel_counts(model)
    pruned = prune_detector(model, 0.6, multiple_of=8)
    after = channel_counts(pruned)
    for name, c in before.items():
        assert after[name] % 8 == 0 and after[name] <= c
        assert after[name] == min(c, max(8, round(0.6 * c / 8) * 8)), name
    plain = channel_counts(prune_detector(model, 0.6))
    assert any(v % 8 for v in plain.values())  # without rounding, 0.6 gives odd counts (10, 19, 38, 77 ...)
    with torch.no_grad():
        pruned(torch.rand(1, 3, 128, 128))  # still a working detector
    with pytest.raises(ValueError, match="multiple_of"):
        channel_masks(model, 0.5, multiple_of=0)


@pytest.mark.parametrize("criterion", ["l1", "bn"])
def test_multiple_of_applies_to_global_scope(criterion: str) -> None:
    from course_utils.prune import channel_counts, channel_masks, prune_detector

    torch.manual_seed(0)
    model = TinyDetector(width=2.0).eval()
    for m in model.modules():  # give BN scales a spread, as training would
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.1, 1.0)
    free, rounded = channel_masks(model, 0.5, criterion, "global"), channel_masks(model, 0.5, criterion, "global", multiple_of=8)
    assert any(int(k.sum()) % 8 for k in free.values())  # global selection alone gives odd counts
    for name, keep in rounded.items():
        k = int(keep.sum())
        assert k % 8 == 0 or k == len(keep), (name, k)
        assert abs(k - int(free[name].sum())) <= 4  # rounded to the nearest multiple of what global chose
        scores = group_importance(model, next(g for g in detector_channel_groups(model) if g.name == name), criterion)
        assert scores[keep].min() >= scores[~keep].max() if (~keep).any() else True  # the best of the group survive
    pruned = prune_detector(model, 0.5, criterion, "global", multiple_of=8)
    assert all(c % 8 == 0 for c in channel_counts(pruned).values())
    with torch.no_grad():
        pruned(torch.rand(1, 3, 128, 128))


def test_folded_l1_equals_the_l1_norm_of_the_bn_folded_filters() -> None:
    """Reference: fold the BN into the conv (course_utils.quant.fold_bn), then take plain L1 norms."""
    from course_utils.quant import fold_bn

    model = detector(depth=1)
    with torch.no_grad():  # make BN statistics and scales non-trivial, some γ negative
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.1, 4.0)
                m.weight.uniform_(-2.0, 2.0)
    for group in detector_channel_groups(model):
        if not group.norms:
            continue
        conv, bn = model.get_submodule(group.producers[0]), model.get_submodule(group.norms[0])
        expected = l1_filter_importance(fold_bn(conv, bn))
        torch.testing.assert_close(group_importance(model, group, "l1_folded"), expected)
        assert not torch.allclose(expected, l1_filter_importance(conv))  # the raw ranking differs


def test_random_criterion_is_seeded_and_keeps_the_same_counts() -> None:
    model = detector(depth=1)
    a, b = channel_masks(model, 0.5, "random", seed=3), channel_masks(model, 0.5, "random", seed=3)
    c = channel_masks(model, 0.5, "random", seed=4)
    l1 = channel_masks(model, 0.5, "l1")
    assert all(torch.equal(a[g], b[g]) for g in a)
    assert any(not torch.equal(a[g], c[g]) for g in a)
    assert {g: int(m.sum()) for g, m in a.items()} == {g: int(m.sum()) for g, m in l1.items()}
    assert any(not torch.equal(a[g], l1[g]) for g in a)


@pytest.mark.parametrize("batch_norm", [True, False])
def test_reset_parameters_reproduces_a_fresh_detector(batch_norm: bool) -> None:
    """After the same seed, reset_parameters() gives exactly a fresh TinyDetector's weights (and buffers)."""
    torch.manual_seed(3)
    fresh = TinyDetector(batch_norm=batch_norm, depth=1)
    trained = copy.deepcopy(fresh)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
        for b in trained.buffers():
            b.add_(1)
    torch.manual_seed(3)
    trained.reset_parameters()
    for key, value in fresh.state_dict().items():
        assert torch.equal(trained.state_dict()[key], value), key


def test_pruned_shape_from_scratch_keeps_the_counts_and_forgets_the_weights() -> None:
    model = detector(depth=1)
    pruned = prune_detector(model, 0.5, multiple_of=8)
    scratch = copy.deepcopy(pruned).reset_parameters()
    assert channel_counts(scratch) == channel_counts(pruned)
    assert not torch.allclose(scratch.stage4[0][0].weight, pruned.stage4[0][0].weight)
    assert torch.allclose(scratch.cls_out.bias, torch.full_like(scratch.cls_out.bias, -math.log(99)))
    images, targets = batch()
    assert math.isfinite(sum(scratch.train()(images, targets).values()).item())
