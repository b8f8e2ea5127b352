"""Browser smoke test: JupyterLab on loopback, notebook 00 run in headless Chromium.

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

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "tests" / "_artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def _require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail("chromium is missing in CI: .ci/run must install it (apt-get install -y chromium)")
    pytest.skip("Debian chromium not installed (apt-get install -y chromium)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab_server(tmp_path):
    """JupyterLab over a scratch copy of notebooks/ (so autosave never touches the repo)."""
    _require_chromium()
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    (tmp_path / "data").symlink_to(ROOT / "data")
    port = _free_port()
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--IdentityProvider.token=", "--ServerApp.password=",
        f"--ServerApp.root_dir={tmp_path}",
        "--LabApp.expose_app_in_browser=True",
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


def test_notebook_00_widget_renders_as_slider(lab_server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "browser_00_widget.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        try:
            page.goto(f"{lab_server}/lab/tree/notebooks/00_setup_and_tour.ipynb", timeout=120_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell.currentWidget "
                                   "&& window.jupyterapp.shell.currentWidget.sessionContext?.session?.kernel", timeout=120_000)
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            slider = page.locator(".widget-slider").first
            slider.wait_for(state="visible", timeout=150_000)
            slider.scroll_into_view_if_needed()
            widget_box = page.locator(".widget-interact").first
            image = widget_box.locator("img").first
            image.wait_for(state="visible", timeout=60_000)
            before = image.get_attribute("src")

            # Move the slider: focus its handle and press the right arrow twice.
            handle = slider.locator(".noUi-handle").first
            handle.click()
            handle.press("ArrowRight")
            handle.press("ArrowRight")
            page.wait_for_function(
                "(before) => { const img = document.querySelector('.widget-interact img');"
                " return img && img.getAttribute('src') !== before; }", arg=before, timeout=60_000)
            value = slider.locator(".widget-readout").first.inner_text()
            page.screenshot(path=str(shot), full_page=False)

            outputs_text = page.locator(".jp-OutputArea").all_inner_texts()
        finally:
            browser.close()

    assert value.strip() == "2", f"slider readout after two right-arrow presses: {value!r}"
    assert not any("IntSlider(" in t for t in outputs_text), "the widget rendered as text, not as a slider"
    assert shot.stat().st_size > 10_000
