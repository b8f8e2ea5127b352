"""Every benchmark script starts: its imports (course_utils, the shared harness) resolve and ``--help`` explains it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name != "harness.py")


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_explains_itself(script):
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout and len(done.stdout) > 200, done.stdout  # the docstring is the help text


def test_harness_writes_json_atomically(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from harness import write_json
    finally:
        sys.path.remove(str(BENCHMARKS))
    path = write_json(tmp_path / "r.json", {"a": 1})
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind
