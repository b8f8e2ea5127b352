"""The nbgrader release and autograding built by classroom/nbgrader_build.py.

One source of truth: the release is generated from the committed notebooks and solutions/, so the
static tests (on every notebook) fail when a solution and its notebook's stub drift apart, and when
any solution line leaks into what students get. Sandboxed autograding of a class: tests/test_grading.py.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbgrader")

from classroom import nbgrader_build as nbb  # noqa: E402
from classroom.trial import STUDENTS, WRONG, expected_points, make_class  # noqa: E402

def _normalise(source: str) -> str:
    """Cell text without trailing spaces and blank lines (the test cell is joined back with one newline)."""
    return "\n".join(line.rstrip() for line in source.splitlines() if line.strip())


def _merged_cells(nb) -> dict[int, str]:
    """The release's cells joined back into the committed notebook's cells (by their index), the
    test cell's ``assert graded("check_x", name, token), ...`` turned back into ``check_x(name)``."""
    merged: dict[int, list[str]] = {}
    for cell in nb.cells:
        info = cell.metadata["classroom"]
        source = cell.source
        if info["part"] == "written":  # a cell of its own for the written answer, not in the notebook
            continue
        if info["part"] == "test":
            check, name = re.search(r'assert graded\("(check_\w+)", (\w+), "__GRADING_TOKEN__"\), ', source).groups()
            source = f"{check}({name})"
        merged.setdefault(info["cell"], []).append(source)
    return {i: "\n".join(parts) for i, parts in merged.items()}


@pytest.fixture(scope="module")
def release(tmp_path_factory) -> tuple[Path, dict]:
    course = tmp_path_factory.mktemp("course")
    made = nbb.student(course)
    return course, made


def test_every_notebook_with_exercises_is_an_assignment(release):
    course, made = release
    assert sorted(made) == nbb.assignments()
    assert len(made) == 12
    for assignment, exercises in made.items():
        assert exercises, f"{assignment}: no exercise found"
        nb = nbformat.read(course / "release" / assignment / f"{assignment}.ipynb", as_version=4)
        tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") and c.cell_type == "code"]
        assert len(tests) == len(exercises)
        assert all(c.metadata.nbgrader["locked"] and c.metadata.nbgrader["points"] == 1 for c in tests)
        ids = [c.metadata.nbgrader["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
        assert len(ids) == len(set(ids)), f"{assignment}: grade ids repeat"


def test_written_exercises_get_a_manually_graded_answer_cell(release):
    """Each discussion or open exercise (no check) is followed by a markdown answer cell that formgrader
    scores by hand, worth nbb.WRITTEN_POINTS; docs/teaching.md has a rubric for each."""
    course, made = release
    written = {}
    for assignment in made:
        nb = nbformat.read(course / "release" / assignment / f"{assignment}.ipynb", as_version=4)
        for i, cell in enumerate(nb.cells):
            meta = cell.metadata.get("nbgrader", {})
            if cell.cell_type == "markdown" and meta.get("grade"):
                assert meta["solution"] and not meta["locked"] and meta["points"] == nbb.WRITTEN_POINTS
                assert nbb.WRITTEN.search(nb.cells[i - 1].source), f"{assignment}: an answer cell after no exercise"
                assert cell.source == "YOUR ANSWER HERE"
                written.setdefault(assignment, []).append(meta["grade_id"])
    assert written == {"06_knowledge_distillation": ["written_exercise_3"], "07_pruning": ["written_exercise_3"],
                       "09_integer_inference": ["written_exercise_3"], "10_your_own_data": ["written_exercise_2"],
                       "11_when_int8_goes_wrong": ["written_exercise_3"]}
    teaching = (nbb.REPO / "docs" / "teaching.md").read_text(encoding="utf-8")
    for assignment, ids in written.items():
        for grade_id in ids:
            assert f"{assignment}, Exercise {grade_id.rsplit('_', 1)[1]}" in teaching, f"no rubric for {assignment} {grade_id}"


def test_no_solution_text_in_the_release(release):
    course, made = release
    for assignment, exercises in made.items():
        released = nbformat.read(course / "release" / assignment / f"{assignment}.ipynb", as_version=4)
        source = nbformat.read(course / "source" / assignment / f"{assignment}.ipynb", as_version=4)
        text = {line.strip() for cell in released.cells for line in cell.source.splitlines()}
        assert "### BEGIN SOLUTION" in {line.strip() for cell in source.cells for line in cell.source.splitlines()}
        assert "### BEGIN SOLUTION" not in text
        # A line the committed notebook itself shows (01 computes `tp = np.cumsum(is_tp)` in a demo
        # cell) is no leak; every other solution line must be absent.
        committed = nbformat.read(nbb.NOTEBOOKS / f"{assignment}.ipynb", as_version=4)
        shown = {line.strip() for cell in committed.cells for line in cell.source.splitlines()}
        checked = 0
        for ex in exercises:
            for line in ex.solution_lines:
                code = line.strip()
                if code and not code.startswith(("from ", "import ", "#")) and code not in shown:
                    assert code not in text, f"{assignment}/{ex.name}: the solution line {code!r} is in the release"
                    checked += 1
        assert checked, f"{assignment}: every solution line is already in the notebook"


def test_release_is_the_committed_notebook(release):
    """The student release's cells are the committed notebook's cells (stubs included), less the
    sentences that point to ``solutions/`` or to a reference's source (``nbb.student_text``)."""
    course, made = release
    dropped = 0
    for assignment in made:
        committed = nbformat.read(nbb.NOTEBOOKS / f"{assignment}.ipynb", as_version=4)
        nb = nbformat.read(course / "release" / assignment / f"{assignment}.ipynb", as_version=4)
        merged = _merged_cells(nb)
        assert sorted(merged) == list(range(len(committed.cells)))
        for i, cell in enumerate(committed.cells):
            expected = nbb.student_text(cell.source) if cell.cell_type == "markdown" else cell.source
            dropped += expected != cell.source
            assert _normalise(merged[i]) == _normalise(expected), f"{assignment}, cell {i} differs from the notebook"
        text = "\n".join(c.source for c in nb.cells)
        assert "solutions/" not in text and "solutions file" not in text and "??" not in text, assignment
    assert dropped >= len(made), "every notebook names its solutions file; the release must not"


def test_student_text_drops_only_the_sentences_about_solutions():
    text = ("Complete `f`. Once you pass, `box_iou??` shows the course's. Solutions: `solutions/ex01.py`.\n"
            "  * Keep this. And this one?\nSolutions: `solutions/ex04.py`.\n$x^2$ stays.\n"
            "A plan beats it by 5 points (one is in the solutions file). Score it once.")
    assert nbb.student_text(text) == ("Complete `f`.\n  * Keep this. And this one?\n$x^2$ stays.\n"
                                      "A plan beats it by 5 points. Score it once.")


def test_a_drifted_solution_is_caught(tmp_path, monkeypatch):
    """A solution that lost the function a notebook's stub needs is an error naming both."""
    solutions = tmp_path / "solutions"
    shutil.copytree(nbb.SOLUTIONS, solutions)
    path = solutions / "ex08_capstone.py"
    path.write_text(path.read_text().replace("def speedup(", "def speed_up("))
    monkeypatch.setattr(nbb, "SOLUTIONS", solutions)
    monkeypatch.setattr(nbb, "REPO", tmp_path.parent)
    with pytest.raises(nbb.ClassroomError, match="speedup"):
        nbb.build_source("08_capstone", tmp_path / "out.ipynb")


def test_solution_cell_holds_the_solution_body(tmp_path):
    exercises = nbb.build_source("00_setup_and_tour", tmp_path / "00.ipynb")
    box_area = next(e for e in exercises if e.name == "box_area")
    assert box_area.solution_lines == ["return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])"]
    nb = nbformat.read(tmp_path / "00.ipynb", as_version=4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "box_area_solution")
    assert "    ### BEGIN SOLUTION\n    return (boxes[:, 2]" in cell.source
    assert "raise NotImplementedError" not in cell.source


@pytest.mark.parametrize("layout", ["file", "flat", "unknown"])
def test_wrong_submission_layout_is_explained(tmp_path, layout):
    if layout == "file":
        (tmp_path / "01_detection_basics.ipynb").write_text("{}")
        expected = "a file where a student's folder should be"
    elif layout == "flat":
        (tmp_path / "alice").mkdir()
        (tmp_path / "alice" / "01_detection_basics.ipynb").write_text("{}")
        expected = "is not an assignment"
    else:
        (tmp_path / "alice" / "lab1").mkdir(parents=True)
        expected = "'lab1' is not an assignment"
    with pytest.raises(nbb.ClassroomError, match=expected) as err:
        nbb.read_layout(tmp_path, nbb.assignments())
    assert "<student>/<assignment>/<assignment>.ipynb" in str(err.value)


@pytest.mark.parametrize("assignment", sorted(WRONG))
def test_trial_class_wrong_answer_fails_and_reference_passes(release, tmp_path, assignment):
    """Without executing the notebooks: the solution cell and its test cell alone (with torch, F, nn and
    numpy, course_utils' public API and its checks), alice's passes and carol's typical wrong answer is rejected by its check."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    import course_utils
    from course_utils import exercises

    course, _ = release
    make_class(course, tmp_path, [assignment])
    exercise = WRONG[assignment][0]
    outcome = {}
    for who in ("alice", "carol"):
        nb = nbformat.read(tmp_path / who / assignment / f"{assignment}.ipynb", as_version=4)
        cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in nb.cells}
        namespace = {"torch": torch, "F": F, "nn": nn, "np": np, **{k: getattr(course_utils, k) for k in course_utils.__all__},
                     **{k: v for k, v in vars(exercises).items() if k.startswith("check_")}}
        exec(cells[f"{exercise}_solution"], namespace)
        try:
            exec(cells[f"{exercise}_test"], namespace)
            outcome[who] = "passed"
        except AssertionError:
            outcome[who] = "failed"
    assert outcome == {"alice": "passed", "carol": "failed"}, f"{assignment}/{exercise}: {outcome}"
    carol = nbformat.read(tmp_path / "carol" / assignment / f"{assignment}.ipynb", as_version=4)
    alice = nbformat.read(tmp_path / "alice" / assignment / f"{assignment}.ipynb", as_version=4)
    changed = [a.metadata.get("nbgrader", {}).get("grade_id") for a, c in zip(alice.cells, carol.cells) if a.source != c.source]
    assert changed == [f"{exercise}_solution"], "carol's notebook must differ in her one wrong answer only"
    assert tmp_path.joinpath("bob", assignment, f"{assignment}.ipynb").read_bytes() == \
        course.joinpath("release", assignment, f"{assignment}.ipynb").read_bytes()


def test_trial_class_refuses_what_it_cannot_mark(tmp_path):
    with pytest.raises(ValueError, match="no wrong answer for \\['99_new'\\]"):
        make_class(tmp_path, tmp_path / "s", ["99_new"])
    with pytest.raises(ValueError, match="not in the trial class"):
        expected_points("dave", "01_detection_basics", "nms")
    assert sorted(WRONG) == nbb.assignments(), "every assignment needs a wrong answer in classroom.trial.WRONG"
