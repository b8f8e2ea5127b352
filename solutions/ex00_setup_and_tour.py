"""Solutions for notebook 00_setup_and_tour."""

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Exercise 1: (x2 - x1) * (y2 - y1), shape (N, 4) -> (N,)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """Exercise 2: (x, y, w, h) with (x, y) the top-left corner -> (x, y, x + w, y + h)."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)
