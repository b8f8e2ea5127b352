"""Slide copies for RISE (classroom/slides.py, ``make slides``): cells split at headings, slide types set.

The copy must keep every word and output of the notebook (joined back, its markdown equals the
original's), put one slide at every heading of level 1-3 outside code blocks, and leave the committed
notebook unchanged. ``tests/test_browser.py`` opens one copy in RISE.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat
import pytest

from classroom.slides import main, mark_slides, split_at_headings, write_slides

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _headings(source: str) -> int:
    """Heading lines of level 1-3 outside fenced code (counted independently of slides.py)."""
    fenced, n = False, 0
    for line in source.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        n += (not fenced) and bool(re.match(r"#{1,3} ", line))
    return n


@pytest.mark.parametrize("source, parts", [
    ("# A\ntext", ["# A\ntext"]),
    ("note on the plot\n\n## 2. Next\nbody", ["note on the plot\n\n", "## 2. Next\nbody"]),
    ("## 1\n> ### quoted myth\n```\n# a comment in code\n```\n### 1.1\nx", ["## 1\n> ### quoted myth\n```\n# a comment in code\n```\n", "### 1.1\nx"]),
    ("#### level four stays\n##hashtag", ["#### level four stays\n##hashtag"]),
    ("", [""]),
])
def test_split_at_headings(source, parts):
    assert split_at_headings(source) == parts
    assert "".join(split_at_headings(source)) == source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_slides_keep_every_cell_and_open_one_slide_per_heading(path):
    nb = nbformat.read(path, as_version=4)
    before = copy.deepcopy(nb)
    slides = mark_slides(nb)
    assert nb == before, "mark_slides changed the notebook it was given"
    nbformat.validate(slides)
    types = [c.metadata["slideshow"]["slide_type"] for c in slides.cells]
    assert types[0] == "slide" and set(types) <= {"slide", "subslide", "-"}
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert sum(t != "-" for t in types) == sum(_headings(s) for s in markdown) + (not nb.cells[0].source.startswith("#"))
    for cell, kind in zip(slides.cells, types):
        if kind == "slide":
            assert cell.source.startswith(("# ", "## ")) or cell is slides.cells[0]
        elif kind == "subslide":
            assert cell.source.startswith("### ")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c for c in slides.cells if c.cell_type == "code"] == [
        {**c, "metadata": {**c.metadata, "slideshow": {"slide_type": "-"}}} for c in code], "code cells or outputs changed"
    joined = "".join(c.source + "\n" * (c.source != "") for c in slides.cells if c.cell_type == "markdown")
    assert re.sub(r"\s+", " ", joined) .strip() == re.sub(r"\s+", " ", "\n".join(markdown)).strip()
    assert len({c.id for c in slides.cells}) == len(slides.cells), "cell ids must stay unique"
    assert slides.metadata["rise"] == {"scroll": True}


def test_write_slides_and_its_errors(tmp_path, capsys):
    written = write_slides(NOTEBOOKS[:2], tmp_path / "out")
    assert [p.name for p in written] == [p.name for p in NOTEBOOKS[:2]]
    assert not list((tmp_path / "out").glob("*.tmp"))
    with pytest.raises(FileNotFoundError, match="no such notebook: nope.ipynb"):
        write_slides([Path("nope.ipynb")], tmp_path / "out")
    empty = nbformat.v4.new_notebook()
    with pytest.raises(ValueError, match="no cells"):
        mark_slides(empty)
    assert main(["nope.ipynb", "--out", str(tmp_path)]) == 2
    assert "error: no such notebook" in capsys.readouterr().err
