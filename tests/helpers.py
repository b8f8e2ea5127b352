"""Small helpers shared by several test files (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

import os
import traceback
from typing import Any

from torch import nn

import course_utils

PACKAGE_DIR = os.path.dirname(course_utils.__file__)


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
