"""The student distribution: what a class gets, without the answers.

    python -m classroom.distribution [--out build/distribution] [--course build/nbgrader]   (make release)

Self-study uses the whole repository, ``solutions/`` included. A class gets this folder instead:

    notebooks/NN_name.ipynb       the nbgrader release of every notebook (``make student``): stubs
                                  to complete, locked check imports and test cells, no outputs, and
                                  no sentence pointing to ``solutions/`` or to a reference's source
    course_utils/                 the course package (the checks in ``course_utils/exercises.py``)
    data/, docs/glossary.md       what the notebooks read
    benchmarks/results/           the recorded results and checkpoints the notebooks load
    pyproject.toml, constraints.txt, environment.yml, Makefile, README.md   ``make lab`` for a student

Left out: ``solutions/``, ``classroom/`` (the grader and the trial class's wrong answers), ``tests/``,
the benchmark scripts and their grading results, ``docs/teaching.md`` (the rubrics) and the
notebooks' executed outputs. ``tests/test_distribution.py`` checks that no solution function's body,
no solution module and no printout of a graded reference is in it, and runs every notebook there.

The folder is rebuilt as a whole; an existing ``--out`` is replaced only if this command made it
(a ``.course-distribution`` file marks it), so nothing of yours is overwritten.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

from . import course_settings
from . import nbgrader_build as nbb

REPO = nbb.REPO
DEFAULT_OUT = REPO / "build" / "distribution"
MARK = ".course-distribution"  # the file that says a folder is a distribution this module built
#: copied as they are (a folder: its files that git tracks, or every file outside git)
COPIED = ("course_utils", "data", "benchmarks/results", "docs/glossary.md",
          "pyproject.toml", "constraints.txt", "environment.yml")
#: never copied, even under a copied folder: grading results and the trial class's answers
LEFT_OUT = ("benchmarks/results/autograde",)

MAKEFILE = """\
# The course, student edition.  make lab -- set up .venv and open the notebooks in JupyterLab.
PYTHON ?= python3
VENV   ?= .venv
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)

.PHONY: lab setup

$(VENV)/.installed: pyproject.toml constraints.txt
\t$(PYTHON) -m venv $(VENV)
\t$(VENV)/bin/pip install -c constraints.txt -e .
\ttouch $@

setup: $(VENV)/.installed

# Serves this folder on 127.0.0.1 only, with JupyterLab's token (printed in the terminal).
lab: setup
\tGOMP_SPINCOUNT=$${GOMP_SPINCOUNT:-1000} $(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=. \\
\t\t--LabApp.default_url=/lab/tree/notebooks/00_setup_and_tour.ipynb \\
\t\t--LabApp.news_url=None --LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate $(ROOT_FLAG)
"""

README = """\
# Efficient Detection Course — student edition

Object detectors made small and fast, measured fairly: detector basics, gradient clipping,
quantization, integer inference, distillation, pruning, int8 deployment, your own data.

    make lab

sets up a Python environment in `.venv` (about 6 GB, once) and opens notebook 00 in JupyterLab on
this computer only (the address with its token is printed in the terminal). Work through
`notebooks/` in order. Each exercise is a function to complete; the check under it says what is
still wrong. Your teacher grades the notebooks you hand in: keep the locked cells as they are.
"""


class DistributionError(ValueError):
    """A distribution that cannot be written where asked; the message names the folder and the fix."""


def _tracked(path: Path) -> list[Path]:
    """The files under ``path`` that git tracks (every file, when the repository is not a git checkout)."""
    if path.is_file():
        return [path]
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", str(path.relative_to(REPO))], cwd=REPO,
                             capture_output=True, check=True).stdout.decode()
        files = [REPO / name for name in out.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return [f for f in files if f.is_file()]


def _check_out(out: Path) -> None:
    if out.exists() and not (out / MARK).is_file():
        raise DistributionError(f"--out {out} exists and was not made by this command; choose another folder "
                                "or move that one away (nothing in it is overwritten)")


def build(out: Path = DEFAULT_OUT, course: Path = nbb.COURSE, only: list[str] | None = None) -> Path:
    """Write the student distribution to ``out`` (see the module docstring); returns ``out``.

    The release notebooks come from ``nbgrader_build.student(course, only)``, which keeps the
    course folder's gradebook, grades and settings.
    """
    out = Path(out).resolve()
    _check_out(out)
    made = nbb.student(course, only)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        for name in COPIED:
            for src in _tracked(REPO / name):
                rel = src.relative_to(REPO)
                if any(str(rel).startswith(p) for p in LEFT_OUT):
                    continue
                (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, tmp / rel)
        (tmp / "notebooks").mkdir()
        for assignment in made:
            nb = nbformat.read(Path(course) / "release" / assignment / f"{assignment}.ipynb", as_version=4)
            nbformat.write(nb, tmp / "notebooks" / f"{assignment}.ipynb")
        (tmp / "Makefile").write_text(MAKEFILE)
        (tmp / "README.md").write_text(README)
        tmp.chmod(0o755)  # mkdtemp makes it private; the class's copy is for reading
        (tmp / MARK).write_text("made by python -m classroom.distribution; replaced as a whole when run again\n")
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}-old-{os.getpid()}")
            out.rename(old)
        tmp.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where to write it (default {DEFAULT_OUT})")
    parser.add_argument("--course", type=Path, default=nbb.COURSE, help=f"the course folder (default {nbb.COURSE})")
    parser.add_argument("--only", nargs="+", choices=nbb.assignments(), help="these notebooks only (default: all)")
    args = parser.parse_args(argv)
    try:
        out = build(args.out, args.course, args.only)
    except (DistributionError, nbb.ClassroomError, course_settings.SettingsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"student distribution: {out}  ({len(list((out / 'notebooks').glob('*.ipynb')))} notebooks; "
          "hand out this folder, not the repository)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
