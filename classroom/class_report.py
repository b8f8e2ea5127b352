"""A class's results per exercise: how many passed, and the failure message most of the others got.

    python -m classroom.class_report [--course DIR]

Reads the course folder's ``grades.csv`` and the autograded notebooks (the check messages in each
exercise's test cell), and writes ``class_report.md`` (a table per notebook) and ``class_report.png``
(pass rate per exercise) into the course folder. A check's message names the likely mistake, so the
most common message says what to explain again in class. Numbers in messages are replaced by ``#`` so
that the same mistake on different inputs counts once.
"""

from __future__ import annotations

import argparse
import collections
import csv
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from .nbgrader_build import COURSE

NUMBER = re.compile(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?")


@dataclass
class ExerciseStats:
    """One exercise across the class."""

    notebook: str
    exercise: str
    graded: int = 0  # students whose notebook was graded (status "graded")
    passed: int = 0
    failed_to_grade: int = 0  # notebooks that could not be graded (status "failed")
    messages: collections.Counter = field(default_factory=collections.Counter)

    @property
    def pass_rate(self) -> float:
        return self.passed / self.graded if self.graded else float("nan")

    def most_common(self) -> tuple[str, int]:
        return self.messages.most_common(1)[0] if self.messages else ("", 0)


def failure_message(course: Path, student: str, notebook: str, exercise: str) -> str:
    """The first ``✗`` line of an exercise's test cell in a student's autograded notebook, numbers
    replaced by ``#`` (empty if there is none)."""
    path = course / "autograded" / student / notebook / f"{notebook}.ipynb"
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 -- a missing or unreadable notebook has no message
        return ""
    for cell in nb.cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == f"{exercise}_test":
            for output in cell.get("outputs", []):
                text = output.get("text", "") or output.get("evalue", "")
                for line in text.splitlines():
                    if line.startswith("✗") or line.startswith("NotGraded") or "Not graded" in line:
                        return NUMBER.sub("#", line.split(": ", 1)[-1]).strip()[:200]
                if output.get("output_type") == "error":
                    return f"{output.get('ename', 'error')}: {NUMBER.sub('#', output.get('evalue', ''))[:160]}"
    return ""


def collect(course: Path = COURSE) -> list[ExerciseStats]:
    """Per-exercise statistics from ``course/grades.csv`` and the autograded notebooks."""
    path = Path(course) / "grades.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: grade the class first (make grade SUBMISSIONS=DIR)")
    if (Path(course) / "gradebook.db").exists():
        from .grading import refresh_written

        refresh_written(Path(course))  # written answers scored in formgrader since the last grading run
    stats: dict[tuple[str, str], ExerciseStats] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            key = (row["notebook"], row["exercise"])
            s = stats.setdefault(key, ExerciseStats(*key))
            if row.get("status", "graded") == "to grade by hand":
                continue
            if row.get("status", "graded") != "graded":
                s.failed_to_grade += 1
                continue
            s.graded += 1
            if row["points"] and float(row["points"]) >= float(row["max_points"]):
                s.passed += 1
            else:
                s.messages[failure_message(Path(course), row["student"], row["notebook"], row["exercise"]) or "(no message)"] += 1
    return [stats[k] for k in sorted(stats)]


def write_markdown(stats: list[ExerciseStats], path: Path) -> Path:
    lines = ["# Class report", "", "Per exercise: students graded, how many passed, and the failure message most of the "
             "others got (numbers shown as #).", ""]
    for notebook in sorted({s.notebook for s in stats}):
        lines += [f"## {notebook}", "", "| exercise | passed | not graded | most common failure |", "|---|---|---|---|"]
        for s in (s for s in stats if s.notebook == notebook):
            message, count = s.most_common()
            failure = f"{message} ({count} of {s.graded - s.passed})" if count else "—"
            lines.append(f"| {s.exercise} | {s.passed} / {s.graded} ({s.pass_rate:.0%}) | {s.failed_to_grade} | "
                         f"{failure.replace('|', '/')} |")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_figure(stats: list[ExerciseStats], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{s.notebook[:2]} {s.exercise}" for s in stats]
    rates = [100 * s.pass_rate if s.graded else 0.0 for s in stats]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(stats) + 2), 3.6))
    ax.bar(range(len(stats)), rates, color="tab:blue")
    for i, s in enumerate(stats):
        ax.text(i, rates[i] + 1, f"{s.passed}/{s.graded}", ha="center", fontsize=7)
    ax.set_xticks(range(len(stats)), labels, rotation=60, ha="right", fontsize=8)
    ax.set(ylim=(0, 110), xlabel="exercise (notebook, name)", ylabel="students who passed (%)",
           title="Pass rate per exercise")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--course", type=Path, default=COURSE, help=f"the course folder (default {COURSE})")
    args = parser.parse_args(argv)
    try:
        stats = collect(args.course)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    md = write_markdown(stats, args.course / "class_report.md")
    png = write_figure(stats, args.course / "class_report.png")
    for s in stats:
        message, count = s.most_common()
        print(f"{s.notebook} {s.exercise:<22} passed {s.passed:>3}/{s.graded:<3}" + (f"  most common: {message}" if count else ""))
    print(f"wrote {md} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
