"""Every exercise check accepts the reference solution and rejects typical mistakes."""

import importlib
import inspect
import re

import numpy as np
import pytest
import torch

from course_utils import exercises as ex
from course_utils.train import Hook

sol00 = importlib.import_module("solutions.ex00_setup_and_tour")
sol01 = importlib.import_module("solutions.ex01_detection_basics")
sol02 = importlib.import_module("solutions.ex02_training_a_tiny_detector")
sol03 = importlib.import_module("solutions.ex03_gradient_clipping")
sol04 = importlib.import_module("solutions.ex04_quantization_math")
sol05 = importlib.import_module("solutions.ex05_qat_and_int8")
sol06 = importlib.import_module("solutions.ex06_knowledge_distillation")
sol07 = importlib.import_module("solutions.ex07_pruning")
sol08 = importlib.import_module("solutions.ex08_capstone")
sol09 = importlib.import_module("solutions.ex09_integer_inference")
sol10 = importlib.import_module("solutions.ex10_your_own_data")
sol11 = importlib.import_module("solutions.ex11_when_int8_goes_wrong")


def not_implemented(*args):
    raise NotImplementedError


@pytest.mark.parametrize(
    "check, solution",
    [
        (ex.check_box_area, sol00.box_area),
        (ex.check_xywh_to_xyxy, sol00.xywh_to_xyxy),
        (ex.check_box_iou, sol01.box_iou),
        (ex.check_nms, sol01.nms),
        (ex.check_average_precision, sol01.average_precision),
        (ex.check_error_counts, sol02.error_counts),
        (ex.check_loss_recorder, sol02.LossRecorder),
        (ex.check_clip_grad_norm, sol03.clip_grad_norm),
        (ex.check_agc, sol03.agc),
        (ex.check_qparams, sol04.qparams),
        (ex.check_fake_quantize, sol04.fake_quantize),
        (ex.check_fold_bn, sol05.fold_bn),
        (ex.check_kd_loss, sol06.kd_loss),
        (ex.check_feature_imitation, sol06.feature_imitation),
        (ex.check_magnitude_mask, sol07.magnitude_mask),
        (ex.check_conv_macs, sol07.conv_macs),
        (ex.check_speedup, sol08.speedup),
        (ex.check_fixed_point_multiplier, sol09.fixed_point_multiplier),
        (ex.check_int32_bias, sol09.int32_bias),
        (ex.check_linear_scaling, sol10.linear_scaling),
        (ex.check_keep_in_float, sol11.keep_in_float),
        (ex.check_max_pair_sum, sol11.max_pair_sum),
    ],
)
def test_solution_passes_and_stub_fails(check, solution, capsys):
    assert check(solution)
    assert "✓ Passed" in capsys.readouterr().out
    result = check(not_implemented)
    assert not result
    assert "✗ Not yet" in capsys.readouterr().out


def test_correct_answers_that_change_their_input_in_place_pass(capsys):
    def area_in_place(b):
        b[:, 2] -= b[:, 0]
        b[:, 3] -= b[:, 1]
        return b[:, 2] * b[:, 3]

    def iou_in_place(b1, b2):
        out = sol01.box_iou(b1, b2)
        b1.zero_(), b2.zero_()
        return out

    assert ex.check_box_area(area_in_place) and ex.check_box_iou(iou_in_place)


def test_box_area_spots_plus_one(capsys):
    wrong = lambda b: (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)  # noqa: E731
    assert not ex.check_box_area(wrong)
    assert "+1" in capsys.readouterr().out


def test_xywh_spots_centre_confusion(capsys):
    wrong = lambda b: torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)  # noqa: E731
    assert not ex.check_xywh_to_xyxy(wrong)
    assert "top-left" in capsys.readouterr().out


def test_iou_spots_missing_clamp(capsys):
    def no_clamp(b1, b2):
        area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
        area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
        wh = torch.min(b1[:, None, 2:], b2[None, :, 2:]) - torch.max(b1[:, None, :2], b2[None, :, :2])
        inter = wh[..., 0] * wh[..., 1]
        return inter / (area1[:, None] + area2[None] - inter)

    assert not ex.check_box_iou(no_clamp)
    assert "clamp" in capsys.readouterr().out


def test_nms_spots_wrong_order(capsys):
    assert not ex.check_nms(lambda b, s, t: torch.sort(sol01.nms(b, s, t)).values)
    assert "order" in capsys.readouterr().out


def test_nms_spots_wrong_threshold_rule():
    def no_suppression(b, s, t):
        return torch.argsort(s, descending=True)

    assert not ex.check_nms(no_suppression)


def test_ap_spots_missing_interpolation(capsys):
    def raw_mean(is_tp, num_gt):
        return float((np.cumsum(is_tp) / np.arange(1, len(is_tp) + 1)).mean())

    assert not ex.check_average_precision(raw_mean)
    assert "envelope" in capsys.readouterr().out


def test_error_counts_rejects_ignoring_labels():
    def label_blind(pred, target, s, t):
        p = dict(pred, labels=torch.ones_like(pred["labels"]))
        g = dict(target, labels=torch.ones_like(target["labels"]))
        return sol02.error_counts(p, g, s, t)

    assert not ex.check_error_counts(label_blind)


def test_loss_recorder_rejects_wrong_hook():
    class RecordsBeforeStep(Hook):
        def __init__(self):
            self.values = []

        def after_backward(self, state):  # right place would be after_step; also records twice
            self.values.append(0.0)
            self.values.append(0.0)

    assert not ex.check_loss_recorder(RecordsBeforeStep)


def test_check_result_is_silent_in_ipython():
    result = ex.CheckResult(True, "ok")
    assert result and result._ipython_display_() is None


def test_clip_norm_rejects_clipping_when_below(capsys):
    def always_scale(params, max_norm):  # forgets the min(1, ...)
        grads = [p.grad for p in params if p.grad is not None]
        total = torch.sqrt(sum((g**2).sum() for g in grads))
        for g in grads:
            g.mul_(max_norm / total)
        return total

    assert not ex.check_clip_grad_norm(always_scale)
    assert "Only scale down" in capsys.readouterr().out


def test_agc_rejects_per_tensor_norms():
    def per_tensor(param, clip_factor, eps):
        w, g = param.detach().norm().clamp(min=eps), param.grad.norm()
        if g > clip_factor * w:
            param.grad.mul_(clip_factor * w / g)

    assert not ex.check_agc(per_tensor)


def test_qparams_spots_unwidened_range_and_float_zero_point(capsys):
    def no_widen(x_min, x_max, bits):
        scale = (x_max - x_min) / (2**bits - 1)
        return scale, round(-x_min / scale)

    assert not ex.check_qparams(no_widen)
    assert "include 0" in capsys.readouterr().out
    assert not ex.check_qparams(lambda lo, hi, b: ((max(hi, 0) - min(lo, 0)) / (2**b - 1), -min(lo, 0) / ((max(hi, 0) - min(lo, 0)) / (2**b - 1))))
    assert "integer" in capsys.readouterr().out


def test_fake_quantize_check_spots_missing_ste_and_missing_mask(capsys):
    def no_ste(x, s, z, lo, hi):
        return (torch.clamp(torch.round(x / s) + z, lo, hi) - z) * s

    assert not ex.check_fake_quantize(no_ste)
    assert "zero everywhere" in capsys.readouterr().out

    def no_mask(x, s, z, lo, hi):
        y = (torch.clamp(torch.round(x / s) + z, lo, hi) - z) * s
        return x + (y - x).detach()

    assert not ex.check_fake_quantize(no_mask)
    assert "only where" in capsys.readouterr().out

    def floor(x, s, z, lo, hi):
        y = (torch.clamp(torch.floor(x / s) + z, lo, hi) - z) * s
        return x + (y - x).detach()

    assert not ex.check_fake_quantize(floor)
    assert "round to nearest" in capsys.readouterr().out


def test_fold_bn_check_spots_std_for_var_and_missing_mean(capsys):
    def std_instead_of_var(w, b, gamma, beta, mean, var, eps):
        f = gamma / (var + eps)
        return w * f.reshape(-1, 1, 1, 1), ((0 if b is None else b) - mean) * f + beta

    assert not ex.check_fold_bn(std_instead_of_var)
    assert "square root" in capsys.readouterr().out

    def no_mean(w, b, gamma, beta, mean, var, eps):
        f = gamma / torch.sqrt(var + eps)
        return w * f.reshape(-1, 1, 1, 1), (0 if b is None else b) * f + beta

    assert not ex.check_fold_bn(no_mean)
    assert "(b − μ)" in capsys.readouterr().out


def test_freeze_bn_hook_check(capsys):
    assert ex.check_freeze_bn_hook(sol05.FreezeBNAfter)
    assert "✓ Passed" in capsys.readouterr().out

    class Stub(Hook):
        def __init__(self, freeze_step):
            pass

        def after_step(self, state):
            raise NotImplementedError

    assert not ex.check_freeze_bn_hook(Stub)
    assert "NotImplementedError" in capsys.readouterr().out

    class OffByOne(sol05.FreezeBNAfter):
        def after_step(self, state):
            if state.step >= self.freeze_step:
                from course_utils.quant import freeze_bn_stats
                freeze_bn_stats(state.model)

    assert not ex.check_freeze_bn_hook(OffByOne)
    assert "still not frozen after 3 steps" in capsys.readouterr().out


@pytest.mark.parametrize(
    "mistake, hint",
    [
        (lambda s, t, T: -sol06.kd_loss(s, t, T), "sign is flipped"),
        (lambda s, t, T: sol06.kd_loss(s, t, T) / T**2, "missing the T² factor"),
        (lambda s, t, T: sol06.kd_loss(s, t, T) * s.shape[0], "summed over the batch"),
        (lambda s, t, T: sol06.kd_loss(t, s, T), "wrong way round"),
        (lambda s, t, T: T**2 * torch.nn.functional.kl_div(torch.softmax(s / T, -1), torch.softmax(t / T, -1),
                                                           reduction="batchmean"), "log_softmax"),
        (lambda s, t, T: sol06.kd_loss(s, t, T).detach(), "no gradient"),
    ],
)
def test_kd_loss_check_names_the_mistake(mistake, hint, capsys):
    assert not ex.check_kd_loss(mistake)
    assert hint in capsys.readouterr().out


def test_feature_imitation_check_names_the_mistake(capsys):
    def no_detach(fs, ft, mask):
        sq = (fs - ft).pow(2).sum(1)
        return sq[mask].sum() / (2 * mask.sum() * fs.shape[1])

    assert not ex.check_feature_imitation(no_detach)
    assert ".detach()" in capsys.readouterr().out

    def unmasked(fs, ft, mask):
        return sol06.feature_imitation(fs, ft, torch.ones_like(mask))

    assert not ex.check_feature_imitation(unmasked)
    assert "mask is ignored" in capsys.readouterr().out

    def all_locations(fs, ft, mask):
        sq = (fs - ft.detach()).pow(2).sum(1)
        return sq[mask].sum() / (2 * mask.numel() * fs.shape[1])

    assert not ex.check_feature_imitation(all_locations)
    assert "divided by all locations" in capsys.readouterr().out


def test_pruning_checks_name_the_mistake(capsys):
    assert not ex.check_magnitude_mask(lambda w, s: ~sol07.magnitude_mask(w, s))
    assert "inverted" in capsys.readouterr().out
    signed = lambda w, s: sol07.magnitude_mask(w.abs() + w, s)  # noqa: E731 -- ranks by w, not |w|
    assert not ex.check_magnitude_mask(signed)
    assert "magnitude" in capsys.readouterr().out
    assert not ex.check_conv_macs(lambda c_in, c_out, k, h, w, g: c_out * h * w * c_in * k * k)
    assert "groups" in capsys.readouterr().out
    assert not ex.check_conv_macs(lambda *a: 2 * sol07.conv_macs(*a))
    assert "MAC" in capsys.readouterr().out


# ------------------------------------------------------------------ notebook 09
def _fpm_floor(m):
    import math

    mantissa, exponent = math.frexp(m)
    return math.floor(mantissa * 2**31), -exponent


@pytest.mark.parametrize("wrong, hint", [
    (lambda m: (sol09.fixed_point_multiplier(m)[0], -sol09.fixed_point_multiplier(m)[1]), "wrong sign"),
    (_fpm_floor, "do not truncate"),
    (lambda m: (round(__import__("math").frexp(m)[0] * 2**31), -__import__("math").frexp(m)[1]), "carried"),
    (lambda m: __import__("math").frexp(m), "scaled by 2^31|must be integers"),
    (lambda m: round(m * 2**31), "pair"),
    (lambda m: (float(sol09.fixed_point_multiplier(m)[0]), sol09.fixed_point_multiplier(m)[1]), "must be integers"),
])
def test_fixed_point_multiplier_check_rejects_typical_mistakes(wrong, hint, capsys):
    assert not ex.check_fixed_point_multiplier(wrong)
    out = capsys.readouterr().out
    assert "✗ Not yet" in out and __import__("re").search(hint, out), out


@pytest.mark.parametrize("wrong, hint", [
    (lambda b, sx, sw: torch.round(b / sw).to(torch.int32), "S_w only"),
    (lambda b, sx, sw: torch.round(b / sx).to(torch.int32), "S_x only"),
    (lambda b, sx, sw: (b / (sx * sw)).int(), "do not truncate"),
    (lambda b, sx, sw: torch.round(b / (sx * sw)), "dtype"),
    (lambda b, sx, sw: torch.round(b / (sx * sw)).to(torch.int64), "int32"),
    (lambda b, sx, sw: torch.round(b / (sx * sw))[:4].to(torch.int32), "shape"),
    (lambda b, sx, sw: [1, 2], "expected a tensor"),
])
def test_int32_bias_check_rejects_typical_mistakes(wrong, hint, capsys):
    assert not ex.check_int32_bias(wrong)
    out = capsys.readouterr().out
    assert "✗ Not yet" in out and hint in out, out


@pytest.mark.parametrize("wrong, hint", [
    (lambda lr, b0, b, n: lr * b / b0, "all processes"),
    (lambda lr, b0, b, n: lr * (b * n / b0) ** 0.5, "square-root rule"),
    (lambda lr, b0, b, n: lr * b0 / (b * n), "upside down"),
    (lambda lr, b0, b, n: "0.1", "expected"),
    (lambda lr, b0, b, n: None, "as a number"),
])
def test_linear_scaling_check_rejects_typical_mistakes(wrong, hint, capsys):
    assert not ex.check_linear_scaling(wrong)
    out = capsys.readouterr().out
    assert "✗ Not yet" in out and hint in out, out



# ------------------------------------------------------------------ the catalogue of wrong answers
# Every check rejects at least two typical wrong answers, each with a message that names the mistake.

def _area_column(b):
    return ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[:, None]  # (N, 1) instead of (N,)


def _iou_union_without_subtracting(b1, b2):
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    wh = (torch.min(b1[:, None, 2:], b2[None, :, 2:]) - torch.max(b1[:, None, :2], b2[None, :, :2])).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None])


def _nms_greater_equal(boxes, scores, iou_threshold):  # suppresses at IoU >= threshold, not >
    order = torch.argsort(scores, descending=True)
    keep = []
    while len(order) > 0:
        keep.append(int(order[0]))
        ious = sol01.box_iou(boxes[order[0]][None], boxes[order[1:]])[0]
        order = order[1:][ious < iou_threshold]
    return torch.tensor(keep, dtype=torch.int64)


def _ap_envelope_mean(is_tp, num_gt):  # the envelope, but averaged over detections instead of 101 recall points
    precision = np.cumsum(is_tp) / np.arange(1, len(is_tp) + 1)
    return float(np.maximum.accumulate(precision[::-1])[::-1].mean())


class _RecordsAfterBackward(Hook):  # right values, wrong place: before optimizer.step()
    def __init__(self):
        self.values = []

    def after_backward(self, state):
        self.values.append(sum(v.item() for v in state.losses.values()))


class _RecordsTensors(Hook):  # forgets .item(): keeps tensors (and their graphs)
    def __init__(self):
        self.values = []

    def after_step(self, state):
        self.values.append(sum(state.losses.values()))


class _RecordsPerEpoch(Hook):
    def __init__(self):
        self.values = []

    def on_epoch_end(self, state):
        self.values.append(sum(v.item() for v in state.losses.values()))


def _clip_returns_norm_after(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.sqrt(sum((g**2).sum() for g in grads))
    for g in grads:
        g.mul_(min(1.0, max_norm / (total.item() + 1e-6)))
    return torch.sqrt(sum((g**2).sum() for g in grads))


def _clip_per_tensor(params, max_norm):
    grads = [p.grad for p in params if p.grad is not None]
    total = torch.sqrt(sum((g**2).sum() for g in grads))
    for g in grads:
        g.mul_(min(1.0, max_norm / (g.norm().item() + 1e-6)))
    return total


def _clip_iterates_twice(parameters, max_norm):  # right with a list; a generator is empty on the second loop
    total = torch.sqrt(sum((p.grad**2).sum() for p in parameters if p.grad is not None))
    for p in parameters:
        if p.grad is not None:
            p.grad.mul_(min(1.0, max_norm / (total.item() + 1e-6)))
    return total


def _agc_ignores_eps(param, clip_factor, eps):  # max(||W_i||, eps) written as ||W_i||
    dims = tuple(range(1, param.ndim)) if param.ndim > 1 else None
    def norm(t):
        return torch.linalg.vector_norm(t, dim=dims, keepdim=True)
    limit, g = clip_factor * norm(param.detach()), norm(param.grad)
    param.grad.mul_(torch.where(g > limit, limit / g.clamp(min=1e-6), torch.ones_like(g)))


def _fake_quantize_half_up(x, s, z, lo, hi):  # floor(v + 0.5): rounds every tie up, not to even
    q = torch.floor(x / s + 0.5) + z
    inside = ((q >= lo) & (q <= hi)).float()
    return x * inside + ((torch.clamp(q, lo, hi) - z) * s - x * inside).detach()


def _agc_per_tensor(param, clip_factor, eps):
    w, g = param.detach().norm().clamp(min=eps), param.grad.norm()
    if g > clip_factor * w:
        param.grad.mul_(clip_factor * w / g)


def _agc_always_scales(param, clip_factor, eps):  # rescales every unit, also those below the limit
    dims = tuple(range(1, param.ndim)) if param.ndim > 1 else None
    def norm(t):
        return torch.linalg.vector_norm(t, dim=dims, keepdim=True)
    w, g = norm(param.detach()).clamp(min=eps), norm(param.grad).clamp(min=1e-6)
    param.grad.mul_(clip_factor * w / g)


def _qparams_two_to_the_bits(x_min, x_max, bits):
    lo, hi = min(x_min, 0.0), max(x_max, 0.0)
    scale = (hi - lo) / 2**bits
    return scale, round(-lo / scale)


class _FreezesAtOnce(sol05.FreezeBNAfter):
    def after_step(self, state):
        from course_utils.quant import freeze_bn_stats
        freeze_bn_stats(state.model)


class _NeverFreezes(sol05.FreezeBNAfter):
    def after_step(self, state):
        pass


def _mask_with_int(weight, sparsity):  # int() instead of round() in the count
    n_prune = int(sparsity * weight.numel())
    mask = torch.ones(weight.numel(), dtype=torch.bool)
    if n_prune > 0:
        mask[torch.topk(weight.abs().flatten(), n_prune, largest=False).indices] = False
    return mask.view_as(weight)


def _fpm_float32(m):  # torch.frexp on torch.tensor(m): float32, 24 significant bits
    mantissa, exponent = torch.frexp(torch.tensor(m))
    m0, n = int(round(float(mantissa) * 2**31)), -int(exponent)
    return (2**30, n - 1) if m0 == 2**31 else (m0, n)


def _mask_by_threshold(weight, sparsity):  # |w| > the k-th smallest |w|: every tie at the threshold is zeroed
    k = round(sparsity * weight.numel())
    if k == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    return weight.abs() > weight.abs().flatten().kthvalue(k).values


def _kd_soft_cross_entropy(s, t, temperature):  # T² · mean(−Σ p_t log p_s): KL plus the teacher's entropy
    import torch.nn.functional as F
    p_t = F.softmax(t / temperature, -1)
    return temperature**2 * -(p_t * F.log_softmax(s / temperature, -1)).sum(-1).mean()


def _nms_suppressed_also_suppress(boxes, scores, thr):  # compares with every higher-scored box, kept or not
    order = torch.argsort(scores, descending=True)
    iou = sol01.box_iou(boxes, boxes)
    keep = [int(i) for r, i in enumerate(order) if not (iou[i, order[:r]] > thr).any()]
    return torch.tensor(keep, dtype=torch.int64)


def _nms_unsorted(boxes, scores, thr):  # visits the boxes in input order
    iou, keep = sol01.box_iou(boxes, boxes), []
    for i in range(len(boxes)):
        if all(iou[i, k] <= thr for k in keep):
            keep.append(i)
    return torch.tensor(sorted(keep, key=lambda k: -float(scores[k])), dtype=torch.int64)


def _counts(pred, target, score_thr, iou_thr, sort=True, next_unclaimed=True, strict=False, iou_strict=False):
    """(TP, FP, FN) with one of three typical slips switched on."""
    keep = pred["scores"] > score_thr if strict else pred["scores"] >= score_thr
    order = [int(i) for i in (torch.argsort(pred["scores"], descending=True) if sort else torch.arange(len(keep))) if keep[i]]
    iou = sol01.box_iou(pred["boxes"], target["boxes"])
    claimed, tp = set(), 0
    for i in order:
        same = [g for g in range(len(target["boxes"])) if int(target["labels"][g]) == int(pred["labels"][i])]
        candidates = [g for g in same if g not in claimed] if next_unclaimed else same
        if candidates:
            g = max(candidates, key=lambda g: float(iou[i, g]))
            if (float(iou[i, g]) > iou_thr if iou_strict else float(iou[i, g]) >= iou_thr) and g not in claimed:
                claimed.add(g)
                tp += 1
    return tp, len(order) - tp, len(target["boxes"]) - tp


def _ap(is_tp, num_gt, levels=None, side="left", envelope=True):
    tp = np.cumsum(is_tp).astype(float)
    recall, precision = tp / num_gt, tp / np.arange(1, len(is_tp) + 1)
    if envelope:
        precision = np.maximum.accumulate(precision[::-1])[::-1]
    levels = np.linspace(0, 1, 101) if levels is None else levels
    idx = np.searchsorted(recall, levels, side=side)
    return float(np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0).mean())


def _flat(rounds):
    return [t for r in rounds for t in r]


CATALOGUE = [
    (ex.check_box_area, lambda b: (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1), "+1"),
    (ex.check_box_area, _area_column, "expected shape (20,)"),
    (ex.check_box_area, lambda b: b[:, 2] * b[:, 3], "values differ"),
    (ex.check_xywh_to_xyxy, lambda b: torch.cat([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1), "top-left"),
    (ex.check_xywh_to_xyxy, lambda b: b.clone(), "values differ"),
    (ex.check_box_iou, lambda b1, b2: sol01.box_iou(b2, b1), "expected shape (7, 5)"),
    (ex.check_box_iou, _iou_union_without_subtracting, "subtract the intersection once"),
    (ex.check_nms, _nms_greater_equal, "strictly greater"),
    (ex.check_nms, lambda b, s, t: torch.sort(sol01.nms(b, s, t)).values, "wrong order"),
    (ex.check_nms, lambda b, s, t: torch.argsort(s, descending=True), r"expected \[0, 2\]|the reference keeps"),
    (ex.check_nms, _nms_suppressed_also_suppress, "a suppressed box suppresses nothing"),
    (ex.check_nms, lambda b, s, t: torch.zeros(len(b), dtype=torch.bool).index_fill_(0, sol01.nms(b, s, t), True), "keep-mask"),
    (ex.check_nms, lambda b, s, t: sol01.nms(b, s, t).int(), "int64"),
    (ex.check_nms, _nms_unsorted, "decreasing score"),
    (ex.check_nms, lambda b, s, t: sol01.nms(b, s, t).float(), "integer indices"),
    (ex.check_average_precision, lambda t, n: float((np.cumsum(t) / np.arange(1, len(t) + 1)).mean()), "mean raw precision"),
    (ex.check_average_precision, _ap_envelope_mean, "envelope"),
    (ex.check_average_precision, lambda t, n: _ap(t, n, np.arange(0, 1, 0.01)), "101"),
    (ex.check_average_precision, lambda t, n: _ap(t, n, side="right"), "side='left'"),
    (ex.check_average_precision, lambda t, n: _ap(t, n, envelope=False), "take the envelope first"),
    (ex.check_average_precision, lambda t, n: np.cumsum(t) / n, "one number"),
    (ex.check_error_counts, lambda p, t, s, i: sol02.error_counts(dict(p, labels=torch.ones_like(p["labels"])),
                                                                  dict(t, labels=torch.ones_like(t["labels"])), s, i),
     "labels must agree"),
    (ex.check_error_counts, lambda p, t, s, i: sol02.error_counts(p, t, s, i)[:2], "three integers"),
    (ex.check_error_counts, lambda p, t, s, i: sol02.error_counts(p, t, 0.0, i), "expected (TP, FP, FN)"),
    (ex.check_error_counts, lambda p, t, s, i: _counts(p, t, s, i, sort=False), "best score first"),
    (ex.check_error_counts, lambda p, t, s, i: _counts(p, t, s, i, next_unclaimed=False), "best *unclaimed*"),
    (ex.check_error_counts, lambda p, t, s, i: _counts(p, t, s, i, strict=True), "a score equal to it counts"),
    (ex.check_error_counts, lambda p, t, s, i: _counts(p, t, s, i, iou_strict=True), "exactly 0.5"),
    (ex.check_loss_recorder, _RecordsAfterBackward, "before `optimizer.step()`"),
    (ex.check_loss_recorder, _RecordsTensors, ".item()"),
    (ex.check_loss_recorder, _RecordsPerEpoch, "should hold 2 numbers, got ["),
    (ex.check_clip_grad_norm, _clip_returns_norm_after, "*before* clipping"),
    (ex.check_clip_grad_norm, _clip_per_tensor, "same factor"),
    (ex.check_agc, _agc_per_tensor, "per output unit"),
    (ex.check_clip_grad_norm, _clip_iterates_twice, "iterated only once"),
    (ex.check_agc, _agc_always_scales, "clip only units"),
    (ex.check_agc, _agc_ignores_eps, "max(||W_i||, eps)"),
    (ex.check_qparams, lambda lo, hi, b: ((hi - lo) / (2**b - 1), round(-lo / ((hi - lo) / (2**b - 1)))), "include 0"),
    (ex.check_qparams, _qparams_two_to_the_bits, "(2^bits - 1)"),
    (ex.check_qparams, lambda lo, hi, b: (sol04.qparams(lo, hi, b)[0], -sol04.qparams(lo, hi, b)[1]), "wrong sign"),
    (ex.check_qparams, lambda lo, hi, b: sol04.qparams(lo, hi, b)[0], "pair"),
    (ex.check_fake_quantize, lambda x, s, z, lo, hi: (torch.clamp(torch.round(x / s) + z, lo, hi) - z) * s, "zero everywhere"),
    (ex.check_fake_quantize, lambda x, s, z, lo, hi: x + ((torch.clamp(torch.round(x / s) + z, lo, hi) - z) * s - x).detach(),
     "only where"),
    (ex.check_fake_quantize, _fake_quantize_half_up, "half to even"),
    (ex.check_fold_bn, lambda w, b, g, be, m, v, e: (w * (g / (v + e)).reshape(-1, 1, 1, 1), ((0 if b is None else b) - m) * g / (v + e) + be),
     "square root"),
    (ex.check_fold_bn, lambda w, b, g, be, m, v, e: (w * (g / (v + e).sqrt()).reshape(-1, 1, 1, 1), (0 if b is None else b) - m),
     "(b − μ) · γ"),
    (ex.check_freeze_bn_hook, _FreezesAtOnce, "BN froze after 1 step"),
    (ex.check_freeze_bn_hook, _NeverFreezes, "still not frozen"),
    (ex.check_kd_loss, lambda s, t, T: -sol06.kd_loss(s, t, T), "sign is flipped"),
    (ex.check_kd_loss, lambda s, t, T: sol06.kd_loss(s, t, T) / T**2, "missing the T² factor"),
    (ex.check_kd_loss, _kd_soft_cross_entropy, "soft cross-entropy"),
    (ex.check_feature_imitation, lambda fs, ft, m: sol06.feature_imitation(fs, ft, torch.ones_like(m)), "mask is ignored"),
    (ex.check_feature_imitation, lambda fs, ft, m: (fs - ft.detach()).pow(2).sum(1)[m].sum() / (2 * m.sum() * fs.shape[1]),
     "empty mask"),
    (ex.check_feature_imitation, lambda fs, ft, m: ((fs - ft).pow(2).sum(1)[m].sum() / (2 * m.sum() * fs.shape[1])), ".detach()"),
    (ex.check_magnitude_mask, _mask_with_int, "int() cuts 11.55 down to 11"),
    (ex.check_magnitude_mask, _mask_by_threshold, "ties at the threshold"),
    (ex.check_magnitude_mask, lambda w, s: sol07.magnitude_mask(w, s).float(), "boolean mask"),
    (ex.check_magnitude_mask, lambda w, s: ~sol07.magnitude_mask(w, s), "inverted"),
    (ex.check_magnitude_mask, lambda w, s: sol07.magnitude_mask(w.abs() + w, s), "magnitude"),
    (ex.check_conv_macs, lambda c_in, c_out, k, h, w, g: c_out * h * w * c_in * k * k, "groups"),
    (ex.check_conv_macs, lambda *a: 2 * sol07.conv_macs(*a), "MAC"),
    (ex.check_fixed_point_multiplier, _fpm_floor, "do not truncate"),
    (ex.check_fixed_point_multiplier, lambda m: __import__("math").frexp(m), "scaled by 2^31|must be integers"),
    (ex.check_fixed_point_multiplier, _fpm_float32, "float32"),
    (ex.check_int32_bias, lambda b, sx, sw: torch.round(b / sw).to(torch.int32), "S_w only"),
    (ex.check_int32_bias, lambda b, sx, sw: (b / (sx * sw)).int(), "do not truncate"),
    (ex.check_speedup, lambda b, c: sol08.speedup(c, b), "upside down"),
    (ex.check_speedup, lambda b, c: np.mean(_flat(b)) / np.mean(_flat(c)), "ratio of means"),
    (ex.check_speedup, lambda b, c: min(_flat(b)) / min(_flat(c)), "fastest run"),
    (ex.check_speedup, lambda b, c: np.median(_flat(b)) / np.median(_flat(c)), "pooled the runs"),
    (ex.check_speedup, lambda b, c: np.median([np.median(r) for r in b]) / np.median([np.median(r) for r in c]), "unpaired"),
    (ex.check_speedup, lambda b, c: np.mean([np.median(x) / np.median(y) for x, y in zip(b, c)]), "averaged the per-round"),
    (ex.check_speedup, lambda b, c: float(torch.tensor([float(torch.tensor(x).median() / torch.tensor(y).median())
                                                        for x, y in zip(b, c)]).median()), "torch.median"),
    (ex.check_linear_scaling, lambda lr, b0, b, n: lr * b / b0, "all processes"),
    (ex.check_linear_scaling, lambda lr, b0, b, n: lr * b0 / (b * n), "upside down"),
    (ex.check_keep_in_float, lambda g, d, m: sorted(g, key=lambda n: g[n]), "least sensitive nodes first"),
    (ex.check_keep_in_float, lambda g, d, m: sorted(g, key=lambda n: -g[n]), "every node in float|One node too many"),
    (ex.check_keep_in_float, lambda g, d, m: [n for n in sorted(g, key=lambda n: -g[n]) if g[n] > m], "One node too many|check the drop before|Add nodes"),
    (ex.check_keep_in_float, lambda g, d, m: sol11.keep_in_float(g, d, m)[::-1], "wrong order"),
    (ex.check_max_pair_sum, lambda a, w: 2 * (2**a - 1) * (2 ** (w - 1) - 1), "most negative weight"),
    (ex.check_max_pair_sum, lambda a, w: (2**a - 1) * 2 ** (w - 1), "one product"),
    (ex.check_max_pair_sum, lambda a, w: 2 * 2**a * 2 ** (w - 1), "2^a - 1, not 2^a"),
]
CHECKS = [getattr(ex, name) for name in ex.__all__ if name.startswith("check_")]


@pytest.mark.parametrize("check, wrong, hint", CATALOGUE,
                         ids=[f"{c.__name__}-{i}" for i, (c, _, _) in enumerate(CATALOGUE)])
def test_check_rejects_a_typical_wrong_answer_and_names_it(check, wrong, hint, capsys):
    result = check(wrong)
    out = capsys.readouterr().out
    assert isinstance(result, ex.CheckResult) and not result, out
    assert "✗ Not yet" in out and re.search(hint if "|" in hint else re.escape(hint), out), out


def test_every_check_has_at_least_two_wrong_answers_in_the_catalogue():
    counts = {check.__name__: 0 for check in CHECKS}
    for check, _, _ in CATALOGUE:
        counts[check.__name__] += 1
    assert len(counts) >= 21 and all(n >= 2 for n in counts.values()), counts


# -------------------------------------------------------- a check never crashes, whatever it is given
def _boom(*args, **kwargs):
    raise RuntimeError("boom")


class _HookInitRaises(Hook):
    def __init__(self, *args, **kwargs):
        raise RuntimeError("boom")


class _HookWithTensorValues(Hook):  # `values` is one (3, 7) tensor, not a list of floats
    def __init__(self, *args, **kwargs):
        self.values = torch.zeros(3, 7)

    def after_step(self, state):
        state.model = torch.zeros(3, 7)


CLASS_CHECKS = (ex.check_loss_recorder, ex.check_freeze_bn_hook)
IN_PLACE_CHECKS = (ex.check_agc,)  # their return value is not used: what matters is the gradient left behind


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("kind", ["wrong type", "wrong shape", "raises", "not callable"])
def test_no_check_ever_crashes(check, kind, capsys):
    if check in CLASS_CHECKS:
        answer = {"wrong type": lambda *a, **k: "hello", "wrong shape": _HookWithTensorValues, "raises": _HookInitRaises,
                  "not callable": 42}[kind]
    else:
        answer = {"wrong type": lambda *a, **k: "hello", "wrong shape": lambda *a, **k: torch.zeros(3, 7, requires_grad=True),
                  "raises": _boom, "not callable": 42}[kind]
    result = check(answer)  # must not raise
    out = capsys.readouterr().out
    assert isinstance(result, ex.CheckResult) and not result and "✗ Not yet" in out, out
    says_what_it_got = {"wrong type": "str", "wrong shape": "(3, 7)", "raises": "RuntimeError: boom", "not callable": "int"}[kind]
    if kind == "raises" or kind == "not callable" or (check not in IN_PLACE_CHECKS and not (check is ex.check_freeze_bn_hook and kind == "wrong shape")):
        assert says_what_it_got in out, out


def test_a_check_that_cannot_use_an_answer_says_what_it_got_and_what_it_expected(capsys):
    @ex._check("a tensor of shape (2,)")
    def fragile_check(fn):
        got, err = ex._call(fn)
        return ex._report(bool(got[5] > 0), "fine")  # crashes on anything shorter than 6

    result = fragile_check(lambda: (1, 2))
    out = capsys.readouterr().out
    assert isinstance(result, ex.CheckResult) and not result
    assert "a tuple of 2 items" in out and "IndexError" in out and "Expected a tensor of shape (2,)" in out, out


def test_error_counts_of_tensors_and_numpy_integers_are_accepted(capsys):
    assert ex.check_error_counts(lambda *a: torch.tensor(sol02.error_counts(*a)).tolist())
    assert ex.check_error_counts(lambda *a: tuple(np.int64(v) for v in sol02.error_counts(*a)))


def test_qparams_pass_message_claims_only_what_was_checked(capsys):
    """The hand formula's grid can stop just short of x_max (0.99922 < 1.0): the message must not say it covers it."""
    assert ex.check_qparams(sol04.qparams)
    out = capsys.readouterr().out
    assert "covers the range" not in out and "within S/2 of a level" in out
    scale, zp = sol04.qparams(-0.3, 1.0, 8)
    assert scale * (255 - zp) < 1.0  # the claim the old message made would be false here
    assert "does not reach both ends" in out and "clamp to the last level" in out


def test_nms_case_is_exactly_at_the_threshold():
    boxes = torch.tensor([[0.0, 0.0, 30.0, 10.0], [10.0, 0.0, 40.0, 10.0]])
    assert ex.B.box_iou(boxes, boxes)[0, 1].item() == 0.5  # exact in float32, so > and >= disagree


def test_magnitude_mask_has_a_case_where_int_and_round_differ():
    source = inspect.getsource(ex.check_magnitude_mask)
    assert "((7, 3), 0.55)" in source and int(0.55 * 21) != round(0.55 * 21)


def test_check_messages_need_no_emoji_font(capsys):
    """A machine without an emoji font shows ✅ or ❌ as empty boxes: the messages use ✓ and ✗ (in DejaVu Sans)."""
    for check, wrong, _ in CATALOGUE:
        check(wrong)
    out = capsys.readouterr().out
    emoji = sorted({c for c in out if ord(c) >= 0x1F000 or c in "✅❌⚠"})
    assert not emoji and "✗ Not yet" in out, emoji


@pytest.mark.slow
def test_notebook_07_exercise_3_can_be_won():
    """The discussion exercise asks for per-group keep ratios with no more multiply-adds than the uniform 60 % cut
    and a better val mAP after one epoch of fine-tuning: the plan in the solutions does it (seed 0)."""
    from pathlib import Path

    from torch.utils.data import DataLoader

    from course_utils import CocoDetection, SyntheticShapes, TinyDetector, collate_detection, evaluate, fit, load_checkpoint, seed_everything
    from course_utils.data import materialize
    from course_utils.prune import channel_masks, count_flops, prune_channels

    root = Path(__file__).resolve().parents[1]
    dense = TinyDetector()
    load_checkpoint(root / "benchmarks" / "results" / "tiny_detector_converged.pt", dense)
    val = DataLoader(materialize(CocoDetection(root / "data" / "val" / "annotations.json"), progress=False),
                     batch_size=50, collate_fn=collate_detection)
    train_set = materialize(SyntheticShapes(1000, seed=0), progress=False)  # notebook 07's fine-tuning set

    def finetune_and_score(model):  # notebook 07's finetune: 1 epoch, AdamW, cosine from 2e-3, seed 0
        seed_everything(0)
        loader = DataLoader(train_set, batch_size=32, shuffle=True, collate_fn=collate_detection,
                            generator=torch.Generator().manual_seed(0))
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=len(loader))
        fit(model, loader, optimizer, 1, device=torch.device("cpu"), scheduler=scheduler)
        return evaluate(model.eval(), val, torch.device("cpu"))["map"]

    uniform = prune_channels(dense, channel_masks(dense, 0.6))
    plan = prune_channels(dense, {g: channel_masks(dense, r)[g] for g, r in sol07.PLAN_BEATS_UNIFORM.items()})
    assert count_flops(plan) <= count_flops(uniform) <= 26.9e6
    assert finetune_and_score(plan) > finetune_and_score(uniform) + 0.02
