"""Small helpers shared by several test files (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import os
import shutil
import traceback
from pathlib import Path
from typing import Any

import pytest
from torch import nn

import course_utils

PACKAGE_DIR = os.path.dirname(course_utils.__file__)
#: screenshots of the browser tests (kept as test artifacts)
ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"
#: Debian's Chromium (``apt-get install -y chromium``), never a browser download
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def require_chromium() -> None:
    """Skip without Chromium locally; fail under CI (``CI=true``), where ``.ci/run`` installs it."""
    if Path(CHROMIUM).exists():
        return
    if os.environ.get("CI"):
        pytest.fail("chromium is missing in CI: .ci/run must install it (apt-get install -y chromium)")
    pytest.skip("Debian chromium not installed (apt-get install -y chromium)")


def launch_chromium(pw: Any) -> tuple[Any, Any]:
    """(browser, page): headless Debian Chromium through Playwright, one 1280 x 1000 page."""
    browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    return browser, browser.new_page(viewport={"width": 1280, "height": 1000})


def run(fn: Any) -> tuple[Any, Exception | None]:
    """``(fn(), None)``, or ``(None, err)`` for a ValueError/TypeError raised by course_utils code itself.

    Anything else -- another exception type, or one raised inside numpy/torch/pycocotools -- fails the test.
    """
    try:
        return fn(), None
    except (ValueError, TypeError) as err:
        last = traceback.extract_tb(err.__traceback__)[-1]
        assert os.path.commonpath([last.filename, PACKAGE_DIR]) == PACKAGE_DIR, f"{type(err).__name__} escaped from {last.filename}: {err}"
        return None, err


def clone(params: list[nn.Parameter]) -> list[nn.Parameter]:
    """Independent copies of ``params``, gradients included (None stays None)."""
    out = []
    for p in params:
        q = nn.Parameter(p.detach().clone())
        q.grad = None if p.grad is None else p.grad.clone()
        out.append(q)
    return out
