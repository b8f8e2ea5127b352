"""Autograde a class: every submission in its own sandboxed nbgrader run, in parallel, nothing lost.

    python -m classroom.grading SUBMISSIONS [--course DIR] [--jobs N] [--unsafe]
    python -m classroom.grading --collected [--course DIR]    # what nbgrader collect put in DIR/submitted

``SUBMISSIONS/<student>/<assignment>/<assignment>.ipynb`` (nbgrader's ``timestamp.txt`` beside it,
if any, decides lateness). For each (student, assignment) pair:

1. the submission is copied into the course folder's ``submitted/`` (that pair's folder only; with
   ``--collected`` it is already there);
2. ``nbgrader autograde ASSIGNMENT --student STUDENT`` runs in its own process, one BLAS thread, with
   the student's kernel inside the bubblewrap sandbox of :mod:`classroom.sandbox` (no view of
   ``solutions/``, the gradebook, other students or the network; CPU, memory and time limits from
   ``course.toml``);
3. a submission that cannot be graded (not a notebook, a kernel that dies, the time limit) scores 0
   with the reason, and the others are graded all the same.

``grades.csv`` in the course folder is *merged*: the pairs graded in this run replace their own rows
and every other row stays. The gradebook, manual grades, feedback and other assignments are never
deleted. ``grading_log.csv`` gets one line per pair: when, status, seconds, reason.
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import csv
import datetime as dt
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat

from . import course_settings, sandbox
from . import nbgrader_build as nbb

GRADES_HEADER = ["student", "notebook", "exercise", "points", "max_points", "status", "reason", "flags"]
LOG_HEADER = ["time_utc", "student", "notebook", "status", "seconds", "reason", "flags"]

#: What the teacher should look at in a submission: (pattern in a cell the student could edit, what it suggests).
SUSPICIOUS = [
    (r"\bcheck_\w+\s*=(?!=)", "rebinds a check"),
    (r"\bsetattr\s*\(|\bexercises\.\w+\s*=(?!=)|exercise_grading", "changes the course's checks"),
    (r"input_transformer|events\.register|register_magic|set_custom_exc|run_cell", "changes how IPython runs cells"),
    (r"sys\.(setprofile|settrace)|\bbuiltins\b|sys\.modules|importlib\.reload", "patches the interpreter"),
    (r"__torch_function__|__torch_dispatch__|as_subclass|_make_subclass", "defines a tensor subclass"),
    (r"\bsolutions\b", "refers to the solutions"),
    (r"\bgraded\s*\(", "calls the grader itself"),
    (r"os\._exit|sys\.exit|\bSystemExit\b|os\.kill", "ends the kernel"),
]


@dataclass
class Outcome:
    """What happened to one (student, assignment) pair."""

    student: str
    assignment: str
    status: str  # "graded", "failed" (0 points, reason) or "skipped" (not graded: reason)
    reason: str = ""
    seconds: float = 0.0
    flags: str = ""  # "; "-separated things for the teacher to look at (SUSPICIOUS, and what the checks reported)


def _valid_notebook(path: Path) -> str:
    """Empty if ``path`` is a readable, valid notebook; otherwise why not, in a sentence."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as err:  # noqa: BLE001 -- any failure to read means "not a notebook"
        return f"not a valid notebook ({type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''})"
    return ""


def _links_and_specials(folder: str, names: list[str]) -> list[str]:
    """``copytree`` ignore: symbolic links (a link could point at the teacher's files) and anything
    that is not a plain file or folder are not copied from a submission."""
    skip = []
    for name in names:
        path = Path(folder) / name
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            skip.append(name)
    return skip


def suspicious(path: Path) -> list[str]:
    """What a submitted notebook's editable cells do that an honest answer does not (``SUSPICIOUS``):
    for the teacher to read, not a score."""
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception:  # noqa: BLE001 -- an unreadable notebook has its own reason
        return []
    found = []
    for cell in nb.cells:
        if cell.cell_type != "code" or cell.get("metadata", {}).get("nbgrader", {}).get("locked"):
            continue
        for pattern, what in SUSPICIOUS:
            if what not in found and re.search(pattern, cell.source):
                found.append(what)
    return found


def _graded_flags(path: Path) -> list[str]:
    """What the autograded notebook's test cells reported: an answer that used the library's own
    implementation, a test cell that did not run its check to the end."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    flags = []
    if "(uses the reference)" in text:
        flags.append("uses the reference")
    if "NotGraded" in text:
        flags.append("a test cell did not run its check to the end")
    return flags


def _reason_from_log(log: str) -> str:
    """A one-line reason for a failed ``nbgrader autograde``, from its log."""
    patterns = [
        (r"DeadKernelError|Kernel died|kernel died", "the kernel died (os._exit, a crash, or the memory limit)"),
        (r"CellTimeoutError|Cell execution timed out|timed out", "a cell exceeded the per-cell time limit"),
        (r"NotJSONError|not valid JSON|Notebook does not appear to be JSON", "not a valid notebook"),
        (r"MemoryError", "the memory limit"),
    ]
    for pattern, reason in patterns:
        if re.search(pattern, log):
            return reason
    errors = [line.strip() for line in log.splitlines() if "error" in line.lower()]
    return (errors[-1][:200] if errors else "nbgrader autograde failed (see the log)")


def _autograde(course: Path, student: str, assignment: str, settings: course_settings.CourseSettings,
               unsafe: bool) -> Outcome:
    """Run ``nbgrader autograde`` for one pair in its own process; never raises."""
    limits = settings.limits
    log_path = course / "logs" / student / f"{assignment}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    runtime = Path(tempfile.mkdtemp(prefix="kernel_"))  # the kernel's Unix sockets, private to this pair
    # TMPDIR: jupyter_client writes the kernel's connection file with mkstemp, and the sandbox binds
    # that file's folder (for the Unix sockets beside it): it must be this private folder, never /tmp.
    env = dict(nbb.nbgrader_env(), JUPYTER_RUNTIME_DIR=str(runtime), TMPDIR=str(runtime), OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    args = [sys.executable, "-m", "nbgrader", "autograde", assignment, "--student", student, "--force", "--create",
            "--log-level=INFO"]
    if not unsafe:
        env.update(sandbox.settings_env(limits), JUPYTER_PATH=str(course / "jupyter"))
        args += [f"--Execute.kernel_name={sandbox.KERNEL_NAME}", "--KernelManager.transport=ipc",
                 f"--KernelManager.ip={runtime / 'kernel-ipc'}"]
    start = time.perf_counter()
    outcome = Outcome(student, assignment, "graded")
    try:
        for attempt in range(3):  # the gradebook is SQLite: a write can meet another worker's lock
            with open(log_path, "w") as log:
                proc = subprocess.Popen(args, cwd=course, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                try:
                    proc.wait(timeout=limits.notebook_timeout_s + 60)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    outcome.status, outcome.reason = "failed", f"stopped after {limits.notebook_timeout_s} s (the notebook time limit)"
                    break
            text = log_path.read_text(errors="replace")
            if ("database is locked" in text or "UNIQUE constraint failed" in text) and attempt < 2:
                time.sleep(1 + attempt)
                continue
            if proc.returncode != 0 or "There was an error processing" in text:
                outcome.status, outcome.reason = "failed", _reason_from_log(text)
            elif "Interrupting kernel" in text:  # graded; the interrupted cell's exercise scores 0
                outcome.reason = f"a cell was stopped at the {limits.cell_timeout_s} s cell time limit"
            break
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    outcome.seconds = time.perf_counter() - start
    return outcome


def _sync_gradebook(course: Path, settings: course_settings.CourseSettings, assignments: list[str],
                    students: list[str] = ()) -> None:
    """Students of the roster, the ``students`` about to be graded, and the assignments' due dates into the
    gradebook (nothing removed). Creating every student here, before the parallel workers start, keeps two
    workers grading one new student from both inserting them (SQLite's "UNIQUE constraint failed")."""
    from nbgrader.api import Gradebook, MissingEntry

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for student, name in settings.roster.items():
            first, _, last = name.partition(" ")
            gb.update_or_create_student(student, first_name=first, last_name=last)
        for student in students:
            try:
                gb.find_student(student)
            except MissingEntry:
                gb.add_student(student)
        for assignment in assignments:
            due = settings.due.get(assignment)
            gb.update_or_create_assignment(assignment, duedate=due.replace(tzinfo=None) if due else None)


def _rows_from_gradebook(course: Path, outcomes: list[Outcome], late_kept: float = 1.0) -> list[list]:
    """grades.csv rows for this run's pairs: nbgrader's scores where graded, 0 with the reason otherwise."""
    from nbgrader.api import Gradebook, MissingEntry

    rows = []
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for o in outcomes:
            if o.status == "skipped":
                continue
            cells = gb.find_assignment(o.assignment).notebooks[0].grade_cells
            keep, late = _late_penalty(gb, o, late_kept) if o.status == "graded" else (1.0, "")
            for cell in sorted(cells, key=lambda c: c.name):
                score, status, reason = 0.0, o.status, o.reason
                if o.status == "graded":
                    try:
                        grade = gb.find_grade(cell.name, o.assignment, o.assignment, o.student)
                    except MissingEntry:
                        status, reason = "failed", "no grade recorded"
                    else:
                        if grade.needs_manual_grade and grade.manual_score is None:  # a written answer nobody scored yet
                            score, status, reason = "", "to grade by hand", "a written answer: score it in formgrader"
                        else:
                            score = float(grade.score) * keep
                    reason = "; ".join(r for r in (late, reason) if r)
                rows.append([o.student, o.assignment, cell.name.removesuffix("_test"), score, float(cell.max_score), status,
                             reason, o.flags])
    return rows


def _late_penalty(gb, o: Outcome, kept: float) -> tuple[float, str]:
    """(the fraction of each score kept, the lateness for the report).

    How late comes from nbgrader's gradebook (the submission's ``timestamp.txt`` against the due date
    in course.toml); ``kept`` is what course.toml's ``late_penalty`` leaves of a late notebook
    (``CourseSettings.late_kept``: written answers scored later lose the same share).
    """
    from nbgrader.api import MissingEntry

    try:
        late_s = gb.find_submission(o.assignment, o.student).total_seconds_late
    except MissingEntry:
        return 1.0, ""
    if not late_s:
        return 1.0, ""
    what = "no penalty" if kept == 1.0 else "scored 0" if kept == 0.0 else f"{1 - kept:.0%} off"
    return kept, f"late by {late_s / 3600:.1f} h ({what})"


def refresh_written(course: Path) -> int:
    """Fill in the written answers the teacher has scored in formgrader since ``grades.csv`` was
    written (rows "to grade by hand"); returns how many rows changed."""
    from nbgrader.api import Gradebook, MissingEntry

    path = course / "grades.csv"
    if not path.exists():
        return 0
    late_kept = course_settings.load(course).late_kept
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    changed = 0
    os.environ["PATH"] = nbb.nbgrader_env()["PATH"]  # Gradebook runs alembic
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        for row in rows[1:]:
            if len(row) > 5 and row[5] == "to grade by hand":
                try:
                    grade = gb.find_grade(row[2], row[1], row[1], row[0])
                except MissingEntry:
                    continue
                if grade.manual_score is not None:
                    keep, late = _late_penalty(gb, Outcome(row[0], row[1], "graded"), late_kept)
                    row[3], row[5], row[6] = str(float(grade.manual_score) * keep), "graded", late
                    changed += 1
    if changed:
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", newline="") as f:
            csv.writer(f).writerows(rows)
        os.replace(tmp, path)
    return changed


def _merge_csv(path: Path, header: list[str], new_rows: list[list], replaced: set[tuple[str, str]]) -> None:
    """Write ``path`` atomically: its old rows except the (student, notebook) pairs in ``replaced``, plus ``new_rows``."""
    old = []
    if path.exists():
        with open(path, newline="") as f:
            reader = csv.reader(f)
            first = next(reader, None)
            if first is not None and first[:2] == header[:2]:
                old = [r for r in reader if (r[0], r[1]) not in replaced]
    rows = sorted(old + [[str(x) for x in r] for r in new_rows], key=lambda r: (r[0], r[1], r[2]))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)


def _append_log(path: Path, outcomes: list[Outcome]) -> None:
    new = not path.exists()
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(LOG_HEADER)
        for o in outcomes:
            writer.writerow([now, o.student, o.assignment, o.status, f"{o.seconds:.1f}", o.reason, o.flags])


def grade(submissions: Path, course: Path = nbb.COURSE, jobs: int | None = None, unsafe: bool = False,
          progress: bool = True) -> tuple[Path, list[Outcome]]:
    """Autograde every submission under ``submissions``; returns ``(grades.csv, outcomes)``.

    Refuses (``sandbox.SandboxUnavailable``) when bubblewrap cannot sandbox here, unless ``unsafe``.
    """
    course = Path(course).resolve()
    submissions = Path(submissions).resolve()
    settings = course_settings.load(course)
    if not unsafe:
        sandbox.bwrap()
        sandbox.write_kernelspec(course / "jupyter")
    known = nbb.assignments()
    layout = nbb.read_layout(submissions, known)
    wanted = sorted({a for assigned in layout.values() for a in assigned})
    nbb.student(course, wanted, settings=settings)  # source + release of these assignments; nothing deleted
    _sync_gradebook(course, settings, wanted,
                    [s for s in layout if not settings.roster or s in settings.roster])  # not the skipped ones
    outcomes: list[Outcome] = []
    todo: list[Outcome] = []
    for student, assigned in layout.items():
        for assignment in assigned:
            o = Outcome(student, assignment, "graded")
            if settings.roster and student not in settings.roster:
                o.status, o.reason = "skipped", "not on the roster in course.toml"
            elif (why := _valid_notebook(submissions / student / assignment / f"{assignment}.ipynb")):
                o.status, o.reason = "failed", why
            else:
                dest = course / "submitted" / student / assignment
                if dest.resolve() != (submissions / student / assignment).resolve():  # not collected in place
                    shutil.rmtree(dest, ignore_errors=True)  # this pair's previous submission only
                    shutil.copytree(submissions / student / assignment, dest, ignore=_links_and_specials)
                nbb.link_shared(course / "autograded" / student)
                todo.append(o)
            outcomes.append(o)
    workers = jobs or settings.workers
    done = 0
    with futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        running = {pool.submit(_autograde, course, o.student, o.assignment, settings, unsafe): o for o in todo}
        for future in futures.as_completed(running):
            o = running[future]
            result = future.result()
            o.status, o.reason, o.seconds = result.status, result.reason, result.seconds
            graded_nb = course / "autograded" / o.student / o.assignment / f"{o.assignment}.ipynb"
            o.flags = "; ".join(suspicious(course / "submitted" / o.student / o.assignment / f"{o.assignment}.ipynb")
                                + _graded_flags(graded_nb))
            done += 1
            if progress:
                print(f"[{done}/{len(todo)}] {o.student} {o.assignment}: {o.status} in {o.seconds:.0f} s"
                      + (f" ({o.reason})" if o.reason else "") + (f" [flags: {o.flags}]" if o.flags else ""), flush=True)
    os.environ["PATH"] = nbb.nbgrader_env()["PATH"]  # Gradebook runs alembic
    rows = _rows_from_gradebook(course, outcomes, settings.late_kept)
    grades = course / "grades.csv"
    _merge_csv(grades, GRADES_HEADER, rows, {(o.student, o.assignment) for o in outcomes if o.status != "skipped"})
    _append_log(course / "grading_log.csv", outcomes)
    refresh_written(course)
    return grades, outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("submissions", type=Path, nargs="?",
                        help="SUBMISSIONS/<student>/<assignment>/<assignment>.ipynb (default with --collected: "
                             "the course folder's submitted/, where nbgrader collect puts them)")
    parser.add_argument("--collected", action="store_true",
                        help="grade what `nbgrader collect` gathered from the exchange into COURSE/submitted")
    parser.add_argument("--course", type=Path, default=nbb.COURSE, help=f"the course folder (default {nbb.COURSE})")
    parser.add_argument("--jobs", type=int, default=None, help="parallel graders (default: course.toml, else one per core)")
    parser.add_argument("--unsafe", action="store_true",
                        help="run student code without the sandbox (only for submissions you trust)")
    args = parser.parse_args(argv)
    if (args.submissions is None) == (not args.collected):
        parser.error("give SUBMISSIONS or --collected (one of the two)")
    if args.collected:
        args.submissions = args.course / "submitted"
    try:
        if args.jobs is not None and args.jobs < 1:
            raise nbb.ClassroomError(f"--jobs {args.jobs}: give 1 or more")
        grades, outcomes = grade(args.submissions, args.course, args.jobs, args.unsafe)
    except (nbb.ClassroomError, course_settings.SettingsError, sandbox.SandboxUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = [o for o in outcomes if o.status != "graded"]
    print(f"grades: {grades} ({len(outcomes) - len(failed)} graded, {len(failed)} not)")
    for o in failed:
        print(f"  {o.student} {o.assignment}: {o.status}: {o.reason}")
    for o in (o for o in outcomes if o.flags):
        print(f"  look at {o.student} {o.assignment}: {o.flags}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
