"""Sandboxed, parallel autograding (classroom/grading.py, classroom/sandbox.py, classroom/course_settings.py).

The sandbox's refusals are tested one by one on plain processes (fast); a hostile class is graded
end to end on notebook 01 (slow): honest marks for the trial class, nothing changed outside the
students' folders, a 0 with a reason for what cannot be graded, and a second run that keeps every
earlier grade.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sqlite3
import sys
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbgrader")

from classroom import course_settings, grading, sandbox  # noqa: E402
from classroom import nbgrader_build as nbb  # noqa: E402
from classroom.trial import HOSTILE, HOSTILE_ASSIGNMENT, STUDENTS, expected_points, make_class, make_hostile_class  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ASSIGNMENT = HOSTILE_ASSIGNMENT  # 01: the cheapest notebook with exercises (about 15 s per student here)

def _sandbox_works() -> bool:
    try:
        sandbox.bwrap()
    except sandbox.SandboxUnavailable:
        return False
    return True


needs_bwrap = pytest.mark.skipif(not _sandbox_works(), reason="bubblewrap missing or unable to create namespaces here: "
                                                                "bash scripts/ensure_bubblewrap.sh")


def _run(code: str, workdir: Path, **limits) -> tuple[int, str]:
    result = sandbox.run([sys.executable, "-c", code], workdir, sandbox.Limits(**{"notebook_timeout_s": 60, **limits}))
    return result.returncode, result.stdout + result.stderr


@needs_bwrap
@pytest.mark.parametrize("what, code, refused", [
    ("write to the repository", f"open({str(REPO / 'course_utils' / 'exercises.py')!r}, 'a').write('x')", "Read-only file system"),
    ("create a file in the repository", f"open({str(REPO / 'PWNED.txt')!r}, 'w').write('x'); import os; "
                                         f"print(os.path.exists({str(REPO / 'README.md')!r}))", "False"),
    ("read solutions/", f"print(open({str(REPO / 'solutions' / 'ex01_detection_basics.py')!r}).read())", "No such file"),
    ("open a socket", "import socket; socket.create_connection(('127.0.0.1', 22), timeout=5)", "Connection refused"),
    ("reach the internet", "import socket; socket.create_connection(('pypi.org', 443), timeout=5)", "name resolution"),
])
def test_sandbox_refuses(tmp_path, what, code, refused):
    rc, out = _run(code, tmp_path)
    assert refused in out, f"{what}: {out}"
    assert not (REPO / "PWNED.txt").exists()


@needs_bwrap
def test_sandbox_hides_the_gradebook_and_other_students(tmp_path):
    """Only the student's own folder is there: a gradebook and another student's work beside it are not."""
    (tmp_path / "gradebook.db").write_text("grades")
    (tmp_path / "bob").mkdir()
    (tmp_path / "bob" / "answer.txt").write_text("bob's")
    me = tmp_path / "alice"
    me.mkdir()
    rc, out = _run("import os; print(sorted(os.listdir('..'))); open('../gradebook.db')", me)
    assert "No such file" in out and "gradebook.db" not in out.splitlines()[0] and "bob" not in out.splitlines()[0]
    rc, out = _run("open('mine.txt', 'w').write('ok')", me)
    assert rc == 0 and (me / "mine.txt").read_text() == "ok"


@needs_bwrap
def test_sandbox_carries_the_import_path_but_never_a_folder_above_the_course(tmp_path, monkeypatch):
    """A shared course environment reached through PYTHONPATH (as on a hub) is importable in the
    sandbox; a PYTHONPATH entry that holds the repository (and so solutions/) is left out."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "shared_mod.py").write_text("VALUE = 7\n")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(lib), str(REPO.parent)]))
    assert sandbox._extra_import_dirs() == [lib.resolve()]
    work = tmp_path / "work"
    work.mkdir()
    done = sandbox.run([sys.executable, "-c", "import shared_mod; print(shared_mod.VALUE)"], work)
    assert done.stdout.strip() == "7", done.stderr


@needs_bwrap
def test_sandbox_limits_time_and_memory(tmp_path):
    rc, _ = _run("while True: pass", tmp_path, cpu_s=2)
    assert rc == 128 + 24  # SIGXCPU: the CPU-time limit
    rc, out = _run("x = bytearray(3 << 30)", tmp_path, memory_mb=1024)
    assert rc == 1 and "MemoryError" in out
    with pytest.raises(sandbox.subprocess.TimeoutExpired):
        sandbox.run([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, sandbox.Limits(), timeout=2)


def test_grading_refuses_without_the_sandbox(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="ensure_bubblewrap.sh.*--unsafe"):
        grading.grade(tmp_path / "submissions", course=tmp_path / "course")
    assert grading.main([str(tmp_path), "--course", str(tmp_path / "course")]) == 2
    assert "bubblewrap" in capsys.readouterr().err


def test_kernel_launcher_refuses_a_shared_folder(tmp_path):
    with pytest.raises(sandbox.SandboxUnavailable, match="shared folder"):
        sandbox.check_private_folder(Path("/tmp").resolve(), tmp_path / "alice" / ASSIGNMENT)
    with pytest.raises(sandbox.SandboxUnavailable, match="shared folder"):
        sandbox.check_private_folder(tmp_path, tmp_path / "autograded" / "alice" / ASSIGNMENT)
    sandbox.check_private_folder(tmp_path / "kernel_x", tmp_path / "autograded" / "alice" / ASSIGNMENT)


def test_reset_ipython_removes_the_transformers_a_learner_registered():
    from IPython.core.interactiveshell import InteractiveShell

    from course_utils.exercise_grading import reset_ipython

    shell = InteractiveShell.instance()
    try:
        shell.input_transformers_cleanup.append(lambda lines: [])  # empties every cell
        shell.input_transformers_post.append(lambda lines: ["ran = 'rewritten'\n"])
        shell.run_cell("ran = 'as written'")
        assert shell.user_ns.get("ran") != "as written"
        assert reset_ipython() is True
        shell.run_cell("ran = 'as written'")
        assert shell.user_ns["ran"] == "as written"
    finally:
        InteractiveShell.clear_instance()
    assert reset_ipython() is False  # outside IPython there is nothing to reset


def test_course_settings_are_written_once_and_checked(tmp_path):
    path = course_settings.ensure(tmp_path)
    assert course_settings.load(tmp_path) == course_settings.CourseSettings()
    path.write_text(path.read_text().replace("# alice = \"Alice Liddell\"", "alice = \"Alice Liddell\"")
                    .replace("# 01_detection_basics = \"2027-02-15 23:59\"", "01_detection_basics = \"2027-02-15 23:59\""))
    course_settings.ensure(tmp_path)
    nbb.write_config(tmp_path)  # what make student does: the teacher's edits survive
    settings = course_settings.load(tmp_path)
    assert settings.roster == {"alice": "Alice Liddell"}
    assert settings.due[ASSIGNMENT].isoformat() == "2027-02-15T23:59:00+00:00"
    for good, kept in (('"none"', 1.0), ('"zero"', 0.0), ("0.25", 0.75)):
        (tmp_path / "ok").mkdir(exist_ok=True)
        (tmp_path / "ok" / course_settings.FILE).write_text(path.read_text().replace('late_penalty = "none"', f"late_penalty = {good}"))
        assert course_settings.load(tmp_path / "ok").late_kept == kept
        assert "LateFraction" in nbb.write_config(tmp_path / "ok").read_text() or good != "0.25"
    for bad, message in [("jobs = -1", "jobs = -1"), ("late_penalty = \"half\"", "late_penalty = 'half'"),
                         ("late_penalty = 1.5", "late_penalty = 1.5"),
                         ("cell_timeout_s = 0", "cell_timeout_s=0"), ("memory_mb = 10", "memory_mb=10")]:
        key = bad.split(" = ")[0]
        text = "\n".join(bad if line.startswith(key + " =") else line for line in path.read_text().splitlines())
        (tmp_path / "bad").mkdir(exist_ok=True)
        (tmp_path / "bad" / course_settings.FILE).write_text(text)
        with pytest.raises(course_settings.SettingsError, match=message.replace("(", r"\(")):
            course_settings.load(tmp_path / "bad")


def _snapshot() -> dict[str, str]:
    """sha256 of every file the course ships (everything a student could damage), by path."""
    roots = [REPO / d for d in ("course_utils", "data", "docs", "benchmarks", "solutions", "notebooks", "classroom")]
    files = [p for r in roots for p in r.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    files += [p for p in REPO.iterdir() if p.is_file()]
    return {str(p.relative_to(REPO)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _grades(path: Path) -> dict[tuple[str, str, str], tuple[float, str, str]]:
    with open(path) as f:
        return {(r["student"], r["notebook"], r["exercise"]): (float(r["points"]) if r["points"] else None, r["status"], r["reason"]) for r in csv.DictReader(f)}


DUE = "2026-03-01 12:00"  # the hostile class's due date; the first run's submissions carry no timestamp


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """The trial class and the hostile class of notebook 01, graded once: (course, made, csv, outcomes, unchanged)."""
    if not _sandbox_works():
        pytest.skip("bubblewrap missing or unable to create namespaces here")
    tmp_path = tmp_path_factory.mktemp("hostile")
    course, submissions = tmp_path / "course", tmp_path / "submitted"
    course_settings.ensure(course)
    toml = course / course_settings.FILE
    toml.write_text(toml.read_text().replace("cell_timeout_s = 300", "cell_timeout_s = 30")
                    .replace("notebook_timeout_s = 900", "notebook_timeout_s = 300")
                    .replace('late_penalty = "none"', 'late_penalty = 0.25')
                    .replace(f'# {ASSIGNMENT} = "2027-02-15 23:59"', f'{ASSIGNMENT} = "{DUE}"'))
    assert course_settings.load(course).due[ASSIGNMENT].year == 2026
    made = nbb.student(course, [ASSIGNMENT])
    make_class(course, submissions, [ASSIGNMENT])
    make_hostile_class(course, submissions)
    before = _snapshot()
    csv_path, outcomes = grading.grade(submissions, course=course, jobs=2, progress=False)
    return course, made, csv_path, outcomes, _snapshot() == before


@needs_bwrap
@pytest.mark.slow
def test_a_hostile_class(hostile, tmp_path):
    course, made, csv_path, outcomes, unchanged = hostile
    assert unchanged, "a submission changed the course's files"
    assert not (REPO / "PWNED.txt").exists()
    grades = _grades(csv_path)
    exercises = [ex.name.removeprefix("my_") for ex in made[ASSIGNMENT]]
    for who in STUDENTS:
        for ex in exercises:
            assert grades[who, ASSIGNMENT, ex][0] == expected_points(who, ASSIGNMENT, ex), (who, ex)
    for who in HOSTILE:
        assert all(grades[who, ASSIGNMENT, ex][0] == 0 for ex in exercises), who
    by = {o.student: o for o in outcomes}
    assert by["broken"].status == "failed" and "not a valid notebook" in by["broken"].reason
    assert by["exiter"].status == "failed" and "kernel died" in by["exiter"].reason
    assert by["looper"].status == "graded" and "time limit" in by["looper"].reason
    assert all(by[w].status == "graded" for w in HOSTILE.keys() - {"exiter", "looper"} | set(STUDENTS))
    expected_flags = {"rebinder": "rebinds a check", "patcher": "changes the course's checks", "liar": "tensor subclass",
                      "blanker": "changes how IPython runs cells", "delegator": "uses the reference",
                      "peeker": "refers to the solutions", "exiter": "ends the kernel"}
    for who, flag in expected_flags.items():
        assert flag in by[who].flags, (who, by[who].flags)
    # The reset cell before each test cell removed the blanker's transformer: its test cells ran as
    # written (and met its unanswered stubs); the eraser also erased the reset cells, so its test
    # cells printed no token.
    assert "did not run its check" not in by["blanker"].flags, by["blanker"].flags
    assert "NotImplementedError" in str([c.get("outputs") for c in nbformat.read(
        course / "autograded" / "blanker" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4).cells])
    assert "did not run its check" in by["eraser"].flags, by["eraser"].flags
    assert all(not by[w].flags for w in STUDENTS), [(w, by[w].flags) for w in STUDENTS]
    with sqlite3.connect(course / "gradebook.db") as db:
        assert db.execute("select count(*) from grade where manual_score is not null").fetchone()[0] == 0
    graded = nbformat.read(course / "autograded" / "gradebook" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    outputs = str([c.get("outputs") for c in graded.cells])
    assert "refused" in outputs and "wrote" not in outputs, "the gradebook student reached a gradebook"
    peeked = nbformat.read(course / "autograded" / "peeker" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    assert "ex01" not in str([c.get("outputs") for c in peeked.cells]), "solutions/ is visible in the sandbox"

    # A second run with two more students keeps every earlier grade and adds theirs: dora submitted
    # (nbgrader's timestamp.txt) before the due date in course.toml, erin after it, and
    # late_penalty = 0.25 there takes a quarter off each of erin's right answers.
    late = tmp_path / "late"
    source = nbformat.read(course / "source" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb", as_version=4)
    for who, stamp in (("dora", "2026-03-01 11:00:00.000000 UTC"), ("erin", "2026-03-01 14:30:00.000000 UTC")):
        (late / who / ASSIGNMENT).mkdir(parents=True)
        nbformat.write(source, late / who / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
        (late / who / ASSIGNMENT / "timestamp.txt").write_text(stamp)
    csv_path, outcomes = grading.grade(late, course=course, jobs=2, progress=False)
    again = _grades(csv_path)
    assert {k: v for k, v in again.items() if k[0] not in ("dora", "erin")} == grades
    assert all(again["dora", ASSIGNMENT, ex][:3] == (1, "graded", "") for ex in exercises)
    assert all(again["erin", ASSIGNMENT, ex][:3] == (0.75, "graded", "late by 2.5 h (25% off)") for ex in exercises)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:  # nbgrader's own record agrees (formgrader shows it)
        late_nb = gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "erin")
        assert late_nb.late_submission_penalty == pytest.approx(0.25 * late_nb.score)
        assert not gb.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, "dora").late_submission_penalty
    with open(course / "grading_log.csv") as f:
        assert len(list(csv.DictReader(f))) == len(STUDENTS) + len(HOSTILE) + 1 + 2


def test_class_report_counts_passes_and_the_most_common_failure(tmp_path):
    from classroom import class_report

    course = tmp_path / "course"
    rows = [["alice", ASSIGNMENT, "nms", 1.0], ["bob", ASSIGNMENT, "nms", 0.0], ["carol", ASSIGNMENT, "nms", 0.0],
            ["dora", ASSIGNMENT, "nms", 0.0]]
    course.mkdir()
    with open(course / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(grading.GRADES_HEADER)
        for student, notebook, exercise, points in rows:
            status = "failed" if student == "dora" else "graded"
            writer.writerow([student, notebook, exercise, points, 1.0, status, "", ""])
    for student, kept in (("bob", 40), ("carol", 38)):  # the same mistake on different inputs: one message
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", metadata={"nbgrader": {"grade_id": "nms_test"}})])
        nb.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text=f"✗ Not yet: you kept {kept} boxes, the reference keeps 36.\n")]
        (course / "autograded" / student / ASSIGNMENT).mkdir(parents=True)
        nbformat.write(nb, course / "autograded" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    [stats] = class_report.collect(course)
    assert (stats.graded, stats.passed, stats.failed_to_grade) == (3, 1, 1)
    assert stats.most_common() == ("you kept # boxes, the reference keeps #.", 2)
    assert class_report.main(["--course", str(course)]) == 0
    assert "1 / 3 (33%)" in (course / "class_report.md").read_text() and (course / "class_report.png").stat().st_size > 1000
    assert class_report.main(["--course", str(tmp_path / "nothing")]) == 2


@needs_bwrap
@pytest.mark.slow
def test_feedback_pages_open_offline_with_the_check_messages(hostile):
    """make feedback for three students, opened in headless Chromium with every network request refused."""
    from helpers import ARTIFACTS, launch_chromium, require_chromium

    from classroom import feedback

    require_chromium()
    playwright = pytest.importorskip("playwright.sync_api")
    course = hostile[0]
    pages = {p.parent.parent.name: p for p in feedback.generate(course, [ASSIGNMENT])}
    assert {"alice", "bob", "carol"} <= set(pages)
    assert all(feedback.CDN_MATHJAX not in p.read_text() for p in pages.values())
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    requests = []
    with playwright.sync_playwright() as pw:
        browser, page = launch_chromium(pw)
        page.route("http*://**", lambda route: (requests.append(route.request.url), route.abort()))
        for who, marker in (("alice", "✓ Passed"), ("bob", "NotImplementedError"), ("carol", "✗ Not yet")):
            page.goto(pages[who].as_uri())
            page.wait_for_function("window.MathJax !== undefined", timeout=20_000)  # the local copy loaded
            assert marker in page.inner_text("body"), who
            page.screenshot(path=str(ARTIFACTS / f"feedback_{who}.png"), full_page=False)
        browser.close()
    assert not requests, f"a feedback page asked the network for {requests[:3]}"


@needs_bwrap
@pytest.mark.slow
def test_a_written_answer_waits_for_the_teacher_and_then_counts(tmp_path):
    """Notebook 09's open exercise: autograding leaves it "to grade by hand"; a score given in the
    gradebook (as formgrader does) reaches grades.csv, and the checked exercises are untouched. The
    submission sits where ``nbgrader collect`` puts it (``course/submitted``): graded in place, kept."""
    from nbgrader.api import Gradebook

    assignment = "09_integer_inference"
    course = tmp_path / "course"
    submissions = course / "submitted"  # as collected from the exchange (python -m classroom.grading --collected)
    nbb.student(course, [assignment])
    (submissions / "alice" / assignment).mkdir(parents=True)
    source = nbformat.read(course / "source" / assignment / f"{assignment}.ipynb", as_version=4)
    answer = next(c for c in source.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "written_exercise_3")
    answer.source = "Transpose takes most of the time outside QLinearConv; a channels-last export would remove it."
    nbformat.write(source, submissions / "alice" / assignment / f"{assignment}.ipynb")
    csv_path, outcomes = grading.grade(submissions, course=course, jobs=1, progress=False)
    assert "channels-last" in (submissions / "alice" / assignment / f"{assignment}.ipynb").read_text()
    rows = _grades(csv_path)
    assert rows["alice", assignment, "written_exercise_3"][1:] == ("to grade by hand", "a written answer: score it in formgrader")
    assert all(v[0] == 1.0 for k, v in rows.items() if k[2] != "written_exercise_3")
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        grade = gb.find_grade("written_exercise_3", assignment, assignment, "alice")
        grade.manual_score = 1.5
        gb.db.commit()
    assert grading.refresh_written(course) == 1
    assert _grades(csv_path)["alice", assignment, "written_exercise_3"] == (1.5, "graded", "")


@needs_bwrap
def test_a_submission_from_outside_the_roster_is_reported_not_graded(tmp_path):
    course, submissions = tmp_path / "course", tmp_path / "submitted"
    course_settings.ensure(course)
    toml = course / course_settings.FILE
    toml.write_text(toml.read_text().replace('# alice = "Alice Liddell"', 'alice = "Alice Liddell"'))
    (submissions / "mallory" / ASSIGNMENT).mkdir(parents=True)
    (submissions / "mallory" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb").write_text("{}")
    csv_path, [outcome] = grading.grade(submissions, course=course, progress=False)
    assert (outcome.student, outcome.status, outcome.reason) == ("mallory", "skipped", "not on the roster in course.toml")
    assert _grades(csv_path) == {}
    assert not (course / "submitted" / "mallory").exists()


def test_every_student_is_in_the_gradebook_before_parallel_workers_grade_them(tmp_path, monkeypatch):
    """Two workers grading one new student's notebooks at once both used to insert the student, and the second
    notebook failed ("UNIQUE constraint failed: student.id"): grade() now creates every student first."""
    from nbgrader.api import Gradebook

    monkeypatch.setenv("PATH", nbb.nbgrader_env()["PATH"])  # Gradebook runs alembic
    settings = course_settings.CourseSettings()
    grading._sync_gradebook(tmp_path, settings, [], ["alice", "bob"])
    grading._sync_gradebook(tmp_path, settings, [], ["alice", "carol"])  # again, with one already there: no error
    with Gradebook(f"sqlite:///{tmp_path / 'gradebook.db'}") as gb:
        assert sorted(s.id for s in gb.students) == ["alice", "bob", "carol"]
