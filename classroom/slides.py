"""Slide copies of the notebooks for RISE (the ``jupyterlab-rise`` extension): ``make slides``.

Two kinds: these walkthrough copies (every section of a notebook, for going through it in class), and
the lecture decks of :mod:`classroom.decks` (one idea per slide, for projecting), which ``make slides``
writes too, into ``build/slides/decks/``.

A notebook becomes a slide deck through the ``slideshow.slide_type`` of each cell. This writes a copy
of each committed notebook (outputs kept, so figures show without running anything) under
``build/slides/`` with:

* a markdown cell that holds a heading further down is split there (the text before the heading, often a
  comment on the output above it, stays on the slide it belongs to);
* a markdown cell that opens with a ``#`` or ``##`` heading: ``"slide"`` (a new slide, left to right);
* a markdown cell that opens with a ``###`` heading: ``"subslide"`` (a new slide below it);
* every other cell: ``"-"`` (it continues the slide before it);

and the notebook-level RISE options ``scroll: true`` (a long slide scrolls instead of being cut off).
The committed notebooks are never changed. Open a copy in JupyterLab and press ``Alt+R`` (or the
"Render as slideshow" toolbar button); edit a cell's slide type in the property inspector.

    python -m classroom.slides                    # every notebook
    python -m classroom.slides notebooks/04_quantization_math.ipynb --out DIR
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
OUT = REPO / "build" / "slides"
_HEADING = re.compile(r"^(#{1,6})\s")


def slide_type(cell: dict) -> str:
    """RISE's slide type of one cell: ``"slide"`` for a markdown cell opening with a level-1/2 heading,
    ``"subslide"`` for level 3, ``"-"`` (continue the slide) otherwise."""
    if cell.get("cell_type") != "markdown":
        return "-"
    match = _HEADING.match("".join(cell.get("source", "")).lstrip())
    if not match:
        return "-"
    return "slide" if len(match.group(1)) <= 2 else "subslide" if len(match.group(1)) == 3 else "-"


def split_at_headings(source: str) -> list[str]:
    """Markdown ``source`` cut before every heading line of level 1-3 that is not its first line (lines
    inside fenced code blocks and quoted headings ``> ###`` are not headings); ``"".join`` of the parts
    is ``source``."""
    parts, start, fenced, offset = [], 0, False, 0
    for line in source.splitlines(keepends=True):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        elif not fenced and offset > start and re.match(r"^#{1,3}\s", line):
            parts.append(source[start:offset])
            start = offset
        offset += len(line)
    parts.append(source[start:])
    return parts


def mark_slides(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` with markdown cells split at their headings (``split_at_headings``), every cell's
    ``metadata.slideshow.slide_type`` set (the first cell always opens a slide) and
    ``metadata.rise = {"scroll": True}``; ``nb`` itself is left unchanged."""
    out = copy.deepcopy(nb)
    if not out.cells:
        raise ValueError("the notebook has no cells: there is nothing to make slides of")
    cells = []
    for cell in out.cells:
        if cell.cell_type != "markdown":
            cells.append(cell)
            continue
        parts = split_at_headings("".join(cell.source))
        for j, part in enumerate(parts):
            piece = copy.deepcopy(cell)
            piece.source = part.rstrip("\n") if j < len(parts) - 1 else part
            if j and "id" in piece:
                piece.id = f"{cell.id}-{j}"
            cells.append(piece)
    out.cells = cells
    for i, cell in enumerate(out.cells):
        cell.metadata["slideshow"] = {"slide_type": "slide" if i == 0 else slide_type(cell)}
    out.metadata["rise"] = {"scroll": True}
    return out


def write_slides(notebooks: list[Path], out: Path) -> list[Path]:
    """Write ``mark_slides`` of each notebook to ``out/<same name>``; returns the written paths."""
    missing = [str(p) for p in notebooks if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"no such notebook: {', '.join(missing)} (give paths like notebooks/04_quantization_math.ipynb)")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        target = out / path.name
        tmp = target.with_suffix(".ipynb.tmp")
        nbformat.write(mark_slides(nb), tmp)
        tmp.replace(target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path,
                        help="notebooks to convert (default: every notebooks/NN_*.ipynb)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where the copies go (default {OUT.relative_to(REPO)})")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    try:
        written = write_slides(notebooks, args.out)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in written:
        nb = nbformat.read(path, as_version=4)
        n = sum(c.metadata["slideshow"]["slide_type"] in ("slide", "subslide") for c in nb.cells)
        print(f"{path}: {n} slides")
    if not args.notebooks:  # make slides: the lecture decks too
        from . import decks
        try:
            for path in decks.write_decks(args.out / "decks"):
                print(f"{path}: lecture deck, {len(nbformat.read(path, as_version=4).cells)} slides")
        except decks.DeckError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print("open one in JupyterLab (make lab) and press Alt+R for the slideshow")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
