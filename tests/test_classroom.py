"""The nbgrader release and autograding built by classroom/nbgrader_build.py.

One source of truth: the release is generated from the committed notebooks and solutions/, so the
static tests (on every notebook) fail when a solution and its notebook's stub drift apart, and when
any solution line leaks into what students get. The autograding tests execute the two cheapest
notebooks with exercises for three fake students.
"""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbgrader")

from classroom import nbgrader_build as nbb  # noqa: E402

GRADED = ["01_detection_basics", "09_integer_inference"]  # ~11 s and ~13 s to execute
def _normalise(source: str) -> str:
    """Cell text without trailing spaces and blank lines (the test cell is joined back with one newline)."""
    return "\n".join(line.rstrip() for line in source.splitlines() if line.strip())


def _merged_cells(nb) -> dict[int, str]:
    """The release's cells joined back into the committed notebook's cells (by their index), the
    test cell's ``assert check_x(name), ...`` turned back into ``check_x(name)``."""
    merged: dict[int, list[str]] = {}
    for cell in nb.cells:
        info = cell.metadata["classroom"]
        source = cell.source
        if info["part"] == "test":
            source = re.match(r"assert (check_\w+\(\w+\)), ", source).group(1)
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
    assert len(made) == 11
    for assignment, exercises in made.items():
        assert exercises, f"{assignment}: no exercise found"
        nb = nbformat.read(course / "release" / assignment / f"{assignment}.ipynb", as_version=4)
        tests = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")]
        assert len(tests) == len(exercises)
        assert all(c.metadata.nbgrader["locked"] and c.metadata.nbgrader["points"] == 1 for c in tests)
        ids = [c.metadata.nbgrader["grade_id"] for c in nb.cells if "nbgrader" in c.metadata]
        assert len(ids) == len(set(ids)), f"{assignment}: grade ids repeat"


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
    """The student release's cells are the committed notebook's cells (stubs included)."""
    course, made = release
    for assignment in made:
        committed = nbformat.read(nbb.NOTEBOOKS / f"{assignment}.ipynb", as_version=4)
        nb = nbformat.read(course / "release" / assignment / f"{assignment}.ipynb", as_version=4)
        merged = _merged_cells(nb)
        assert sorted(merged) == list(range(len(committed.cells)))
        for i, cell in enumerate(committed.cells):
            assert _normalise(merged[i]) == _normalise(cell.source), f"{assignment}, cell {i} differs from the notebook"


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
        nbb.grade(tmp_path, course=tmp_path / "course")
    assert "<student>/<assignment>/<assignment>.ipynb" in str(err.value)


WRONG = {  # one wrong answer per graded notebook: (exercise, broken solution body)
    "01_detection_basics": ("nms", "return torch.arange(len(boxes))"),
    "09_integer_inference": ("int32_bias", "return bias.to(torch.int32)"),
}


def make_class(release_dir: Path, source_dir: Path, submissions: Path) -> None:
    """alice submits the reference solutions, bob the untouched release, carol one wrong answer per notebook."""
    for assignment in GRADED:
        name = f"{assignment}.ipynb"
        for student in ("alice", "bob", "carol"):
            (submissions / student / assignment).mkdir(parents=True)
        src = nbformat.read(source_dir / assignment / name, as_version=4)
        nbformat.write(src, submissions / "alice" / assignment / name)
        shutil.copy(release_dir / assignment / name, submissions / "bob" / assignment / name)
        exercise, body = WRONG[assignment]
        for cell in src.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == f"{exercise}_solution":
                cell.source = re.sub(r"### BEGIN SOLUTION.*### END SOLUTION", body, cell.source, flags=re.S)
        nbformat.write(src, submissions / "carol" / assignment / name)


@pytest.mark.slow
def test_autograde_a_class(release, tmp_path):
    course, made = release
    submissions = tmp_path / "submitted"
    make_class(course / "release", course / "source", submissions)
    csv_path = nbb.grade(submissions, course=tmp_path / "course")
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["student", "notebook", "exercise", "points", "max_points"]
    n = sum(len(made[a]) for a in GRADED)
    assert len(rows) == 3 * n
    points = {(r["student"], r["notebook"], r["exercise"]): float(r["points"]) for r in rows}
    assert all(float(r["max_points"]) == 1 for r in rows)
    for assignment in GRADED:
        for ex in made[assignment]:
            key = ex.name.removeprefix("my_")
            assert points["alice", assignment, key] == 1, f"alice's reference solution failed {assignment}/{key}"
            assert points["bob", assignment, key] == 0, f"the untouched release scored on {assignment}/{key}"
            expected = 0 if key == WRONG[assignment][0] else 1
            assert points["carol", assignment, key] == expected, f"carol, {assignment}/{key}"
