"""docs/teaching.md: every time and count on the teaching page agrees with the course itself.

* the per-notebook table: the guided time equals the notebook header's "Time: about N minutes", the run
  time equals ``benchmarks/results/notebook_times.json`` (whole seconds), the checked exercises are as
  many as the notebook's ``check_…`` calls, and the totals are the sums;
* every plan (six weeks, two days, one evening): each row's guided time is the sum of its notebooks'
  guided times, and each total is the sum of its rows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "teaching.md").read_text(encoding="utf-8")
NOTEBOOKS = {p.stem[:2]: p for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))}
TIMES = json.loads((ROOT / "benchmarks" / "results" / "notebook_times.json").read_text())


def _header_minutes(path: Path) -> int:
    text = "".join(c.source for c in nbformat.read(path, as_version=4).cells[:3] if c.cell_type == "markdown")
    match = re.search(r"Time: about (\d+) minutes", text)
    assert match, f"{path.name}: no 'Time: about N minutes' in its header"
    return int(match.group(1))


GUIDED = {k: _header_minutes(p) for k, p in NOTEBOOKS.items()}


def _table(after: str) -> list[list[str]]:
    """The rows (cells stripped, header and rule dropped) of the first table after the heading ``after``."""
    section = PAGE.split(after, 1)[1]
    lines = [line for line in section.split("\n\n| ", 1)[1].split("\n\n", 1)[0].splitlines()]
    rows = [[c.strip() for c in ("| " + line if i == 0 else line).strip().strip("|").split("|")] for i, line in enumerate(lines)]
    return rows[2:]


def _minutes(cell: str) -> int:
    return int(re.search(r"(\d+) min", cell).group(1))


def _notebooks(cell: str) -> list[str]:
    return re.findall(r"\b(\d\d)\b", cell)


def test_per_notebook_table():
    rows = _table("## How long each notebook takes")
    *rows, total = rows
    assert [r[0][:2] for r in rows] == list(NOTEBOOKS), "one row per notebook, in order"
    for row in rows:
        key = row[0][:2]
        name = NOTEBOOKS[key].stem
        assert _minutes(row[1]) == GUIDED[key], f"{name}: guided time {row[1]}, header says {GUIDED[key]} min"
        assert int(row[2].removesuffix(" s")) == round(TIMES["seconds"][name]), f"{name}: run time {row[2]}, recorded {TIMES['seconds'][name]:.1f} s"
        calls = [m for c in nbformat.read(NOTEBOOKS[key], as_version=4).cells if c.cell_type == "code"
                 for m in re.findall(r"^check_\w+\(", c.source, re.M)]
        assert len(row[3].split(", ")) == len(calls), f"{name}: {row[3]!r} lists {len(row[3].split(', '))} checked exercises, the notebook has {len(calls)}"
    minutes = sum(GUIDED.values())
    assert _minutes(total[1]) == minutes and f"({minutes // 60} h {minutes % 60} min)" in total[1]
    seconds = round(TIMES["total"])
    assert f"**{seconds} s** ({seconds // 60} min {seconds % 60} s)" == total[2]
    assert int(total[3]) == sum(len(r[3].split(", ")) for r in rows)
    assert int(total[4]) == sum(r[4] != "—" for r in rows)


@pytest.mark.parametrize("heading", ["## A six-week course", "## A two-day workshop"])
def test_every_plan_sums(heading):
    *rows, total = _table(heading)
    for row in rows:
        assert _minutes(row[2]) == sum(GUIDED[k] for k in _notebooks(row[1])), f"{heading}: row {row[:3]}"
    assert _minutes(total[2]) == sum(_minutes(r[2]) for r in rows)
    covered = [k for r in rows for k in _notebooks(r[1])]
    assert len(covered) == len(set(covered)), f"{heading}: a notebook is taught twice"
    if heading.startswith("## A six"):
        assert sorted(covered) == list(NOTEBOOKS), "the six-week course teaches every notebook"


def test_self_study_evening_sums():
    match = re.search(r"One self-study evening: (.*?), \*\*(\d+) min\*\* guided", PAGE)
    assert match
    assert int(match.group(2)) == sum(GUIDED[k] for k in _notebooks(match.group(1)))


def test_notebook_00s_course_table_lists_every_notebook_with_its_guided_time():
    text = "".join(c.source for c in nbformat.read(NOTEBOOKS["00"], as_version=4).cells if c.cell_type == "markdown")
    rows = dict(re.findall(r"^\| `(\d\d)_\w+` \|[^|]*\| (\d+) min \|$", text, re.M))
    assert list(rows) == list(NOTEBOOKS), f"00's table lists {list(rows)}, the course has {list(NOTEBOOKS)}"
    wrong = {k: (int(m), GUIDED[k]) for k, m in rows.items() if int(m) != GUIDED[k]}
    assert not wrong, f"00's table vs each notebook's header (table, header): {wrong}"
