"""course_utils.distill: Hinton's KD loss against torch's KL, the T² scaling, the detection terms, the hook."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_utils import TinyDetector
from course_utils.distill import (
    Distiller,
    FeatureAdapter,
    box_distill_loss,
    dense_cls_distill_loss,
    feature_imitation_loss,
    foreground_mask,
    hinton_loss,
    kd_loss,
    teacher_bounded_regression_loss,
)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0, 10.0])
def test_kd_loss_equals_t2_kl_div(temperature: float) -> None:
    g = torch.Generator().manual_seed(int(temperature))
    s, t = torch.randn(32, 10, generator=g) * 3, torch.randn(32, 10, generator=g) * 3
    ref = temperature**2 * F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t / temperature, -1), reduction="batchmean")
    assert torch.allclose(kd_loss(s, t, temperature), ref, atol=1e-6, rtol=1e-6)


def test_kd_gradient_keeps_its_scale_across_temperatures() -> None:
    """Without T² the gradient shrinks like 1/T²; with it, it stays of the same order (Hinton et al. 2015)."""
    g = torch.Generator().manual_seed(0)
    s0, t = torch.randn(64, 10, generator=g), torch.randn(64, 10, generator=g) * 2
    norms, raw_norms = [], []
    for temperature in (2.0, 4.0, 8.0, 16.0):
        s = s0.clone().requires_grad_()
        kd_loss(s, t, temperature).backward()
        norms.append(s.grad.norm().item())
        raw_norms.append(norms[-1] / temperature**2)
    assert max(norms) / min(norms) < 2.0, norms
    assert raw_norms[0] / raw_norms[-1] > 30, raw_norms  # the un-scaled KL's gradient collapses


def test_kd_loss_zero_iff_equal_and_errors() -> None:
    t = torch.randn(4, 5)
    assert kd_loss(t.clone(), t, 3.0).abs() < 1e-6
    assert kd_loss(t + torch.randn(4, 5), t, 3.0) > 0
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(t, t, 0.0)
    with pytest.raises(ValueError, match="shape"):
        kd_loss(t, t[:, :3], 2.0)


def test_hinton_loss_combines_with_the_right_sign() -> None:
    g = torch.Generator().manual_seed(1)
    s, t, y = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g), torch.randint(0, 5, (8,), generator=g)
    want = 0.7 * kd_loss(s, t, 4.0) + 0.3 * F.cross_entropy(s, y)
    assert torch.allclose(hinton_loss(s, t, y, alpha=0.7, temperature=4.0), want)
    s = s.clone().requires_grad_()
    opt = torch.optim.SGD([s], lr=5.0)
    before = kd_loss(s, t, 4.0).item()
    for _ in range(100):  # minimising it pulls the student towards the teacher
        opt.zero_grad()
        hinton_loss(s, t, y, alpha=1.0).backward()
        opt.step()
    assert kd_loss(s, t, 4.0).item() < 0.2 * before


def _dense(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 50, 3, generator=g) * 3 - 2
    deltas = torch.randn(2, 50, 4, generator=g)
    features = torch.randn(2, 8, 5, 10, generator=g)
    return logits, deltas, features


def test_detection_terms_zero_when_equal_positive_otherwise() -> None:
    logits, deltas, feats = _dense(2)
    assert foreground_mask(logits).any()
    assert dense_cls_distill_loss(logits.clone(), logits).abs() < 1e-6
    assert box_distill_loss(deltas.clone(), deltas, logits) == 0
    mask = foreground_mask(logits).reshape(2, 5, 10)
    assert feature_imitation_loss(feats.clone(), feats, mask) == 0
    o_logits, o_deltas, o_feats = _dense(3)
    assert dense_cls_distill_loss(o_logits, logits) > 0
    assert box_distill_loss(o_deltas, deltas, logits) > 0
    assert feature_imitation_loss(o_feats, feats, mask) > 0
    assert feature_imitation_loss(o_feats, feats) > 0


def test_dense_cls_loss_weights_foreground_and_matches_formula() -> None:
    logits, _, _ = _dense(4)
    student = torch.randn(2, 50, 3, generator=torch.Generator().manual_seed(5))
    T, w = 2.0, 4.0
    p = torch.sigmoid(logits / T)
    q = torch.sigmoid(student / T)
    kl = (p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())).sum(-1)
    weights = torch.where(torch.sigmoid(logits).amax(-1) > 0.3, w, 1.0)
    want = T**2 * (weights * kl).sum() / weights.sum()
    assert torch.allclose(dense_cls_distill_loss(student, logits, T, w, 0.3), want, atol=1e-5)


def test_teacher_bounded_regression() -> None:
    y = torch.zeros(3, 4)
    teacher = torch.full((3, 4), 0.5)
    better, worse = torch.full((3, 4), 0.1), torch.full((3, 4), 1.0)
    assert teacher_bounded_regression_loss(better, teacher, y) == 0  # better than the teacher: left alone
    assert math.isclose(teacher_bounded_regression_loss(worse, teacher, y).item(), 4.0)  # ||1||² over 4 offsets
    assert teacher_bounded_regression_loss(better, teacher, y, margin=1.0) > 0  # a margin keeps pushing


def test_feature_adapter_identity_and_shape_check() -> None:
    x = torch.randn(2, 8, 4, 4)
    assert torch.allclose(FeatureAdapter(8, 8)(x), x)
    assert FeatureAdapter(8, 16)(x).shape == (2, 16, 4, 4)
    with pytest.raises(ValueError, match="adapt"):
        feature_imitation_loss(x, torch.randn(2, 16, 4, 4))


def test_distiller_hook_teacher_frozen_student_learns() -> None:
    from course_utils.train import fit

    torch.manual_seed(6)
    teacher, student = TinyDetector(width=1.0).eval(), TinyDetector(width=0.5)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    hook = Distiller(teacher, {"cls": 1.0, "box": 1.0, "feature": 1.0})
    images = torch.rand(2, 3, 128, 128)
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1])}] * 2
    from course_utils.train import make_optimizer

    optimizer, scheduler = make_optimizer(student, lr=1e-3, total_steps=2)  # a scheduler must cope with the adapter's group
    history = fit(student, [(list(images), targets)] * 2, optimizer, epochs=1, device=torch.device("cpu"), hooks=[hook],
                  scheduler=scheduler, progress=False)
    assert {"kd_cls", "kd_box", "kd_feature"} <= set(history)
    assert all(p.grad is None for p in hook.teacher.parameters())  # no gradient ever reached the teacher
    assert not hook.teacher.training
    for k, v in hook.teacher.state_dict().items():  # weights and BN statistics untouched
        assert torch.equal(v, teacher_state[k]), k
    assert len(optimizer.param_groups) == 2  # the adapter is trained with the student
    assert hook.adapter.proj.in_channels == 32 and hook.adapter.proj.out_channels == 64
    with pytest.raises(ValueError, match="unknown distillation terms"):
        Distiller(teacher, {"logits": 1.0})


def test_cached_teacher_outputs_give_the_same_losses() -> None:
    from course_utils.distill import cache_teacher_outputs

    torch.manual_seed(7)
    teacher, student = TinyDetector(width=1.0).eval(), TinyDetector(width=0.5).eval()
    data = [(torch.rand(3, 128, 128), {"boxes": torch.tensor([[5.0, 5.0, 40.0, 40.0]]), "labels": torch.tensor([2])})
            for _ in range(3)]
    cached = cache_teacher_outputs(teacher, data, batch_size=2)
    assert set(cached[0][1]) == {"boxes", "labels", "teacher_logits", "teacher_deltas", "teacher_features"}
    hook = Distiller(teacher, {"cls": 1.0, "box": 1.0})
    images = [img for img, _ in data]
    raw = student.forward_raw(images)
    live = hook.losses(raw, images)
    from_cache = hook.losses(raw, images, [t for _, t in cached])
    for k in live:
        assert torch.allclose(live[k], from_cache[k], atol=1e-6), k


def test_pseudo_label_keeps_confident_teacher_detections() -> None:
    from course_utils.distill import pseudo_label

    torch.manual_seed(8)
    teacher = TinyDetector(width=0.5, score_threshold=0.0).eval()
    data = [(torch.rand(3, 128, 128), {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long), "id": i})
            for i in range(3)]
    out = pseudo_label(teacher, data, score_threshold=0.005, batch_size=2)
    images = torch.stack([img for img, _ in data])
    with torch.no_grad():  # the same batches of 2 + 1 (some torch versions' CPU kernels round differently per batch size)
        dets = teacher(images[:2]) + teacher(images[2:])
    for (_, target), det in zip(out, dets):
        keep = det["scores"] >= 0.005
        assert torch.equal(target["boxes"], det["boxes"][keep]) and torch.equal(target["labels"], det["labels"][keep])
        assert "id" in target
    assert sum(len(t["boxes"]) for _, t in out) > 0
    with pytest.raises(ValueError, match="score_threshold"):
        pseudo_label(teacher, data, score_threshold=1.5)


def test_soft_target_distiller_step_equals_hinton_loss() -> None:
    """Inside fit, the hook turns the step's loss into (1-α)·CE + α·T²·KL, and the teacher stays frozen."""
    from course_utils.distill import SoftTargetDistiller
    from course_utils.models import DigitsCNN
    from course_utils.train import fit

    torch.manual_seed(9)
    teacher, student = DigitsCNN(width=8), DigitsCNN(width=4)
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    images = list(torch.rand(6, 1, 8, 8))
    targets = [{"labels": torch.tensor(i % 10)} for i in range(6)]
    with torch.no_grad():
        want = hinton_loss(student(torch.stack(images)), teacher(torch.stack(images)), torch.arange(6) % 10, 0.7, 3.0)
    hook = SoftTargetDistiller(teacher, alpha=0.7, temperature=3.0)
    history = fit(student, [(images, targets)], torch.optim.SGD(student.parameters(), lr=0.0), epochs=1,
                  device=torch.device("cpu"), hooks=[hook], progress=False)
    assert math.isclose(history["loss"][0], want.item(), rel_tol=1e-5)
    assert set(history) >= {"loss_ce", "loss_kd"}
    assert all(p.grad is None for p in hook.teacher.parameters())
    for k, v in hook.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k
    with pytest.raises(ValueError, match="alpha"):
        SoftTargetDistiller(teacher, alpha=1.5)


def test_jitter_boxes_keeps_originals_and_valid_boxes() -> None:
    from course_utils.distill import jitter_boxes

    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 8.0, 8.0]])
    out = jitter_boxes(boxes, copies=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (8, 4) and torch.equal(out[:2], boxes)
    assert bool((out[:, 2] > out[:, 0]).all() and (out[:, 3] > out[:, 1]).all())
    assert not torch.equal(out[2:4], boxes)  # the copies moved
    assert jitter_boxes(torch.zeros(0, 4)).shape == (0, 4)


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_roi_class_logits_and_roi_distiller() -> None:
    """ROI-head KD on a torchvision Faster R-CNN: zero for an identical teacher, the teacher never changes."""
    from course_utils import build_torchvision_detector
    from course_utils.distill import RoIDistiller, roi_class_logits
    from course_utils.train import fit

    torch.manual_seed(10)
    student = build_torchvision_detector(num_classes=3)
    images = list(torch.rand(2, 3, 128, 128))
    boxes = [torch.tensor([[10.0, 10.0, 60.0, 50.0], [70.0, 70.0, 100.0, 120.0]]), torch.tensor([[5.0, 5.0, 30.0, 30.0]])]
    student.eval()
    logits = roi_class_logits(student, images, boxes)
    assert logits.shape == (3, 4)  # 3 regions, 3 classes + background
    # the same regions through torchvision's own ROI heads (eval, no resize at 128 px) give the same class scores
    with torch.no_grad():
        feats = {"0": student.backbone(student.transform(images)[0].tensors)}
        pooled = student.roi_heads.box_roi_pool(feats, boxes, [(128, 128)] * 2)
        ref, _ = student.roi_heads.box_predictor(student.roi_heads.box_head(pooled))
    assert torch.allclose(logits, ref, atol=1e-5)
    assert kd_loss(logits, roi_class_logits(student, images, boxes).detach(), 4.0).abs() < 1e-6
    with pytest.raises(ValueError, match="one box tensor per image"):
        roi_class_logits(student, images, boxes[:1])

    teacher = build_torchvision_detector(num_classes=3).eval()
    teacher_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    hook = RoIDistiller(teacher, weight=1.0, temperature=4.0)
    targets = [{"boxes": b, "labels": torch.ones(len(b), dtype=torch.long)} for b in boxes]
    history = fit(student, [(images, targets)] * 2, torch.optim.SGD(student.parameters(), lr=1e-3), epochs=1,
                  device=torch.device("cpu"), hooks=[hook], progress=False)
    assert len(history["loss_kd_roi"]) == 2 and all(v > 0 for v in history["loss_kd_roi"])
    assert all(p.grad is None for p in hook.teacher.parameters()) and not hook.teacher.training
    for k, v in hook.teacher.state_dict().items():
        assert torch.equal(v, teacher_state[k]), k
