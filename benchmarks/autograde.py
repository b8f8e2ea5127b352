"""Autograde the whole course for a trial class whose marks are known (``classroom.trial``).

Builds the nbgrader release of every notebook with an exercise (``make student``), writes three
submissions per notebook -- alice: the reference solutions; bob: the untouched release; carol: one
typical wrong answer per notebook (``classroom.trial.WRONG``) -- and grades them with the same code as
``make grade``, which executes every submitted notebook from top to bottom (3 x the course's run
time: about half an hour on 2 cores). Writes ``benchmarks/results/autograde.json``: every
(student, notebook, exercise) with the points nbgrader gave and the points expected, and whether
all of them agree.

    python benchmarks/autograde.py                                   # all notebooks, ~30 min
    python benchmarks/autograde.py --only 00_setup_and_tour --out /tmp/ag   # a quick try
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

import torch

from harness import RESULTS, ROOT, run_info, write_json

sys.path.insert(0, str(ROOT))  # classroom/ is the repository's teacher tooling, not an installed package
from classroom import nbgrader_build as nbb  # noqa: E402
from classroom.trial import STUDENTS, WRONG, expected_points, make_class  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", choices=nbb.assignments(), help="these notebooks only (default: all)")
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "autograde",
                        help="scratch folder for the course directory and the submissions (default build/autograde)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="autograde", help="writes OUT/NAME.json (default autograde)")
    args = parser.parse_args()
    assignments = args.only or nbb.assignments()

    shutil.rmtree(args.work, ignore_errors=True)
    release = args.work / "release_course"
    nbb.student(release, assignments)
    submissions = args.work / "submitted"
    make_class(release, submissions, assignments)
    start = time.perf_counter()
    csv_path = nbb.grade(submissions, course=args.work / "course")
    seconds = time.perf_counter() - start
    with open(csv_path) as f:
        rows = [{**r, "points": float(r["points"]), "max_points": float(r["max_points"]),
                 "expected": expected_points(r["student"], r["notebook"], r["exercise"])} for r in csv.DictReader(f)]
    totals = {who: {"points": sum(r["points"] for r in rows if r["student"] == who),
                    "max_points": sum(r["max_points"] for r in rows if r["student"] == who)} for who in STUDENTS}
    disagree = [r for r in rows if r["points"] != r["expected"]]
    path = write_json(args.out / f"{args.name}.json", {
        "description": ("nbgrader autograding of the course's student release for a trial class: alice submits the "
                        "reference solutions, bob the untouched release, carol one typical wrong answer per notebook; "
                        "each row gives the points nbgrader gave and the points expected"),
        "command": "python benchmarks/autograde.py" + (f" --only {' '.join(args.only)}" if args.only else ""),
        "run": run_info(torch.device("cpu")),
        "grading_seconds": round(seconds, 1),
        "notebooks": assignments,
        "wrong_answers": {a: {"exercise": WRONG[a][0], "body": WRONG[a][1]} for a in assignments},
        "totals": totals,
        "all_as_expected": not disagree,
        "rows": rows,
    })
    for who, t in totals.items():
        print(f"{who:6s} {t['points']:.0f} / {t['max_points']:.0f}")
    print(f"graded {len(assignments)} notebooks x {len(STUDENTS)} students in {seconds / 60:.1f} min; "
          f"{'all as expected' if not disagree else f'{len(disagree)} rows NOT as expected: {disagree}'}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
