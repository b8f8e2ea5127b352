"""Figures: images with boxes, training curves, precision-recall curves.

Taught in: 00_setup_and_tour, 01_detection_basics, 02_training_a_tiny_detector.

Every function draws on a matplotlib ``Axes`` (made for you if not given) and
returns the figure, so notebooks can combine and save them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from .metrics import RECALL_THRESHOLDS

__all__ = ["draw_boxes", "show_detections", "show_detection_grid", "plot_history", "plot_pr_curves", "plot_quant_grid",
           "plot_schedule_curves"]

#: One colour per class label (1-based); ground truth is always drawn in white.
CLASS_COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c"]


def _axes(ax: Axes | None, figsize: tuple[float, float] = (4, 4)) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def draw_boxes(
    ax: Axes,
    boxes: Tensor | np.ndarray,
    color: str | Sequence[str] = "white",
    labels: Sequence[str] | None = None,
    linestyle: str = "-",
    linewidth: float = 1.5,
) -> None:
    """Draw ``xyxy`` boxes (N, 4) on ``ax``, optionally with a text label each.

    A label sits just inside its box's top-left corner; where it would cover a label already
    drawn (overlapping boxes, duplicates), it moves down a line until it is free.
    """
    boxes = torch.as_tensor(boxes).detach().cpu().reshape(-1, 4).tolist()
    colors = [color] * len(boxes) if isinstance(color, str) else list(color)
    placed: list[Any] = []  # the labels' extents in display pixels
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colors[i], linestyle=linestyle, linewidth=linewidth))
        if labels is not None:
            text = ax.text(x1 + 0.5, y1 + 0.5, labels[i], color="black", fontsize=6, va="top", ha="left",
                           bbox={"facecolor": colors[i], "alpha": 0.7, "pad": 0.5, "edgecolor": "none"})
            _move_off_others(ax, text, placed)


def _move_off_others(ax: Axes, text: Any, placed: list[Any]) -> None:
    """Shift ``text`` down one line at a time (at most 8) while it overlaps a label in ``placed``."""
    renderer = ax.figure.canvas.get_renderer()
    for _ in range(8):
        extent = text.get_window_extent(renderer).expanded(1.0, 1.15)
        if not any(extent.overlaps(other) for other in placed):
            break
        x, y = text.get_position()
        to_data = ax.transData.inverted()
        (_, y0), (_, y1) = to_data.transform([(0, 0), (0, extent.height)])
        text.set_position((x, y + abs(y1 - y0)))  # image axes point down: +y is one line lower
    placed.append(text.get_window_extent(renderer))


def show_detections(
    image: Tensor,
    target: dict[str, Any] | None = None,
    pred: dict[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    score_threshold: float = 0.3,
    ax: Axes | None = None,
    title: str | None = None,
) -> Figure:
    """One image (3, H, W) in [0, 1], ground truth (white, dashed) and predictions (coloured).

    Predictions below ``score_threshold`` are not drawn; their labels read
    ``name score``. Without predictions, ground-truth boxes are labelled instead.
    """
    fig, ax = _axes(ax)
    ax.imshow(image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
    if target is not None:
        gt_names = None
        if pred is None and class_names is not None:
            gt_names = [class_names[c - 1] for c in target["labels"].tolist()]
        draw_boxes(ax, target["boxes"], "white", gt_names, linestyle="--", linewidth=1.2)
    if pred is not None:
        keep = pred["scores"] >= score_threshold
        labels = pred["labels"][keep].tolist()
        names = [class_names[c - 1] if class_names else str(c) for c in labels]
        text = [f"{n} {s:.2f}".replace(" 0.", " .") for n, s in zip(names, pred["scores"][keep].tolist())]
        draw_boxes(ax, pred["boxes"][keep], [CLASS_COLORS[(c - 1) % len(CLASS_COLORS)] for c in labels], text)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def show_detection_grid(
    samples: Sequence[tuple[Tensor, dict[str, Any]]],
    preds: Sequence[dict[str, Any]] | None = None,
    class_names: Sequence[str] | None = None,
    ncols: int = 4,
    score_threshold: float = 0.3,
    titles: Sequence[str] | None = None,
) -> Figure:
    """A grid of :func:`show_detections`, one panel per ``(image, target)`` sample."""
    nrows = -(-len(samples) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.6 * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(samples):
            ax.set_axis_off()
            continue
        image, target = samples[i]
        show_detections(image, target, preds[i] if preds else None, class_names, score_threshold, ax,
                        titles[i] if titles else None)
    fig.tight_layout()
    return fig


def plot_history(history: dict[str, list[float]], loss_keys: Sequence[str] | None = None, smooth: int = 20) -> Figure:
    """Training curves: loss terms per step (moving average) and, if present, mAP per epoch."""
    loss_keys = loss_keys or [k for k in history if k.startswith("loss")]
    has_map = "map" in history and len(history["map"]) > 0
    fig, axes = plt.subplots(1, 2 if has_map else 1, figsize=(10 if has_map else 5, 3.2), squeeze=False)
    ax = axes[0, 0]
    for key in loss_keys:
        values = np.asarray(history[key], dtype=float)
        window = max(1, min(smooth, len(values)))
        smoothed = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window - 1, len(values)), smoothed, label=key)
    ax.set_xlabel("training step")
    ax.set_ylabel(f"loss (moving average of {smooth} steps)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if has_map:
        ax = axes[0, 1]
        epochs = np.arange(1, len(history["map"]) + 1)
        ax.plot(epochs, history["map_50"], "o-", label="mAP@0.5")
        ax.plot(epochs, history["map"], "s-", label="mAP@[.5:.95]")
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation mAP")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_pr_curves(metrics: dict[str, Any], class_names: Sequence[str] | None = None, iou_thresholds: Sequence[float] = (0.5, 0.75)) -> Figure:
    """Interpolated precision-recall curves per class, from :func:`mean_average_precision`'s output."""
    precision, classes = metrics["precision"], metrics["classes"]
    fig, axes = plt.subplots(1, len(iou_thresholds), figsize=(4.2 * len(iou_thresholds), 3.4), squeeze=False)
    for ax, thr in zip(axes[0], iou_thresholds):
        t = int(round((thr - 0.5) / 0.05))
        for k, cls in enumerate(classes):
            if precision[t, 0, k] < 0:
                continue
            name = class_names[cls - 1] if class_names else str(cls)
            ap = precision[t, :, k].mean()
            ax.plot(RECALL_THRESHOLDS, precision[t, :, k], color=CLASS_COLORS[(cls - 1) % len(CLASS_COLORS)], label=f"{name} (AP {ap:.3f})")
        ax.set_xlabel("recall")
        ax.set_ylabel("interpolated precision")
        ax.set_title(f"IoU threshold {thr:.2f}")
        ax.set_xlim(0, 1.01)
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8, loc="lower left")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_quant_grid(
    x: Tensor, scale: float | Tensor, zero_point: int | Tensor, q_min: int, q_max: int,
    ax: Axes | None = None, bins: int = 150, max_lines: int = 64, label: str = "values",
) -> Figure:
    """Histogram of ``x`` with the quantization grid ``S · (q − Z)``, q = q_min..q_max, on top.

    Grid levels are drawn as thin vertical lines (only the ends when there are
    more than ``max_lines`` levels); the regions outside the grid, where values
    are clamped, are shaded red.
    """
    fig, ax = _axes(ax, figsize=(6, 3))
    values = x.detach().flatten().float().cpu().numpy()
    s, z = float(scale), int(zero_point)
    lo, hi = s * (q_min - z), s * (q_max - z)
    span = max(values.max(), hi) - min(values.min(), lo)
    left, right = min(values.min(), lo) - 0.03 * span, max(values.max(), hi) + 0.03 * span
    ax.hist(values, bins=bins, range=(left, right), color="tab:blue", alpha=0.75, label=label)
    ax.set_yscale("log")
    levels = np.arange(q_min, q_max + 1)
    grid = s * (levels - z)
    shown = grid if len(grid) <= max_lines else grid[[0, -1]]
    for g in shown:
        ax.axvline(g, color="black", linewidth=0.6, alpha=0.6)
    ax.axvspan(left, lo, color="tab:red", alpha=0.12, label="clamped")
    ax.axvspan(hi, right, color="tab:red", alpha=0.12)
    ax.axvline(0.0, color="tab:green", linewidth=1.2, linestyle="--", label="0 (exact)")
    ax.set_xlim(left, right)
    ax.set_xlabel("value")
    ax.set_ylabel("count (log)")
    ax.legend(fontsize=7, loc="upper right")
    return fig


def plot_schedule_curves(
    runs: Sequence[dict[str, Any]], ax: Axes | None = None, title: str = "", live: Sequence[float] | None = None,
    shipped_epochs: int | None = None,
) -> Figure:
    """Validation mAP after each epoch, one line per schedule length (``train_tiny_detector.py``'s ``runs``).

    ``runs``: dicts with ``epochs`` and ``val_map_curve`` (one value per epoch);
    ``live``: another curve to overlay (e.g. a notebook's own short run);
    ``shipped_epochs``: the schedule to draw thicker (the one that was kept).
    """
    fig, ax = _axes(ax, figsize=(5, 3.5))
    for run in runs:
        curve = run["val_map_curve"]
        kept = run["epochs"] == shipped_epochs
        ax.plot(range(1, len(curve) + 1), curve, lw=2.5 if kept else 1.2,
                label=f"{run['epochs']}-epoch schedule" + (" (kept)" if kept else ""))
    if live is not None:
        ax.plot(range(1, len(live) + 1), live, "k--", lw=1.5, label=f"this notebook's {len(live)} epochs")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val mAP@[.5:.95]")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return fig
