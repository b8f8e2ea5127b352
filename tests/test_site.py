"""The course website (``make site``): builds with warnings as errors, every internal link
resolves, and no page needs the network.

Builds into a scratch directory with the same command as ``make site`` (Sphinx + myst-nb,
notebooks shown as committed, never executed), then reads every produced HTML file:

* every ``href``/``src`` to a local file points to a file that exists, and a ``#anchor``
  to an id that exists in it;
* no script, style sheet, font or image is loaded from ``http(s)://`` (the site works offline);
* each notebook, the glossary, the README and each ``course_utils`` module has a page;
* widget outputs show their saved picture, and no widget JavaScript is loaded;
* formulas are typeset by a MathJax copied into the site (jupyter-server-mathjax's MathJax 2);
* in headless Chromium, with every non-file request refused, notebook 04's page typesets its
  formulas with the STIX web font the site carries, asks for no file the site lacks, and loads its
  pictures (a screenshot goes to ``tests/_artifacts/``).

Takes about half a minute (it reads all notebooks and imports ``course_utils``): marked slow,
so ``make check`` leaves it out and ``make test`` runs it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from helpers import ARTIFACTS, launch_chromium, require_chromium

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
NETWORK_URL = re.compile(r"^(https?:)?//", re.I)


class _Page(HTMLParser):
    """Collects ids and the URLs a page links to or loads."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str, str]] = []  # (tag, attribute, url)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if attrs.get(key):
                self.ids.add(attrs[key])
        for key in ("href", "src"):
            if attrs.get(key) is not None:
                self.links.append((tag, key, attrs[key]))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site") / "html"
    # Proxies that go nowhere: a build that tried to download something would fail or hang here.
    env = dict(os.environ, http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9",
               HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", "-c", "docs", ".", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, f"sphinx failed (warnings are errors):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    print(f"site built in {elapsed:.0f} s")
    return out


def test_every_internal_link_and_anchor_resolves(site):
    pages = {p: _parse(p) for p in site.rglob("*.html")}
    assert len(pages) > 30
    broken = []
    for path, page in pages.items():
        for tag, attr, url in page.links:
            parts = urlsplit(url)
            if parts.scheme or url.startswith("//") or url == "#" or url.startswith("data:"):
                continue  # external (a plain link to read elsewhere), or nothing to resolve
            target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            where = f"{path.relative_to(site)}: <{tag} {attr}={url!r}>"
            if not target.is_file():
                broken.append(f"{where}: no file {target}")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{where}: no id {parts.fragment!r} in {target.name}")
    assert not broken, f"{len(broken)} broken links:\n" + "\n".join(broken[:40])


def test_nothing_is_loaded_from_the_network(site):
    loads = []
    for path in site.rglob("*.html"):
        for tag, attr, url in _parse(path).links:
            if NETWORK_URL.match(url) and (tag in ("script", "img", "iframe", "source", "video", "audio", "embed") or
                                           (tag == "link" and attr == "href")):
                loads.append(f"{path.relative_to(site)}: <{tag} {attr}={url!r}>")
    for path in list(site.rglob("*.css")) + list(site.rglob("*.js")):
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"(@import\s+(url\()?|url\()\s*['\"]?(https?:)?//[^'\")\s]+", text):
            loads.append(f"{path.relative_to(site)}: {match.group(0)}")
    assert not loads, "the site must work offline; these load from the network:\n" + "\n".join(loads[:40])


def test_every_notebook_module_and_document_has_a_page(site):
    expected = [f"notebooks/{p.stem}.html" for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")]
    expected += ["index.html", "docs/index.html", "README.html", "docs/glossary.html", "docs/api/index.html"]
    modules = [p for p in (ROOT / "course_utils").rglob("*.py") if p.stem not in ("__init__", "__main__")]
    expected += ["docs/api/" + str(p.relative_to(ROOT / "course_utils").with_suffix(".html")) for p in modules]
    missing = [e for e in expected if not (site / e).is_file()]
    assert not missing, f"no page for: {missing} (a new course_utils module needs a page in docs/api/)"
    boxes = (site / "docs/api/boxes.html").read_text(encoding="utf-8")
    assert 'id="course_utils.boxes.box_iou"' in boxes, "autodoc did not document course_utils.boxes.box_iou"
    readme = (site / "README.html").read_text(encoding="utf-8")
    assert "notebooks/02_training_a_tiny_detector.html" in readme, "the README's course table should link the notebook pages"


def test_widgets_show_their_static_picture(site):
    for name in ("00_setup_and_tour", "03_gradient_clipping", "04_quantization_math"):
        page = (site / f"notebooks/{name}.html").read_text(encoding="utf-8")
        cells = re.split(r'<div class="cell(?: tag_[\w-]+)* docutils container">', page)[1:]  # tagged cells: tag_… classes
        widget_cells = [c for c in cells if "cell_output" in c and "interactive_figure" in c.split("cell_output", 1)[0]]
        assert widget_cells, f"{name}: no executed cell calling interactive_figure"
        assert all("<img" in c.split("cell_output", 1)[1] for c in widget_cells), f"{name}: a widget output shows no picture"
    for path in site.rglob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert "application/vnd.jupyter.widget-view+json" not in text, f"{path.name}: a widget view without a kernel"
        assert "html-manager" not in text and "require.min.js" not in text, f"{path.name}: loads widget JavaScript"


def test_formulas_are_typeset_by_a_local_mathjax(site):
    page = (site / "notebooks/04_quantization_math.html").read_text(encoding="utf-8")
    assert '<div class="math notranslate nohighlight">' in page, "notebook 04's display formulas are not math blocks"
    assert 'src="../_static/mathjax/MathJax.js?config=' in page, "formulas need MathJax, from the site itself"
    assert (site / "_static/mathjax/config/TeX-AMS-MML_HTMLorMML-full.js").is_file()
    assert "math|output_area" in page, "MathJax 2 must be told to typeset myst-nb's class='math' inside tex2jax_ignore"


def test_a_notebook_page_renders_offline_in_chromium(site):
    """Open notebook 04's page from disk in headless Chromium with every non-file request refused:
    the formulas are typeset (by the site's own MathJax), every picture loads, nothing asks the
    network, and a screenshot goes to ``tests/_artifacts/site_04_quantization_math.png``."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "site_04_quantization_math.png"
    refused: list[str] = []
    missing: list[str] = []  # files the page asked for that the site does not have (e.g. a MathJax font)

    def route(r):
        if r.request.url.startswith("file://"):
            return r.continue_()
        refused.append(r.request.url)
        return r.abort()

    with sync_playwright() as pw:
        browser, page = launch_chromium(pw)
        try:
            page.route("**/*", route)
            page.on("requestfailed", lambda r: missing.append(r.url) if r.url.startswith("file://") else None)
            page.goto((site / "notebooks/04_quantization_math.html").as_uri(), wait_until="load")
            page.wait_for_function("() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0 "
                                   "&& document.querySelectorAll('.MathJax_Display, .MathJax').length > 0",
                                   timeout=60_000)
            typeset = page.locator(".MathJax_Display").count()
            font = page.evaluate("() => MathJax.OutputJax['HTML-CSS'] && MathJax.OutputJax['HTML-CSS'].fontInUse")
            raw_tex = page.locator("div.math").evaluate_all(
                "els => els.filter(e => !e.querySelector('.MathJax, .MathJax_Display, script[type^=\"math/tex\"]')).length")
            images = page.evaluate("() => Array.from(document.images).map(i => [i.src.split('/').pop(), i.naturalWidth])")
            page.locator(".MathJax_Display").first.scroll_into_view_if_needed()
            page.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()
    assert not refused, f"the page asked the network for: {refused[:10]}"
    assert not missing, f"files the site lacks: {missing[:10]}"
    assert font == "STIX-Web", f"MathJax typeset with {font!r}, not the STIX web font the site carries"
    assert typeset >= 3, f"only {typeset} display formulas were typeset by MathJax"
    assert raw_tex == 0, f"{raw_tex} formula blocks were left as raw TeX"
    assert len(images) >= 3 and all(width > 0 for _, width in images), f"pictures that did not load: {images}"
    assert shot.stat().st_size > 20_000


def test_every_chinese_character_on_the_site_is_in_its_own_font(site):
    """A machine without a CJK font shows the glossary's Chinese terms as empty boxes, unless the site's
    font has them: every CJK character of every page must be in ``course-cjk.woff``."""
    from fontTools.ttLib import TTFont

    sys.path.insert(0, str(ROOT / "scripts"))
    from make_cjk_font import FAMILY, is_cjk

    font = site / "_static" / "fonts" / "course-cjk.woff"
    assert font.is_file(), "the site must carry its CJK font (docs/_static/fonts)"
    cmap = TTFont(font).getBestCmap()
    used = {c for page in site.rglob("*.html") for c in page.read_text(encoding="utf-8") if is_cjk(c)}
    assert len(used) >= 50, f"only {len(used)} CJK characters on the site: is the glossary there?"
    missing = sorted(c for c in used if ord(c) not in cmap)
    assert not missing, f"characters the site's CJK font lacks: {''.join(missing[:40])} -- run scripts/make_cjk_font.py"
    css = (site / "_static" / "course.css").read_text()
    assert FAMILY in css and "fonts/course-cjk.woff" in css
    glossary = (site / "docs" / "glossary.html").read_text(encoding="utf-8")
    assert "course.css" in glossary and FAMILY in (site / "_static" / "alabaster.css").read_text()
    assert (site / "_static" / "fonts" / "OFL.txt").is_file(), "the font's licence travels with it"
