"""Every notebook has a text source beside it (jupytext, percent format) holding the same cells.

``notebooks/NN_name.ipynb`` is the executed notebook learners open; ``notebooks/NN_name.py``
is the same cells as plain Python (``# %%`` code cells, ``# %% [markdown]`` text cells) that
reviewers read and ``git diff`` shows. ``make sync`` regenerates every ``.py`` from its
notebook (the pairing is set in ``jupytext.toml``). This test fails when a pair differs in any
cell's type or source (outputs and metadata are not compared), when one side is missing, and
checks on a scratch copy that it notices a change on either side.
"""

from __future__ import annotations

import fnmatch
import shutil
import tomllib
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
FIX = "run `make sync` (or `jupytext --to py:percent notebooks/NN_name.ipynb`) and commit both files"


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, tuple[str, ...]]]:
    # Trailing newlines of a cell have no place in the text format (jupytext drops them): not compared.
    # Tags are: nbval's (nbval-check-output, nbval-ignore-output) decide what the tests compare.
    return [(cell.cell_type, cell.source.rstrip("\n"), tuple(cell.metadata.get("tags", []))) for cell in nb.cells]


def _first_difference(a: str, b: str) -> str:
    for n, (line_a, line_b) in enumerate(zip(a.splitlines(), b.splitlines()), start=1):
        if line_a != line_b:
            return f"line {n}: notebook {line_a[:70]!r}, text {line_b[:70]!r}"
    return f"notebook has {len(a.splitlines())} lines, text {len(b.splitlines())}"


def pair_differences(notebook: Path, text: Path) -> list[str]:
    """What differs between a notebook and its text source (empty: in sync)."""
    if not text.exists():
        return [f"{text.name} is missing"]
    from_ipynb = _cells(nbformat.read(notebook, as_version=4))
    from_text = _cells(jupytext.read(text, fmt="py:percent"))
    problems = []
    if len(from_ipynb) != len(from_text):
        problems.append(f"{notebook.name} has {len(from_ipynb)} cells, {text.name} has {len(from_text)}")
    for i, (a, b) in enumerate(zip(from_ipynb, from_text)):
        if a != b:
            if a[0] != b[0]:
                problems.append(f"cell {i} differs in type: {a[0]} in the notebook, {b[0]} in the text")
            elif a[2] != b[2]:
                problems.append(f"cell {i} differs in tags: {list(a[2])} in the notebook, {list(b[2])} in the text")
            else:
                problems.append(f"cell {i} ({a[0]}) differs in source: {_first_difference(a[1], b[1])}")
            if len(problems) >= 5:
                break
    return problems


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 11


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_text_source_matches_notebook(notebook):
    problems = pair_differences(notebook, notebook.with_suffix(".py"))
    assert not problems, f"{notebook.name} and its text source are out of sync -- {FIX}:\n" + "\n".join(problems)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_names_its_kernel(notebook):
    """JupyterLab, nbgrader and the slide builders read the kernelspec; a notebook made from its text source alone
    has none (open it, pick the Python 3 kernel and save, or copy another notebook's metadata)."""
    import nbformat

    kernelspec = nbformat.read(notebook, as_version=4).metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3" and kernelspec.get("language") == "python", \
        f"{notebook.name}: kernelspec {kernelspec!r}, expected the python3 kernel"


def test_every_text_source_has_its_notebook():
    orphans = [p.name for p in (ROOT / "notebooks").glob("*.py") if not p.with_suffix(".ipynb").exists()]
    assert not orphans, f"text sources without a notebook (renamed or deleted notebook?): {orphans}"


def test_a_change_on_either_side_is_noticed(tmp_path):
    notebook = NOTEBOOKS[0]
    nb_copy, text_copy = tmp_path / notebook.name, tmp_path / notebook.with_suffix(".py").name
    shutil.copy(notebook, nb_copy)
    shutil.copy(notebook.with_suffix(".py"), text_copy)
    assert pair_differences(nb_copy, text_copy) == []

    nb = nbformat.read(nb_copy, as_version=4)  # edit the notebook only
    code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    nb.cells[code].source += "\nx = 1"
    nbformat.write(nb, nb_copy)
    assert any(f"cell {code} (code) differs in source" in p for p in pair_differences(nb_copy, text_copy))

    shutil.copy(notebook, nb_copy)  # edit the text only: a new cell at the end
    text_copy.write_text(text_copy.read_text() + "\n# %%\nprint('new cell')\n")
    assert any("cells" in p for p in pair_differences(nb_copy, text_copy))

    shutil.copy(notebook.with_suffix(".py"), text_copy)  # a markdown cell turned into code
    text = text_copy.read_text()
    text_copy.write_text(text.replace("# %% [markdown]", "# %%", 1))
    assert any("differs in type" in p for p in pair_differences(nb_copy, text_copy))

    shutil.copy(notebook.with_suffix(".py"), text_copy)  # a tag dropped on one side
    text = text_copy.read_text()
    assert '# %% tags=["nbval-check-output"]' in text
    text_copy.write_text(text.replace('# %% tags=["nbval-check-output"]', "# %%", 1))
    assert any("differs in tags" in p for p in pair_differences(nb_copy, text_copy))

    text_copy.unlink()
    assert pair_differences(nb_copy, text_copy) == [f"{text_copy.name} is missing"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_test_plumbing_in_the_learners_view(notebook):
    """What the tests compare is said by nbval's cell tags, not by comments a learner reads."""
    nb = nbformat.read(notebook, as_version=4)
    shown = [(i, line) for i, cell in enumerate(nb.cells) for line in cell.source.splitlines()
             if "NBVAL" in line or "test suite" in line.lower()]
    assert not shown, f"{notebook.name}: test plumbing in cells {shown[:5]}: use the tags nbval-check-output / nbval-ignore-output"
    assert any("nbval-check-output" in cell.metadata.get("tags", []) for cell in nb.cells), f"{notebook.name} checks no output"


def test_pytest_does_not_collect_text_sources_as_tests():
    """testpaths include notebooks/: its .py files must not match pytest's test-file patterns."""
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    patterns = options.get("python_files", ["test_*.py", "*_test.py"])
    patterns = patterns.split() if isinstance(patterns, str) else patterns
    collected = [p.name for p in (ROOT / "notebooks").glob("*.py") if any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]
    assert not collected, f"pytest would import these text sources as test modules: {collected}"
