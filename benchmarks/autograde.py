"""Autograde the whole course for a trial class whose marks are known (``classroom.trial``).

Builds the nbgrader release of every notebook with an exercise (``make student``), writes three
submissions per notebook -- alice: the reference solutions; bob: the untouched release; carol: one
typical wrong answer per notebook (``classroom.trial.WRONG``) -- and grades them with the same code as
``make grade`` (``classroom.grading``: every submitted notebook executed from top to bottom in the
sandbox, ``--jobs`` at a time, one BLAS thread each). ``--copies K`` grades K copies of the trial
class (3·K students) to time a bigger class. Writes ``benchmarks/results/autograde.json``: every
(student, notebook, exercise) with the points nbgrader gave and the points expected, whether all of
them agree, and the seconds each (student, notebook) took.

    python benchmarks/autograde.py --jobs 2                          # all notebooks
    python benchmarks/autograde.py --only 01_detection_basics --copies 2 --jobs 1 --out /tmp/ag   # a quick try
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
from classroom import grading  # noqa: E402
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
    parser.add_argument("--jobs", type=int, default=2, help="parallel graders (default 2)")
    parser.add_argument("--copies", type=int, default=1, help="copies of the trial class (3 students each; default 1)")
    args = parser.parse_args()
    assignments = args.only or nbb.assignments()

    shutil.rmtree(args.work, ignore_errors=True)
    release = args.work / "release_course"
    nbb.student(release, assignments)
    submissions = args.work / "submitted"
    make_class(release, submissions, assignments)
    for copy in range(2, args.copies + 1):  # alice2, bob2, carol2, ...: the same submissions again
        for who in STUDENTS:
            shutil.copytree(submissions / who, submissions / f"{who}{copy}")
    start = time.perf_counter()
    csv_path, outcomes = grading.grade(submissions, course=args.work / "course", jobs=args.jobs, progress=True)
    seconds = time.perf_counter() - start
    with open(csv_path) as f:
        rows = [{**r, "points": float(r["points"]), "max_points": float(r["max_points"]),
                 "expected": expected_points(r["student"].rstrip("0123456789"), r["notebook"], r["exercise"])}
                for r in csv.DictReader(f) if not r["exercise"].startswith("written_")]  # written answers: the teacher's
    per_notebook = {a: sorted(o.seconds for o in outcomes if o.assignment == a) for a in assignments}
    students = sorted({o.student for o in outcomes})
    totals = {who: {"points": sum(r["points"] for r in rows if r["student"] == who),
                    "max_points": sum(r["max_points"] for r in rows if r["student"] == who)} for who in students}
    disagree = [r for r in rows if r["points"] != r["expected"]]
    path = write_json(args.out / f"{args.name}.json", {
        "description": ("nbgrader autograding of the course's student release for a trial class: alice submits the "
                        "reference solutions, bob the untouched release, carol one typical wrong answer per notebook "
                        "(--copies K: K copies of the three, alice2 ...), each notebook run in the bubblewrap sandbox, "
                        "--jobs at a time with one BLAS thread; each row gives the points nbgrader gave to a checked "
                        "exercise and the points expected (written answers are the teacher's to score, not listed); "
                        "seconds_per_student_notebook: median/min/max over the students of one autograde run"),
        "command": f"python benchmarks/autograde.py --jobs {args.jobs} --copies {args.copies}"
                   + (f" --only {' '.join(args.only)}" if args.only else ""),
        "run": run_info(torch.device("cpu")),
        "grading_seconds": round(seconds, 1),
        "jobs": args.jobs,
        "students": len(students),
        "seconds_per_student_notebook": {a: {"median": round(float(sorted(v)[len(v) // 2]), 1), "min": round(v[0], 1),
                                             "max": round(v[-1], 1)} for a, v in per_notebook.items() if v},
        "wall_seconds_per_student": round(seconds / len(students), 1),
        "failed": [vars(o) for o in outcomes if o.status != "graded"],
        "notebooks": assignments,
        "wrong_answers": {a: {"exercise": WRONG[a][0], "body": WRONG[a][1]} for a in assignments},
        "totals": totals,
        "all_as_expected": not disagree,
        "rows": rows,
    })
    for who, t in totals.items():
        print(f"{who:6s} {t['points']:.0f} / {t['max_points']:.0f}")
    print(f"graded {len(assignments)} notebooks x {len(students)} students in {seconds / 60:.1f} min "
          f"({seconds / len(students):.0f} s of wall clock per student, --jobs {args.jobs}); "
          f"{'all as expected' if not disagree else f'{len(disagree)} rows NOT as expected: {disagree}'}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
