"""Property-based tests of mean_average_precision's boundary (issue 14): for any boxes, scores and labels it
either equals pycocotools (valid input) or raises a clear ValueError/TypeError from course_utils, and a
non-finite or zero-area box is never a true positive.

Inputs mix a plausible detection set (jittered copies of the ground truth, false positives, ties, empty
images) with corruptions -- NaN, ±inf, inverted, zero-area and huge boxes, non-integer or odd labels, missing
keys, wrong shapes and lengths -- in tensors of several dtypes, numpy arrays and lists. Coordinates are
whole or half pixels, so that pycocotools' xywh round trip ``x + (x2 - x)`` is exact and both sides compute
bit-identical IoUs (the comparison is then exact up to summation order).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st

from course_utils.metrics import MAX_BOX_AREA, count_errors, mean_average_precision, pycocotools_map
from helpers import run



# ------------------------------------------------------------------ strategies
coordinate = st.integers(0, 200).map(lambda v: v / 2)  # whole and half pixels in [0, 100]
side = st.integers(0, 80).map(lambda v: v / 2)  # 0 = a zero-width/-height box


@st.composite
def boxes_of(draw: Any, n: int) -> np.ndarray:
    rows = [[x, y, x + w, y + h] for x, y, w, h in
            (draw(st.tuples(coordinate, coordinate, side, side)) for _ in range(n))]
    return np.array(rows, dtype=np.float64).reshape(n, 4)


@st.composite
def image(draw: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    n_gt = draw(st.integers(0, 4))
    gt = draw(boxes_of(n_gt))
    gt_labels = np.array(draw(st.lists(st.integers(1, 3), min_size=n_gt, max_size=n_gt)), dtype=np.int64)
    det, det_labels = [], []
    for box, label in zip(gt, gt_labels):
        for _ in range(draw(st.integers(0, 2))):  # 0-2 guesses per object, moved by whole/half pixels
            offset = np.array(draw(st.lists(st.integers(-8, 8), min_size=4, max_size=4))) / 2
            moved = box + offset
            moved[2:] = np.maximum(moved[2:], moved[:2])  # keep it un-inverted (zero-area is fine)
            det.append(moved)
            det_labels.append(label if draw(st.integers(0, 9)) else draw(st.integers(1, 3)))
    n_fp = draw(st.integers(0, 3))
    det += list(draw(boxes_of(n_fp)))
    det_labels += draw(st.lists(st.integers(1, 4), min_size=n_fp, max_size=n_fp))  # class 4: predictions only
    scores = draw(st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.5, 0.7, 0.9]) | st.floats(0, 1), min_size=len(det),
                           max_size=len(det)))  # many exact ties
    pred = {"boxes": np.array(det, dtype=np.float64).reshape(-1, 4), "scores": np.array(scores, dtype=np.float64),
            "labels": np.array(det_labels, dtype=np.int64)}
    return pred, {"boxes": gt, "labels": gt_labels}


VALUE_CORRUPTIONS = ["nan_box", "inf_box", "neg_inf_box", "nan_score", "inf_score", "inverted", "huge_area", "huge_coords",
                     "zero_area_pair", "float_labels", "odd_labels", "big_box_exact_limit"]
STRUCTURE_CORRUPTIONS = ["missing_scores", "missing_boxes", "short_scores", "bad_box_shape", "scores_2d", "not_a_dict",
                         "extra_target"]  # applied last, at most one: they break the dict the others edit


def corrupt(kind: str, preds: list[dict], targets: list[dict], i: int, rng: np.random.Generator) -> None:
    """Apply one corruption to image ``i`` (in place)."""
    pred, target = preds[i], targets[i]
    who = pred if rng.random() < 0.6 or kind in ("nan_score", "inf_score", "missing_scores", "short_scores", "scores_2d") else target
    if kind in ("nan_box", "inf_box", "neg_inf_box", "inverted", "huge_area", "huge_coords", "big_box_exact_limit") and len(who["boxes"]) == 0:
        who["boxes"], who["labels"] = np.array([[1.0, 2, 3, 4]]), np.array([1])
        if who is pred:
            who["scores"] = np.array([0.5])
    if kind in ("nan_score", "inf_score", "short_scores") and len(pred["scores"]) == 0:
        pred["boxes"], pred["labels"], pred["scores"] = np.array([[1.0, 2, 3, 4]]), np.array([1]), np.array([0.5])
    j = int(rng.integers(0, max(len(who["boxes"]), 1)))
    value = {"nan_box": math.nan, "inf_box": math.inf, "neg_inf_box": -math.inf}.get(kind)
    if value is not None:
        who["boxes"] = who["boxes"].copy()
        who["boxes"][j, int(rng.integers(0, 4))] = value
    elif kind in ("nan_score", "inf_score"):
        pred["scores"] = pred["scores"].copy()
        pred["scores"][int(rng.integers(0, len(pred["scores"])))] = math.nan if kind == "nan_score" else -math.inf
    elif kind == "inverted":
        who["boxes"] = who["boxes"].copy()
        who["boxes"][j] = who["boxes"][j][[2, 1, 0, 3]] + np.array([1.0, 0, 0, 0])  # x1 > x2 by at least 1
    elif kind == "huge_area":
        who["boxes"] = who["boxes"].copy()
        who["boxes"][j] = [0.0, 0.0, 2e5, 1e5 + 1]
    elif kind == "huge_coords":  # far away but small: valid (exact in float64), never overlaps anything
        who["boxes"] = who["boxes"].copy()
        who["boxes"][j] = [1e12, 1e12, 1e12 + 10, 1e12 + 10]
    elif kind == "big_box_exact_limit":  # area exactly 1e10: still inside COCO's range "all"
        who["boxes"] = who["boxes"].copy()
        who["boxes"][j] = [0.0, 0.0, 1e5, 1e5]
    elif kind == "zero_area_pair":  # the same zero-area box predicted on a zero-area ground truth
        target["boxes"] = np.concatenate([target["boxes"], [[20.0, 20, 20, 30]]])
        target["labels"] = np.concatenate([target["labels"], [2]])
        pred["boxes"] = np.concatenate([pred["boxes"], [[20.0, 20, 20, 30]]])
        pred["labels"], pred["scores"] = np.concatenate([pred["labels"], [2]]), np.concatenate([pred["scores"], [1.0]])
    elif kind == "float_labels":
        if len(who["labels"]) == 0:
            who["boxes"], who["labels"] = np.array([[1.0, 2, 3, 4]]), np.array([1])
            if who is pred:
                who["scores"] = np.array([0.5])
        who["labels"] = who["labels"].astype(np.float32)
    elif kind == "odd_labels":  # valid: COCO category ids are any integers
        who["labels"] = np.where(rng.random(len(who["labels"])) < 0.5, who["labels"], np.int64(-7)).astype(np.int64)
    elif kind == "missing_scores":
        del pred["scores"]
    elif kind == "missing_boxes":
        del who["boxes"]
    elif kind == "short_scores":
        pred["scores"] = pred["scores"][:-1]
    elif kind == "bad_box_shape":
        who["boxes"] = np.zeros((max(len(who["labels"]), 1), 3))
    elif kind == "scores_2d":
        pred["scores"] = pred["scores"].reshape(-1, 1) if len(pred["scores"]) else np.zeros((0, 2))
    elif kind == "not_a_dict":
        preds[i] = list(pred.values())
    elif kind == "extra_target":
        targets.append({"boxes": np.zeros((0, 4)), "labels": np.zeros(0, dtype=np.int64)})


def containerise(d: dict, how: str) -> dict:
    """The same values as a torch tensor of some dtype, a numpy array or a Python list."""
    out = {}
    for key, v in d.items():
        if how == "list":
            out[key] = v.tolist()
        elif how == "numpy32" and key != "labels":
            out[key] = v.astype(np.float32)
        elif how == "numpy32":
            out[key] = v.astype(np.int32) if np.issubdtype(v.dtype, np.integer) else v
        elif how == "half" and key != "labels":
            out[key] = torch.from_numpy(v.astype(np.float64)).half()  # whole/half pixels <= 2048 are exact
        elif how == "int_boxes" and key == "boxes" and np.isfinite(v).all() and (v == np.round(v)).all() and (abs(v) < 2**62).all():
            out[key] = torch.from_numpy(v.astype(np.int64))
        else:
            out[key] = torch.from_numpy(np.ascontiguousarray(v)) if isinstance(v, np.ndarray) else v
    return out


def as_float64(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.double().numpy() if value.is_floating_point() else value.numpy().astype(np.float64)
    return np.asarray(value, dtype=np.float64)


def image_is_valid(d: Any, is_pred: bool) -> bool:
    """The documented rules (course_utils.metrics' module docstring), written out independently."""
    keys = ("boxes", "scores", "labels") if is_pred else ("boxes", "labels")
    if not isinstance(d, dict) or any(k not in d for k in keys):
        return False
    boxes = as_float64(d["boxes"])
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
    labels = d["labels"]
    label_dtype = labels.dtype if isinstance(labels, (np.ndarray, torch.Tensor)) else np.asarray(labels).dtype
    integer = (not labels.is_floating_point()) if isinstance(labels, torch.Tensor) else np.issubdtype(label_dtype, np.integer)
    n_labels = len(labels) if not isinstance(labels, np.ndarray) else labels.size
    if boxes.ndim != 2 or boxes.shape[1] != 4 or (n_labels and not integer) or n_labels != len(boxes):
        return False
    if is_pred:
        scores = as_float64(d["scores"])
        if (scores.ndim != 1 and scores.size) or scores.size != len(boxes) or not np.isfinite(scores).all():
            return False
    if not np.isfinite(boxes).all():
        return False
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    return bool((w >= 0).all() and (h >= 0).all() and (w * h <= MAX_BOX_AREA).all())


@st.composite
def evaluation_set(draw: Any) -> tuple[list[dict], list[dict], list[str]]:
    images = draw(st.lists(image(), min_size=1, max_size=4))
    preds, targets = [dict(p) for p, _ in images], [dict(t) for _, t in images]
    # (hypothesis favours 0, so the rarer branch is the non-zero one)
    kinds = draw(st.lists(st.sampled_from(VALUE_CORRUPTIONS), min_size=1, max_size=2)) if draw(st.integers(0, 2)) == 2 else []
    if draw(st.integers(0, 5)) == 5:
        kinds.append(draw(st.sampled_from(STRUCTURE_CORRUPTIONS)))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    for kind in kinds:
        corrupt(kind, preds, targets, int(rng.integers(0, len(preds))), rng)
    how = draw(st.sampled_from(["torch", "torch", "list", "numpy32", "half", "int_boxes"]))
    preds = [containerise(p, how) if isinstance(p, dict) else p for p in preds]
    targets = [containerise(t, how) for t in targets]
    return preds, targets, kinds


def zero_area_tps(preds: list[dict], targets: list[dict]) -> int:
    """How many zero-area detections come out as true positives at any IoU threshold (must be 0)."""
    from course_utils.metrics import match_per_image

    classes, matches = match_per_image(preds, targets)
    count = 0
    for k, cls in enumerate(classes):
        for i, pred in enumerate(preds):
            boxes, labels, scores = (as_float64(pred["boxes"]).reshape(-1, 4), np.asarray(pred["labels"]).reshape(-1),
                                    as_float64(pred["scores"]).reshape(-1))
            mask = labels == cls
            order = np.argsort(-scores[mask], kind="mergesort")[:100]
            area = ((boxes[mask][order, 2] - boxes[mask][order, 0]) * (boxes[mask][order, 3] - boxes[mask][order, 1]))
            count += int(matches[k][i][1][:, area == 0].sum())
    return count


@given(evaluation_set())
def test_map_equals_pycocotools_or_refuses_clearly(case: tuple[list[dict], list[dict], list[str]]) -> None:
    preds, targets, kinds = case
    valid = len(preds) == len(targets) and all(image_is_valid(p, True) for p in preds) and \
        all(image_is_valid(t, False) for t in targets)
    for kind in kinds or ["none"]:
        event(f"corruption: {kind}")
    event("valid" if valid else "invalid")
    ours, err = run(lambda: mean_average_precision(preds, targets))
    if not valid:
        assert err is not None, f"invalid input ({kinds}) was scored: {ours and ours['map']}"
        message = str(err)
        assert "preds" in message or "targets" in message or "predictions" in message, message
        return
    assert err is None, f"valid input ({kinds}) refused: {err}"
    if sum(len(p["labels"]) for p in preds) == 0:  # pycocotools cannot load an empty result list
        assert ours["map"] in (0.0, -1.0)
        return
    ref = pycocotools_map(preds, targets)
    event("compared with pycocotools")
    for key in ("map", "map_50", "map_75"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-9), (key, kinds)
    assert ours["ap_per_class"] == pytest.approx(ref["ap_per_class"], abs=1e-9)
    assert zero_area_tps(preds, targets) == 0


@given(evaluation_set())
def test_count_errors_checks_each_image_like_map(case: tuple[list[dict], list[dict], list[str]]) -> None:
    preds, targets, _ = case
    for pred, target in zip(preds, targets):
        valid = image_is_valid(pred, True) and image_is_valid(target, False)
        counts, err = run(lambda: count_errors(pred, target, 0.0, 0.5))
        assert (err is None) == valid, err
        if valid:
            tp, fp, fn = counts
            assert min(tp, fp, fn) >= 0 and tp + fp == len(pred["labels"]) and tp + fn == len(target["labels"])


anything = st.floats(allow_nan=True, allow_infinity=True, width=64) | st.floats(-1e3, 1e3) | st.integers(-10, 300)


@given(st.lists(st.tuples(anything, anything, anything, anything, anything, st.integers(-2**63, 2**63 - 1)), max_size=5),
       st.lists(st.tuples(anything, anything, anything, anything, st.integers(-2**63, 2**63 - 1)), max_size=5),
       st.sampled_from([torch.float32, torch.float64]))
def test_arbitrary_floats_never_escape_and_never_score_non_finite(dets: list, gts: list, dtype: torch.dtype) -> None:
    """Any float at all (subnormal, 1e308, -0.0, NaN, inf) and any int64 label: a number in [0, 1] or -1, or a
    clear error; a NaN or infinite box or score is always refused."""
    pred = {"boxes": torch.tensor([d[:4] for d in dets], dtype=dtype).reshape(-1, 4),
            "scores": torch.tensor([d[4] for d in dets], dtype=dtype), "labels": torch.tensor([d[5] for d in dets], dtype=torch.int64)}
    target = {"boxes": torch.tensor([g[:4] for g in gts], dtype=dtype).reshape(-1, 4),
              "labels": torch.tensor([g[4] for g in gts], dtype=torch.int64)}
    result, err = run(lambda: mean_average_precision([pred], [target]))
    event("scored" if err is None else "refused")
    non_finite = not (torch.isfinite(pred["boxes"]).all() and torch.isfinite(pred["scores"]).all()
                      and torch.isfinite(target["boxes"]).all())
    if non_finite:
        assert err is not None  # (maybe for another reason first, e.g. an inverted box in an earlier entry)
    assert (err is None) == (image_is_valid(pred, True) and image_is_valid(target, False)), err
    if err is None:
        assert result["map"] == -1.0 or 0.0 <= result["map"] <= 1.0
