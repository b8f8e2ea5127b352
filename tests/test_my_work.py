"""``scripts/my_work.py``: the learner's copies are made once and never overwritten."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from my_work import MANIFEST, sync_copies  # noqa: E402


def _course(tmp_path: Path) -> Path:
    src = tmp_path / "notebooks"
    src.mkdir()
    for name in ("00_setup.ipynb", "01_basics.ipynb"):
        (src / name).write_text(json.dumps({"cells": [], "name": name}))
    (src / "01_basics.py").write_text("# text source: not copied")
    return src


def test_copies_what_is_missing_and_never_overwrites(tmp_path):
    src, dest = _course(tmp_path), tmp_path / "my-work"
    first = sync_copies(src, dest)
    assert first["copied"] == ["00_setup.ipynb", "01_basics.ipynb"] and not (dest / "01_basics.py").exists()
    (dest / "00_setup.ipynb").write_text("my answers")  # the learner's work
    (src / "00_setup.ipynb").write_text(json.dumps({"cells": ["a course update"]}))
    (src / "02_new.ipynb").write_text("{}")
    second = sync_copies(src, dest)
    assert (dest / "00_setup.ipynb").read_text() == "my answers", "a learner's copy was overwritten"
    assert second["copied"] == ["02_new.ipynb"]
    assert second["updated_upstream"] == ["00_setup.ipynb"], second  # said, not done
    assert second["kept"] == ["00_setup.ipynb", "01_basics.ipynb"]


def test_a_renamed_copy_is_replaced_by_the_new_version(tmp_path):
    src, dest = _course(tmp_path), tmp_path / "my-work"
    sync_copies(src, dest)
    (src / "00_setup.ipynb").write_text("new version")
    (dest / "00_setup.ipynb").rename(dest / "old_00_setup.ipynb")
    report = sync_copies(src, dest)
    assert report["copied"] == ["00_setup.ipynb"] and (dest / "00_setup.ipynb").read_text() == "new version"
    assert (dest / "old_00_setup.ipynb").exists() and not sync_copies(src, dest)["updated_upstream"]


def test_a_damaged_manifest_loses_no_notebook(tmp_path):
    src, dest = _course(tmp_path), tmp_path / "my-work"
    sync_copies(src, dest)
    (dest / MANIFEST).write_text("{ not json")
    assert sync_copies(src, dest)["kept"] == ["00_setup.ipynb", "01_basics.ipynb"]


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no notebooks folder"):
        sync_copies(tmp_path / "nowhere", tmp_path / "my-work")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(NotADirectoryError, match="pass --dest"):
        sync_copies(_course(tmp_path), tmp_path / "a-file")
    assert (tmp_path / "a-file").read_text() == "x"


def test_the_command_line_says_what_it_did(tmp_path):
    src, dest = _course(tmp_path), tmp_path / "mine"
    run = lambda: subprocess.run([sys.executable, str(ROOT / "scripts" / "my_work.py"), "--source", str(src),  # noqa: E731
                                  "--dest", str(dest)], capture_output=True, text=True, check=True).stdout
    assert "2 new" in run()
    (src / "01_basics.ipynb").write_text("changed")
    out = run()
    assert "already there" in out and "01_basics.ipynb changed since your copy" in out, out


def test_my_work_is_ignored_by_git():
    out = subprocess.run(["git", "check-ignore", "my-work/00_setup_and_tour.ipynb"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, "my-work/ must be git-ignored, or a learner's copies would conflict with course updates"
