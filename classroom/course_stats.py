"""How much there is to read and run in each notebook: the core path and its deep dives.

A notebook's **core path** is what a newcomer works through in the guided time; its **deep
dives** are optional and come last, starting at the first markdown cell whose first line begins
with ``## Going deeper`` (everything from that cell on). Counted per notebook:

* ``core_words`` / ``deep_words``: words of prose (markdown cells; a word is a run of non-space
  characters, formulas and code spans included);
* ``core_code_lines`` / ``deep_code_lines``: non-blank code lines that are not comments;
* ``longest_core_cell``: the most words in one core markdown cell;
* ``checked_exercises``: ``check_…(`` calls (every one must be in the core path);
* ``guided_minutes``: the guided time the notebook's header must state (:func:`guided_minutes`).

    python -m classroom.course_stats          # the table, for docs/teaching.md
    python -m classroom.course_stats --json   # the same numbers as JSON
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEEP_DIVE = "## Going deeper"  # a markdown cell starting with this line opens the deep dives
CORE_WORD_BUDGET = 13_000  # the whole course's core path (about 1,000 words per notebook)
CELL_WORD_LIMIT = 200  # no core markdown cell longer than this
# Guided time of a core path: reading technical prose at 80 words a minute, reading and running code at 7 lines
# a minute, 8 minutes per checked exercise; rounded to 5 minutes. (The notebook's run time comes on top: it is
# measured, make headless RECORD=1, and listed beside it in docs/teaching.md.)
WORDS_PER_MINUTE, CODE_LINES_PER_MINUTE, MINUTES_PER_EXERCISE = 80, 7, 8


def _words(text: str) -> int:
    return len(re.findall(r"\S+", text))


def _code_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


def notebook_stats(path: Path) -> dict[str, Any]:
    """Counts for one notebook (``.ipynb``), split at its ``## Going deeper`` cell (see the module docstring)."""
    import nbformat

    cells = nbformat.read(path, as_version=4).cells
    split = next((i for i, c in enumerate(cells) if c.cell_type == "markdown" and c.source.lstrip().startswith(DEEP_DIVE)),
                 len(cells))
    core, deep = cells[:split], cells[split:]
    core_md = [_words(c.source) for c in core if c.cell_type == "markdown"]
    return {
        "core_words": sum(core_md),
        "deep_words": sum(_words(c.source) for c in deep if c.cell_type == "markdown"),
        "core_code_lines": sum(_code_lines(c.source) for c in core if c.cell_type == "code"),
        "deep_code_lines": sum(_code_lines(c.source) for c in deep if c.cell_type == "code"),
        "longest_core_cell": max(core_md, default=0),
        "checked_exercises": sum(len(re.findall(r"^check_\w+\(", c.source, re.M)) for c in core if c.cell_type == "code"),
        "checked_exercises_in_deep_dives": sum(len(re.findall(r"^check_\w+\(", c.source, re.M)) for c in deep if c.cell_type == "code"),
        "has_deep_dives": split < len(cells),
    }


def guided_minutes(stats: dict[str, Any]) -> int:
    """A core path's guided time: ``5 · round((words / 80 + code lines / 7 + 8 · exercises) / 5)``, at least 10."""
    minutes = (stats["core_words"] / WORDS_PER_MINUTE + stats["core_code_lines"] / CODE_LINES_PER_MINUTE
               + MINUTES_PER_EXERCISE * stats["checked_exercises"])
    return max(10, 5 * round(minutes / 5))


def course_stats(notebooks: Path = ROOT / "notebooks") -> dict[str, dict[str, Any]]:
    """``{notebook stem: notebook_stats}`` for every ``NN_*.ipynb``, in order."""
    stats = {p.stem: notebook_stats(p) for p in sorted(notebooks.glob("[0-9][0-9]_*.ipynb"))}
    for s in stats.values():
        s["guided_minutes"] = guided_minutes(s)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    stats = course_stats()
    if args.json:
        print(json.dumps(stats, indent=1))
        return
    print(f"{'notebook':<30}{'core words':>11}{'longest cell':>13}{'core code':>10}{'exercises':>10}{'guided':>8}"
          f"{'deep words':>11}{'deep code':>10}")
    for name, s in stats.items():
        print(f"{name:<30}{s['core_words']:>11,}{s['longest_core_cell']:>13}{s['core_code_lines']:>10}{s['checked_exercises']:>10}"
              f"{s['guided_minutes']:>5} min{s['deep_words']:>11,}{s['deep_code_lines']:>10}")
    total = {k: sum(s[k] for s in stats.values())
             for k in ("core_words", "core_code_lines", "checked_exercises", "guided_minutes", "deep_words", "deep_code_lines")}
    print(f"{'all':<30}{total['core_words']:>11,}{'':>13}{total['core_code_lines']:>10}{total['checked_exercises']:>10}"
          f"{total['guided_minutes']:>5} min{total['deep_words']:>11,}{total['deep_code_lines']:>10}"
          f"   (core budget {CORE_WORD_BUDGET:,} words, cells <= {CELL_WORD_LIMIT})")


if __name__ == "__main__":
    main()
