"""The website's CJK font: Noto Sans CJK SC cut down to the Chinese characters the course uses.

The glossary and a few notebooks give Chinese terms (e.g. 剪枝, pruning). A reader whose machine has
no CJK font would see empty boxes, so the site carries its own: a subset of Noto Sans CJK SC (SIL
Open Font License 1.1; renamed, as the licence asks of modified fonts) holding exactly the CJK
characters found in ``docs/*.md``, ``README.md`` and ``notebooks/*.ipynb``, about 250 glyphs
(``docs/_static/fonts/course-cjk.woff``, with the licence beside it). ``tests/test_site.py`` fails
when a page uses a character the font lacks; then run this again (a maintainer's step, with the
Debian package ``fonts-noto-cjk`` installed: ``apt-get install fonts-noto-cjk``)::

    python scripts/make_cjk_font.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc")
SOURCE_INDEX = 2  # Noto Sans CJK SC in the collection
LICENCE = Path("/usr/share/doc/fonts-noto-cjk/copyright")
OUT = ROOT / "docs" / "_static" / "fonts"
FAMILY = "Course CJK"


def is_cjk(char: str) -> bool:
    """CJK ideographs and punctuation, full-width forms (what a Latin font lacks)."""
    code = ord(char)
    return (0x2E80 <= code <= 0x9FFF) or (0xF900 <= code <= 0xFAFF) or (0xFF00 <= code <= 0xFFEF) or (0x20000 <= code <= 0x2FA1F)


def course_cjk_characters(root: Path = ROOT) -> set[str]:
    """Every CJK character in the texts the site shows."""
    files = [*root.glob("docs/*.md"), root / "README.md", *root.glob("notebooks/[0-9][0-9]_*.ipynb")]
    return {c for path in files for c in path.read_text(encoding="utf-8") if is_cjk(c)}


def _ofl_text() -> str:
    """The SIL OFL 1.1 text from the Debian package's copyright file."""
    lines = LICENCE.read_text(encoding="utf-8").splitlines()
    start = lines.index("License: SIL-1.1", lines.index("License: SIL-1.1") + 1) + 1
    body = []
    for line in lines[start:]:
        if not line.startswith(" "):
            break
        body.append("" if line.strip() == "." else line[1:])
    return "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args(argv)
    if not SOURCE.exists():
        print(f"error: {SOURCE} is missing: install it with `apt-get install fonts-noto-cjk`", file=sys.stderr)
        return 2
    from fontTools import subset
    from fontTools.ttLib import TTCollection

    chars = course_cjk_characters()
    font = TTCollection(str(SOURCE)).fonts[SOURCE_INDEX]
    options = subset.Options()
    options.flavor = "woff"
    options.name_IDs = []  # names rewritten below
    options.layout_features = ["*"]
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=[ord(c) for c in sorted(chars)])
    subsetter.subset(font)
    name = font["name"]
    for record_id, text in ((1, FAMILY), (2, "Regular"), (3, f"{FAMILY} Regular subset"), (4, f"{FAMILY} Regular"),
                            (6, FAMILY.replace(" ", "") + "-Regular"),
                            (0, "Subset of Noto Sans CJK SC, (c) 2014-2021 Adobe and Google; SIL Open Font License 1.1")):
        name.setName(text, record_id, 3, 1, 0x409)
    font.flavor = "woff"
    OUT.mkdir(parents=True, exist_ok=True)
    font.save(OUT / "course-cjk.woff")
    (OUT / "OFL.txt").write_text(f"{FAMILY}: a subset of Noto Sans CJK SC (scripts/make_cjk_font.py).\n\n" + _ofl_text())
    size = (OUT / "course-cjk.woff").stat().st_size
    print(f"wrote {OUT.relative_to(ROOT)}/course-cjk.woff: {len(chars)} characters, {size / 1e3:.0f} kB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
