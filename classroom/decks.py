"""Lecture decks a teacher can project: one idea per slide, each fitting 1280×720.

A deck is written by hand in ``classroom/decks/NN_name.md`` and takes its figures and printed tables
from the executed notebook ``notebooks/NN_name.ipynb``, so they never drift from it. Slides are
separated by a line ``---``; each opens with a heading and holds at most ``MAX_WORDS`` words of text
(formulas and code not counted), and at most one of each:

    figure: <text of the code cell>    the first PNG that cell shows
    output: <text of the code cell>    what that cell printed (at most ``MAX_OUTPUT_LINES`` lines)

``<text of the code cell>`` is a piece of the cell's source found in exactly one code cell. The
deck becomes a RISE notebook (``build/slides/decks/NN_name.ipynb``, one markdown cell per slide, the
figures as attachments) with a 1280×720 reveal.js canvas and its own style sheet
(``NN_name.css``, which jupyterlab-rise loads). ``tests/test_browser.py`` checks that every slide of
every deck fits the canvas; ``tests/test_decks.py`` that every number a deck's text quotes is in its
notebook (so a changed result cannot leave a stale slide).

    python -m classroom.decks            # every deck (make slides does it too)
"""

from __future__ import annotations

import argparse
import base64
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
DECKS = Path(__file__).resolve().parent / "decks"
NOTEBOOKS = REPO / "notebooks"
OUT = REPO / "build" / "slides" / "decks"
MAX_WORDS = 60
MAX_OUTPUT_LINES = 10
WIDTH, HEIGHT = 1280, 720

CSS = """\
/* Written by classroom/decks.py: a 1280x720 lecture deck, read from the back of a room. */
.reveal .slides section .jp-RenderedMarkdown { font-size: 28px; line-height: 1.35; }
.reveal .slides section .jp-RenderedMarkdown h1 { font-size: 56px; margin-bottom: 0.4em; }
.reveal .slides section .jp-RenderedMarkdown h2 { font-size: 40px; margin-bottom: 0.5em; }
.reveal .slides section .jp-RenderedMarkdown img { height: 400px; width: auto; max-width: 100%; object-fit: contain;
  display: block; margin: 0.3em auto; }
.reveal .slides section .jp-RenderedMarkdown pre { font-size: 20px; line-height: 1.3; margin: 0.4em 0; padding: 0.3em 0.5em;
  box-sizing: border-box; max-width: 100%; overflow: hidden; white-space: pre; }
.reveal .slides section .jp-RenderedMarkdown pre code { font-size: 20px; white-space: pre; overflow: hidden; }
.reveal .slides section .jp-RenderedMarkdown li { margin: 0.2em 0; }
"""


class DeckError(ValueError):
    """A deck that breaks its rules; the message names the deck, the slide and the fix."""


@dataclass
class Slide:
    """One slide: its heading line, its text (markdown, directives removed) and what it takes from the notebook."""

    heading: str
    text: str
    figure: str | None = None
    output: str | None = None


def parse(text: str) -> list[Slide]:
    """The slides of a deck's markdown (see the module docstring)."""
    slides = []
    for number, chunk in enumerate(re.split(r"^---\s*$", text, flags=re.M), start=1):
        lines = chunk.strip().splitlines()
        if not lines or not lines[0].startswith("#"):
            raise DeckError(f"slide {number} does not open with a heading (# or ##): {chunk.strip()[:60]!r}")
        slide = Slide(lines[0], "")
        body = []
        for line in lines[1:]:
            if (m := re.match(r"^(figure|output):\s*(.+)$", line)):
                if getattr(slide, m.group(1)) is not None:
                    raise DeckError(f"slide {number} ({lines[0]}) has two {m.group(1)} lines; one idea per slide")
                setattr(slide, m.group(1), m.group(2).strip())
            else:
                body.append(line)
        slide.text = "\n".join(body).strip()
        slides.append(slide)
    return slides


def words(slide: Slide) -> int:
    """Words of text on ``slide``: display and inline formulas and fenced code left out."""
    prose = re.sub(r"```.*?```", " ", slide.text, flags=re.S)
    prose = re.sub(r"\$\$.*?\$\$", " ", prose, flags=re.S)
    prose = re.sub(r"\$[^$]+\$", " ", prose)
    return len(re.findall(r"[\w`'’.%×≥≤→-]+", re.sub(r"[*_#>]", " ", prose)))


def _code_cell(nb: nbformat.NotebookNode, needle: str, where: str) -> nbformat.NotebookNode:
    found = [c for c in nb.cells if c.cell_type == "code" and needle in c.source]
    if len(found) != 1:
        raise DeckError(f"{where}: {needle!r} is in {len(found)} code cells of the notebook; give a piece of exactly one")
    return found[0]


def _figure(cell: nbformat.NotebookNode, where: str) -> str:
    for out in cell.get("outputs", []):
        if "image/png" in out.get("data", {}):
            return out["data"]["image/png"]
    raise DeckError(f"{where}: that cell shows no PNG figure (is the notebook executed?)")


def _printed(cell: nbformat.NotebookNode, where: str) -> str:
    text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream").rstrip()
    if not text:
        raise DeckError(f"{where}: that cell printed nothing (is the notebook executed?)")
    if len(text.splitlines()) > MAX_OUTPUT_LINES:
        raise DeckError(f"{where}: that cell printed {len(text.splitlines())} lines; a slide shows at most {MAX_OUTPUT_LINES}")
    return text


def build(deck: Path, notebook: Path) -> nbformat.NotebookNode:
    """The RISE notebook of ``deck`` with figures and printed tables from ``notebook``."""
    nb = nbformat.read(notebook, as_version=4)
    cells = []
    for number, slide in enumerate(parse(deck.read_text()), start=1):
        where = f"{deck.name}, slide {number} ({slide.heading})"
        if (n := words(slide)) > MAX_WORDS:
            raise DeckError(f"{where}: {n} words; a slide holds at most {MAX_WORDS}: split it or cut")
        source, attachments = [slide.heading, "", slide.text], {}
        if slide.output:
            source += ["", "```text", _printed(_code_cell(nb, slide.output, where), where), "```"]
        if slide.figure:
            png = _figure(_code_cell(nb, slide.figure, where), where)
            name = f"figure{number}.png"
            attachments[name] = {"image/png": png if isinstance(png, str) else base64.b64encode(png).decode()}
            source += ["", f"![]({'attachment:' + name})"]
        cell = nbformat.v4.new_markdown_cell("\n".join(source).strip() + "\n",
                                             metadata={"slideshow": {"slide_type": "slide"}})
        if attachments:
            cell.attachments = attachments
        cells.append(cell)
    out = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": nb.metadata.get("kernelspec", {}),
        "rise": {"width": WIDTH, "height": HEIGHT, "margin": 0.02, "scroll": False, "center": False,
                 "transition": "none", "enable_chalkboard": False}})
    return out


def write_decks(out: Path = OUT, decks: list[Path] | None = None) -> list[Path]:
    """Build every deck (or ``decks``) into ``out`` with its style sheet; returns the notebooks written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for deck in decks or sorted(DECKS.glob("[0-9][0-9]_*.md")):
        notebook = NOTEBOOKS / f"{deck.stem}.ipynb"
        if not notebook.exists():
            raise DeckError(f"{deck}: no notebook {notebook.relative_to(REPO)} to take figures from; name the deck after one")
        target = out / f"{deck.stem}.ipynb"
        tmp = target.with_suffix(".ipynb.tmp")
        nbformat.write(build(deck, notebook), tmp)
        tmp.replace(target)
        (out / f"{deck.stem}.css").write_text(CSS)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the decks go (default {OUT.relative_to(REPO)})")
    args = parser.parse_args(argv)
    try:
        written = write_decks(args.out)
    except DeckError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(f"{path}: {len(nbformat.read(path, as_version=4).cells)} slides")
    print("open one in JupyterLab (make lab) and press Alt+R for the slideshow")
    return 0


if __name__ == "__main__":
    sys.exit(main())
