"""Solutions for notebook 01_detection_basics."""

import numpy as np
import torch


def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Exercise 1: pairwise IoU, (N, 4), (M, 4) -> (N, M)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (bottom_right - top_left).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Exercise 2: greedy NMS; kept indices by decreasing score."""
    order = torch.argsort(scores, descending=True)
    keep = []
    while len(order) > 0:
        best = order[0]
        keep.append(int(best))
        ious = box_iou(boxes[best][None], boxes[order[1:]])[0]
        order = order[1:][ious <= iou_threshold]
    return torch.tensor(keep, dtype=torch.int64)


def average_precision(is_tp: np.ndarray, num_gt: int) -> float:
    """Exercise 3: COCO 101-point interpolated AP from score-sorted TP flags."""
    tp = np.cumsum(is_tp)
    precision = tp / np.arange(1, len(is_tp) + 1)
    recall = tp / num_gt
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    samples = []
    for r in np.linspace(0, 1, 101):
        reached = np.nonzero(recall >= r)[0]
        samples.append(envelope[reached[0]] if len(reached) else 0.0)
    return float(np.mean(samples))
