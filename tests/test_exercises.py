"""Every exercise check accepts the reference solution and rejects typical mistakes."""

import importlib

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
sol09 = importlib.import_module("solutions.ex09_integer_inference")
sol10 = importlib.import_module("solutions.ex10_your_own_data")


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
        (ex.check_fixed_point_multiplier, sol09.fixed_point_multiplier),
        (ex.check_int32_bias, sol09.int32_bias),
        (ex.check_linear_scaling, sol10.linear_scaling),
    ],
)
def test_solution_passes_and_stub_fails(check, solution, capsys):
    assert check(solution)
    assert "✅ Passed" in capsys.readouterr().out
    result = check(not_implemented)
    assert not result
    assert "❌ Not yet" in capsys.readouterr().out


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
    assert "✅ Passed" in capsys.readouterr().out

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
    assert "❌ Not yet" in out and __import__("re").search(hint, out), out


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
    assert "❌ Not yet" in out and hint in out, out


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
    assert "❌ Not yet" in out and hint in out, out

