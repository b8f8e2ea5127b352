"""Argument checks at the public boundary (issue 14): bad input gets a clear error from course_utils, not a
wrong number or an obscure crash deep inside torch or numpy. One regression test per reported bug."""

from __future__ import annotations

import math
import os
import re

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import course_utils
from course_utils import clipping as C
from course_utils.metrics import bootstrap_map, count_errors, mean_average_precision, paired_bootstrap_map, pycocotools_map

PACKAGE_DIR = os.path.dirname(course_utils.__file__)


def raised_here(info: pytest.ExceptionInfo, *fragments: str) -> None:
    """The error was raised by course_utils code (last traceback frame) and its message holds every fragment."""
    last = info.traceback[-1]
    assert os.path.commonpath([str(last.path), PACKAGE_DIR]) == PACKAGE_DIR, f"raised from {last.path}:{last.lineno}, not course_utils"
    message = str(info.value)
    for fragment in fragments:
        assert re.search(fragment, message), f"{fragment!r} not in {message!r}"


G = [{"boxes": torch.tensor([[10.0, 10, 50, 50]]), "labels": torch.tensor([1])}]


def _pred(boxes, scores=(0.9,), labels=(1,)) -> dict:
    return {"boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores),
            "labels": torch.tensor(labels)}


# ------------------------------------------------------------------ 1. non-finite predictions and ground truth
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_predicted_box_is_refused_not_a_true_positive(bad: float) -> None:
    preds = [_pred(torch.full((1, 4), bad))]
    with pytest.raises(ValueError) as info:
        mean_average_precision(preds, G)
    raised_here(info, r"preds\[0\]", "'boxes'", "NaN", "learning rate")


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_score_is_refused(bad: float) -> None:
    with pytest.raises(ValueError) as info:
        mean_average_precision([_pred([[10.0, 10, 50, 50]], scores=(bad,))], G)
    raised_here(info, r"preds\[0\]", "'scores'")


def test_bootstrap_and_count_errors_refuse_non_finite_predictions() -> None:
    nan_pred = _pred(torch.full((1, 4), math.nan))
    for call in (lambda: count_errors(nan_pred, G[0]),
                 lambda: bootstrap_map([nan_pred] * 3, G * 3, n_boot=10),
                 lambda: paired_bootstrap_map([nan_pred] * 3, [_pred([[10.0, 10, 50, 50]])] * 3, G * 3, n_boot=10)):
        with pytest.raises(ValueError) as info:
            call()
        raised_here(info, "boxes", "NaN")


def test_non_finite_ground_truth_is_refused() -> None:
    targets = [{"boxes": torch.tensor([[10.0, math.nan, 50, 50]]), "labels": torch.tensor([1])}]
    with pytest.raises(ValueError) as info:
        mean_average_precision([_pred([[10.0, 10, 50, 50]])], targets)
    raised_here(info, r"targets\[0\]", "'boxes'", "NaN")


# ------------------------------------------------------------------ 2. zero-area and inverted boxes
def test_zero_area_boxes_never_match() -> None:
    preds = [_pred([[99.0, 99, 99, 99]])]
    targets = [{"boxes": torch.tensor([[10.0, 10, 10, 10]]), "labels": torch.tensor([1])}]
    result = mean_average_precision(preds, targets)
    assert result["map"] == 0.0 == pycocotools_map(preds, targets)["map"]
    assert count_errors(preds[0], targets[0], 0.0) == (0, 1, 1)
    # the same zero-area box predicted exactly on the zero-area ground truth does not match either (IoU 0/0 := 0)
    assert mean_average_precision([_pred([[10.0, 10, 10, 10]])], targets)["map"] == 0.0


@pytest.mark.parametrize("who", ["preds", "targets"])
def test_inverted_boxes_are_refused(who: str) -> None:
    inverted = torch.tensor([[50.0, 10, 10, 50]])  # x2 < x1
    preds = [_pred(inverted if who == "preds" else [[10.0, 10, 50, 50]])]
    targets = [{"boxes": inverted, "labels": torch.tensor([1])}] if who == "targets" else G
    with pytest.raises(ValueError) as info:
        mean_average_precision(preds, targets)
    raised_here(info, rf"{who}\[0\]", "x2 < x1", "xyxy", "box_convert")


def test_box_outside_coco_area_range_is_refused() -> None:
    """pycocotools ignores boxes with area > 1e10 px² in area range "all"; we refuse them instead of differing."""
    with pytest.raises(ValueError) as info:
        mean_average_precision([_pred([[0.0, 0, 2e5, 2e5]])], G)
    raised_here(info, r"preds\[0\]", "area", "1e\\+?10")


# ------------------------------------------------------------------ 3. max_detections
@pytest.mark.parametrize("bad", [-1, 0, 1.5, True, "100"])
def test_max_detections_must_be_a_positive_int(bad) -> None:
    preds = [_pred([[10.0, 10, 50, 50], [0.0, 0, 5, 5]], scores=(0.9, 0.8), labels=(1, 1))]
    with pytest.raises(ValueError) as info:
        mean_average_precision(preds, G, max_detections=bad)
    raised_here(info, "max_detections", "positive int")


# ------------------------------------------------------------------ 4. malformed dicts
@pytest.mark.parametrize("pred,fragments", [
    ({"boxes": torch.zeros(2, 4), "scores": torch.ones(1), "labels": torch.ones(2, dtype=torch.int64)}, ["'scores'", "2 boxes"]),
    ({"boxes": torch.zeros(1, 4), "labels": torch.ones(1, dtype=torch.int64)}, ["no 'scores'"]),
    ({"boxes": torch.zeros(1, 3), "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.int64)}, ["'boxes'", r"\(N, 4\)"]),
    ({"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.ones(1)}, ["'labels'", "integer"]),
    ({"boxes": torch.zeros(1, 4), "scores": torch.ones(1, 1), "labels": torch.ones(1, dtype=torch.int64)}, ["'scores'", "1-D"]),
    ("not a dict", ["dict"]),
])
def test_malformed_predictions_name_the_image_and_the_key(pred, fragments: list[str]) -> None:
    targets = [G[0], G[0]]
    good = _pred([[10.0, 10, 50, 50]])
    with pytest.raises((ValueError, TypeError)) as info:
        mean_average_precision([good, pred], targets)
    raised_here(info, r"preds\[1\]", *fragments)


def test_preds_and_targets_of_different_length() -> None:
    with pytest.raises(ValueError) as info:
        mean_average_precision([_pred([[10.0, 10, 50, 50]])] * 2, G)
    raised_here(info, "2 predictions", "1 targets")


# ------------------------------------------------------------------ 5. TinyDetector.loss labels and boxes
def _detector_loss(labels: torch.Tensor, boxes: torch.Tensor | None = None) -> dict:
    from course_utils import TinyDetector

    torch.manual_seed(0)
    model = TinyDetector(num_classes=3, width=0.25, depth=0)
    boxes = torch.tensor([[10.0, 10, 50, 50]]) if boxes is None else boxes
    return model(torch.rand(1, 3, 64, 64), [{"boxes": boxes, "labels": labels}])


@pytest.mark.parametrize("label", [0, 4, -1])
def test_loss_refuses_labels_outside_one_to_k(label: int) -> None:
    with pytest.raises(ValueError) as info:
        _detector_loss(torch.tensor([label]))
    raised_here(info, f"label {label}", "1..3")


def test_loss_refuses_non_finite_or_malformed_targets() -> None:
    with pytest.raises(ValueError) as info:
        _detector_loss(torch.tensor([1]), torch.tensor([[10.0, math.nan, 50, 50]]))
    raised_here(info, r"targets\[0\]", "boxes", "NaN")
    with pytest.raises(ValueError) as info:
        _detector_loss(torch.tensor([1.0]))
    raised_here(info, "labels", "integer")
    with pytest.raises(ValueError) as info:
        _detector_loss(torch.tensor([1, 2]))
    raised_here(info, "2 labels", "1 boxes")
    assert torch.isfinite(sum(_detector_loss(torch.tensor([3])).values()))  # K itself is fine


def test_found_by_the_property_tests_uint8_labels_train() -> None:
    """uint8 labels are integers, but torch reads a uint8 index as a boolean mask: the loss crashed (IndexError)."""
    losses, reference = _detector_loss(torch.tensor([2], dtype=torch.uint8)), _detector_loss(torch.tensor([2]))
    assert {k: v.item() for k, v in losses.items()} == {k: v.item() for k, v in reference.items()}


# ------------------------------------------------------------------ 6. clipping thresholds
def _params() -> list[nn.Parameter]:
    p = nn.Parameter(torch.randn(4, 3))
    p.grad = torch.randn(4, 3) * 10
    return [p]


@pytest.mark.parametrize("bad", [-1.0, 0.0, math.nan, math.inf])
def test_clip_norm_thresholds_are_checked(bad: float) -> None:
    for call, name in [(lambda: C.clip_grad_norm_(_params(), bad), "max_norm"),
                       (lambda: C.clip_grad_norm_per_param_(_params(), bad), "max_norm"),
                       (lambda: C.adaptive_clip_grad_(_params(), bad), "clip_factor"),
                       (lambda: C.adaptive_clip_grad_(_params(), 0.01, eps=bad), "eps"),
                       (lambda: C.GradientClipping("norm", bad), "threshold"),
                       (lambda: C.GradientClipping("agc", bad), "threshold")]:
        with pytest.raises(ValueError) as info:
            call()
        raised_here(info, name, re.escape(repr(bad)), "typically")


def test_negative_max_norm_no_longer_flips_gradients() -> None:
    params = _params()
    before = params[0].grad.clone()
    with pytest.raises(ValueError):
        C.clip_grad_norm_(params, -1.0)
    assert torch.equal(params[0].grad, before)  # refused before touching anything


@pytest.mark.parametrize("bad", [0, -2.0, 0.5, math.nan, "2"])
def test_norm_type_is_checked(bad) -> None:
    for call in (lambda: C.clip_grad_norm_(_params(), 1.0, bad), lambda: C.clip_grad_norm_per_param_(_params(), 1.0, bad),
                 lambda: C.grad_norm(_params(), bad)):
        with pytest.raises(ValueError) as info:
            call()
        raised_here(info, "norm_type")


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_clip_value_is_checked(bad: float) -> None:
    with pytest.raises(ValueError) as info:
        C.clip_grad_value_(_params(), bad)
    raised_here(info, "clip_value")
    with pytest.raises(ValueError) as info:
        C.GradientClipping("value", bad)
    raised_here(info, "threshold")


# ------------------------------------------------------------------ 7. quantize_model's quantizers follow its mode
def test_quantize_model_returns_quantizers_in_the_models_mode() -> None:
    from course_utils.quant import FakeQuantize, calibrate, quantize_model

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    q = quantize_model(model)
    assert not q.training
    assert all(not m.training for m in q.modules()), [n for n, m in q.named_modules() if m.training]
    with pytest.raises(RuntimeError) as info:
        q(torch.rand(1, 3, 8, 8))  # uncalibrated: must not silently calibrate on this batch
    raised_here(info, "calibrate\\(")
    calibrate(q, [torch.rand(2, 3, 8, 8)])
    assert all(m.scale.numel() > 0 for m in q.modules() if isinstance(m, FakeQuantize))
    assert torch.isfinite(q(torch.rand(1, 3, 8, 8))).all()


def test_prepare_qat_wrappers_follow_the_models_mode() -> None:
    from course_utils.quant import prepare_qat

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    qat = prepare_qat(model)
    assert all(not m.training for m in qat.modules())
    qat = prepare_qat(model.train())
    assert all(m.training for m in qat.modules())


# ------------------------------------------------------------------ 8. LSQ first fed zeros
def test_lsq_quantizer_survives_a_zero_first_batch() -> None:
    from course_utils.quant import LSQQuantizer, lsq_init_step

    q = LSQQuantizer(num_bits=4)
    out = q(torch.zeros(100))
    assert torch.equal(out, torch.zeros(100))
    v = torch.randn(1000, generator=torch.Generator().manual_seed(0)).requires_grad_()
    out = q(v)
    assert torch.isfinite(out).all() and len(torch.unique(out)) > 4  # really quantizes, not all zeros
    assert float(q.step.detach()) > 0
    out.sum().backward()
    assert torch.isfinite(q.step.grad) and torch.isfinite(v.grad).all()
    assert float(lsq_init_step(torch.zeros(5), 7)) > 0


# ------------------------------------------------------------------ 9. pruning ratios
def test_magnitude_masks_refuse_a_sparsity_that_zeroes_everything() -> None:
    from course_utils.prune import magnitude_masks

    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.Conv2d(16, 2, 1))  # 432 and 32 weights
    for scope in ("global", "layer"):
        with pytest.raises(ValueError) as info:
            magnitude_masks(model, 0.999999, scope)
        raised_here(info, "0.999999", "keeps 0 of", "at most")


def test_prune_detector_refuses_multiple_of_larger_than_a_group() -> None:
    from course_utils import TinyDetector, prune_detector

    model = TinyDetector(width=0.5, depth=0)
    with pytest.raises(ValueError) as info:
        prune_detector(model, 0.5, multiple_of=1000)
    raised_here(info, "multiple_of=1000", "stem", "channels")
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError) as info:
            prune_detector(model, 0.5, multiple_of=bad)
        raised_here(info, "multiple_of")


# ------------------------------------------------------------------ 10. no-op training
def _fit_setup(n: int = 3):
    from course_utils import TinyDetector
    from course_utils.data import SyntheticShapes, collate_detection

    torch.manual_seed(0)
    model = TinyDetector(width=0.25, depth=0)
    data = [SyntheticShapes(n, seed=0)[i] for i in range(n)]
    return model, data, collate_detection, torch.optim.SGD(model.parameters(), lr=1e-3)


def test_fit_refuses_a_loader_without_batches() -> None:
    from course_utils.train import fit

    model, data, collate, opt = _fit_setup()
    cpu = torch.device("cpu")
    with pytest.raises(ValueError) as info:
        fit(model, DataLoader(data, batch_size=8, drop_last=True, collate_fn=collate), opt, 1, cpu, progress=False)
    raised_here(info, "no batch", "len\\(dataset\\)=3", "batch_size=8", "drop_last=True")
    with pytest.raises(ValueError) as info:
        fit(model, [], opt, 1, cpu, progress=False)
    raised_here(info, "no batch")
    batches = iter([next(iter(DataLoader(data, batch_size=3, collate_fn=collate)))])  # one-shot: empty in epoch 2
    with pytest.raises(ValueError) as info:
        fit(model, batches, opt, 2, cpu, progress=False)
    raised_here(info, "no batch", "epoch 1")


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True])
def test_fit_refuses_non_positive_epochs(epochs) -> None:
    from course_utils.train import fit

    model, data, collate, opt = _fit_setup()
    with pytest.raises(ValueError) as info:
        fit(model, DataLoader(data, batch_size=2, collate_fn=collate), opt, epochs, torch.device("cpu"), progress=False)
    raised_here(info, "epochs", "positive int")


def test_fit_refuses_max_steps_zero() -> None:
    from course_utils.train import fit

    model, data, collate, opt = _fit_setup()
    with pytest.raises(ValueError) as info:
        fit(model, DataLoader(data, batch_size=2, collate_fn=collate), opt, 1, torch.device("cpu"), progress=False, max_steps=0)
    raised_here(info, "max_steps")


def test_clip_lab_run_refuses_zero_steps() -> None:
    with pytest.raises(ValueError) as info:
        C.clip_lab_run(steps=0)
    raised_here(info, "steps", "positive int")


def test_iterative_prune_refuses_an_empty_loader_up_front() -> None:
    from course_utils.prune import iterative_prune

    model, _, _, _ = _fit_setup()
    with pytest.raises(ValueError) as info:
        iterative_prune(model, [], [0.5])
    raised_here(info, "no batch")
    with pytest.raises(ValueError) as info:  # a bad ratio late in the schedule is refused before any training
        iterative_prune(model, [], [0.5, 0.0])
    raised_here(info, "keep_ratio")


# ------------------------------------------------------------------ 11. quantize_tensor and the affine map
def test_quantize_tensor_refuses_empty_and_nan() -> None:
    from course_utils.quant import quantize_tensor

    with pytest.raises(ValueError) as info:
        quantize_tensor(torch.tensor([]))
    raised_here(info, "empty")
    with pytest.raises(ValueError) as info:
        quantize_tensor(torch.tensor([1.0, math.nan, 2.0]))
    raised_here(info, "NaN")


@pytest.mark.parametrize("bits,symmetric", [(0, True), (1, False), (33, True), (8.0, True), (True, True)])
def test_quantize_tensor_refuses_bad_bits(bits, symmetric: bool) -> None:
    from course_utils.quant import quantize_tensor

    with pytest.raises(ValueError) as info:
        quantize_tensor(torch.randn(10), bits, symmetric)
    raised_here(info, "num_bits", re.escape(repr(bits)))


@pytest.mark.parametrize("scale", [0.0, -0.1, math.nan, math.inf])
def test_affine_map_refuses_bad_scale(scale: float) -> None:
    from course_utils.quant import dequantize, fake_quantize, fake_quantize_per_channel, quantize

    x = torch.randn(8)
    for call in (lambda: quantize(x, scale, 0, -128, 127), lambda: dequantize(torch.zeros(8, dtype=torch.int32), scale, 0),
                 lambda: fake_quantize(x, scale, 0, -128, 127),
                 lambda: fake_quantize_per_channel(x.reshape(2, 4), torch.tensor([0.1, scale]), torch.zeros(2, dtype=torch.int32), 0, -128, 127)):
        with pytest.raises(ValueError) as info:
            call()
        raised_here(info, "scale", "> 0")


def test_affine_map_refuses_nan_input_and_bad_zero_point() -> None:
    from course_utils.quant import fake_quantize, quantize

    with pytest.raises(ValueError) as info:
        quantize(torch.tensor([math.nan]), 0.1, 0, -128, 127)
    raised_here(info, "NaN")
    with pytest.raises(ValueError) as info:
        fake_quantize(torch.tensor([math.nan]), 0.1, 0, -128, 127)
    raised_here(info, "NaN")
    with pytest.raises(ValueError) as info:
        fake_quantize(torch.ones(3), 0.1, 300, 0, 255)
    raised_here(info, "zero_point", "300", "0..255")


def test_found_by_the_property_tests_quantization_edges() -> None:
    """A float32-subnormal scale (1 / S = inf) made 0 fake-quantize to NaN (torch: 0); a range at float32's
    limit gave an end level of inf. Both are refused now."""
    from course_utils.quant import calc_qparams, fake_quantize

    with pytest.raises(ValueError) as info:
        fake_quantize(torch.zeros(3), torch.tensor(1e-45), 0, -128, 127)
    raised_here(info, "scale", "1 / scale")
    with pytest.raises(ValueError) as info:
        calc_qparams(0.0, 3.402823364973241e38, 5)
    raised_here(info, "too wide")


def test_found_by_the_property_tests_clipping_bounds_beyond_float32() -> None:
    """clip_value or AGC's eps beyond float32 (1e300) crashed inside torch's clamp_ (RuntimeError); they are
    capped at float32's largest value, which clips nothing -- what such a bound means."""
    params = _params()
    before = params[0].grad.clone()
    C.clip_grad_value_(params, 1e300)
    assert torch.equal(params[0].grad, before)
    C.adaptive_clip_grad_(params, 1.0, eps=1e300)
    assert torch.equal(params[0].grad, before)


# ------------------------------------------------------------------ 12. timing helpers
def test_measure_latency_and_interleaved_check_their_counts() -> None:
    from course_utils.deploy import measure_interleaved, measure_latency

    for kwargs, name in [({"runs": 0}, "runs"), ({"warmup": -1}, "warmup"), ({"runs": 2.5}, "runs"),
                         ({"min_seconds": math.nan}, "min_seconds")]:
        with pytest.raises(ValueError) as info:
            measure_latency(lambda: None, **kwargs)
        raised_here(info, name)
    with pytest.raises(ValueError) as info:
        measure_interleaved({})
    raised_here(info, "fns", "empty")
    with pytest.raises(ValueError) as info:
        measure_interleaved({"a": lambda: None}, runs=0)
    raised_here(info, "runs")
    with pytest.raises(TypeError) as info:
        measure_latency(42)
    raised_here(info, "callable")
