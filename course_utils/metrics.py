"""Mean average precision, the COCO way, written out step by step.

Taught in: 01_detection_basics (the bootstrap confidence intervals: 02_training_a_tiny_detector).

:func:`mean_average_precision` follows ``pycocotools.cocoeval.COCOeval`` for
bounding boxes -- its 12 summary numbers, with up to 100 detections per image and
class -- and is tested equal to it (``tests/test_metrics.py``, ``tests/test_coco_eval.py``).
The steps:

1. For every image and class, sort detections by score and keep the top
   ``max_detections``.
2. For each IoU threshold t in 0.50:0.05:0.95, match greedily: each detection,
   best score first, takes the unmatched ground truth it overlaps most, if
   that IoU >= t. Matched = true positive (TP), otherwise false positive (FP).
   Ground truth that does not count -- a **crowd region** (``iscrowd``), or an object
   outside the **area range** being scored -- is *ignored*: a detection matched to it is
   neither TP nor FP, a crowd region may absorb many detections (its overlap is
   ``|det ∩ crowd| / |det|``), and a detection prefers counted ground truth (:func:`match_coco`).
3. Per class, pool the detections of all images, sort by score, and compute
   ``precision = TP / (TP + FP)`` and ``recall = TP / #ground-truth`` as the
   score threshold is lowered.
4. Make precision monotone (each value becomes the max to its right), read it
   at 101 recall points 0, 0.01, ..., 1 (0 past the highest recall reached) and
   average: that is AP for (class, t).
5. ``map`` averages AP over classes and thresholds; ``map_50`` and ``map_75``
   use one threshold; ``map_small/medium/large`` the area ranges (< 32², 32²..96²,
   > 96² px²). ``mar_1/10/100`` average the final recall with the top 1/10/100
   detections per image and class. Classes without any ground truth are left out.

Inputs are checked once, where they enter (:func:`match_per_image`, which
:func:`mean_average_precision`, :func:`coco_precision` and the bootstrap share,
and :func:`count_errors`); a ValueError names the image, the key and the fix:

* every image's dict has ``boxes`` (N, 4) xyxy, ``labels`` (N,) integers and,
  for predictions, ``scores`` (N,) -- numbers, tensors, arrays or lists;
* boxes and scores are finite: a NaN box would otherwise count as a true
  positive (``IoU < t`` is False for NaN; pycocotools does the same), so it is
  refused, with a hint to check the model (a diverged run);
* boxes are not inverted (``x1 <= x2``, ``y1 <= y2``: xywh passed as xyxy is the
  usual cause) and their area is at most 1e10 px², the end of COCO's area range
  "all" (pycocotools would silently ignore such boxes);
* zero-area boxes are allowed and overlap nothing: IoU 0, even with each other
  (pycocotools' rule too), so they are never a true positive.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .boxes import box_iou

__all__ = [
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "match_detections",
    "precision_at_recall",
    "coco_precision",
    "match_per_image",
    "precision_from_matches",
    "recall_from_matches",
    "match_coco",
    "AREA_RANGES",
    "COCO_STATS",
    "bootstrap_map",
    "paired_bootstrap_map",
    "bootstrap_interval",
    "seed_summary",
    "seed_difference",
    "compare_intervals",
    "judge_goal",
    "pareto_front",
    "mean_average_precision",
    "count_errors",
    "pycocotools_map",
    "simulate_detections",
]

#: 0.50, 0.55, ..., 0.95 -- computed as COCOeval does, so the floats are identical.
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
#: 0.00, 0.01, ..., 1.00
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


def match_detections(ious: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy matching of score-sorted detections to ground truths (COCOeval rules).

    Shapes: ``ious`` (D, G) with rows in decreasing score order -> (D,) bool,
    True where the detection is a true positive. A ground truth is matched at
    most once; among equal IoUs the later ground truth wins, as in COCOeval.
    """
    num_det, num_gt = ious.shape
    gt_taken = np.zeros(num_gt, dtype=bool)
    is_tp = np.zeros(num_det, dtype=bool)
    for d in range(num_det):
        best_iou, best_gt = min(iou_threshold, 1 - 1e-10), -1
        for g in range(num_gt):
            if gt_taken[g] or ious[d, g] < best_iou:
                continue
            best_iou, best_gt = ious[d, g], g
        if best_gt >= 0:
            gt_taken[best_gt] = True
            is_tp[d] = True
    return is_tp


def match_coco(ious: np.ndarray, iou_threshold: float, gt_ignore: np.ndarray, gt_crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's full matching rule: :func:`match_detections` with ignored and crowd ground truth.

    ``gt_ignore`` (G,) marks ground truths that do not count (crowd regions, or outside the
    area range being scored); they must come last (COCOeval sorts them there). A detection
    prefers a counted ground truth: once it has one, it stops at the first ignored one. A crowd
    ground truth (``gt_crowd``) may absorb any number of detections. Returns ``(matched,
    ignored)`` (D,) bool: a detection matched to an ignored ground truth is itself ignored --
    neither a true nor a false positive. Shapes: ``ious`` (D, G), detections in decreasing score order.
    """
    num_det, num_gt = ious.shape
    gt_taken = np.zeros(num_gt, dtype=bool)
    matched = np.zeros(num_det, dtype=bool)
    ignored = np.zeros(num_det, dtype=bool)
    for d in range(num_det):
        best_iou, best_gt = min(iou_threshold, 1 - 1e-10), -1
        for g in range(num_gt):
            if gt_taken[g] and not gt_crowd[g]:
                continue
            if best_gt > -1 and not gt_ignore[best_gt] and gt_ignore[g]:
                break  # a counted match beats any ignored one
            if ious[d, g] < best_iou:
                continue
            best_iou, best_gt = ious[d, g], g
        if best_gt >= 0:
            gt_taken[best_gt] = True
            matched[d], ignored[d] = True, gt_ignore[best_gt]
    return matched, ignored


def precision_at_recall(is_tp: np.ndarray, num_gt: int) -> np.ndarray:
    """Interpolated precision at the 101 recall thresholds, from score-sorted TP flags.

    ``precision_k = TP_k / k``, ``recall_k = TP_k / num_gt`` over the first k
    detections; precision is made non-increasing from the right, then sampled at
    the first k whose recall reaches each threshold (0 if none does).
    Shapes: ``is_tp`` (D,) -> (101,).
    """
    tp = np.cumsum(is_tp).astype(float)
    fp = np.cumsum(~is_tp).astype(float)
    recall = tp / num_gt
    precision = tp / (fp + tp + np.spacing(1))
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # envelope
    out = np.zeros(len(RECALL_THRESHOLDS))
    idx = np.searchsorted(recall, RECALL_THRESHOLDS, side="left")
    valid = idx < len(precision)
    out[valid] = precision[idx[valid]]
    return out


def _as_numpy(d: dict[str, Any], key: str, dtype: Any) -> np.ndarray:
    value = d[key]
    if isinstance(value, Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


#: COCO's area range "all" ends here (1e5² px²); pycocotools ignores boxes beyond it.
MAX_BOX_AREA = 1e5**2
#: COCO's area ranges in px² (pycocotools' ``areaRng``): small < 32², medium 32²..96², large > 96².
AREA_RANGES = {"all": (0.0, MAX_BOX_AREA), "small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, MAX_BOX_AREA)}

# boxes (N, 4) float64, labels (N,) int64, scores (N,) float64, crowd (N,) bool, area (N,) float64
_Image = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _check_max_detections(max_detections: Any) -> None:
    if isinstance(max_detections, bool) or not isinstance(max_detections, numbers.Integral) or max_detections < 1:
        raise ValueError(f"max_detections={max_detections!r}: need a positive int, the detections kept per image "
                         "and class (COCO uses 100)")


def _array(where: str, key: str, value: Any, integer: bool) -> np.ndarray:
    """``value`` as a numpy array of real numbers (integers if ``integer``), or a ValueError naming ``where[key]``."""
    kind = "integer class ids" if integer else "real numbers"
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        if value.is_complex() or value.dtype == torch.bool or (integer and value.is_floating_point() and value.numel()):
            raise ValueError(f"{where}[{key!r}] has dtype {value.dtype}; need {kind}"
                             + (" (convert with .long())" if integer else ""))
        value = value.double() if value.is_floating_point() else value  # float16/bfloat16 have no numpy twin
        value = value.numpy()
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise ValueError(f"{where}[{key!r}] is not an array of {kind}: {err}") from None
    if arr.size == 0:
        return arr.astype(np.int64 if integer else np.float64)
    if integer and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{where}[{key!r}] has dtype {arr.dtype}; need {kind} (e.g. torch.int64: convert with .long())")
    if not integer and not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ValueError(f"{where}[{key!r}] has dtype {arr.dtype}; need {kind} (a float tensor)")
    if integer and arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{where}[{key!r}] holds a label above {np.iinfo(np.int64).max}; class ids must fit int64")
    return arr.astype(np.int64 if integer else np.float64)


def _checked_image(d: Any, where: str, is_pred: bool) -> _Image:
    """One image's ``(boxes (N, 4), labels (N,), scores (N,))`` as float64/int64 arrays, after every check
    listed in the module docstring (targets get ``scores`` of zeros)."""
    keys = ("boxes", "scores", "labels") if is_pred else ("boxes", "labels")
    if not isinstance(d, Mapping):
        raise TypeError(f"{where} is a {type(d).__name__}, not a dict with keys {keys}")
    for key in keys:
        if key not in d:
            hint = " -- e.g. what model.eval()(images) returns" if is_pred else ""
            raise ValueError(f"{where} has no {key!r}: each dict needs {', '.join(map(repr, keys))}{hint}")
    boxes = _array(where, "boxes", d["boxes"], integer=False)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{where}['boxes'] has shape {boxes.shape}; need (N, 4) xyxy, one row per box")
    labels = _array(where, "labels", d["labels"], integer=True)
    scores = _array(where, "scores", d["scores"], integer=False) if is_pred else np.zeros(len(boxes))
    labels, scores = (arr.reshape(0) if arr.size == 0 else arr for arr in (labels, scores))
    for key, arr in (("labels", labels), ("scores", scores)):
        if arr.ndim != 1:
            raise ValueError(f"{where}[{key!r}] has shape {arr.shape}; need 1-D (N,), one entry per box")
        if len(arr) != len(boxes):
            raise ValueError(f"{where}[{key!r}] has {len(arr)} entries for {len(boxes)} boxes; need one per box")
    fix = ("check the model's outputs: a NaN usually means training diverged (lower the learning rate, or "
           "clip gradients)") if is_pred else "fix the annotation or the data pipeline"
    for key, arr in (("boxes", boxes), ("scores", scores)):
        bad = ~np.isfinite(arr)
        if bad.any():
            row = int(np.argwhere(bad)[0][0])
            raise ValueError(f"{where}[{key!r}] holds {int(bad.sum())} NaN or infinite values (first in entry {row}: "
                             f"{arr[row].tolist()}); {fix}")
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    inverted = (width < 0) | (height < 0)
    if inverted.any():
        row = int(np.argmax(inverted))
        raise ValueError(f"{where}['boxes'] row {row} = {boxes[row].tolist()} has x2 < x1 or y2 < y1: boxes must be xyxy "
                         "with x1 <= x2 and y1 <= y2 (for xywh boxes use course_utils.box_convert(boxes, 'xywh', 'xyxy'))")
    area = width * height
    too_big = ~(area <= MAX_BOX_AREA)  # also catches inf widths (and inf * 0)
    if too_big.any():
        row = int(np.argmax(too_big))
        raise ValueError(f"{where}['boxes'] row {row} = {boxes[row].tolist()} has area {area[row]:.3g} px², beyond "
                         f"COCO's area range 'all' (up to {MAX_BOX_AREA:.0e} px², where pycocotools ignores boxes); "
                         "boxes are in image pixels -- check the units")
    crowd = np.zeros(len(boxes), dtype=bool)
    if not is_pred and d.get("iscrowd") is not None:
        flags = _array(where, "iscrowd", d["iscrowd"], integer=True) if not _is_bool_array(d["iscrowd"]) \
            else np.asarray(d["iscrowd"].cpu() if isinstance(d["iscrowd"], Tensor) else d["iscrowd"]).astype(np.int64)
        flags = flags.reshape(0) if flags.size == 0 else flags
        if flags.shape != (len(boxes),) or not np.isin(flags, (0, 1)).all():
            raise ValueError(f"{where}['iscrowd'] must hold one 0 or 1 per box ({len(boxes)} boxes), got "
                             f"{flags.tolist()[:8]}: 1 marks a crowd region (ignored by the metric), 0 an object")
        crowd = flags.astype(bool)
    if not is_pred and d.get("area") is not None:
        given = _array(where, "area", d["area"], integer=False)
        given = given.reshape(0) if given.size == 0 else given
        if given.shape != (len(boxes),) or not np.isfinite(given).all() or (given < 0).any():
            raise ValueError(f"{where}['area'] must hold one finite area >= 0 (px²) per box ({len(boxes)} boxes), got "
                             f"{given.tolist()[:8]}; leave the key out to use the box areas")
        area = given  # COCO files give the object's (segmentation) area, which decides its size range
    return boxes, labels, scores, crowd, area


def _is_bool_array(value: Any) -> bool:
    if isinstance(value, Tensor):
        return value.dtype == torch.bool
    return np.asarray(value).dtype == np.bool_


def _checked_images(preds: Any, targets: Any) -> tuple[list[_Image], list[_Image]]:
    """Every image of ``preds`` and ``targets``, checked (see :func:`_checked_image`)."""
    for name, value in (("preds", preds), ("targets", targets)):
        if isinstance(value, (Mapping, str, Tensor)) or not hasattr(value, "__len__"):
            raise TypeError(f"{name} must be a list with one dict per image, got a {type(value).__name__}")
    if len(preds) != len(targets):
        raise ValueError(f"got {len(preds)} predictions but {len(targets)} targets; need one dict per image in each")
    return ([_checked_image(p, f"preds[{i}]", True) for i, p in enumerate(preds)],
            [_checked_image(t, f"targets[{i}]", False) for i, t in enumerate(targets)])


def _iou(det: np.ndarray, gt: np.ndarray, crowd: np.ndarray | None = None) -> np.ndarray:
    """:func:`~course_utils.boxes.box_iou` of checked boxes, (D, 4) x (G, 4) -> (D, G), with 0/0 := 0.

    Two zero-area boxes have intersection 0 and union 0; their IoU is 0 (pycocotools' rule), never NaN,
    which the matching would take for a hit. Against a crowd region (``crowd[g]``) the overlap is
    ``|det ∩ crowd| / |det|`` (pycocotools): how much of the detection lies inside the crowd.
    """
    ious = box_iou(torch.from_numpy(det), torch.from_numpy(gt)).numpy()
    if crowd is not None and crowd.any() and len(det):
        lt = np.maximum(det[:, None, :2], gt[None, crowd, :2])
        rb = np.minimum(det[:, None, 2:], gt[None, crowd, 2:])
        wh = np.clip(rb - lt, 0, None)
        det_area = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
        with np.errstate(invalid="ignore", divide="ignore"):
            ious[:, crowd] = (wh[..., 0] * wh[..., 1]) / det_area[:, None]
    return np.where(np.isnan(ious), 0.0, ious)


def match_per_image(
    preds: list[dict[str, Any]], targets: list[dict[str, Any]], max_detections: int = 100, area: str = "all"
) -> tuple[list[int], list[list[tuple[np.ndarray, np.ndarray, int, np.ndarray]]]]:
    """Steps 1--2 for every image and class, before pooling, for one COCO area range.

    Returns ``(classes, matches)``: ``matches[k][i] = (scores, is_tp, num_gt, ignored)``
    for class ``classes[k]`` in image ``i`` -- the kept detections' scores (D,) in decreasing
    order, their TP flags (T=10, D) per IoU threshold, the number of ground truths that count,
    and the detections to ignore (T, D): matched to a crowd region or to a ground truth outside
    the area range, or unmatched and outside the range themselves. ``area`` is a key of
    :data:`AREA_RANGES` ("all", "small", "medium", "large"); ground truths count when they are
    not crowd (``iscrowd``) and their area (``area`` if given, else the box's) lies in the range.
    Pooling these over any list of image indices (:func:`precision_from_matches`) gives the
    precision table of that set of images, which is what the bootstrap (:func:`bootstrap_map`)
    resamples. Checks the inputs (module docstring) and ``max_detections`` (a positive int).
    """
    _check_max_detections(max_detections)
    if area not in AREA_RANGES:
        raise ValueError(f"area={area!r}: choose one of {list(AREA_RANGES)} (COCO's area ranges)")
    classes, prepared = _prepare(preds, targets, max_detections)
    return classes, _match_area(prepared, area)


# per class, per image: detections (scores, area) in score order, ground truth (crowd, area), their IoUs (D, G)
_Prepared = list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]


def _prepare(preds: list[dict[str, Any]], targets: list[dict[str, Any]], max_detections: int) -> tuple[list[int], _Prepared]:
    """Step 1 and the IoUs, once for every area range: the checked inputs per class and image."""
    pred_images, target_images = _checked_images(preds, targets)
    classes = sorted({int(c) for _, labels, *_ in target_images + pred_images for c in labels})
    prepared: _Prepared = []
    for cls in classes:
        per_image = []
        for (det_all, det_labels, det_scores_all, _, det_area_all), (gt_all, gt_labels, _, crowd_all, gt_area_all) in \
                zip(pred_images, target_images):
            g = gt_labels == cls
            mask = det_labels == cls
            order = np.argsort(-det_scores_all[mask], kind="mergesort")[:max_detections]  # step 1
            det_scores, det_area = det_scores_all[mask][order], det_area_all[mask][order]
            ious = _iou(det_all[mask][order], gt_all[g], crowd_all[g])
            per_image.append((det_scores, det_area, crowd_all[g], gt_area_all[g], ious))
        prepared.append(per_image)
    return classes, prepared


def _match_area(prepared: _Prepared, area: str) -> list[list[tuple[np.ndarray, np.ndarray, int, np.ndarray]]]:
    """Step 2 for one area range (see :func:`match_per_image`)."""
    lo, hi = AREA_RANGES[area]
    matches = []
    for per_image in prepared:
        out = []
        for det_scores, det_area, crowd, gt_area, ious in per_image:
            gt_ignore = crowd | (gt_area < lo) | (gt_area > hi)
            order_gt = np.argsort(gt_ignore, kind="mergesort")  # counted ground truths first, as COCOeval
            crowd_o, ignore_o, ious_o = crowd[order_gt], gt_ignore[order_gt], ious[:, order_gt]
            flags = [match_coco(ious_o, t, ignore_o, crowd_o) for t in IOU_THRESHOLDS]
            tps = np.stack([f[0] for f in flags]).reshape(len(IOU_THRESHOLDS), -1)
            outside = (det_area < lo) | (det_area > hi)
            ignored = np.stack([f[1] for f in flags]).reshape(len(IOU_THRESHOLDS), -1) | (~tps & outside)
            out.append((det_scores, tps, int((~gt_ignore).sum()), ignored))
        matches.append(out)
    return matches


def _pool(matches: list[list[tuple[np.ndarray, np.ndarray, int, np.ndarray]]], images: np.ndarray | None,
          max_detections: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Steps 3--4 for every class: ``(precision (T, R, K), recall (T, K))``, -1 where a class has no ground truth."""
    num_images = len(matches[0]) if matches else 0
    images = np.arange(num_images) if images is None else np.asarray(images)
    cut = slice(None) if max_detections is None else slice(0, max_detections)
    precision = -np.ones((len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS), len(matches)))
    recall = -np.ones((len(IOU_THRESHOLDS), len(matches)))
    for k, per_image in enumerate(matches):
        num_gt = sum(per_image[i][2] for i in images)
        if num_gt == 0:
            continue  # AP undefined: stays -1 and is left out of the means
        scores = np.concatenate([per_image[i][0][cut] for i in images])
        order = np.argsort(-scores, kind="mergesort")  # step 3
        tp_all = np.concatenate([per_image[i][1][:, cut] for i in images], axis=1)[:, order]
        ig_all = np.concatenate([per_image[i][3][:, cut] for i in images], axis=1)[:, order]
        for t in range(len(IOU_THRESHOLDS)):
            counted = tp_all[t][~ig_all[t]]  # ignored detections are neither true nor false positives
            precision[t, :, k] = precision_at_recall(counted, num_gt)
            recall[t, k] = counted.sum() / num_gt
    return precision, recall


def precision_from_matches(
    matches: list[list[tuple[np.ndarray, np.ndarray, int, np.ndarray]]], images: np.ndarray | None = None,
    max_detections: int | None = None,
) -> np.ndarray:
    """Steps 3--4: pool the images listed in ``images`` (default: all, in order; repeats allowed).

    Returns the precision table (T=10, R=101, K), -1 for classes without ground truth.
    ``max_detections``: keep only each image's top detections per class (COCO's 1/10/100).
    """
    return _pool(matches, images, max_detections)[0]


def recall_from_matches(
    matches: list[list[tuple[np.ndarray, np.ndarray, int, np.ndarray]]], images: np.ndarray | None = None,
    max_detections: int | None = None,
) -> np.ndarray:
    """The recall reached with all kept detections, per IoU threshold and class: (T=10, K), -1 without ground truth.

    ``recall = TP / #ground truth`` over every detection (of the top ``max_detections`` per image
    and class); averaged over thresholds and classes it is COCO's average recall, AR@m.
    """
    return _pool(matches, images, max_detections)[1]


def coco_precision(
    preds: list[dict[str, Any]], targets: list[dict[str, Any]], max_detections: int = 100
) -> tuple[np.ndarray, list[int]]:
    """The COCO precision table.

    Returns ``(precision, classes)``: ``precision`` has shape (T=10, R=101, K)
    -- interpolated precision per IoU threshold, recall threshold and class --
    with -1 for classes that have no ground truth; ``classes`` are the K labels
    (sorted union of the labels in targets and preds).
    """
    classes, matches = match_per_image(preds, targets, max_detections)
    return precision_from_matches(matches), classes


def count_errors(
    pred: dict[str, Any], target: dict[str, Any], score_threshold: float = 0.5, iou_threshold: float = 0.5
) -> tuple[int, int, int]:
    """``(TP, FP, FN)`` of one image's detections scoring at least ``score_threshold``.

    Matching is COCO's (:func:`match_coco`), class by class: a detection is a TP if
    it claims an unclaimed ground truth of its class with IoU >= ``iou_threshold``;
    FN = ground truths left unclaimed. Crowd regions (``iscrowd = 1``) are ignore
    regions, as in the mAP: never counted as missed, and a detection that falls on
    one (overlap ``|det ∩ crowd| / |det|``) is neither a TP nor an FP. ``pred`` and
    ``target`` are checked as for :func:`mean_average_precision`; ``0 < iou_threshold <= 1``.
    """
    if isinstance(score_threshold, bool) or not isinstance(score_threshold, numbers.Real) or math.isnan(score_threshold):
        raise ValueError(f"score_threshold={score_threshold!r}: need a number, e.g. 0.5")
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real) or not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold={iou_threshold!r}: need a number in (0, 1], e.g. 0.5")
    det_boxes, det_labels, det_scores, _, _ = _checked_image(pred, "pred", True)
    gt_boxes, gt_labels, _, gt_crowd, _ = _checked_image(target, "target", False)
    keep = det_scores >= score_threshold
    det_boxes, det_scores, det_labels = det_boxes[keep], det_scores[keep], det_labels[keep]
    tp = ignored = 0
    for cls in np.unique(gt_labels):
        d = det_labels == cls
        order = np.argsort(-det_scores[d], kind="mergesort")
        g = np.flatnonzero(gt_labels == cls)
        g = g[np.argsort(gt_crowd[g], kind="mergesort")]  # crowd regions last, as COCOeval sorts them
        ious = _iou(det_boxes[d][order], gt_boxes[g], gt_crowd[g])
        matched, on_crowd = match_coco(ious, iou_threshold, gt_crowd[g], gt_crowd[g])
        tp += int((matched & ~on_crowd).sum())
        ignored += int(on_crowd.sum())
    return tp, int(keep.sum()) - tp - ignored, int((~gt_crowd).sum()) - tp


def _mean_valid(x: np.ndarray) -> float:
    valid = x[x > -1]
    return float(valid.mean()) if valid.size else -1.0


def mean_average_precision(
    preds: list[dict[str, Any]], targets: list[dict[str, Any]], max_detections: int = 100, areas: bool = True
) -> dict[str, Any]:
    """COCO's box evaluation, equal to pycocotools' ``COCOeval`` (its 12 summary numbers).

    Args:
        preds: one dict per image with ``boxes`` (D, 4) xyxy, ``scores`` (D,), ``labels`` (D,).
        targets: one dict per image with ``boxes`` (G, 4) xyxy, ``labels`` (G,), and optionally
            ``iscrowd`` (G,) -- 1 marks a crowd region: a detection on it is neither a true nor a
            false positive -- and ``area`` (G,) px², the object's area that decides its size range
            (COCO files give the segmentation's; default: the box's).
        max_detections: detections kept per image and class, by score (a positive int).
        areas: also score the small / medium / large ranges (``False`` skips them: 4x less matching).

    Returns ``{"map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1",
    "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large", "ap_per_class": {label:
    AP@[.5:.95]}, "precision": (10, 101, K) array, "classes": [labels]}``; -1 where undefined.
    ``mar_m`` is the average recall (over IoU thresholds and classes) with the top m detections
    per image and class (``mar_100`` uses ``max_detections`` when it is smaller); AP and AR by
    size use area range small (< 32² px²), medium (32²..96²) or large (> 96²).
    Checked: the inputs' keys, shapes, dtypes, finiteness and box orientation (module
    docstring); a NaN or infinite prediction is refused with ValueError, never scored.
    """
    _check_max_detections(max_detections)
    classes, prepared = _prepare(preds, targets, max_detections)
    matches = _match_area(prepared, "all")
    precision, recall = _pool(matches, None, None)
    out = {
        "map": _mean_valid(precision),
        "map_50": _mean_valid(precision[0]),
        "map_75": _mean_valid(precision[5]),
    }
    for m in (1, 10):
        out[f"mar_{m}"] = _mean_valid(_pool(matches, None, m)[1]) if m < max_detections else _mean_valid(recall)
    out["mar_100"] = _mean_valid(recall if max_detections <= 100 else _pool(matches, None, 100)[1])
    if areas:
        for area in ("small", "medium", "large"):
            p_area, r_area = _pool(_match_area(prepared, area), None, None)
            out[f"map_{area}"], out[f"mar_{area}"] = _mean_valid(p_area), _mean_valid(r_area)
    out.update({
        "ap_per_class": {c: _mean_valid(precision[:, :, k]) for k, c in enumerate(classes)},
        "precision": precision,
        "classes": classes,
    })
    return out


#: the 12 numbers of COCOeval.summarize(), in its order
COCO_STATS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
              "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")


_METRICS = {"map": lambda p: _mean_valid(p), "map_50": lambda p: _mean_valid(p[0]), "map_75": lambda p: _mean_valid(p[5])}


def _check_bootstrap_args(n_boot: int, confidence: float, metric: str, method: str) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 2:
        raise ValueError(f"n_boot={n_boot!r}: need an integer >= 2 (1000 is a good default)")
    if isinstance(confidence, bool) or not (isinstance(confidence, float | int) and 0 < confidence < 1):
        raise ValueError(f"confidence={confidence!r}: need a number strictly between 0 and 1, e.g. 0.95")
    if metric not in _METRICS:
        raise ValueError(f"metric={metric!r}: choose one of {sorted(_METRICS)}")
    if method not in ("bc", "percentile"):
        raise ValueError(f"method={method!r}: choose 'bc' (bias-corrected, the default) or 'percentile'")


def bootstrap_interval(samples: np.ndarray, value: float, confidence: float, method: str = "bc") -> tuple[float, float]:
    """Interval from bootstrap replicates ``samples`` (B,) of a statistic whose estimate is ``value``.

    ``"percentile"``: ``[q_{a/2}, q_{1-a/2}]`` of the replicates, a = 1 - confidence.
    ``"bc"`` (bias-corrected percentile, Efron 1981): the same quantiles moved by
    how far the replicates sit off the estimate::

        z0 = Phi^-1( #{m_b < value}/B + #{m_b = value}/(2B) )
        CI = [ q_{Phi(2 z0 + z_{a/2})},  q_{Phi(2 z0 + z_{1-a/2})} ]

    mAP is biased upwards on small sets (the precision envelope takes a maximum
    over noisy values) and resampling adds the bias again, so the plain
    percentile interval sits too high; ``"bc"`` removes that shift
    (``tests/test_bootstrap.py`` measures both).
    """
    alpha = 1 - confidence
    quantiles = [alpha / 2, 1 - alpha / 2]
    if method == "bc":
        normal = NormalDist()
        b = len(samples)
        p0 = float(np.mean(samples < value) + 0.5 * np.mean(samples == value))
        z0 = normal.inv_cdf(min(max(p0, 0.5 / b), 1 - 0.5 / b))
        quantiles = [normal.cdf(2 * z0 + normal.inv_cdf(q)) for q in quantiles]
    low, high = np.quantile(samples, quantiles)
    return float(low), float(high)


def _bootstrap_scores(
    models: list[list[dict[str, Any]]], targets: list[dict[str, Any]], n_boot: int, seed: int, metric: str,
    max_detections: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Point scores (M,) and scores on the same ``n_boot`` image resamples (B, M) of M models' predictions."""
    if any(len(preds) != len(targets) for preds in models):
        raise ValueError(f"got {[len(p) for p in models]} predictions for {len(targets)} targets; "
                         "score every model on the same images, one dict per image")
    if len(targets) < 2:
        raise ValueError(f"bootstrap over {len(targets)} image(s): resampling needs at least 2 images (one image "
                         "resampled is always itself, so the interval would have zero width); score a larger set")
    matches = [match_per_image(preds, targets, max_detections)[1] for preds in models]
    score, n = _METRICS[metric], len(targets)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"seed={seed!r}: need None or an integer >= 0")
    rng = np.random.default_rng(seed)
    resamples = [rng.integers(0, n, n) for _ in range(int(n_boot))]
    samples = np.array([[score(precision_from_matches(m, idx)) for m in matches] for idx in resamples])
    if (samples < 0).any():
        raise ValueError("some resamples contain no ground-truth box at all (mAP undefined there): "
                         "bootstrap a set with ground truth in most images")
    return np.array([score(precision_from_matches(m)) for m in matches]), samples


def bootstrap_map(
    preds: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    metric: str = "map",
    max_detections: int = 100,
    method: str = "bc",
) -> dict[str, float]:
    """Image-level bootstrap confidence interval for mAP: how much would it move on other images?

    The val and test splits have 200 images each, so an mAP measured on them
    carries sampling noise. Resample the images B = ``n_boot`` times with
    replacement, score each resample, and read off an interval::

        I_b = (i_1, ..., i_n),  i_j ~ Uniform{1..n}          b = 1..B
        m_b = mAP(images I_b)         (duplicated images count twice)
        CI  = [ q_{a/2}(m_1..m_B),  q_{1-a/2}(m_1..m_B) ],   a = 1 - confidence
        std = sqrt( sum_b (m_b - mean(m))^2 / (B - 1) )      (ddof = 1)

    with the quantile levels bias-corrected by default (``method="bc"``, see
    :func:`bootstrap_interval`: the plain percentile interval of mAP sits too high).

    Matching (steps 1--2 of :func:`mean_average_precision`) is done once per
    image; only the pooling is redone per resample. Seeded: the same inputs
    and ``seed`` give the same interval.

    Args:
        preds, targets: as for :func:`mean_average_precision` (n images).
        n_boot: number of resamples B (>= 2).
        confidence: coverage of the interval, e.g. 0.95.
        seed: seeds the resampling (``numpy.random.default_rng``).
        metric: ``"map"`` (AP@[.5:.95]), ``"map_50"`` or ``"map_75"``.

    Returns ``{"value", "low", "high", "std", "n_boot", "confidence", "num_images"}``;
    ``value`` is the point estimate on all images (equal to :func:`mean_average_precision`).
    """
    _check_bootstrap_args(n_boot, confidence, metric, method)
    values, samples = _bootstrap_scores([preds], targets, n_boot, seed, metric, max_detections)
    value, samples = float(values[0]), samples[:, 0]
    low, high = bootstrap_interval(samples, value, confidence, method)
    return {"value": value, "low": low, "high": high, "std": float(np.std(samples, ddof=1)),
            "n_boot": int(n_boot), "confidence": float(confidence), "num_images": len(targets)}


def paired_bootstrap_map(
    preds_a: list[dict[str, Any]],
    preds_b: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    metric: str = "map",
    max_detections: int = 100,
    method: str = "bc",
) -> dict[str, Any]:
    """Bootstrap CI of the *difference* mAP(a) - mAP(b) of two models on the same images.

    Both models are scored on the same resample each time, so the noise that
    comes from which images happen to be in the split cancels::

        d_b = mAP_a(I_b) - mAP_b(I_b),   CI = [q_{a/2}(d), q_{1-a/2}(d)]   (bias-corrected levels)

    This interval is much narrower than the two separate ones. ``"within_noise"``
    is True when the interval contains 0: then the data do not show that a and
    b differ, and the course calls the difference "within noise", not a gain.

    Returns ``{"value" (the difference on all images), "low", "high", "std",
    "within_noise", "n_boot", "confidence", "num_images"}``.
    """
    _check_bootstrap_args(n_boot, confidence, metric, method)
    if len(preds_a) != len(preds_b):
        raise ValueError(f"model a has {len(preds_a)} predictions but model b has {len(preds_b)}; "
                         "score both on the same images")
    values, samples = _bootstrap_scores([preds_a, preds_b], targets, n_boot, seed, metric, max_detections)
    value, diffs = float(values[0] - values[1]), samples[:, 0] - samples[:, 1]
    low, high = bootstrap_interval(diffs, value, confidence, method)
    return {"value": value, "low": low, "high": high, "std": float(np.std(diffs, ddof=1)),
            "within_noise": bool(low <= 0 <= high), "n_boot": int(n_boot), "confidence": float(confidence),
            "num_images": len(targets)}


def _seed_values(values: Any, where: str) -> list[float]:
    """``values`` (a list, tuple, array or 1-D tensor of numbers, one per run) as floats; bools count as 0
    and 1 (a per-run outcome, e.g. whether each run converged: the mean is the rate), and numeric strings
    (read from a CSV file, say) as their number.

    Refused with a TypeError: a dict (iterating it gives the seeds, not the results:
    pass ``list(d.values())``), a string, a bare number; a ValueError names an entry
    that is not a number.
    """
    if isinstance(values, Mapping):
        raise TypeError(f"{where} got a dict; iterating it gives its keys (the seeds), not the results: "
                        "pass list(d.values())")
    if isinstance(values, (str, bytes, set, frozenset)) or not isinstance(values, Iterable) or (
            isinstance(values, (np.ndarray, torch.Tensor)) and values.ndim != 1):
        raise TypeError(f"{where} needs a list of per-seed values, e.g. [0.31, 0.33, 0.35], got {values!r}")
    runs = []
    for i, v in enumerate(values):
        try:
            runs.append(float(v))
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"{where}: entry {i} is {v!r}, not a number; every entry must be one run's result "
                             "(e.g. evaluate(...)['map'])") from None
    return runs


def seed_summary(values: list[float]) -> dict[str, Any]:
    """Mean and spread of one result over n runs (seeds): what every course table reports.

    ``std`` is the sample standard deviation, ddof = 1 (``sqrt(sum (x_i - mean)^2 / (n - 1))``),
    the unbiased-variance estimate for a handful of seeds; None for a single run.
    Returns ``{"mean", "std", "n", "runs"}``. ``values``: a list (tuple, array, 1-D tensor)
    of numbers; a dict is refused (pass ``list(d.values())``).
    """
    runs = _seed_values(values, "seed_summary")
    if not runs:
        raise ValueError("seed_summary needs at least one value")
    if not all(np.isfinite(runs)):
        raise ValueError(f"seed_summary got non-finite values {runs}: a run diverged or was not scored")
    # scaled by the largest |value| so that neither the sum nor the squares overflow (values near 1e308)
    scale = max(abs(v) for v in runs) if max(abs(v) for v in runs) > 1e150 else 1.0
    unit = np.array(runs) / scale
    # identical runs (a model scored again, nothing trained) have no spread: 0.0, not a rounding residue like 1e-32
    std = (0.0 if np.ptp(unit) == 0 else float(np.std(unit, ddof=1)) * scale) if len(runs) > 1 else None
    return {"mean": float(np.mean(unit)) * scale, "std": std, "n": len(runs), "runs": runs}


def seed_difference(a: list[float], b: list[float], confidence: float = 0.95, paired: bool = False) -> dict[str, Any]:
    """Is method a better than control b, given their seed-to-seed spread? Welch's t interval.

    With ``n_a`` and ``n_b`` runs (seeds), sample means ``m_a, m_b`` and sample
    variances ``s_a², s_b²`` (ddof = 1)::

        d   = m_a - m_b
        se  = sqrt(s_a² / n_a + s_b² / n_b)
        df  = se⁴ / ((s_a²/n_a)² / (n_a - 1) + (s_b²/n_b)² / (n_b - 1))     (Welch–Satterthwaite)
        CI  = d ± t_{(1 + confidence)/2, df} · se

    ``within_noise`` is True when the interval contains 0: then the seeds do not
    show a difference, and the course calls it "within noise", not a gain or a
    loss. A deterministic result (the same value every seed, e.g. an
    un-fine-tuned start model) has variance 0 and only the other side's spread
    counts. If *both* sides are deterministic there is no seed noise to judge
    by, and the function refuses: compare the two models on the same images
    with :func:`paired_bootstrap_map` instead (the images are a sample too).
    Equal to ``scipy.stats.ttest_ind(a, b, equal_var=False).confidence_interval()``.

    ``paired=True``: a and b were run **with the same seeds**, in the same order -- seed i of the
    method started from the same model and saw the same data order as seed i of its control -- so
    the seed-by-seed differences ``d_i = a_i - b_i`` are the measurement (the paired t interval)::

        d = mean(d_i),   se = std(d_i, ddof=1) / sqrt(n),   df = n - 1,   CI = d ± t · se

    What the two runs of a seed share (the start, the data order) cancels in ``d_i``, so the interval
    is usually narrower than Welch's. Equal to ``scipy.stats.ttest_rel(a, b).confidence_interval()``.

    Returns ``{"difference", "std_error", "low", "high", "df", "within_noise",
    "confidence", "n_a", "n_b", "paired"}``. ``a`` and ``b``: lists of numbers (a dict is refused:
    pass ``list(d.values())``).
    """
    from scipy import stats

    a_arr = np.asarray(_seed_values(a, "seed_difference (a)"), dtype=float)
    b_arr = np.asarray(_seed_values(b, "seed_difference (b)"), dtype=float)
    if a_arr.ndim != 1 or b_arr.ndim != 1 or len(a_arr) < 2 or len(b_arr) < 2:
        raise ValueError(f"seed_difference needs two lists of >= 2 runs each, got {len(np.atleast_1d(a_arr))} and "
                         f"{len(np.atleast_1d(b_arr))}: run more seeds (the course uses >= 3)")
    if not (np.isfinite(a_arr).all() and np.isfinite(b_arr).all()):
        raise ValueError(f"seed_difference got non-finite values {a_arr.tolist()} / {b_arr.tolist()}: a run diverged or was not scored")
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number in (0, 1), e.g. 0.95; got {confidence!r}")
    if not isinstance(paired, bool):
        raise TypeError(f"paired must be True or False, got {paired!r}")
    if paired:
        return _paired_difference(a_arr, b_arr, confidence)
    # identical runs have exactly zero variance (np.var would leave a rounding residue such as 1e-32)
    va, vb = ((0.0 if np.ptp(x) == 0 else x.var(ddof=1)) / len(x) for x in (a_arr, b_arr))
    if va == 0.0 and vb == 0.0:
        raise ValueError(f"both sides are the same on every seed ({a_arr[0]} and {b_arr[0]}): the seeds carry no noise "
                         "to judge the difference by; compare the two models on the same images with "
                         "course_utils.paired_bootstrap_map instead")
    d, se = float(a_arr.mean() - b_arr.mean()), float(np.sqrt(va + vb))
    df = float((va + vb) ** 2 / (va**2 / (len(a_arr) - 1) + vb**2 / (len(b_arr) - 1)))
    half = float(stats.t.ppf((1 + confidence) / 2, df)) * se
    low, high = d - half, d + half
    if not all(map(math.isfinite, (d, low, high))):
        raise ValueError(f"seed_difference: the values {a_arr.tolist()} and {b_arr.tolist()} overflow a float; give mAPs "
                         "or other numbers of a sensible size")
    return {"difference": d, "std_error": se, "low": low, "high": high, "df": df,
            "within_noise": bool(low <= 0 <= high), "confidence": float(confidence),
            "n_a": len(a_arr), "n_b": len(b_arr), "paired": False}


def _paired_difference(a: np.ndarray, b: np.ndarray, confidence: float) -> dict[str, Any]:
    """:func:`seed_difference` with ``paired=True``: the t interval of the seed-by-seed differences."""
    from scipy import stats

    if len(a) != len(b):
        raise ValueError(f"seed_difference(paired=True) needs one run of each side per seed, got {len(a)} and {len(b)} "
                         "runs: pair seed i of the method with seed i of its control")
    diffs = a - b
    if not np.isfinite(diffs).all():
        raise ValueError(f"seed_difference: the values {a.tolist()} and {b.tolist()} overflow a float; give mAPs or other "
                         "numbers of a sensible size")
    if np.ptp(diffs) <= 1e-12 * max(1.0, float(np.abs(diffs).max())):  # equal up to rounding (0.3 - 0.2 vs 0.1 - 0.0)
        raise ValueError(f"every seed gives the same difference ({diffs[0]}): the seeds carry no noise to judge it by; "
                         "compare the models on the same images with course_utils.paired_bootstrap_map instead")
    n = len(diffs)
    d, se = float(diffs.mean()), float(diffs.std(ddof=1) / np.sqrt(n))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * se
    low, high = d - half, d + half
    if not all(map(math.isfinite, (d, low, high))):
        raise ValueError(f"seed_difference: the values {a.tolist()} and {b.tolist()} overflow a float; give mAPs or other "
                         "numbers of a sensible size")
    return {"difference": d, "std_error": se, "low": low, "high": high, "df": float(n - 1),
            "within_noise": bool(low <= 0 <= high), "confidence": float(confidence), "n_a": n, "n_b": n, "paired": True}


def compare_intervals(a: tuple[float, float], b: tuple[float, float], higher_is_better: bool = True) -> int:
    """Is ``a`` better than ``b`` beyond their noise? +1 (better), -1 (worse), 0 (a tie).

    ``a`` and ``b`` are ``(low, high)`` intervals of the same quantity: a confidence interval
    of an mAP, the p10-p90 band of a latency, or ``(x, x)`` for an exact number such as a file
    size. Overlapping intervals are a **tie**: the measurement cannot tell the two apart. With
    ``higher_is_better=False`` (a cost), the lower interval wins. Taught in: 08_capstone.
    """
    if not isinstance(higher_is_better, bool):
        raise TypeError(f"higher_is_better must be True (accuracy) or False (a cost), got {higher_is_better!r}")
    (a_lo, a_hi), (b_lo, b_hi) = (_interval(v, name) for v, name in ((a, "a"), (b, "b")))
    above = 1 if a_lo > b_hi else -1 if a_hi < b_lo else 0
    return above if higher_is_better else -above


def judge_goal(interval: Any, lower: float = -math.inf, upper: float = math.inf) -> str:
    """Is a goal ``lower <= x <= upper`` met, judged on an interval ``(low, high)`` of x rather than on its point value?

    "met" when the whole interval lies inside the goal, "missed" when it lies wholly outside, and
    "not resolved" when it straddles a bound: the noise cannot tell. ``interval``: a (low, high) pair
    or a result with "low" and "high" (a bootstrap CI, or ``paired_speedup``'s range of per-round
    ratios). E.g. a speed-up goal of at least 3x: ``judge_goal(speedup, lower=3)``; an mAP change
    within 0.2 points: ``judge_goal(ci_in_points, -0.2, 0.2)``. Taught in: 05_qat_and_int8.
    """
    low, high = _interval(interval, "interval")
    if math.isnan(lower) or math.isnan(upper) or lower > upper:
        raise ValueError(f"judge_goal: the goal [{lower}, {upper}] must have lower <= upper (use -math.inf / math.inf for none)")
    if lower <= low and high <= upper:
        return "met"
    return "missed" if high < lower or low > upper else "not resolved"


def _interval(value: Any, name: str) -> tuple[float, float]:
    """``(low, high)`` as two finite floats with low <= high, or a ValueError naming ``name`` and the fix."""
    if isinstance(value, Mapping) and {"low", "high"} <= set(value):  # a bootstrap_map / seed_difference result
        value = (value["low"], value["high"])
    try:
        low, high = (float(x) for x in value)
    except (TypeError, ValueError):
        raise ValueError(f"compare_intervals: {name} must be a (low, high) pair of numbers (or a result with 'low' and "
                         f"'high', such as bootstrap_map's), got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low <= high):
        raise ValueError(f"compare_intervals: {name} = ({low}, {high}) must be finite with low <= high")
    return low, high


def pareto_front(names: Iterable[str], accuracy: Any, cost: Any) -> list[str]:
    """The names no other name **beats**, where noise makes ties (the noise-aware Pareto front).

    ``accuracy(m, n)`` and ``cost(m, n)`` compare two candidates on one axis each and return +1
    when m is better than n beyond the noise (more accurate; cheaper), -1 when worse, 0 for a
    tie (e.g. :func:`compare_intervals`). m beats n when it is better on one axis and not worse
    on the other::

        beats(m, n) = accuracy(m, n) >= 0 and cost(m, n) >= 0 and (accuracy(m, n) > 0 or cost(m, n) > 0)

    A candidate tied with another on both axes stays on the front beside it: the data cannot
    choose between them. Returns the front in the order of ``names``. Taught in: 08_capstone.
    """
    if isinstance(names, (str, bytes, Mapping)) or not isinstance(names, Iterable):
        raise TypeError(f"pareto_front: names must be a list of candidate names, e.g. ['teacher', 'int8'], got {names!r}")
    names = list(names)
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"pareto_front: names must be distinct strings, got {names}")
    for what, fn in (("accuracy", accuracy), ("cost", cost)):
        if not callable(fn):
            raise TypeError(f"pareto_front: {what} must be a function (m, n) -> -1, 0 or +1, got {type(fn).__name__}")

    def compared(what: str, fn: Any, m: str, n: str) -> int:
        value = fn(m, n)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value not in (-1, 0, 1):
            raise ValueError(f"pareto_front: {what}({m!r}, {n!r}) must return -1, 0 or +1, got {value!r}")
        return int(value)

    def beats(m: str, n: str) -> bool:
        a, c = compared("accuracy", accuracy, m, n), compared("cost", cost, m, n)
        return a >= 0 and c >= 0 and (a > 0 or c > 0)

    for i, m in enumerate(names):
        for n in names[i + 1:]:
            if beats(m, n) and beats(n, m):
                raise ValueError(f"pareto_front: the comparisons say {m!r} beats {n!r} and {n!r} beats {m!r}; a comparator "
                                 "must be antisymmetric (f(m, n) == -f(n, m))")
    return [n for n in names if not any(beats(m, n) for m in names if m != n)]


def pycocotools_map(preds: list[dict[str, Any]], targets: list[dict[str, Any]]) -> dict[str, Any]:
    """The same numbers from ``pycocotools.cocoeval.COCOeval`` -- the reference we test against.

    Builds an in-memory COCO ground truth (image ids 1..N in order, boxes as xywh in float64,
    ``area`` from the target's ``area`` or ``w * h``, ``iscrowd`` from the target's or 0) and
    loads ``preds`` as results. Returns the 12 summary numbers (:data:`COCO_STATS`) and
    ``ap_per_class``, keyed like :func:`mean_average_precision`.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(box: np.ndarray) -> list[float]:
        return [float(box[0]), float(box[1]), float(box[2] - box[0]), float(box[3] - box[1])]

    classes = sorted(
        {int(c) for t in targets for c in _as_numpy(t, "labels", np.int64)}
        | {int(c) for p in preds for c in _as_numpy(p, "labels", np.int64)}
    )
    images, annotations, results = [], [], []
    for image_id, (pred, target) in enumerate(zip(preds, targets), start=1):
        images.append({"id": image_id})
        boxes = _as_numpy(target, "boxes", np.float64).reshape(-1, 4)
        crowd = _as_numpy(target, "iscrowd", np.int64) if target.get("iscrowd") is not None else np.zeros(len(boxes), np.int64)
        area = _as_numpy(target, "area", np.float64) if target.get("area") is not None else None
        for j, (box, label) in enumerate(zip(boxes, _as_numpy(target, "labels", np.int64))):
            b = xywh(box)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label), "bbox": b,
                                "area": float(area[j]) if area is not None else b[2] * b[3], "iscrowd": int(crowd[j])})
        for box, score, label in zip(_as_numpy(pred, "boxes", np.float64).reshape(-1, 4),
                                     _as_numpy(pred, "scores", np.float64), _as_numpy(pred, "labels", np.int64)):
            results.append({"image_id": image_id, "category_id": int(label), "bbox": xywh(box), "score": float(score)})
    if not results:
        raise ValueError("pycocotools cannot evaluate an empty list of detections")
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints a lot
        gt = COCO()
        gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": c} for c in classes]}
        gt.createIndex()
        coco_eval = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    precision = coco_eval.eval["precision"][:, :, :, 0, 2]  # (T, R, K), area "all", 100 detections
    out = {name: float(value) for name, value in zip(COCO_STATS, coco_eval.stats)}
    out["ap_per_class"] = {int(c): _mean_valid(precision[:, :, k]) for k, c in enumerate(coco_eval.params.catIds)}
    return out


def simulate_detections(
    targets: list[dict[str, Any]],
    num_classes: int,
    seed: int = 0,
    recall: float = 0.85,
    jitter: float = 0.08,
    false_positives: float = 1.0,
    duplicates: float = 0.2,
) -> list[dict[str, Tensor]]:
    """A pretend detector, for learning mAP before training one.

    For each ground-truth box: with probability ``recall`` a detection of the same
    class whose corners move by ``jitter`` x box size (Gaussian), score in
    [0.3, 1]; with probability ``duplicates`` a second, lower-scored copy. Plus
    Poisson(``false_positives``) random boxes per image with scores in [0, 0.6]
    and random classes. Returns predictions in the :func:`mean_average_precision` format.
    """
    rng = np.random.default_rng(seed)
    preds = []
    for target in targets:
        gt = _as_numpy(target, "boxes", np.float64).reshape(-1, 4)
        gt_labels = _as_numpy(target, "labels", np.int64)
        boxes, scores, labels = [], [], []
        for box, label in zip(gt, gt_labels):
            if rng.random() > recall:
                continue
            size = np.array([box[2] - box[0], box[3] - box[1]] * 2)
            boxes.append(box + rng.normal(0, jitter, 4) * size)
            scores.append(rng.uniform(0.3, 1.0))
            labels.append(label)
            if rng.random() < duplicates:
                boxes.append(box + rng.normal(0, 2 * jitter, 4) * size)
                scores.append(scores[-1] * rng.uniform(0.3, 0.9))
                labels.append(label)
        for _ in range(rng.poisson(false_positives)):
            xy = rng.uniform(0, 100, 2)
            boxes.append(np.concatenate([xy, xy + rng.uniform(8, 40, 2)]))
            scores.append(rng.uniform(0.0, 0.6))
            labels.append(rng.integers(1, num_classes + 1))
        box_arr = np.array(boxes, dtype=np.float32).reshape(-1, 4)
        box_arr[:, 2:] = np.maximum(box_arr[:, 2:], box_arr[:, :2] + 1)  # keep boxes valid
        preds.append({"boxes": torch.from_numpy(box_arr), "scores": torch.tensor(scores, dtype=torch.float32),
                      "labels": torch.tensor(labels, dtype=torch.int64)})
    return preds
