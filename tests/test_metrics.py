"""course_utils.metrics.mean_average_precision equals pycocotools' COCOeval (bbox)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from course_utils.metrics import mean_average_precision

IMAGE_SIZE = 100.0


# --------------------------------------------------------------------------- #
# Reference: pycocotools
# --------------------------------------------------------------------------- #
def _xyxy_to_xywh(box) -> list[float]:
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box, dtype=np.float64))
    return [x1, y1, x2 - x1, y2 - y1]


def coco_reference(preds: list[dict], targets: list[dict]) -> dict:
    """Run pycocotools COCOeval on the same inputs; return stats, classes and the precision table."""
    labels = set()
    for d in (*preds, *targets):
        labels |= {int(c) for c in d["labels"].tolist()}
    classes = sorted(labels)

    annotations = []
    for image_id, target in enumerate(targets, start=1):
        for box, label in zip(target["boxes"].double().tolist(), target["labels"].tolist()):
            x, y, w, h = _xyxy_to_xywh(box)
            annotations.append(
                {"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                 "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0}
            )
    detections = []
    for image_id, pred in enumerate(preds, start=1):
        for box, score, label in zip(pred["boxes"].double().tolist(), pred["scores"].double().tolist(), pred["labels"].tolist()):
            detections.append({"image_id": image_id, "category_id": int(label), "bbox": _xyxy_to_xywh(box), "score": float(score)})
    assert detections, "pycocotools' loadRes cannot handle an empty detection list"

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {
            "images": [{"id": i, "width": int(IMAGE_SIZE), "height": int(IMAGE_SIZE)} for i in range(1, len(targets) + 1)],
            "annotations": annotations,
            "categories": [{"id": c, "name": str(c)} for c in classes],
        }
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, 2]  # (T, R, K), area "all", maxDets 100
    per_class = {}
    for k, c in enumerate(classes):
        p = precision[:, :, k]
        per_class[c] = float(p[p > -1].mean()) if (p > -1).any() else -1.0
    return {"stats": evaluator.stats, "classes": classes, "precision": precision, "ap_per_class": per_class}


def assert_matches_coco(preds, targets, tol=1e-6):
    ours = mean_average_precision(preds, targets)
    ref = coco_reference(preds, targets)
    assert ours["classes"] == ref["classes"]
    assert ours["map"] == pytest.approx(ref["stats"][0], abs=tol)
    assert ours["map_50"] == pytest.approx(ref["stats"][1], abs=tol)
    assert ours["map_75"] == pytest.approx(ref["stats"][2], abs=tol)
    assert set(ours["ap_per_class"]) == set(ref["ap_per_class"])
    for c, ap in ref["ap_per_class"].items():
        assert ours["ap_per_class"][c] == pytest.approx(ap, abs=tol), f"class {c}"
    np.testing.assert_allclose(ours["precision"], ref["precision"], rtol=0, atol=tol)
    return ours, ref


# --------------------------------------------------------------------------- #
# Random cases
# --------------------------------------------------------------------------- #
def _random_box(rng: np.random.Generator, min_side=4.0, max_side=40.0) -> np.ndarray:
    w, h = rng.uniform(min_side, max_side, size=2)
    x, y = rng.uniform(0, IMAGE_SIZE - w), rng.uniform(0, IMAGE_SIZE - h)
    return np.array([x, y, x + w, y + h])


def _jitter(rng: np.random.Generator, box: np.ndarray, strength: float) -> np.ndarray:
    """Move each side by up to ``strength`` of the box's width/height: IoU from ~1 down to ~0.3."""
    w, h = box[2] - box[0], box[3] - box[1]
    out = box + rng.uniform(-strength, strength, size=4) * np.array([w, h, w, h])
    if out[2] - out[0] < 1:
        out[2] = out[0] + 1
    if out[3] - out[1] < 1:
        out[3] = out[1] + 1
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def make_case(seed: int) -> tuple[list[dict], list[dict], dict]:
    """One random evaluation set and what it contains (``features``, for coverage checks)."""
    rng = np.random.default_rng(seed)
    num_classes = int(rng.integers(1, 5))  # 1..4
    num_images = int(rng.integers(2, 7))
    classes = list(range(1, num_classes + 1))
    features = {"empty_gt_image": False, "empty_pred_image": False, "duplicates": False, "over_100": False,
                "pred_only_class": False, "ious": [], "tied_scores": seed % 4 == 0, "num_classes": num_classes}
    targets, preds = [], []
    for i in range(num_images):
        n_gt = 0 if (i == 0 and seed % 3 == 0) or rng.random() < 0.15 else int(rng.integers(1, 6))
        gt_boxes = [_random_box(rng) for _ in range(n_gt)]
        gt_labels = [int(rng.choice(classes)) for _ in range(n_gt)]
        features["empty_gt_image"] |= n_gt == 0

        det_boxes, det_labels = [], []
        no_preds = (i == num_images - 1 and seed % 3 == 1) or rng.random() < 0.1
        if not no_preds:
            for box, label in zip(gt_boxes, gt_labels):
                if rng.random() < 0.15:
                    continue  # missed object
                for _ in range(int(rng.integers(1, 3))):  # one or two jittered guesses
                    det = _jitter(rng, box, strength=float(rng.choice([0.02, 0.1, 0.25, 0.4])))
                    det_boxes.append(det)
                    det_labels.append(label if rng.random() < 0.9 else int(rng.choice(classes)))
                    features["ious"].append(_iou(det, box))
                if rng.random() < 0.3:  # the same box repeated: duplicates
                    for _ in range(int(rng.integers(1, 4))):
                        det_boxes.append(det_boxes[-1].copy())
                        det_labels.append(det_labels[-1])
                    features["duplicates"] = True
            for _ in range(int(rng.integers(0, 5))):  # false positives somewhere in the image
                det_boxes.append(_random_box(rng))
                det_labels.append(int(rng.choice(classes)))
            if seed % 5 == 2 and i == 1 % num_images:  # a class only ever predicted, never in the ground truth
                det_boxes.append(_random_box(rng))
                det_labels.append(num_classes + 1)
                features["pred_only_class"] = True
            if seed % 5 == 0 and i == 0:
                # > 100 detections of one class in one image: high-scoring junk first, then
                # true positives ranked past 100, so the per-image-and-class cap changes the result.
                label = classes[0]
                n_extra = int(rng.integers(105, 140))
                for _ in range(n_extra):
                    det_boxes.append(_random_box(rng, 2.0, 10.0))
                    det_labels.append(label)
                for _ in range(3):
                    gt_boxes.append(_random_box(rng, 20.0, 40.0))
                    gt_labels.append(label)
                    det_boxes.append(_jitter(rng, gt_boxes[-1], 0.03))
                    det_labels.append(label)
                features["over_100"] = True
        features["empty_pred_image"] |= len(det_boxes) == 0

        n_det = len(det_boxes)
        if features["tied_scores"]:
            scores = np.round(rng.uniform(0.05, 1.0, size=n_det), 1)  # many exact ties
        else:
            scores = rng.uniform(0.05, 1.0, size=n_det)
        if features["over_100"] and i == 0:
            scores = np.sort(scores)[::-1].copy()  # junk (added first) scores highest, the TPs last
        targets.append({"boxes": torch.tensor(np.array(gt_boxes).reshape(-1, 4), dtype=torch.float32),
                        "labels": torch.tensor(gt_labels, dtype=torch.int64)})
        preds.append({"boxes": torch.tensor(np.array(det_boxes).reshape(-1, 4), dtype=torch.float32),
                      "scores": torch.tensor(scores, dtype=torch.float32),
                      "labels": torch.tensor(det_labels, dtype=torch.int64)})
    if sum(len(p["scores"]) for p in preds) == 0:  # loadRes needs at least one detection
        preds[-1] = {"boxes": torch.tensor([_random_box(rng)], dtype=torch.float32),
                     "scores": torch.tensor([0.5]), "labels": torch.tensor([classes[0]])}
    if sum(len(t["labels"]) for t in targets) == 0:  # keep at least one class evaluable
        targets[-1] = {"boxes": torch.tensor([_random_box(rng)], dtype=torch.float32), "labels": torch.tensor([classes[0]])}
    return preds, targets, features


SEEDS = list(range(60))


@pytest.mark.parametrize("seed", SEEDS)
def test_map_matches_pycocotools_random(seed):
    preds, targets, _ = make_case(seed)
    assert_matches_coco(preds, targets)


def test_random_cases_cover_the_hard_parts():
    """The random cases above really contain what they are meant to exercise."""
    all_features = [make_case(s)[2] for s in SEEDS]
    for key in ("empty_gt_image", "empty_pred_image", "duplicates", "over_100", "pred_only_class", "tied_scores"):
        assert sum(f[key] for f in all_features) >= 5, key
    assert {f["num_classes"] for f in all_features} == {1, 2, 3, 4}
    ious = np.concatenate([f["ious"] for f in all_features])
    for lo, hi in [(0.3, 0.5), (0.5, 0.75), (0.75, 0.95), (0.95, 1.0)]:
        assert ((ious >= lo) & (ious < hi)).sum() >= 20, (lo, hi)


@pytest.mark.parametrize("seed", [s for s in SEEDS if s % 5 == 0][:4])
def test_detection_cap_matters(seed):
    """In the >100-detection cases, keeping every detection would change the answer, so the cap is tested."""
    preds, targets, features = make_case(seed)
    assert features["over_100"]
    capped, _ = assert_matches_coco(preds, targets)
    uncapped = mean_average_precision(preds, targets, max_detections=10**6)
    assert uncapped["map"] > capped["map"] + 1e-3


# --------------------------------------------------------------------------- #
# Hand-made sanity checks
# --------------------------------------------------------------------------- #
def _targets_two_images():
    return [
        {"boxes": torch.tensor([[10.0, 10.0, 40.0, 50.0], [50.0, 60.0, 90.0, 80.0]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[5.0, 5.0, 25.0, 25.0]]), "labels": torch.tensor([1])},
    ]


def test_perfect_predictions_give_map_one():
    targets = _targets_two_images()
    preds = [{"boxes": t["boxes"].clone(), "scores": torch.linspace(0.9, 0.5, len(t["labels"])), "labels": t["labels"].clone()} for t in targets]
    ours, _ = assert_matches_coco(preds, targets)
    assert ours["map"] == pytest.approx(1.0)
    assert ours["map_50"] == pytest.approx(1.0)
    assert ours["map_75"] == pytest.approx(1.0)
    assert ours["ap_per_class"] == {1: pytest.approx(1.0), 2: pytest.approx(1.0)}


def test_no_predictions_give_map_zero():
    targets = _targets_two_images()
    preds = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)} for _ in targets]
    ours = mean_average_precision(preds, targets)
    assert ours["map"] == 0.0 and ours["map_50"] == 0.0 and ours["map_75"] == 0.0
    assert ours["ap_per_class"] == {1: 0.0, 2: 0.0}


def test_false_positive_ranked_first_halves_ap():
    """One object; a wrong box outscores the right one -> precision 1/2 at every recall: AP = 0.5."""
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([1])}]
    preds = [{"boxes": torch.tensor([[50.0, 50.0, 70.0, 70.0], [0.0, 0.0, 20.0, 20.0]]),
              "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}]
    ours, _ = assert_matches_coco(preds, targets)
    assert ours["map"] == pytest.approx(0.5, abs=1e-9)


def test_iou_between_thresholds():
    """A box with IoU 0.7 counts at 0.50..0.70 (5 thresholds) and misses at 0.75..0.95: map = 0.5."""
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 100.0, 10.0]]), "labels": torch.tensor([3])}]
    preds = [{"boxes": torch.tensor([[0.0, 0.0, 70.0, 10.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([3])}]
    ours, _ = assert_matches_coco(preds, targets)
    assert ours["map_50"] == pytest.approx(1.0)
    assert ours["map_75"] == pytest.approx(0.0)
    assert ours["map"] == pytest.approx(0.5)


def test_iou_exactly_at_threshold_is_a_match():
    """IoU 50/100 = 0.5 exactly: a true positive at the 0.5 threshold (COCO uses >=)."""
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}]
    preds = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 5.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}]
    ours, _ = assert_matches_coco(preds, targets)
    assert ours["map_50"] == pytest.approx(1.0)
    assert ours["map"] == pytest.approx(0.1)


def test_equal_iou_tie_goes_to_later_ground_truth():
    """Detection A overlaps both objects equally (IoU 90/110 = 0.818); COCOeval gives it the *later*
    object, leaving the earlier one to detection B (IoU 1 with it, 0.667 with the later one).

    Later-wins: t = .50..80 both TP (AP 1); t = .85..95 A is FP, B TP -> AP = 51 * 0.5 / 101.
    (Earlier-wins would make B a FP from t = .70 on, a smaller mAP.)
    """
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0], [2.0, 0.0, 12.0, 10.0]]), "labels": torch.tensor([1, 1])}]
    preds = [{"boxes": torch.tensor([[1.0, 0.0, 11.0, 10.0], [0.0, 0.0, 10.0, 10.0]]),
              "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}]
    ours, _ = assert_matches_coco(preds, targets)
    assert ours["map"] == pytest.approx((7 * 1.0 + 3 * 25.5 / 101) / 10, abs=1e-9)


def test_class_only_in_predictions_is_left_out():
    targets = [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0]]), "labels": torch.tensor([1])}]
    preds = [{"boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0], [40.0, 40.0, 60.0, 60.0]]),
              "scores": torch.tensor([0.9, 0.95]), "labels": torch.tensor([1, 2])}]
    ours, _ = assert_matches_coco(preds, targets)
    assert ours["classes"] == [1, 2]
    assert ours["ap_per_class"][2] == -1.0
    assert ours["map"] == pytest.approx(1.0)


@pytest.mark.parametrize("n_preds,n_targets", [(1, 2), (3, 0), (0, 1)])
def test_mismatched_lengths_raise(n_preds, n_targets):
    target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1])}
    pred = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match="predictions"):
        mean_average_precision([pred] * n_preds, [target] * n_targets)


def test_compare_intervals_and_the_noise_aware_pareto_front():
    from course_utils.metrics import compare_intervals, pareto_front

    assert compare_intervals((0.3, 0.4), (0.1, 0.2)) == 1 and compare_intervals((0.1, 0.2), (0.3, 0.4)) == -1
    assert compare_intervals((0.1, 0.3), (0.2, 0.4)) == 0  # overlapping: a tie
    assert compare_intervals((5.0, 6.0), (7.0, 8.0), higher_is_better=False) == 1  # a cost: lower wins
    assert compare_intervals({"low": 0.3, "high": 0.4, "value": 0.35}, (0.1, 0.2)) == 1  # a bootstrap_map result
    with pytest.raises(TypeError, match="higher_is_better"):
        compare_intervals((0.3, 0.4), (0.1, 0.2), higher_is_better="False")
    with pytest.raises(ValueError, match="low <= high"):
        compare_intervals((0.4, 0.3), (0.1, 0.2))
    with pytest.raises(ValueError, match="pair"):
        compare_intervals(0.3, (0.1, 0.2))
    # a: accurate and slow; b: tied with a in accuracy, faster; c: less accurate, fastest; d: beaten by b on both
    acc = {"a": (0.80, 0.90), "b": (0.79, 0.89), "c": (0.50, 0.60), "d": (0.40, 0.50)}
    ms = {"a": (10, 11), "b": (5, 6), "c": (1, 2), "d": (7, 8)}

    def accuracy(m, n):
        return compare_intervals(acc[m], acc[n])

    def cost(m, n):
        return compare_intervals(ms[m], ms[n], higher_is_better=False)

    assert pareto_front(["a", "b", "c", "d"], accuracy, cost) == ["b", "c"]  # b beats a (tie, faster) and d
    assert pareto_front(["a", "d"], accuracy, lambda m, n: 0) == ["a"]
    assert pareto_front(["a", "b"], lambda m, n: 0, lambda m, n: 0) == ["a", "b"]  # tied on both axes: both stay
    with pytest.raises(TypeError, match="list of candidate names"):
        pareto_front("abc", accuracy, cost)
    with pytest.raises(ValueError, match="antisymmetric"):
        pareto_front(["a", "b"], lambda m, n: 1, lambda m, n: 0)
    with pytest.raises(ValueError, match="must return -1, 0 or \\+1"):
        pareto_front(["a", "b"], lambda m, n: 2, cost)
    with pytest.raises(TypeError, match="must be a function"):
        pareto_front(["a"], {"a": 1}, cost)


def test_judge_goal_calls_a_straddled_bound_not_resolved():
    from course_utils.metrics import judge_goal

    assert judge_goal((3.1, 3.4), lower=3) == "met"
    assert judge_goal((2.5, 2.9), lower=3) == "missed"
    assert judge_goal((2.7, 3.4), lower=3) == "not resolved"  # a point value of 3.05 would have said "met"
    assert judge_goal({"low": -0.55, "high": 0.02}, -0.2, 0.2) == "not resolved"
    assert judge_goal((-0.1, 0.15), -0.2, 0.2) == "met" and judge_goal((-0.9, -0.3), -0.2, 0.2) == "missed"
    with pytest.raises(ValueError, match="lower <= upper"):
        judge_goal((0, 1), 2, 1)
    with pytest.raises(ValueError, match="low <= high"):
        judge_goal((1, 0), 0)
