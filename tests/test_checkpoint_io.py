"""course_utils.train.save_checkpoint / load_checkpoint: what they refuse, and how.

``save_checkpoint`` refuses metadata that ``weights_only=True`` loading would refuse
later (naming the key and the fix), survives an interrupt without leaving a temp file,
and cleans up the temp files a killed earlier save left -- its own, nothing else.
``load_checkpoint`` names the file and what it expected for anything that is not a
course checkpoint.
"""

from __future__ import annotations

import collections
import os
import pathlib
import pickle
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from torch import nn

import course_utils.train as train_mod
from course_utils.train import load_checkpoint, save_checkpoint

REAL_SAVE = torch.save


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


# --------------------------------------------------------------------------- #
# Metadata is checked on save
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("metadata,key,type_name,fix", [
    ({"data_dir": Path("x")}, "'data_dir'", "PosixPath", "str(path)"),
    ({"map": np.float64(0.5)}, "'map'", "numpy.float64", "float("),
    ({"step": np.int64(3)}, "'step'", "numpy.int64", "int("),
    ({"weights": np.zeros(3)}, "'weights'", "numpy.ndarray", "torch.from_numpy"),
    ({"cfg": {"paths": [Path("a")]}}, "'cfg'['paths'][0]", "PosixPath", "str(path)"),
    ({"classes": {"a", "b"}}, "'classes'", "set", "sorted(list"),
    ({"dtype": torch.float16}, "'dtype'", "torch.dtype", "str("),
    ({"fn": print}, "'fn'", "builtin_function_or_method", "str, int, float"),
    ({"cfg": {Path("k"): 1}}, "'cfg' key", "PosixPath", "str("),
    ({"cfg": collections.defaultdict(int)}, "'cfg'", "defaultdict", "dict("),
])
def test_metadata_that_weights_only_refuses_is_refused_on_save(tmp_path, metadata, key, type_name, fix):
    path = tmp_path / "ckpt.pt"
    with pytest.raises(TypeError) as info:
        save_checkpoint(path, model(), **metadata)
    msg = str(info.value)
    for word in (key, type_name, fix):
        assert word in msg, f"{word!r} not in: {msg}"
    assert os.listdir(tmp_path) == []  # nothing written


def test_metadata_cycle_is_refused(tmp_path):
    cfg: dict[str, Any] = {}
    cfg["self"] = cfg
    with pytest.raises(TypeError, match="cycle"):
        save_checkpoint(tmp_path / "c.pt", model(), cfg=cfg)


def test_plain_metadata_round_trips(tmp_path):
    meta = {"a": None, "b": True, "c": -3, "d": 2.5, "e": "x", "f": [1, (2, 3.0)], "g": {"h": torch.ones(2), 4: "i"},
            "od": collections.OrderedDict(z=1), "p": nn.Parameter(torch.zeros(1)), "nan": float("nan")}
    save_checkpoint(tmp_path / "c.pt", model(), **meta)
    got = load_checkpoint(tmp_path / "c.pt")["metadata"]
    assert torch.equal(got.pop("g").pop("h"), torch.ones(2)) and torch.equal(got.pop("p"), torch.zeros(1))
    assert got.pop("f") == [1, (2, 3.0)] and got.pop("nan") != got.pop("nan", 0)  # NaN survives as NaN
    assert got == {"a": None, "b": True, "c": -3, "d": 2.5, "e": "x", "od": {"z": 1}}


# --------------------------------------------------------------------------- #
# Files that are not course checkpoints
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("content,says", [
    (b"", "empty"),
    (b"hello world\n", "not a torch checkpoint"),
    (bytes(range(256)) * 4, "not a torch checkpoint"),
    ("HALF", "truncated or damaged"),
])
def test_load_a_file_that_is_not_a_checkpoint(tmp_path, content, says):
    path = tmp_path / "bad.pt"
    if content == "HALF":
        save_checkpoint(path, model())
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(ValueError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and says in msg and "save_checkpoint" in msg, msg


@pytest.mark.parametrize("obj,found", [
    ({"state_dict": {}}, "a dict with keys ['state_dict']"),
    ([torch.zeros(2)], "a list"),
    ({"model": [1, 2]}, "'model' is a list"),
    (torch.zeros(2), "a Tensor"),
])
def test_load_a_torch_file_that_is_not_a_course_checkpoint(tmp_path, obj, found):
    torch.save(obj, tmp_path / "other.pt")
    with pytest.raises(ValueError) as info:
        load_checkpoint(tmp_path / "other.pt")
    msg = str(info.value)
    assert "other.pt" in msg and "not a course checkpoint" in msg and found in msg, msg


def test_file_with_pickled_objects_is_refused_without_calling_it_untrusted_by_default(tmp_path):
    """An old save with a Path in its metadata: refused (weights_only), with the way to re-save it."""
    REAL_SAVE({"model": model().state_dict(), "metadata": {"data_dir": pathlib.Path("x")}}, tmp_path / "old.pt")
    with pytest.raises(pickle.UnpicklingError, match="refused") as info:
        load_checkpoint(tmp_path / "old.pt")
    msg = str(info.value)
    assert "old.pt" in msg and "PosixPath" in msg and "weights_only=False" in msg and "save_checkpoint" in msg


# --------------------------------------------------------------------------- #
# Interrupted and killed saves
# --------------------------------------------------------------------------- #
class FailingWriter:
    """A file wrapper whose write raises ``error`` once ``after`` bytes have been written."""

    def __init__(self, f: Any, after: int, error: BaseException) -> None:
        self.f, self.after, self.written, self.error = f, after, 0, error

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.after:
            self.f.write(bytes(data)[: self.after - self.written])
            self.written = self.after
            raise self.error
        self.written += len(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def save_failing_midway(monkeypatch, error: BaseException, after: int = 300) -> None:
    """Make torch.save (the real one) fail with ``error`` after writing ``after`` bytes."""
    monkeypatch.setattr(train_mod.torch, "save", lambda obj, f, *a, **k: REAL_SAVE(obj, FailingWriter(f, after, error), *a, **k))


def test_real_torch_save_masks_an_interrupt(tmp_path):
    """Why save_checkpoint must look behind torch's error: torch.save reports a RuntimeError."""
    with open(tmp_path / "x", "wb") as f, pytest.raises(RuntimeError, match="unexpected pos") as info:
        REAL_SAVE({"w": torch.zeros(100)}, FailingWriter(f, 300, KeyboardInterrupt()))
    assert isinstance(info.value.__context__, KeyboardInterrupt)


@pytest.mark.parametrize("existing", [True, False])
def test_interrupt_during_save_is_a_keyboard_interrupt_and_leaves_no_temp_file(tmp_path, monkeypatch, existing):
    path = tmp_path / "ckpt.pt"
    if existing:
        save_checkpoint(path, model(1), epoch=1)
        old = path.read_bytes()
    save_failing_midway(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt) as info:
        save_checkpoint(path, model(2), epoch=2)
    monkeypatch.undo()
    assert "interrupted" in str(info.value) and str(path) in str(info.value)
    if existing:
        assert "unchanged" in str(info.value)
        assert path.read_bytes() == old and load_checkpoint(path)["metadata"] == {"epoch": 1}
        assert os.listdir(tmp_path) == ["ckpt.pt"]
    else:
        assert "nothing was written" in str(info.value)
        assert os.listdir(tmp_path) == []


def test_disk_full_during_real_save_surfaces_as_the_os_error(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model(1), epoch=1)
    save_failing_midway(monkeypatch, OSError(28, "No space left on device (simulated)"))
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, model(2), epoch=2)
    monkeypatch.undo()
    assert load_checkpoint(path)["metadata"] == {"epoch": 1} and os.listdir(tmp_path) == ["ckpt.pt"]


def test_orphaned_temp_files_of_the_same_path_are_removed_and_nothing_else(tmp_path):
    path = tmp_path / "ckpt.pt"
    orphans = [".ckpt.pt.abcd1234.tmp", ".ckpt.pt.x_y_z_09.tmp"]  # what mkstemp names a killed save's file
    kept = [
        "ckpt.pt.bak", ".ckpt.pt.tmp", ".ckpt.pt.abc.tmp", ".ckpt.pt.abcd12345.tmp", ".ckpt.pt.ABCD1234.tmp",
        ".ckpt.pt.abcd1234.tmp.keep", ".other.pt.abcd1234.tmp", ".ckpt.pt.x.pt.abcd1234.tmp", "notes.txt",
    ]
    for name in orphans + kept:
        (tmp_path / name).write_bytes(b"data")
    (tmp_path / ".ckpt.pt.dir12345.tmp").mkdir()  # a folder with a temp file's name: not ours
    (tmp_path / "target").write_bytes(b"precious")
    (tmp_path / ".ckpt.pt.link1234.tmp").symlink_to(tmp_path / "target")  # nor is a symlink
    save_checkpoint(path, model())
    left = sorted(os.listdir(tmp_path))
    assert left == sorted(kept + ["ckpt.pt", ".ckpt.pt.dir12345.tmp", "target", ".ckpt.pt.link1234.tmp"])
    assert (tmp_path / "target").read_bytes() == b"precious"
    # a checkpoint in another folder does not touch this one's
    (tmp_path / ".ckpt.pt.abcd1234.tmp").write_bytes(b"data")
    save_checkpoint(tmp_path / "sub" / "ckpt.pt", model())
    assert (tmp_path / ".ckpt.pt.abcd1234.tmp").exists()


def test_orphans_are_kept_when_the_save_fails(tmp_path, monkeypatch):
    """Clean-up runs only once the new checkpoint is in place."""
    (tmp_path / ".ckpt.pt.abcd1234.tmp").write_bytes(b"data")
    save_failing_midway(monkeypatch, OSError(28, "No space left on device (simulated)"))
    with pytest.raises(OSError):
        save_checkpoint(tmp_path / "ckpt.pt", model())
    assert os.listdir(tmp_path) == [".ckpt.pt.abcd1234.tmp"]


# --------------------------------------------------------------------------- #
# Property: whatever the metadata, save either refuses it (TypeError) or it round-trips
# --------------------------------------------------------------------------- #
class Custom:
    pass


LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2 ** 80), max_value=2 ** 80),
    st.floats(allow_nan=False), st.text(max_size=4),
    st.builds(torch.randn, st.integers(0, 3)),
    st.sampled_from([Path("x"), np.float32(1.5), np.int64(2), np.zeros(2), {1, 2}, b"ab", 1j, Custom(),
                     torch.float32, torch.device("cpu"), Ellipsis, range(2), frozenset(), bytearray(b"a")]),
)
KEYS = st.one_of(st.text(max_size=3), st.integers(-3, 3), st.sampled_from([None, True, 1.5, (1, 2), Path("k")]))
METADATA = st.recursive(LEAVES, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.tuples(inner, inner), st.dictionaries(KEYS, inner, max_size=3)), max_leaves=6)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(metadata=st.dictionaries(st.from_regex(r"[a-z]{1,4}", fullmatch=True).filter(lambda k: k not in ("path", "model")),
                                METADATA, max_size=3))
def test_metadata_is_refused_on_save_or_round_trips(tmp_path_factory, metadata):
    path = tmp_path_factory.mktemp("ckpt") / "c.pt"
    try:
        save_checkpoint(path, nn.Linear(1, 1), **metadata)
    except TypeError as err:
        assert re.search(r"metadata '\w+'", str(err)), str(err)
        assert not path.exists()
        event("refused on save")
        return
    event("saved and read back")
    assert same(load_checkpoint(path)["metadata"], metadata)  # and weights_only=True accepted it
    assert os.listdir(path.parent) == ["c.pt"]


def test_a_temp_file_still_being_written_is_kept(tmp_path):
    """A concurrent save to the same path (its temp file modified after this save started) keeps its file."""
    busy = tmp_path / ".ckpt.pt.busy1234.tmp"
    busy.write_bytes(b"being written")
    later = time.time() + 60
    os.utime(busy, (later, later))
    save_checkpoint(tmp_path / "ckpt.pt", model())
    assert busy.read_bytes() == b"being written"


def test_legacy_torch_format_still_loads(tmp_path):
    REAL_SAVE({"model": model().state_dict(), "metadata": {"epoch": 3}}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert load_checkpoint(tmp_path / "old.pt", model(1))["metadata"] == {"epoch": 3}


def test_zip_that_is_not_a_torch_file(tmp_path):
    import zipfile
    with zipfile.ZipFile(tmp_path / "data.pt", "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="damaged or not a torch checkpoint") as info:
        load_checkpoint(tmp_path / "data.pt")
    assert "data.pt" in str(info.value)
