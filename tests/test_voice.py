"""The course speaks of itself only: hardware by its properties, myths by where a learner can find them.

Scans every text a learner reads -- notebooks, Markdown, Python docstrings and comments, result
descriptions -- for phrases that describe how the course was made instead of what it teaches.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = [
    r"\blent (gpu|h100|machine)", r"\bthe lent\b", r"shared machine", r"this session", r"\bseed article", r"\bseed 00\d",
    r"torch 2\.\d+ there", r"on a lent", r"grew from", r"widely shared blog",
]
FILES = sorted(p for pattern in ("notebooks/*.ipynb", "*.md", "docs/**/*.md", "course_utils/**/*.py", "benchmarks/**/*.py",
                                 "benchmarks/**/*.sh", "benchmarks/results/*.json", "solutions/*.py", "data/**/*.md")
               for p in ROOT.glob(pattern))


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_text_speaks_of_how_the_course_was_made(path):
    text = path.read_text(encoding="utf-8").lower()
    found = [m.group(0) for pattern in FORBIDDEN for m in re.finditer(pattern, text)]
    assert not found, f"{path.relative_to(ROOT)}: {found} -- name hardware by its properties, attribute myths to 'a common claim'"


def test_each_myth_is_rebutted_once():
    """One box per myth, where its topic is taught: a myth rebutted again in a later notebook is noise."""
    titles: dict[str, list[str]] = {}
    for path in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py")):
        for title in re.findall(r"^# > ### Myth vs fact — (.+)$", path.read_text(encoding="utf-8"), re.M):
            titles.setdefault(title.strip(), []).append(path.stem[:2])
    assert len(titles) >= 8, titles
    repeated = {t: where for t, where in titles.items() if len(where) > 1}
    assert not repeated, f"myths rebutted more than once: {repeated}"
