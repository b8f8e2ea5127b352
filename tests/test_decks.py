"""Lecture decks (``classroom.decks``): their rules, and no number on a slide that its notebook does not show.

The browser check that every slide fits 1280×720 is in ``tests/test_browser.py``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from classroom import decks  # noqa: E402

DECKS = sorted(decks.DECKS.glob("[0-9][0-9]_*.md"))
NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")


def _notebook_text(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    parts = [c.source for c in nb.cells]
    parts += [o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    return "\n".join(parts)


def test_the_lecture_decks_of_04_and_08_exist_and_build(tmp_path):
    assert {d.stem for d in DECKS} >= {"04_quantization_math", "08_capstone"}
    for path in decks.write_decks(tmp_path):
        nb = nbformat.read(path, as_version=4)
        assert nb.metadata["rise"]["width"] == 1280 and nb.metadata["rise"]["height"] == 720
        assert all(c.cell_type == "markdown" and c.metadata["slideshow"]["slide_type"] == "slide" for c in nb.cells)
        assert (tmp_path / f"{path.stem}.css").exists()
        figures = sum(len(c.get("attachments", {})) for c in nb.cells)
        assert figures >= 1, f"{path.name}: a lecture deck without a single figure from its notebook"


@pytest.mark.parametrize("deck", DECKS, ids=[d.stem for d in DECKS])
def test_every_number_on_a_slide_is_in_its_notebook(deck):
    """A deck's own text may only quote numbers its notebook shows (text or output): when a result
    changes, the slide cannot keep the old one."""
    shown = set(NUMBER.findall(_notebook_text(decks.NOTEBOOKS / f"{deck.stem}.ipynb")))
    for number, slide in enumerate(decks.parse(deck.read_text()), start=1):
        quoted = set(NUMBER.findall(slide.heading + "\n" + slide.text))
        assert quoted <= shown, f"{deck.name}, slide {number}: {sorted(quoted - shown)} are not in the notebook"


def test_a_deck_that_breaks_a_rule_is_refused_with_the_slide_named(tmp_path):
    notebook = decks.NOTEBOOKS / "04_quantization_math.ipynb"
    cases = {
        "no heading here\n": "does not open with a heading",
        "## Too long\n\n" + "word " * 61: "61 words",
        "## Two figures\n\nfigure: plt.show()\nfigure: plt.show()\n": "two figure lines",
        "## Nowhere\n\nfigure: this text is in no cell\n": "in 0 code cells",
        "## Ambiguous\n\noutput: print(\n": "code cells of the notebook; give a piece of exactly one",
    }
    for text, message in cases.items():
        deck = tmp_path / "04_quantization_math.md"
        deck.write_text("# Title\n\n---\n" + text)
        with pytest.raises(decks.DeckError, match=re.escape(message)):
            decks.build(deck, notebook)
