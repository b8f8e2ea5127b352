"""Plot helpers draw what they are given (lines, labels, axes)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from course_utils.viz import plot_schedule_curves  # noqa: E402


def test_schedule_curves_one_line_per_schedule_plus_the_live_run():
    runs = [{"epochs": 2, "val_map_curve": [0.3, 0.5]}, {"epochs": 4, "val_map_curve": [0.2, 0.4, 0.6, 0.7]}]
    fig = plot_schedule_curves(runs, live=[0.1, 0.2, 0.3], shipped_epochs=4)
    ax = fig.axes[0]
    assert [len(line.get_xdata()) for line in ax.lines] == [2, 4, 3]
    assert ax.lines[1].get_linewidth() > ax.lines[0].get_linewidth()  # the kept schedule stands out
    assert ax.get_xlabel() == "epoch" and "mAP" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "2-epoch schedule", "4-epoch schedule (kept)", "this notebook's 3 epochs"]


def test_detection_labels_never_cover_each_other():
    """Duplicate boxes (the usual false positives) used to stack their score labels on one spot."""
    import torch

    from course_utils.viz import show_detection_grid

    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([[20.0, 20.0, 70.0, 70.0]])
    boxes = torch.cat([box, box + 1, box + 2, box - 1, torch.tensor([[80.0, 80.0, 120.0, 120.0]])])
    pred = {"boxes": boxes, "scores": torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95]), "labels": torch.tensor([1, 2, 1, 3, 2])}
    target = {"boxes": box, "labels": torch.tensor([1])}
    fig = show_detection_grid([(image, target)] * 2, [pred] * 2, ["circle", "square", "triangle"], ncols=2)
    fig.canvas.draw()  # the final layout
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        extents = [t.get_window_extent(renderer) for t in ax.texts]
        assert len(extents) == 5
        overlaps = [(i, j) for i in range(5) for j in range(i + 1, 5) if extents[i].overlaps(extents[j])]
        assert not overlaps, f"labels {overlaps} overlap"
