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
