"""Bounding boxes: formats, IoU, non-maximum suppression, anchors, box coding.

Taught in: 01_detection_basics.

Every function here is written from scratch so it can be read top to bottom,
and each one is tested equal to its ``torchvision.ops`` /
``torchvision.models.detection`` counterpart in ``tests/test_boxes.py``.

Box formats (all tensors of shape ``(N, 4)``, float):

* ``xyxy``   -- ``(x1, y1, x2, y2)``: top-left and bottom-right corners.
* ``xywh``   -- ``(x1, y1, w, h)``: top-left corner, width, height (COCO).
* ``cxcywh`` -- ``(cx, cy, w, h)``: centre, width, height.

Coordinates are in pixels, with the continuous convention used by COCO and
torchvision: a box ``(0, 0, 10, 10)`` has width 10 and area 100 (no ``+1``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "box_convert",
    "box_area",
    "box_iou",
    "nms",
    "batched_nms",
    "make_anchors",
    "encode_boxes",
    "decode_boxes",
]

_FORMATS = ("xyxy", "xywh", "cxcywh")


def _check_boxes(boxes: object, name: str, where: str, batched: bool = False) -> None:
    """``boxes`` a float tensor of shape (N, 4) (``batched``: any (..., 4), as torchvision's box_convert)."""
    if not isinstance(boxes, Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor of shape (N, 4), got {type(boxes).__name__}; "
                        "e.g. torch.tensor([[x1, y1, x2, y2]], dtype=torch.float32)")
    good = boxes.ndim >= 1 if batched else boxes.ndim == 2
    if not good or boxes.shape[-1] != 4:
        one = " (one box? write boxes[None] to make it (1, 4))" if boxes.ndim == 1 and boxes.shape[0] == 4 else ""
        raise ValueError(f"{where}: {name} has shape {tuple(boxes.shape)}; need (N, 4){one}")
    if not boxes.is_floating_point():
        raise TypeError(f"{where}: {name} has dtype {boxes.dtype}; use float boxes (boxes.float())")


def _check_xyxy_order(boxes: Tensor, name: str, where: str) -> None:
    """Every box has ``x2 >= x1`` and ``y2 >= y1`` (an inverted box would get a positive area)."""
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{where}: {name}[{i}] = {boxes[i].tolist()} has x2 < x1 or y2 < y1; xyxy boxes are "
                         "(x1, y1, x2, y2) with the top-left corner first. If these are (x, y, w, h) boxes, convert "
                         "them first: box_convert(boxes, 'xywh', 'xyxy')")


def _check_finite(boxes: Tensor, scores: Tensor, where: str) -> None:
    """No NaN or inf in the boxes or scores (NMS would keep or drop such boxes arbitrarily)."""
    for name, t in (("boxes", boxes), ("scores", scores)):
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"{where}: {name}[{i}] is {t[i].tolist()}, not finite; drop such predictions first "
                             "(e.g. keep = torch.isfinite(scores) & torch.isfinite(boxes).all(1))")


def _check_weights(weights: object, where: str) -> tuple[float, float, float, float]:
    try:
        values = tuple(float(w) for w in weights)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(w) and w > 0 for w in values):
        raise ValueError(f"{where}: weights must be 4 numbers > 0 (wx, wy, ww, wh), e.g. (1.0, 1.0, 1.0, 1.0), got {weights!r}")
    return values  # type: ignore[return-value]


def _check_pairs(a: Tensor, a_name: str, b: Tensor, b_name: str, where: str) -> None:
    """Both (N, 4) float tensors with the same N (one row of ``a`` per row of ``b``)."""
    _check_boxes(a, a_name, where)
    _check_boxes(b, b_name, where)
    if len(a) != len(b):
        raise ValueError(f"{where}: {a_name} has {len(a)} rows and {b_name} {len(b)}; give one anchor per box")


def _check_positive_size(boxes: Tensor, name: str, where: str) -> None:
    """Every xyxy box has a width and a height > 0 (the coding divides by them and takes their log)."""
    bad = ~((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1]))
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{where}: {name}[{i}] = {boxes[i].tolist()} has no width or height (or is not finite); the "
                         "box coding divides by both and takes their log")


def _check_threshold(iou_threshold: object, where: str) -> None:
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real) or not math.isfinite(iou_threshold):
        raise ValueError(f"{where}: iou_threshold must be a finite number (usually 0.5 to 0.7), got {iou_threshold!r}")


def _to_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    a, b, c, d = boxes.unbind(-1)
    if fmt == "xyxy":
        return boxes.clone()
    if fmt == "xywh":  # x2 = x1 + w, y2 = y1 + h
        return torch.stack([a, b, a + c, b + d], dim=-1)
    # cxcywh: x1 = cx - w/2, x2 = cx + w/2
    return torch.stack([a - 0.5 * c, b - 0.5 * d, a + 0.5 * c, b + 0.5 * d], dim=-1)


def _from_xyxy(boxes: Tensor, fmt: str) -> Tensor:
    x1, y1, x2, y2 = boxes.unbind(-1)
    if fmt == "xyxy":
        return boxes
    if fmt == "xywh":
        return torch.stack([x1, y1, x2 - x1, y2 - y1], dim=-1)
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], dim=-1)


def box_convert(boxes: Tensor, in_fmt: str, out_fmt: str) -> Tensor:
    """Convert boxes between ``xyxy``, ``xywh`` and ``cxcywh``.

    Shapes: ``boxes`` (N, 4) -> (N, 4) (any (..., 4), one box (4,) too). Same as ``torchvision.ops.box_convert``.
    """
    _check_boxes(boxes, "boxes", "box_convert", batched=True)
    for name, fmt in (("in_fmt", in_fmt), ("out_fmt", out_fmt)):
        if fmt not in _FORMATS:
            raise ValueError(f"{name}={fmt!r} is not a box format; use one of {_FORMATS}")
    if in_fmt == out_fmt:
        return boxes.clone()
    return _from_xyxy(_to_xyxy(boxes, in_fmt), out_fmt)


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``xyxy`` boxes: ``(x2 - x1) * (y2 - y1)``. Shapes: (N, 4) -> (N,).

    An inverted box (``x2 < x1`` or ``y2 < y1``) raises ``ValueError``: its product would be a
    positive, wrong area (torchvision returns it).
    """
    _check_boxes(boxes, "boxes", "box_area")
    _check_xyxy_order(boxes, "boxes", "box_area")
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    if not bool(torch.isfinite(area).all()) and bool(torch.isfinite(boxes).all()):
        raise ValueError(f"box_area: the areas overflow {boxes.dtype} (largest coordinate {float(boxes.abs().max()):g}); "
                         "use boxes.double() or boxes in pixels of a real image")
    return area


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise intersection over union of two sets of ``xyxy`` boxes.

    ``IoU(A, B) = |A ∩ B| / (|A| + |B| - |A ∩ B|)``

    Shapes: ``boxes1`` (N, 4), ``boxes2`` (M, 4) -> (N, M).
    Same as ``torchvision.ops.box_iou``.
    """
    area1, area2 = box_area(boxes1), box_area(boxes2)
    # Intersection rectangle of every pair, by broadcasting (N, 1, 2) against (M, 2).
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    wh = (bottom_right - top_left).clamp(min=0)  # no overlap -> width or height 0
    inter = wh[..., 0] * wh[..., 1]  # (N, M)
    union = area1[:, None] + area2[None, :] - inter
    return inter / union


def nms(boxes: Tensor, scores: Tensor, iou_threshold: float) -> Tensor:
    """Greedy non-maximum suppression.

    Repeatedly keep the highest-scoring remaining box and drop every other box
    whose IoU with it is *greater than* ``iou_threshold``.

    Shapes: ``boxes`` (N, 4) xyxy, ``scores`` (N,) -> kept indices (K,), int64,
    sorted by decreasing score. Same as ``torchvision.ops.nms``.
    """
    _check_boxes(boxes, "boxes", "nms")
    if not isinstance(scores, Tensor) or scores.ndim != 1 or len(scores) != len(boxes):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"nms: scores must be a tensor of shape ({len(boxes)},), one per box, got {shape}")
    _check_threshold(iou_threshold, "nms")
    _check_finite(boxes, scores, "nms")
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes, boxes)  # (N, N), computed once
    suppressed = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= iou[i] > iou_threshold  # also marks i itself; harmless
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """Class-aware NMS: boxes only suppress boxes that share their ``idxs`` value.

    One plain :func:`nms` per class, then all kept boxes in order of decreasing score (ties in
    index order). torchvision does the same for many boxes; for few it shifts each class by
    ``class * (max_coord + 1)`` and runs one NMS -- a trick that loses float32 precision when
    ``class * max_coord`` is large (boxes of different classes can then suppress each other).

    Shapes: ``boxes`` (N, 4), ``scores`` (N,), ``idxs`` (N,) int -> kept indices (K,),
    sorted by decreasing score. Same as ``torchvision.ops.batched_nms``.
    """
    _check_boxes(boxes, "boxes", "batched_nms")
    for name, t in (("scores", scores), ("idxs", idxs)):
        if not isinstance(t, Tensor) or t.ndim != 1 or len(t) != len(boxes):
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"batched_nms: {name} must be a tensor of shape ({len(boxes)},), one per box, got {shape}")
    _check_threshold(iou_threshold, "batched_nms")
    _check_finite(boxes, scores, "batched_nms")
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    kept = torch.zeros(len(boxes), dtype=torch.bool, device=boxes.device)
    for c in torch.unique(idxs):
        members = (idxs == c).nonzero().flatten()
        kept[members[nms(boxes[members], scores[members], iou_threshold)]] = True
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[kept[order]]


def make_anchors(
    feature_size: tuple[int, int],
    stride: int,
    sizes: Sequence[float],
    aspect_ratios: Sequence[float] = (1.0,),
) -> Tensor:
    """Anchor boxes tiled over a feature map, in ``xyxy`` image pixels.

    Each cell ``(i, j)`` gets one anchor per (aspect ratio, size) pair, centred at
    the cell's top-left corner ``(j * stride, i * stride)`` (torchvision's
    convention). For aspect ratio ``r = h / w`` and size ``s``:
    ``w = s / sqrt(r)``, ``h = s * sqrt(r)`` (so ``w * h = s**2``), and the
    template ``(-w/2, -h/2, w/2, h/2)`` is rounded to whole pixels.

    Shapes: -> (H * W * len(aspect_ratios) * len(sizes), 4), ordered by cell
    (row-major), then aspect ratio, then size. Same as one level of
    ``torchvision.models.detection.anchor_utils.AnchorGenerator``.
    """
    if (not isinstance(feature_size, Sequence) or len(feature_size) != 2
            or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in feature_size)):
        raise ValueError(f"make_anchors: feature_size must be (height, width), two whole numbers >= 0, got {feature_size!r}")
    if isinstance(stride, bool) or not isinstance(stride, numbers.Real) or not (math.isfinite(stride) and stride > 0):
        raise ValueError(f"make_anchors: stride must be a number > 0 (pixels per feature cell, e.g. 8), got {stride!r}")
    for name, values in (("sizes", sizes), ("aspect_ratios", aspect_ratios)):
        try:
            flat = torch.as_tensor(values, dtype=torch.float64) if isinstance(values, (Sequence, Tensor)) else None
        except (TypeError, ValueError, RuntimeError):
            flat = None
        if flat is None or flat.ndim != 1 or len(flat) == 0 or not bool((torch.isfinite(flat) & (flat > 0)).all()):
            raise ValueError(f"make_anchors: {name} must be a non-empty list of numbers > 0 (e.g. sizes=(16, 32), "
                             f"aspect_ratios=(0.5, 1.0, 2.0)), got {values!r}")
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)  # (A,)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    templates = (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()  # (A, 4)

    height, width = feature_size
    shift_x = torch.arange(width, dtype=torch.float32) * stride
    shift_y = torch.arange(height, dtype=torch.float32) * stride
    yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
    shifts = torch.stack([xx, yy, xx, yy], dim=-1).reshape(-1, 1, 4)  # (H*W, 1, 4)
    return (shifts + templates[None]).reshape(-1, 4)


def encode_boxes(
    gt_boxes: Tensor, anchors: Tensor, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
) -> Tensor:
    """Encode ``xyxy`` boxes as offsets from ``xyxy`` anchors (Faster R-CNN coding).

    With anchor centre ``(xa, ya)`` and size ``(wa, ha)``, box centre ``(x, y)`` and
    size ``(w, h)``, and weights ``(wx, wy, ww, wh)``::

        dx = wx * (x - xa) / wa      dy = wy * (y - ya) / ha
        dw = ww * log(w / wa)        dh = wh * log(h / ha)

    Shapes: ``gt_boxes`` (N, 4), ``anchors`` (N, 4) -> deltas (N, 4).
    Same as ``torchvision.models.detection._utils.BoxCoder.encode_single``.
    """
    _check_pairs(gt_boxes, "gt_boxes", anchors, "anchors", "encode_boxes")
    wx, wy, ww, wh = _check_weights(weights, "encode_boxes")
    _check_positive_size(anchors, "anchors", "encode_boxes")
    _check_positive_size(gt_boxes, "gt_boxes", "encode_boxes")
    xa, ya, wa, ha = box_convert(anchors, "xyxy", "cxcywh").unbind(-1)
    x, y, w, h = box_convert(gt_boxes, "xyxy", "cxcywh").unbind(-1)
    return torch.stack(
        [wx * (x - xa) / wa, wy * (y - ya) / ha, ww * torch.log(w / wa), wh * torch.log(h / ha)], dim=-1
    )


def decode_boxes(
    deltas: Tensor,
    anchors: Tensor,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    clamp: float = math.log(1000.0 / 16),
) -> Tensor:
    """Invert :func:`encode_boxes`: apply offsets ``deltas`` to ``anchors``.

    ``x = dx / wx * wa + xa``, ``w = exp(min(dw / ww, clamp)) * wa`` (and the same
    for y, h). The clamp stops ``exp`` from overflowing on a wild prediction.

    Shapes: ``deltas`` (N, 4), ``anchors`` (N, 4) -> xyxy boxes (N, 4).
    Same as ``torchvision.models.detection._utils.BoxCoder.decode_single``.
    """
    _check_pairs(deltas, "deltas", anchors, "anchors", "decode_boxes")
    wx, wy, ww, wh = _check_weights(weights, "decode_boxes")
    xa, ya, wa, ha = box_convert(anchors.to(deltas.dtype), "xyxy", "cxcywh").unbind(-1)
    dx, dy, dw, dh = deltas.unbind(-1)
    x = dx / wx * wa + xa
    y = dy / wy * ha + ya
    w = torch.exp((dw / ww).clamp(max=clamp)) * wa
    h = torch.exp((dh / wh).clamp(max=clamp)) * ha
    return box_convert(torch.stack([x, y, w, h], dim=-1), "cxcywh", "xyxy")
