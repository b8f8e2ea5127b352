"""Each student's feedback as a self-contained HTML page: nbgrader's ``generate_feedback``, offline.

    python -m classroom.feedback [--course DIR] [ASSIGNMENT ...]

Writes ``<course>/feedback/<student>/<assignment>/<assignment>.html`` for every graded submission of
the assignments (default: every assignment in ``grades.csv``): the notebook as graded, the check
messages under each exercise and the points. nbgrader's page loads MathJax from a CDN; here it loads
the copy that ships with the course's environment (``jupyter_server_mathjax``), copied once to
``<course>/feedback/_mathjax``, so a page opens without a network. The check messages use ✓ and ✗
(U+2713, U+2717), which common text fonts carry; no emoji font is needed.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
from pathlib import Path

from .nbgrader_build import COURSE, ClassroomError, run_nbgrader

CDN_MATHJAX = "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/latest.js?config=TeX-AMS_CHTML-full,Safe"


def _local_mathjax(feedback: Path) -> Path:
    """``feedback/_mathjax/MathJax.js``, copied from ``jupyter_server_mathjax`` if not there yet."""
    import jupyter_server_mathjax

    dest = feedback / "_mathjax"
    if not (dest / "MathJax.js").exists():
        shutil.copytree(Path(jupyter_server_mathjax.__file__).parent / "static", dest, dirs_exist_ok=True)
    return dest / "MathJax.js"


def graded_assignments(course: Path) -> list[str]:
    """The assignments with at least one graded row in ``course/grades.csv``."""
    path = course / "grades.csv"
    if not path.exists():
        raise ClassroomError(f"{path} does not exist: grade the class first (make grade SUBMISSIONS=DIR)")
    with open(path, newline="") as f:
        return sorted({r["notebook"] for r in csv.DictReader(f) if r.get("status", "graded") == "graded"})


def generate(course: Path = COURSE, assignments: list[str] | None = None) -> list[Path]:
    """Write the feedback pages and return their paths."""
    course = Path(course).resolve()
    assignments = assignments or graded_assignments(course)
    for assignment in assignments:
        run_nbgrader(course, "generate_feedback", assignment, "--force")
    feedback = course / "feedback"
    mathjax = _local_mathjax(feedback)
    pages = sorted(p for p in feedback.glob("*/*/*.html") if p.parent.name in assignments)
    for page in pages:
        text = page.read_text(encoding="utf-8")
        local = os.path.relpath(mathjax, page.parent) + "?config=TeX-AMS-MML_HTMLorMML-full,Safe"  # configs it ships
        page.write_text(text.replace(CDN_MATHJAX, local), encoding="utf-8")
    return pages


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignments", nargs="*", help="assignments (default: every graded one)")
    parser.add_argument("--course", type=Path, default=COURSE, help=f"the course folder (default {COURSE})")
    args = parser.parse_args(argv)
    try:
        pages = generate(args.course, args.assignments or None)
    except ClassroomError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(pages)} feedback pages under {args.course / 'feedback'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
