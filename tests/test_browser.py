"""Browser tests: JupyterLab on loopback, notebooks with widgets run in headless Chromium.

Starts ``jupyter lab`` on 127.0.0.1 (no token: tests only, loopback only) over a
scratch copy of the notebooks, opens notebook 00 in Debian's Chromium through
Playwright, runs all cells, and checks that the demo widget rendered as a real
slider (not as the text ``IntSlider(...)``) and that moving it redraws the
figure. Saves a screenshot to ``tests/_artifacts/browser_00_widget.png``.

Needs ``/usr/bin/chromium`` (``apt-get install -y chromium``). Without it the
test is skipped locally, and fails under CI (``CI=true``), where ``.ci/run``
installs it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, launch_chromium as _launch, require_chromium as _require_chromium

ROOT = Path(__file__).resolve().parents[1]
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab_server(tmp_path):
    """JupyterLab over a scratch copy of notebooks/ (so autosave never touches the repo)."""
    _require_chromium()
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    for shared in ("data", "benchmarks", "docs"):  # what the notebooks read or link via ../
        (tmp_path / shared).symlink_to(ROOT / shared)
    port = _free_port()
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--IdentityProvider.token=", "--ServerApp.password=",
        f"--ServerApp.root_dir={tmp_path}",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",  # no tabs restored from earlier runs
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=1)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"jupyter lab exited early:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
                time.sleep(0.5)
        else:
            pytest.fail(f"jupyter lab did not start in 60 s:\n{(tmp_path / 'lab.log').read_text()[-3000:]}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _open_and_run(page, url: str, notebook: str) -> None:
    """Open a notebook in JupyterLab and run all its cells."""
    page.goto(f"{url}/lab/tree/notebooks/{notebook}?reset", timeout=120_000)
    page.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext?.session?.kernel", timeout=120_000)
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
    page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")


def _wait_for_new_figure(page, before: str | None, timeout: int = 60_000) -> None:
    page.wait_for_function(
        "(before) => { const img = document.querySelector('.widget-interact img');"
        " return img && img.getAttribute('src') !== before; }", arg=before, timeout=timeout)


def _drive_widget(url: str, notebook: str, shot_name: str, act) -> tuple[object, list[str], Path]:
    """Run ``notebook`` in JupyterLab, wait for its interactive figure, call ``act(widget)``
    (which changes a control and may return a value), wait for the figure to redraw,
    and screenshot. Returns (act's value, texts of all output areas, screenshot path)."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / shot_name
    with sync_playwright() as pw:
        browser, page = _launch(pw)
        try:
            _open_and_run(page, url, notebook)
            widget = page.locator(".widget-interact").first
            widget.wait_for(state="visible", timeout=170_000)
            widget.scroll_into_view_if_needed()
            image = widget.locator("img").first
            image.wait_for(state="visible", timeout=60_000)
            before = image.get_attribute("src")
            value = act(widget)
            _wait_for_new_figure(page, before)
            page.screenshot(path=str(shot), full_page=False)
            outputs_text = page.locator(".jp-OutputArea").all_inner_texts()
        finally:
            browser.close()
    return value, outputs_text, shot


def test_notebook_00_widget_renders_as_slider(lab_server):
    def move_slider(widget):
        slider = widget.locator(".widget-slider").first
        handle = slider.locator(".noUi-handle").first  # focus the handle, press right twice
        handle.click()
        handle.press("ArrowRight")
        handle.press("ArrowRight")
        return slider.locator(".widget-readout").first.inner_text()

    value, outputs_text, shot = _drive_widget(lab_server, "00_setup_and_tour.ipynb", "browser_00_widget.png", move_slider)
    assert value.strip() == "2", f"slider readout after two right-arrow presses: {value!r}"
    assert not any("IntSlider(" in t for t in outputs_text), "the widget rendered as text, not as a slider"
    assert shot.stat().st_size > 10_000


def test_notebook_03_clip_explorer_reacts(lab_server):
    """The clip explorer renders as live controls; changing the rule redraws the plot."""
    def pick_no_clipping(widget):
        sliders = widget.locator(".widget-slider").count()
        widget.locator(".widget-dropdown select").first.select_option("none")
        return sliders

    sliders, outputs_text, shot = _drive_widget(lab_server, "03_gradient_clipping.ipynb", "browser_03_clip_explorer.png",
                                                pick_no_clipping)
    assert sliders == 2, "threshold and learning-rate sliders expected"
    assert not any("interactive(" in t or "FloatLogSlider(" in t for t in outputs_text), "widgets rendered as text"
    assert shot.stat().st_size > 10_000


def test_notebook_04_bit_width_explorer_reacts(lab_server):
    """The bit-width explorer renders as live controls; lowering the bit width redraws the figure."""
    def lower_bits(widget):
        slider = widget.locator(".widget-slider").first
        handle = slider.locator(".noUi-handle").first
        handle.click()
        handle.press("Home")  # 4 -> 2 bits (the minimum) in one move: one redraw
        controls = widget.locator(".widget-dropdown select").count() + widget.locator(".widget-toggle-buttons").count()
        return slider.locator(".widget-readout").first.inner_text(), controls

    (readout, controls), outputs_text, shot = _drive_widget(lab_server, "04_quantization_math.ipynb",
                                                            "browser_04_bit_explorer.png", lower_bits)
    assert readout.strip() == "2", f"bits readout after pressing Home: {readout!r}"
    assert controls == 5, "scheme, granularity, observer, tensor and layer controls expected"
    assert not any("interactive(" in t or "IntSlider(" in t for t in outputs_text), "widgets rendered as text"
    assert shot.stat().st_size > 10_000


def test_notebook_04_as_rise_slides(lab_server, tmp_path):
    """``make slides``'s copy of notebook 04 opens in RISE (jupyterlab-rise) as a reveal.js deck with one
    slide per heading, its formulas typeset and its figures shown, with no request leaving the machine
    except the reveal theme's web-font style sheet (refused here; the slides fall back to local fonts)."""
    from playwright.sync_api import sync_playwright

    from classroom.slides import write_slides

    (deck,) = write_slides([tmp_path / "notebooks" / "04_quantization_math.ipynb"], tmp_path / "slides")
    import nbformat
    expected = sum(c.metadata["slideshow"]["slide_type"] != "-" for c in nbformat.read(deck, as_version=4).cells)
    refused: list[str] = []

    def route(r):
        if r.request.url.startswith((lab_server, "data:", "blob:")):
            return r.continue_()
        refused.append(r.request.url)
        return r.abort()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "rise_04_slides.png"
    with sync_playwright() as pw:
        browser, page = _launch(pw)
        try:
            page.route("**/*", route)
            page.goto(f"{lab_server}/rise/slides/{deck.name}", timeout=120_000)
            page.wait_for_selector(".reveal .slides section", timeout=120_000)
            page.wait_for_function("() => document.querySelectorAll('.reveal mjx-container').length > 0", timeout=60_000)
            sections = page.evaluate("() => Array.from(document.querySelectorAll('.reveal .slides section'))"
                                     ".filter(s => !s.querySelector('section')).length")
            images = page.evaluate("() => Array.from(document.querySelectorAll('.reveal img')).map(i => i.naturalWidth)")
            page.screenshot(path=str(shot), full_page=False)
        finally:
            browser.close()
    assert sections == expected, f"{sections} slides in the deck, {expected} slide cells in the notebook"
    assert len(images) >= 3 and all(w > 0 for w in images), f"figures that did not load: {images}"
    assert all(u.startswith("https://fonts.googleapis.com/") for u in refused), f"requests to the network: {refused}"


def test_make_lab_serves_the_root_and_the_glossary_link_opens(lab_server):
    """``make lab`` makes the learner's copies (``scripts/my_work.py``), serves the repository root on 127.0.0.1
    with JupyterLab's token, without news or update pop-ups, and starts at the learner's copy of notebook 00;
    the glossary link in a notebook's header (``../docs/glossary.md``) then opens the glossary."""
    from playwright.sync_api import sync_playwright

    recipe = (ROOT / "Makefile").read_text().split("\nlab: setup\n", 1)[1].split("\n\n", 1)[0]
    assert "scripts/my_work.py" in recipe.split("jupyter lab", 1)[0], "make lab must make the learner's copies first"
    for flag in ("--ServerApp.ip=127.0.0.1", "--ServerApp.root_dir=.",
                 "--LabApp.default_url=/lab/tree/my-work/00_setup_and_tour.ipynb",
                 "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"):
        assert flag in recipe, f"make lab must pass {flag}"
    assert "token" not in recipe.lower() and "password" not in recipe.lower(), "make lab must keep JupyterLab's token"
    with sync_playwright() as pw:
        browser, page = _launch(pw)
        try:
            page.goto(f"{lab_server}/lab/tree/notebooks/01_detection_basics.ipynb?reset", timeout=120_000)
            link = page.locator(".jp-RenderedMarkdown a", has_text="glossary").first
            link.wait_for(state="visible", timeout=120_000)
            assert "/files/docs/glossary.md" in link.get_attribute("href"), "the link must resolve inside the served root"
            link.click()
            tab = page.locator(".lm-TabBar-tab .lm-TabBar-tabLabel", has_text="glossary.md")
            tab.first.wait_for(state="visible", timeout=60_000)
            page.wait_for_function("() => document.querySelector('.jp-MainAreaWidget:not(.lm-mod-hidden)')"
                                   "?.innerText.includes('pyramid level')", timeout=60_000)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "lab_glossary.png"))
        finally:
            browser.close()


_SLIDE_FITS = """() => {
  const s = document.querySelector('.reveal .slides > section.present');
  if (!s) return null;
  const out = [], clipped = [];
  for (const el of s.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.left < -1 || r.top < -1 || r.right > innerWidth + 1 || r.bottom > innerHeight + 1) out.push(el.tagName);
    if ((el.tagName === 'PRE' || el.tagName === 'CODE' || el.classList.contains('jp-RenderedMarkdown'))
        && (el.scrollWidth > el.clientWidth + 1 || el.scrollHeight > el.clientHeight + 1)) clipped.push(el.tagName);
  }
  return {index: Array.from(s.parentNode.children).indexOf(s), out, clipped,
          images: Array.from(s.querySelectorAll('img')).map(i => i.naturalWidth),
          text: s.innerText.slice(0, 60)};
}"""


def test_lecture_decks_fit_a_1280x720_screen(lab_server, tmp_path):
    """Every lecture deck (``classroom/decks/NN_name.md``) in RISE on a 1280×720 screen: on every
    slide nothing is drawn outside the screen, no text block is clipped, and every figure loaded.
    A screenshot of every slide goes to the test artifacts (``deck_04_00.png`` ...)."""
    from playwright.sync_api import sync_playwright

    from classroom.decks import write_decks, DECKS

    decks = write_decks(tmp_path / "decks", sorted(DECKS.glob("[0-9][0-9]_*.md")))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    import nbformat
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            for deck in decks:
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(f"{lab_server}/rise/decks/{deck.name}", timeout=120_000)
                page.wait_for_selector(".reveal .slides > section.present", timeout=120_000)
                page.wait_for_function("() => document.querySelectorAll('.reveal mjx-container').length > 0", timeout=60_000)
                n = len(nbformat.read(deck, as_version=4).cells)
                assert page.evaluate("() => document.querySelectorAll('.reveal .slides > section').length") == n
                for i in range(n):
                    page.wait_for_function("(i) => { const s = document.querySelector('.reveal .slides > section.present');"
                                           " return s && Array.from(s.parentNode.children).indexOf(s) === i; }", arg=i,
                                           timeout=30_000)
                    page.wait_for_timeout(300)  # the figures of this slide laid out
                    fits = page.evaluate(_SLIDE_FITS)
                    page.screenshot(path=str(ARTIFACTS / f"deck_{deck.stem[:2]}_{i:02d}.png"))
                    where = f"{deck.name}, slide {i + 1} ({fits['text']!r})"
                    assert not fits["out"], f"{where}: drawn outside 1280x720: {fits['out'][:5]}"
                    assert not fits["clipped"], f"{where}: a text block is clipped: {fits['clipped']}"
                    assert all(w > 0 for w in fits["images"]), f"{where}: a figure did not load"
                    page.keyboard.press("ArrowRight")
                page.close()
        finally:
            browser.close()
