"""The student distribution (``classroom.distribution``, ``make release``): no answers in it, and it runs.

Built once for the module (about 30 s: the nbgrader release of every notebook). Checks that no
solution module, no solution function's body, no pointer to ``solutions/`` and no printout of a
graded reference's source is in it; that every release notebook runs there from top to bottom
(the only errors: the stubs' ``NotImplementedError`` and the test cells' failed asserts); and
that its ``make lab`` serves the folder on 127.0.0.1 with a token and nothing called solutions.
"""

from __future__ import annotations

import ast
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from classroom import distribution  # noqa: E402
from classroom import nbgrader_build as nbb  # noqa: E402
from classroom.hub_trial import stop_process_group  # noqa: E402
from course_utils.exercise_grading import REFERENCES  # noqa: E402

ALLOWED_ERRORS = {"NotImplementedError", "AssertionError"}  # a stub, and a test cell whose check failed


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    return distribution.build(base / "distribution", course=base / "course")


def _body_key(fn: ast.FunctionDef) -> str:
    """A function's body as ``ast.dump`` (docstring left out): equal code gives equal keys."""
    body = fn.body[1:] if (fn.body and isinstance(fn.body[0], ast.Expr)
                           and isinstance(getattr(fn.body[0], "value", None), ast.Constant)
                           and isinstance(fn.body[0].value.value, str)) else fn.body
    return ast.dump(ast.Module(body=body, type_ignores=[]))


def _functions(source: str) -> list[ast.FunctionDef]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _notebook_code(folder: Path) -> dict[str, str]:
    """The code cells of the notebooks in ``folder`` (IPython magics and shell lines left out)."""
    found = {}
    for nb_path in sorted(folder.glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                found[f"{nb_path.name} cell {i}"] = "\n".join(
                    line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
    return found


def _code_sources_of_notebooks(folder: Path) -> list[str]:
    return list(_notebook_code(folder).values())


def _code_sources(dist: Path) -> dict[str, str]:
    """Every Python source in the distribution: its .py files and its notebooks' code cells."""
    return {**{str(p.relative_to(dist)): p.read_text() for p in dist.rglob("*.py")}, **_notebook_code(dist / "notebooks")}


@pytest.mark.slow
def test_the_distribution_holds_no_solution(dist):
    assert (dist / distribution.MARK).is_file()
    assert not any("solutions" in p.parts or re.match(r"ex\d\d_\w+\.py$", p.name) for p in dist.rglob("*")), \
        "a solutions folder or module in the distribution"
    assert not (dist / "classroom").exists() and not (dist / "tests").exists() and not (dist / "docs" / "teaching.md").exists()
    assert sorted(p.stem for p in (dist / "notebooks").glob("*.ipynb")) == nbb.assignments()

    # The answers: every solution function, except code the notebooks themselves give (a class
    # exercise's __init__, say), which is in the self-study notebooks too.
    given = {_body_key(fn) for src in _code_sources_of_notebooks(ROOT / "notebooks") for fn in _functions(src)}
    solution_bodies = {}
    for sol in sorted(nbb.SOLUTIONS.glob("ex*.py")):
        for fn in _functions(sol.read_text()):
            if _body_key(fn) not in given:
                solution_bodies[_body_key(fn)] = f"{sol.name}:{fn.name}"
    assert len(solution_bodies) >= 21, solution_bodies  # at least one per checked exercise
    # The course package holds the library's own implementations (REFERENCES): students get the
    # package, and the grader scores an answer that is or calls one of them 0.
    library = {(f"course_utils/{m.removeprefix('course_utils.').replace('.', '/')}", name)
               for refs in REFERENCES.values() for m, _, name in (r.partition(":") for r in refs)}
    leaks = [(where, fn.name, solution_bodies[_body_key(fn)]) for where, src in _code_sources(dist).items()
             for fn in _functions(src) if _body_key(fn) in solution_bodies
             and not any(where in (f"{mod}.py", f"{mod}/__init__.py") and fn.name == name for mod, name in library)]
    assert not leaks, f"solution bodies found in the distribution: {leaks}"

    reference_names = {ref.partition(":")[2] for refs in REFERENCES.values() for ref in refs}
    for nb_path in sorted((dist / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(nb_path, as_version=4)
        assert "widgets" not in nb.metadata
        for cell in nb.cells:
            text = cell.source
            assert "solutions/" not in text and "solutions file" not in text and "BEGIN SOLUTION" not in text, (nb_path.name, text[:200])
            assert "??" not in text and "getsource" not in text, (nb_path.name, text[:200])
            if cell.cell_type == "code":
                assert not cell.outputs, (nb_path.name, "a code cell with outputs")
                for name in reference_names:
                    assert f"print({name}" not in text and f"{name}.__code__" not in text, (nb_path.name, name)


def _run_release_notebook(nb_path: Path, dist: Path) -> list[tuple[int, list[str], dict, str]]:
    """Execute one release notebook in its folder with the distribution's course package and one
    BLAS/OpenMP thread; returns (cell index, error names, nbgrader metadata, source) of every cell that raised."""
    from nbclient import NotebookClient

    os.environ.update(PYTHONPATH=str(dist), COURSE_STATIC_WIDGETS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                      GOMP_SPINCOUNT="1000")
    nb = nbformat.read(nb_path, as_version=4)
    NotebookClient(nb, timeout=600, allow_errors=True, kernel_name="python3",
                   resources={"metadata": {"path": str(nb_path.parent)}}).execute()
    return [(i, errors, cell.metadata.get("nbgrader", {}), cell.source[:300]) for i, cell in enumerate(nb.cells)
            if (errors := [o.ename for o in cell.get("outputs", []) if o.output_type == "error"])]


@pytest.mark.slow
def test_every_release_notebook_runs_in_the_distribution(dist):
    """Every release notebook from top to bottom in the distribution, two at a time with one thread each
    (about 5 minutes on 2 cores): the only errors are in the exercises' own cells (a stub's
    NotImplementedError, a test cell's failed assert)."""
    from concurrent.futures import ProcessPoolExecutor

    env = {**os.environ, "PYTHONPATH": str(dist)}
    where = subprocess.run([sys.executable, "-c", "import course_utils; print(course_utils.__file__)"], env=env,
                           cwd=dist / "notebooks", capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(dist), f"the notebooks would import {where}, not the distribution's copy"
    recorded = json.loads((ROOT / "benchmarks" / "results" / "autograde.json").read_text())["seconds_per_student_notebook"]
    notebooks = sorted((dist / "notebooks").glob("*.ipynb"), key=lambda p: -recorded.get(p.stem, {}).get("median", 0))
    assert len(notebooks) == len(nbb.assignments())
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = dict(zip(notebooks, pool.map(_run_release_notebook, notebooks, [dist] * len(notebooks))))
    for nb_path, failed in results.items():
        for index, errors, grade, source in failed:
            assert grade.get("solution") or grade.get("grade"), (nb_path.name, index, errors, source)
            assert set(errors) <= ALLOWED_ERRORS, (nb_path.name, index, errors, source)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as err:
        return err.code, b""
    except OSError:  # not listening (yet)
        return 0, b""


@pytest.mark.slow
def test_make_lab_in_the_distribution_serves_no_solutions(dist, tmp_path):
    """The distribution's own ``make lab`` (with this checkout's environment: ``-o`` keeps make from
    installing one) serves the distribution on 127.0.0.1 only, asks for its token, and has no solutions."""
    venv = Path(sys.prefix)
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_PORT": str(port), "JUPYTER_TOKEN": token, "JUPYTER_PORT_RETRIES": "0",
           "BROWSER": "true"}
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(["make", "-o", f"{venv}/.installed", "lab", f"VENV={venv}"], cwd=dist, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            if _get(f"{url}/api/status?token={token}")[0] == 200:
                break
            assert proc.poll() is None, (tmp_path / "lab.log").read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail(f"make lab did not serve in 60 s:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
        assert _get(f"{url}/api/contents/notebooks")[0] == 403, "the server must ask for its token"
        status, body = _get(f"{url}/api/contents?token={token}")
        assert status == 200 and b"notebooks" in body and b"solutions" not in body, body[:500]
        status, body = _get(f"{url}/api/contents/notebooks?token={token}")
        assert status == 200 and b"01_detection_basics.ipynb" in body
        for path in ("files/solutions/ex01_detection_basics.py", "api/contents/solutions",
                     "files/docs/teaching.md", "files/classroom/trial.py"):
            assert _get(f"{url}/{path}?token={token}")[0] == 404, path
        with socket.socket() as s:  # bound to 127.0.0.1 only: another of this machine's addresses is refused
            other = socket.gethostbyname(socket.gethostname())
            if other != "127.0.0.1" and not other.startswith("127."):
                assert s.connect_ex((other, port)) != 0, f"make lab also listens on {other}"
    finally:
        stop_process_group(proc, timeout=20)
        log.close()


def test_a_folder_not_made_by_the_command_is_never_replaced(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(distribution.DistributionError, match="was not made by this command"):
        distribution.build(mine, course=tmp_path / "course", only=["00_setup_and_tour"])
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not (tmp_path / "course").exists(), "refused before building anything"
