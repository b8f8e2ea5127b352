#!/usr/bin/env python
"""A careless (and sometimes hostile) learner, on purpose: hundreds of wrong, odd or malicious inputs to
the course's command line and library, each judged by an oracle.

Every attempt is a small record ``(name, area, oracle)``. The oracle is one of

* **clear error** -- the API raises ``ValueError``/``TypeError``/``OSError`` (``FileNotFoundError``, ...)
  or a refused pickle, whose message names the bad value or file; the command line exits with status 2,
  its last stderr line starts with ``error:`` (argparse's ``python -m course_utils CMD: error:`` form
  counts too) and no ``Traceback`` appears anywhere;
* **right answer** -- the result agrees with an independent reference (``torchvision.ops``,
  ``pycocotools``, Python ints, ``fractions.Fraction``, float64 math).

Each outcome is classified as ``ok_clear_error``, ``ok_right_answer``, ``obscure_crash`` (a traceback,
an exit status other than 0/2 on bad input, an exception from deep inside torch/numpy/PIL whose message
does not name the argument, an ``IndexError``/``KeyError``/``ZeroDivisionError``/``AttributeError``/
``RuntimeError`` from internals, or a hang longer than 120 s), ``silent_wrong`` (no error, but wrong --
or bad input accepted without a word) or ``data_lost`` (a file that existed before the attempt --
inputs, checkpoints, earlier outputs -- changed or disappeared; every such file in the attempt's
folder and in the shared fixture is hashed before and after).

Fast by design: a 12-image COCO set of 48-pixel scenes in a temporary folder, one 1-epoch
``--width 0.25`` checkpoint reused everywhere, one thread (``OMP_NUM_THREADS=1``).

    python benchmarks/hostile_user.py                 # everything; writes benchmarks/results/hostile_user.json
    python benchmarks/hostile_user.py --list          # the attempts, by area
    python benchmarks/hostile_user.py --only boxes    # one area (writes nothing unless --json PATH)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import contextlib
import copy
import fractions
import functools
import hashlib
import io
import json
import math
import pickle
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

torch.set_num_threads(1)

from harness import RESULTS as RESULTS_DIR, ROOT, write_json  # noqa: E402

RESULTS = RESULTS_DIR / "hostile_user.json"
CLASSES = ("ok_clear_error", "ok_right_answer", "obscure_crash", "silent_wrong", "data_lost")
HANG_SECONDS = 120
#: The exception types a clear API error may have (when its message names the bad value).
CLEAR_TYPES: tuple[type[BaseException], ...] = (ValueError, TypeError, OSError, pickle.UnpicklingError)
TRAIN_FLAGS = ["--epochs", "1", "--image-size", "32", "--batch-size", "4", "--width", "0.25", "--no-progress",
               "--device", "cpu"]
ERROR_LINE = re.compile(r"^(python -m course_utils( \w+)?: )?error:")


# ============================================================================ plumbing
class Hang(BaseException):
    """Raised by the alarm when one in-process call runs longer than :data:`HANG_SECONDS`."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise Hang(f"no answer after {HANG_SECONDS} s")


def short(value: Any, n: int = 200) -> str:
    """A one-line description of ``value``, at most ``n`` characters."""
    if isinstance(value, torch.Tensor):
        text = f"tensor{tuple(value.shape)} {str(value.dtype).replace('torch.', '')} {value.flatten()[:6].tolist()}"
    else:
        text = repr(value)
    return " ".join(text.split())[:n]


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every regular file under ``folder`` (symlinks not followed)."""
    out = {}
    if not folder.exists():
        return out
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            try:
                out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            except OSError:
                out[str(path)] = "unreadable"
    return out


def lost_files(before: dict[str, str], after: dict[str, str], allowed: Iterable[Path] = ()) -> list[str]:
    """Files of ``before`` that changed or disappeared (except ``allowed``), as 'PATH (changed|removed)'."""
    ok = {str(p) for p in allowed}
    out = []
    for path, digest in before.items():
        if path in ok:
            continue
        if path not in after:
            out.append(f"{path} (removed)")
        elif after[path] != digest:
            out.append(f"{path} (changed)")
    return out


def cli_argv(args: Sequence[Any]) -> list[str]:
    return [sys.executable, "-m", "course_utils", *map(str, args)]


def start_cli(args: Sequence[Any], env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """Start ``python -m course_utils ARGS`` (the one place a command is launched)."""
    full_env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env or {}))
    full_env.pop("COURSE_UTILS_TRACEBACK", None)
    return subprocess.Popen(cli_argv(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=full_env,
                            cwd=cwd or ROOT, start_new_session=True)


@dataclass
class CliResult:
    rc: int | None  # None: killed after the time limit
    out: str
    err: str
    seconds: float

    @property
    def last_err(self) -> str:
        return next((line.strip() for line in reversed(self.err.splitlines()) if line.strip()), "")


def finish_cli(proc: subprocess.Popen, started: float, timeout: float = HANG_SECONDS) -> CliResult:
    """Wait for a command started by :func:`start_cli`; kill its process group after ``timeout`` s."""
    try:
        out, err = proc.communicate(timeout=timeout)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        rc = None
    return CliResult(rc, out, err, time.perf_counter() - started)


def run_cli(args: Sequence[Any], timeout: float = HANG_SECONDS, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> CliResult:
    started = time.perf_counter()
    return finish_cli(start_cli(args, env, cwd), started, timeout)


def judge_cli_error(res: CliResult, names: Sequence[str] = ()) -> tuple[str, str]:
    """The clear-error oracle of the command line (see the module docstring)."""
    if res.rc is None:
        return "obscure_crash", f"hang: no exit after {res.seconds:.0f} s"
    tb = "Traceback" in res.out or "Traceback" in res.err
    if res.rc == 2 and not tb and ERROR_LINE.match(res.last_err):
        missing = [n for n in names if n.lower() not in res.last_err.lower()]
        note = f" [does not name {missing[0]!r}]" if names and len(missing) == len(names) else ""
        return "ok_clear_error", res.last_err[:180] + note
    if res.rc == 0 and not tb:
        return "silent_wrong", f"accepted (exit 0): {(res.out.strip().splitlines() or [''])[-1][:160]}"
    return "obscure_crash", f"exit {res.rc}{' with Traceback' if tb else ''}: {res.last_err[:170]}"


def _innermost_frame(err: BaseException) -> str:
    tb = traceback.extract_tb(err.__traceback__)
    return tb[-1].filename if tb else ""


def judge_exception(err: BaseException, names: Sequence[str] = ()) -> tuple[str, str]:
    """The clear-error oracle of the API: a clear type (or the library's own deliberate error) naming a value."""
    message = f"{type(err).__name__}: {err}"
    if isinstance(err, Hang):
        return "obscure_crash", f"hang: {err}"
    if isinstance(err, SystemExit):
        return "obscure_crash", f"SystemExit escaped: {message}"
    named = not names or any(str(n).lower() in str(err).lower() for n in names)
    from_library = "course_utils" in _innermost_frame(err)
    if isinstance(err, CLEAR_TYPES) or (from_library and isinstance(err, RuntimeError)
                                        and not isinstance(err, NotImplementedError)):
        if named:
            return "ok_clear_error", message
        return "obscure_crash", f"{message} [does not name {names[0]!r}]"
    return "obscure_crash", message


# ============================================================================ the shared fixture
class Fixture:
    """What many attempts share, built lazily: the tiny dataset, one trained checkpoint, images."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.shared = root / "shared"
        self.shared.mkdir()
        self._ckpt: Path | None = None
        self._model: Any = None

    @functools.cached_property
    def data(self) -> dict[str, Path]:
        from course_utils.data import SceneConfig, write_coco_split

        config = SceneConfig(image_size=48)
        train = write_coco_split(self.shared / "train", list(range(8)), config)
        val = write_coco_split(self.shared / "val", list(range(100, 104)), config)
        return {"train": train, "val": val}

    @property
    def train(self) -> Path:
        return self.data["train"]

    @property
    def val(self) -> Path:
        return self.data["val"]

    @property
    def ckpt(self) -> Path:
        """``shared/run/last.pt`` of one 1-epoch run (trained once, by the command line)."""
        if self._ckpt is None:
            run = self.shared / "run"
            res = run_cli(["train", "--train", self.train, "--val", self.val, "--out", run, *TRAIN_FLAGS])
            if res.rc != 0 or not (run / "last.pt").is_file():
                raise RuntimeError(f"fixture: the baseline training failed (exit {res.rc}): {res.last_err}")
            self._ckpt = run / "last.pt"
        return self._ckpt

    def model(self) -> Any:
        """A fresh TinyDetector holding the fixture checkpoint's weights."""
        from course_utils.models import TinyDetector
        from course_utils.train import load_checkpoint

        meta = load_checkpoint(self.ckpt)["metadata"]["config"]
        model = TinyDetector(num_classes=meta["num_classes"], width=meta["width"], levels=meta.get("levels", 1))
        load_checkpoint(self.ckpt, model)
        return model.eval()

    def images(self) -> list[Path]:
        return sorted((self.train.parent / "images").glob("*.jpg"))


# ============================================================================ one attempt
class Trial:
    """The context of one attempt: a fresh folder, the fixture, and the guarded ways to act."""

    def __init__(self, fx: Fixture, folder: Path) -> None:
        self.fx, self.dir = fx, folder
        self.lost: list[str] = []
        self.dir.mkdir(parents=True)

    # -- acting, with the data-loss guard
    @contextlib.contextmanager
    def guard(self, may_change: Iterable[Path] = ()):
        before = file_hashes(self.dir)
        try:
            yield
        finally:
            self.lost += lost_files(before, file_hashes(self.dir), may_change)

    def cli(self, *args: Any, timeout: float = HANG_SECONDS, may_change: Iterable[Path] = (),
            env: dict[str, str] | None = None) -> CliResult:
        with self.guard(may_change):
            return run_cli(args, timeout, env)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` in this process with the hang alarm and the data-loss guard; exceptions propagate."""
        with self.guard():
            previous = signal.signal(signal.SIGALRM, _on_alarm)
            signal.alarm(HANG_SECONDS)
            try:
                return fn(*args, **kwargs)
            finally:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, previous)

    # -- oracles
    def error(self, fn: Callable[..., Any], *args: Any, names: Sequence[Any] = (), **kwargs: Any) -> tuple[str, str]:
        """Clear-error oracle: ``fn(*args, **kwargs)`` must raise a clear error naming one of ``names``."""
        try:
            got = self.call(fn, *args, **kwargs)
        except BaseException as err:  # noqa: BLE001 -- the outcome is what is judged
            if isinstance(err, KeyboardInterrupt):
                raise
            return judge_exception(err, [str(n) for n in names])
        return "silent_wrong", f"accepted, returned {short(got, 170)}"

    def value(self, fn: Callable[..., Any], *args: Any, check: Callable[[Any], Any], allow_error: bool = False,
              names: Sequence[Any] = (), **kwargs: Any) -> tuple[str, str]:
        """Right-answer oracle: ``check(result)`` returns True (or '' ) when right, else a description of the
        difference. With ``allow_error``, a clear error (naming one of ``names``) is accepted too."""
        try:
            got = self.call(fn, *args, **kwargs)
        except BaseException as err:  # noqa: BLE001
            if isinstance(err, KeyboardInterrupt):
                raise
            cls, detail = judge_exception(err, [str(n) for n in names])
            if allow_error and cls == "ok_clear_error":
                return cls, detail
            return "obscure_crash", f"refused a valid input: {detail}" if cls == "ok_clear_error" else detail
        try:
            verdict = check(got)
        except Exception as err:  # noqa: BLE001 -- a result the reference cannot even compare is wrong
            return "silent_wrong", f"result {short(got, 100)} not comparable: {type(err).__name__}: {err}"[:200]
        if verdict is True or verdict == "":
            return "ok_right_answer", f"matches the reference: {short(got, 150)}"
        return "silent_wrong", str(verdict) if verdict is not False else f"wrong: {short(got, 180)}"

    def cli_error(self, *args: Any, names: Sequence[Any] = (), **kwargs: Any) -> tuple[str, str]:
        return judge_cli_error(self.cli(*args, **kwargs), [str(n) for n in names])

    # -- small file helpers
    def copy_dataset(self, which: str = "train", name: str | None = None) -> Path:
        """A private copy of the fixture's ``train`` or ``val`` folder; returns its annotation file."""
        src = self.fx.data[which].parent
        dst = self.dir / (name or which)
        shutil.copytree(src, dst)
        return dst / "annotations.json"

    def coco(self, which: str = "train") -> dict[str, Any]:
        return json.loads(self.fx.data[which].read_text())

    def write_coco(self, data: dict[str, Any], name: str = "edited", image_dir: Path | None = None) -> Path:
        """``data`` as ``NAME/annotations.json`` beside a link to the fixture's images (or ``image_dir``)."""
        folder = self.dir / name
        folder.mkdir()
        (folder / "images").symlink_to(image_dir or self.fx.train.parent / "images")
        path = folder / "annotations.json"
        path.write_text(json.dumps(data, allow_nan=True))
        return path


@dataclass
class Attempt:
    area: str
    name: str
    fn: Callable[[Trial], tuple[str, str]]


ATTEMPTS: list[Attempt] = []


def attempt(area: str, name: str | None = None) -> Callable:
    """Register ``fn(trial) -> (class, detail)`` as one attempt."""
    def register(fn: Callable[[Trial], tuple[str, str]]) -> Callable:
        ATTEMPTS.append(Attempt(area, name or fn.__name__, fn))
        return fn
    return register


def add(area: str, name: str, fn: Callable[[Trial], tuple[str, str]]) -> None:
    ATTEMPTS.append(Attempt(area, name, fn))


# ============================================================================ attempts
# The reproductions of the reports this pass was written for come first in each area.
from course_utils import boxes as B  # noqa: E402 -- after the thread settings

# ---------------------------------------------------------------- cli
@attempt("cli", "export --onnx equal to the checkpoint path")
def _(t: Trial) -> tuple[str, str]:
    ckpt = t.dir / "model.pt"
    shutil.copy(t.fx.ckpt, ckpt)
    return t.cli_error("export", ckpt, "--onnx", ckpt, "--overwrite", names=["model.pt"])


@attempt("cli", "train into an existing --out without --resume/--overwrite")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "run"
    shutil.copytree(t.fx.ckpt.parent, out)
    return t.cli_error("train", "--train", t.fx.train, "--val", t.fx.val, "--out", out, *TRAIN_FLAGS,
                       names=["--out", "run"])


@attempt("cli", "two trainings into one --out at once (one must be refused)")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "run"
    args = ["train", "--train", t.fx.train, "--val", t.fx.val, "--out", out, *TRAIN_FLAGS[:1], "3", *TRAIN_FLAGS[2:]]
    with t.guard():
        started = time.perf_counter()
        first = start_cli(args)
        time.sleep(1.0)
        second = run_cli(args)
        first_res = finish_cli(first, started)
    results = sorted([first_res, second], key=lambda r: r.rc if r.rc is not None else 99)
    ok, refused = results
    if ok.rc == 0 and judge_cli_error(refused)[0] == "ok_clear_error" and (out / "last.pt").is_file():
        return "ok_clear_error", f"one trained, the other refused: {refused.last_err[:160]}"
    if ok.rc == 0 and refused.rc == 0:
        return "silent_wrong", "both trainings ran into the same --out"
    return "obscure_crash", f"exits {first_res.rc} and {second.rc}: {first_res.last_err[:80]} | {second.last_err[:80]}"


@attempt("cli", "predict a.jpg a.png notes.txt z.jpg")
def _(t: Trial) -> tuple[str, str]:
    from PIL import Image

    src = t.fx.images()[0]
    a_jpg, a_png, notes, z_jpg = t.dir / "a.jpg", t.dir / "a.png", t.dir / "notes.txt", t.dir / "z.jpg"
    shutil.copy(src, a_jpg)
    Image.open(src).save(a_png)
    notes.write_text("not an image\n")
    shutil.copy(src, z_jpg)
    out = t.dir / "pred"
    res = t.cli("predict", t.fx.ckpt, a_jpg, a_png, notes, z_jpg, "--out", out)
    cls, detail = judge_cli_error(res, ["notes.txt"])
    drawn = sorted(p.name for p in out.glob("*.png")) if out.is_dir() else []
    if cls == "ok_clear_error" and len(drawn) == 3 and "notes.txt" in res.last_err:
        return cls, f"drew {drawn}; {detail}"
    if cls == "ok_clear_error":
        return "silent_wrong", f"drew {drawn} (want 3); {detail}"
    return cls, detail


@attempt("cli", "predict on an 8000x8000 PNG (refused in < 10 s)")
def _(t: Trial) -> tuple[str, str]:
    from PIL import Image

    big = t.dir / "big.png"
    Image.new("L", (8000, 8000)).save(big, optimize=False, compress_level=1)
    res = t.cli("predict", t.fx.ckpt, big, "--out", t.dir / "pred")
    cls, detail = judge_cli_error(res, ["big.png"])
    if cls == "ok_clear_error" and res.seconds >= 10:
        return "obscure_crash", f"refused, but after {res.seconds:.1f} s: {detail}"
    return cls, f"{res.seconds:.1f} s: {detail}"


@attempt("cli", "predict --score-threshold nan")
def _(t: Trial) -> tuple[str, str]:
    return t.cli_error("predict", t.fx.ckpt, t.fx.images()[0], "--out", t.dir / "p", "--score-threshold", "nan",
                       names=["nan"])


# -- bad image files while training, evaluating and calibrating an int8 export
def _bad_image(kind: str, path: Path, good: Path) -> None:
    """Replace ``path`` by a broken image of ``kind``."""
    if kind == "corrupt":
        path.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8)
    elif kind == "svg":
        path.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="48" height="48"><rect width="48" height="48"/></svg>')
    elif kind == "text":
        path.write_text("id,label\n1,circle\n")
    elif kind == "truncated":
        path.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    elif kind == "empty":
        path.write_bytes(b"")


def _dataset_with_bad_image(t: Trial, kind: str, which: str = "train") -> tuple[Path, Path]:
    ann = t.copy_dataset(which, f"{which}_{kind}")
    bad = ann.parent / "images" / "00003.jpg"
    _bad_image(kind, bad, t.fx.data[which].parent / "images" / "00003.jpg")
    return ann, bad


for _kind in ("corrupt", "svg", "text", "truncated"):
    def _train_bad(t: Trial, kind: str = _kind) -> tuple[str, str]:
        ann, bad = _dataset_with_bad_image(t, kind)
        return t.cli_error("train", "--train", ann, "--val", t.fx.val, "--out", t.dir / "run", *TRAIN_FLAGS,
                           names=[bad.name])

    def _evaluate_bad(t: Trial, kind: str = _kind) -> tuple[str, str]:
        ann, bad = _dataset_with_bad_image(t, kind, "val")
        return t.cli_error("evaluate", t.fx.ckpt, "--data", ann, names=[bad.name])

    def _export_bad(t: Trial, kind: str = _kind) -> tuple[str, str]:
        ann, bad = _dataset_with_bad_image(t, kind)
        onnx = t.dir / "m.onnx"
        cls, detail = t.cli_error("export", t.fx.ckpt, "--onnx", onnx, "--int8", "--calib", ann, names=[bad.name])
        written = [p.name for p in t.dir.glob("*.onnx")]
        if cls == "ok_clear_error" and written:
            return "silent_wrong", f"refused, but wrote {written} first: {detail}"
        return cls, detail

    add("cli", f"train with a {_kind} image in --train", _train_bad)
    add("cli", f"evaluate with a {_kind} image in --data", _evaluate_bad)
    add("cli", f"export --int8 --calib with a {_kind} image (no fp32 ONNX written first)", _export_bad)


class _Evil:
    """A pickle that creates a folder when unpickled: proof of executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (self.marker,)


def _evil_checkpoint(t: Trial) -> tuple[Path, Path]:
    marker = t.dir / "PWNED"
    path = t.dir / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "metadata": {"x": _Evil(marker)}}, path)
    return path, marker


def _judge_with_marker(cls: str, detail: str, marker: Path) -> tuple[str, str]:
    if marker.exists():
        return "silent_wrong", f"the pickle's code RAN (created {marker.name}); {detail}"
    return cls, detail


@attempt("cli", "unsafe pickle as train --init")
def _(t: Trial) -> tuple[str, str]:
    path, marker = _evil_checkpoint(t)
    cls, detail = t.cli_error("train", "--train", t.fx.train, "--val", t.fx.val, "--out", t.dir / "run", "--init", path,
                              *TRAIN_FLAGS, names=["evil.pt"])
    return _judge_with_marker(cls, detail, marker)


@attempt("cli", "unsafe pickle to evaluate")
def _(t: Trial) -> tuple[str, str]:
    path, marker = _evil_checkpoint(t)
    return _judge_with_marker(*t.cli_error("evaluate", path, "--data", t.fx.val, names=["evil.pt"]), marker)


@attempt("cli", "train --out naming a file")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "notes.txt"
    out.write_text("my notes\n")
    return t.cli_error("train", "--train", t.fx.train, "--val", t.fx.val, "--out", out, *TRAIN_FLAGS, names=["notes.txt"])


for _seed_text in ("-1", "99999999999999999999", "1.5", "0x10"):
    add("cli", f"train --seed {_seed_text}", lambda t, s=_seed_text: t.cli_error(
        "train", "--train", t.fx.train, "--val", t.fx.val, "--out", t.dir / "run", *TRAIN_FLAGS, "--seed", s, names=[s]))


def _train_edited(t: Trial, edit: Callable[[dict[str, Any]], None], names: Sequence[str] = (), which: str = "train",
                  ) -> tuple[str, str]:
    """``train`` on the fixture's train file edited by ``edit`` (as --train, or as --val with ``which='val'``)."""
    data = t.coco(which)
    edit(data)
    ann = t.write_coco(data, image_dir=t.fx.data[which].parent / "images")
    files = ["--train", ann, "--val", t.fx.val] if which == "train" else ["--train", t.fx.train, "--val", ann]
    return t.cli_error("train", *files, "--out", t.dir / "run", *TRAIN_FLAGS, names=names)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data[key] = value
    return edit


def _set_in(key: str, field_name: str, value: Any, index: int = 0) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data[key][index][field_name] = value
    return edit


add("cli", "train on an empty images list", lambda t: _train_edited(t, _set("images", []), ["images"]))
add("cli", "train on empty categories", lambda t: _train_edited(t, _set("categories", []), ["categories"]))
add("cli", 'train with a category "name": null', lambda t: _train_edited(t, _set_in("categories", "name", None), ["name"]))
add("cli", 'train with a category "name": a list', lambda t: _train_edited(t, _set_in("categories", "name", ["a", "b"]),
                                                                           ["name"]))
add("cli", 'train with an annotation "area": 1e300', lambda t: _train_edited(t, _set_in("annotations", "area", 1e300),
                                                                             ["area"]))


def _all_crowd(data: dict[str, Any]) -> None:
    for a in data["annotations"]:
        a["iscrowd"] = 1


add("cli", "train with a val set whose annotations are all iscrowd=1",
    lambda t: _train_edited(t, _all_crowd, ["iscrowd", "crowd"], which="val"))


@attempt("cli", "evaluate --json naming a folder")
def _(t: Trial) -> tuple[str, str]:
    (t.dir / "results").mkdir()
    return t.cli_error("evaluate", t.fx.ckpt, "--data", t.fx.val, "--json", t.dir / "results", names=["results"])


@attempt("cli", "export --onnx naming a folder")
def _(t: Trial) -> tuple[str, str]:
    (t.dir / "models").mkdir()
    return t.cli_error("export", t.fx.ckpt, "--onnx", t.dir / "models", names=["models"])


@attempt("cli", "predict --out naming a file")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "out.png"
    out.write_bytes(b"keep me")
    return t.cli_error("predict", t.fx.ckpt, t.fx.images()[0], "--out", out, names=["out.png"])


@attempt("cli", "train --out /proc/nope (fails in seconds, before an epoch)")
def _(t: Trial) -> tuple[str, str]:
    res = t.cli("train", "--train", t.fx.train, "--val", t.fx.val, "--out", "/proc/nope", *TRAIN_FLAGS)
    cls, detail = judge_cli_error(res, ["/proc/nope"])
    if cls == "ok_clear_error" and ("epoch" in res.out or res.seconds > 20):
        return "obscure_crash", f"refused only after training ({res.seconds:.1f} s): {detail}"
    return cls, f"{res.seconds:.1f} s: {detail}"


@attempt("cli", "train --device meta")
def _(t: Trial) -> tuple[str, str]:
    return t.cli_error("train", "--train", t.fx.train, "--val", t.fx.val, "--out", t.dir / "run", *TRAIN_FLAGS[:-2],
                       "--device", "meta", names=["meta"])


@attempt("cli", "predict --device cuda:7 on a machine without that GPU")
def _(t: Trial) -> tuple[str, str]:
    if torch.cuda.device_count() > 7:
        return "ok_right_answer", "this machine has 8 GPUs; nothing to check"
    return t.cli_error("predict", t.fx.ckpt, t.fx.images()[0], "--out", t.dir / "p", "--device", "cuda:7", names=["cuda"])


for _cmd in ("train", "evaluate", "export", "predict"):
    def _help(t: Trial, cmd: str = _cmd) -> tuple[str, str]:
        res = t.cli(cmd, "--help")
        if res.rc == 0 and "usage:" in res.out and "--overwrite" in res.out and "Traceback" not in res.err:
            return "ok_right_answer", f"usage printed ({len(res.out.splitlines())} lines, lists --overwrite)"
        return "silent_wrong" if res.rc == 0 else "obscure_crash", f"exit {res.rc}: {res.out[-120:]} {res.last_err[:60]}"
    add("cli", f"{_cmd} --help (lists --overwrite)", _help)


def _earlier_drawing(t: Trial) -> tuple[Path, Path]:
    """An image of the fixture and a prediction folder already holding its PNG (an earlier drawing)."""
    img = t.fx.images()[0]
    out = t.dir / "pred"
    out.mkdir()
    (out / f"{img.stem}.png").write_bytes(b"an earlier drawing")
    return img, out


@attempt("cli", "predict into an --out holding the same PNG, no --overwrite")
def _(t: Trial) -> tuple[str, str]:
    img, out = _earlier_drawing(t)
    return t.cli_error("predict", t.fx.ckpt, img, "--out", out, names=[f"{img.stem}.png"])


@attempt("cli", "evaluate --json onto an existing file, no --overwrite")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "scores.json"
    out.write_text('{"mine": 1}\n')
    return t.cli_error("evaluate", t.fx.ckpt, "--data", t.fx.val, "--json", out, names=["scores.json"])


@attempt("cli", "evaluate --json --overwrite replaces the file with right numbers")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "scores.json"
    out.write_text('{"mine": 1}\n')
    res = t.cli("evaluate", t.fx.ckpt, "--data", t.fx.val, "--json", out, "--overwrite", may_change=[out])
    if res.rc != 0:
        return judge_cli_error(res)
    got = json.loads(out.read_text())
    return ("ok_right_answer", f"map {got.get('map')}") if "map" in got and got.get("images") == 4 else \
        ("silent_wrong", f"json {short(got)}")


@attempt("cli", "export onto an existing ONNX file, no --overwrite")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "m.onnx"
    out.write_bytes(b"an earlier model")
    return t.cli_error("export", t.fx.ckpt, "--onnx", out, names=["m.onnx"])


@attempt("cli", "train --resume --overwrite together")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "run"
    shutil.copytree(t.fx.ckpt.parent, out)
    return t.cli_error("train", "--train", t.fx.train, "--val", t.fx.val, "--out", out, "--resume", "--overwrite",
                       *TRAIN_FLAGS, names=["--resume", "--overwrite"])


@attempt("cli", "train --overwrite whose --init is the run's own last.pt")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "run"
    shutil.copytree(t.fx.ckpt.parent, out)
    return t.cli_error("train", "--train", t.fx.train, "--val", t.fx.val, "--out", out, "--overwrite", "--init",
                       out / "last.pt", *TRAIN_FLAGS, names=["last.pt"])


@attempt("cli", "evaluate with a JSON file as the checkpoint")
def _(t: Trial) -> tuple[str, str]:
    return t.cli_error("evaluate", t.fx.val, "--data", t.fx.val, names=["annotations.json"])


@attempt("cli", "evaluate --data naming the checkpoint")
def _(t: Trial) -> tuple[str, str]:
    return t.cli_error("evaluate", t.fx.ckpt, "--data", t.fx.ckpt, names=["last.pt"])


for _flag, _value in (("--epochs", "0"), ("--batch-size", "-3"), ("--lr", "nan"), ("--lr", "inf"), ("--width", "0"),
                      ("--image-size", "33"), ("--levels", "4"), ("--epochs", "1e3")):
    add("cli", f"train {_flag} {_value}", lambda t, f=_flag, v=_value: t.cli_error(
        "train", "--train", t.fx.train, "--val", t.fx.val, "--out", t.dir / "run",
        *[w for k, w in enumerate(TRAIN_FLAGS) if w != f and (k == 0 or TRAIN_FLAGS[k - 1] != f)], f, v, names=[v]))


@attempt("cli", "train interrupted (SIGINT) after its first epoch, then --resume")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "run"
    args = ["train", "--train", t.fx.train, "--val", t.fx.val, "--out", out, "--epochs", "3", *TRAIN_FLAGS[2:]]
    with t.guard():
        started = time.perf_counter()
        proc = start_cli(args)
        while not (out / "last.pt").exists() and proc.poll() is None and time.perf_counter() - started < HANG_SECONDS:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        first = finish_cli(proc, started)
    if first.rc == 0:
        return "ok_right_answer", "finished before the interrupt arrived"
    if first.rc != 130 or "Traceback" in first.err:
        return "obscure_crash", f"interrupted run: exit {first.rc}: {first.last_err[:150]}"
    res = t.cli(*args, "--resume", may_change=[out / "last.pt", out / "best.pt"])
    if res.rc == 0 and "resuming" in res.out:
        return "ok_right_answer", f"interrupt: {first.last_err[:80]}; resume: {res.out.strip().splitlines()[-1][:90]}"
    return judge_cli_error(res)


@attempt("cli", "train --overwrite deletes only last.pt/best.pt, keeps notes in --out")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "run"
    shutil.copytree(t.fx.ckpt.parent, out)
    (out / "notes.md").write_text("my notes\n")
    res = t.cli("train", "--train", t.fx.train, "--val", t.fx.val, "--out", out, "--overwrite", *TRAIN_FLAGS,
                may_change=[out / "last.pt", out / "best.pt"])
    if res.rc == 0 and (out / "last.pt").is_file():
        return "ok_right_answer", "retrained; notes.md kept"
    return judge_cli_error(res)


@attempt("cli", "predict a JPEG with a very long unicode file name")
def _(t: Trial) -> tuple[str, str]:
    name = ("ßé漢字🙂" * 12)[:60] + ".jpg"
    img = t.dir / name
    shutil.copy(t.fx.images()[0], img)
    res = t.cli("predict", t.fx.ckpt, img, "--out", t.dir / "p")
    drawn = list((t.dir / "p").glob("*.png")) if (t.dir / "p").is_dir() else []
    if res.rc == 0 and len(drawn) == 1:
        return "ok_right_answer", f"drew {drawn[0].name[:40]}"
    return judge_cli_error(res) if res.rc != 0 else ("silent_wrong", f"exit 0, drew {len(drawn)} files")


@attempt("cli", "predict with a file name too long for the file system")
def _(t: Trial) -> tuple[str, str]:
    return t.cli_error("predict", t.fx.ckpt, t.dir / ("x" * 300 + ".jpg"), "--out", t.dir / "p", names=["xxxx"])


@attempt("cli", "predict one image given twice")
def _(t: Trial) -> tuple[str, str]:
    img = t.fx.images()[0]
    return t.cli_error("predict", t.fx.ckpt, img, img, "--out", t.dir / "p", names=[img.name])


@attempt("cli", "predict --out inside a read-only location (/sys)")
def _(t: Trial) -> tuple[str, str]:
    return t.cli_error("predict", t.fx.ckpt, t.fx.images()[0], "--out", "/sys/course_pred", names=["/sys/course_pred"])


@attempt("cli", "an unknown command")
def _(t: Trial) -> tuple[str, str]:
    return t.cli_error("fit", "--train", t.fx.train, names=["fit"])


@attempt("cli", "no command at all")
def _(t: Trial) -> tuple[str, str]:
    return t.cli_error(names=["COMMAND", "command"])


# ---------------------------------------------------------------- data
def _grey16_png(path: Path, value: int) -> Path:
    from PIL import Image

    Image.fromarray(np.full((8, 8), value, dtype=np.uint16)).save(path)
    return path


@attempt("data", "read_image: 16-bit grey PNG at 32768 -> 32768/65535, like CocoDetection")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.data import read_image

    path = _grey16_png(t.dir / "g16.png", 32768)
    want = 32768 / 65535
    return t.value(read_image, path, check=lambda x: abs(float(x.mean()) - want) < 1e-6 and tuple(x.shape) == (3, 8, 8)
                   or f"mean {float(x.mean())!r}, want {want}")


@attempt("data", "read_image: float32 'F' TIFF at 0.5 -> 0.5")
def _(t: Trial) -> tuple[str, str]:
    from PIL import Image

    from course_utils.data import read_image

    path = t.dir / "f.tif"
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), mode="F").save(path)
    return t.value(read_image, path, check=lambda x: float(x.min()) == float(x.max()) == 0.5
                   or f"values {float(x.min())}..{float(x.max())}, want 0.5")


@attempt("data", "duplicate category names")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.data import CocoDetection

    data = t.coco()
    data["categories"] = [{"id": 1, "name": "circle"}, {"id": 2, "name": "circle"}, {"id": 3, "name": "square"}]
    return t.error(CocoDetection, t.write_coco(data), names=["circle"])


def _coco_load(path: Path, image_dir: Path | None = None) -> Any:
    """Construct the dataset and read every sample (what training would do first)."""
    from course_utils.data import CocoDetection

    ds = CocoDetection(path, image_dir=image_dir)
    ds.verify_images()
    return [ds[i] for i in range(len(ds))]


def _coco_edit_error(t: Trial, edit: Callable[[dict[str, Any]], Any], names: Sequence[str]) -> tuple[str, str]:
    data = t.coco()
    edit(data)
    return t.error(_coco_load, t.write_coco(data), names=names)


def _edit_image(field_name: str, value: Any, index: int = 0) -> Callable[[dict[str, Any]], None]:
    return _set_in("images", field_name, value, index)


def _edit_ann(field_name: str, value: Any, index: int = 0) -> Callable[[dict[str, Any]], None]:
    return _set_in("annotations", field_name, value, index)


def _edit_cat(field_name: str, value: Any, index: int = 0) -> Callable[[dict[str, Any]], None]:
    return _set_in("categories", field_name, value, index)


def _dup(key: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data[key][1]["id"] = data[key][0]["id"]
    return edit


def _drop(key: str, field_name: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        del data[key][0][field_name]
    return edit


_COCO_EDITS: list[tuple[str, Callable[[dict[str, Any]], Any], list[str]]] = [
    ("no 'annotations' key", lambda d: d.pop("annotations"), ["annotations"]),
    ("'images' is a dict", _set("images", {"1": "00001.jpg"}), ["images"]),
    ("'categories' is a string", _set("categories", "circle,square"), ["categories"]),
    ("image id as a string", _edit_image("id", "1"), ["id"]),
    ("image id as a float 1.0", _edit_image("id", 1.0), ["id"]),
    ("image id as true", _edit_image("id", True), ["id"]),
    ("image id null", _edit_image("id", None), ["id"]),
    ("duplicate image ids", _dup("images"), ["id"]),
    ("image width 0", _edit_image("width", 0), ["width"]),
    ("image width -48", _edit_image("width", -48), ["width"]),
    ("image width 48.5", _edit_image("width", 48.5), ["width"]),
    ("image height '48'", _edit_image("height", "48"), ["height"]),
    ("image width NaN", _edit_image("width", float("nan")), ["width"]),
    ("image declared 100000x100000 (> max_pixels)", lambda d: d["images"][0].update(width=100000, height=100000),
     ["max_pixels", "100000"]),
    ("image size in JSON differs from the file (64 vs 48)", lambda d: d["images"][0].update(width=64, height=64),
     ["64"]),
    ("file_name missing", _drop("images", "file_name"), ["file_name"]),
    ("file_name absolute /etc/hostname", _edit_image("file_name", "/etc/hostname"), ["/etc/hostname", "file_name"]),
    ("file_name ../ escaping the image folder", _edit_image("file_name", "../../val/images/00001.jpg"),
     ["..", "file_name"]),
    ("file_name of a missing file", _edit_image("file_name", "missing.jpg"), ["missing.jpg"]),
    ("file_name an int", _edit_image("file_name", 5), ["file_name"]),
    ("file_name empty", _edit_image("file_name", ""), ["file_name"]),
    ("file_name '.' (the folder itself)", _edit_image("file_name", "."), ["file_name", "folder"]),
    ("file_name with a NUL byte", _edit_image("file_name", "a\x00.jpg"), ["file_name", "a\\x00", "NUL"]),
    ("bbox with NaN", _edit_ann("bbox", [1, 1, float("nan"), 5]), ["bbox", "nan"]),
    ("bbox with Infinity", _edit_ann("bbox", [1, 1, float("inf"), 5]), ["bbox", "inf"]),
    ("bbox width 0", _edit_ann("bbox", [1, 1, 0, 5]), ["bbox", "box"]),
    ("bbox negative height", _edit_ann("bbox", [1, 1, 5, -5]), ["bbox", "box"]),
    ("bbox of 3 numbers", _edit_ann("bbox", [1, 1, 5]), ["bbox"]),
    ("bbox of strings", _edit_ann("bbox", ["1", "1", "5", "5"]), ["bbox"]),
    ("bbox as a dict", _edit_ann("bbox", {"x": 1, "y": 1, "w": 5, "h": 5}), ["bbox"]),
    ("bbox outside the image (x=100)", _edit_ann("bbox", [100, 1, 5, 5]), ["bbox", "box"]),
    ("bbox 1e300 wide", _edit_ann("bbox", [1, 1, 1e300, 5]), ["bbox", "box"]),
    ("bbox 1e-45 wide (0 in float32)", _edit_ann("bbox", [1, 1, 1e-45, 5]), ["bbox", "float32"]),
    ("bbox of booleans", _edit_ann("bbox", [True, True, True, True]), ["bbox"]),
    ("annotation with unknown category_id", _edit_ann("category_id", 99), ["99", "category_id"]),
    ("annotation with unknown image_id", _edit_ann("image_id", 99), ["99", "image_id"]),
    ("annotation image_id as a string", _edit_ann("image_id", "1"), ["image_id"]),
    ("duplicate annotation ids", _dup("annotations"), ["id"]),
    ("an annotation that is a number", lambda d: d["annotations"].__setitem__(0, 7), ["annotations"]),
    ("annotation without bbox", _drop("annotations", "bbox"), ["bbox"]),
    ("category id as a string", _edit_cat("id", "1"), ["id"]),
    ("duplicate category ids", _dup("categories"), ["id"]),
    ('category "name": ""', _edit_cat("name", ""), ["name"]),
    ("area -1", _edit_ann("area", -1), ["area"]),
    ("area NaN", _edit_ann("area", float("nan")), ["area"]),
    ("area as a string", _edit_ann("area", "big"), ["area"]),
    ("iscrowd 2", _edit_ann("iscrowd", 2), ["iscrowd"]),
    ("iscrowd 'yes'", _edit_ann("iscrowd", "yes"), ["iscrowd"]),
]
for _label, _edit, _names in _COCO_EDITS:
    add("data", f"CocoDetection: {_label}", lambda t, e=_edit, n=_names: _coco_edit_error(t, e, n))


def _raw_file_error(t: Trial, text: bytes, names: Sequence[str] = ("annotations.json",)) -> tuple[str, str]:
    folder = t.dir / "raw"
    folder.mkdir()
    (folder / "images").mkdir()
    path = folder / "annotations.json"
    path.write_bytes(text)
    return t.error(_coco_load, path, names=names)


for _label, _text in (("an empty file", b""), ("plain text", b"images: 1\n"), ("a JSON list", b"[1, 2, 3]"),
                      ("JSON null", b"null"), ("UTF-16 with a BOM", '{"images": []}'.encode("utf-16")),
                      ("100000 nested brackets", b"[" * 100000), ("invalid UTF-8", b'{"images": "\xff\xfe"}')):
    add("data", f"CocoDetection on {_label}", lambda t, x=_text: _raw_file_error(t, x))


@attempt("data", "CocoDetection: a bbox width written as 1e400 (JSON overflow to inf)")
def _(t: Trial) -> tuple[str, str]:
    data = t.coco()
    data["annotations"][0]["bbox"][2] = "__BIG__"
    path = t.write_coco(data)
    path.write_text(path.read_text().replace('"__BIG__"', "1e400"))
    return t.error(_coco_load, path, names=["bbox", "box", "inf"])


@attempt("data", "CocoDetection on a missing annotation file")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_coco_load, t.dir / "nope.json", names=["nope.json"])


@attempt("data", "CocoDetection on a folder instead of the JSON")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_coco_load, t.fx.train.parent, names=[t.fx.train.parent.name])


@attempt("data", "CocoDetection with image_dir a missing folder")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_coco_load, t.fx.train, t.dir / "no_images", names=["no_images"])


for _mp in (0, True, 1.5, -1, "25e6"):
    def _max_pixels(t: Trial, mp: Any = _mp) -> tuple[str, str]:
        from course_utils.data import CocoDetection

        return t.error(CocoDetection, t.fx.train, max_pixels=mp, names=["max_pixels"])
    add("data", f"CocoDetection max_pixels={_mp!r}", _max_pixels)


@attempt("data", "CocoDetection: an image symlink pointing at a text file outside")
def _(t: Trial) -> tuple[str, str]:
    images = t.dir / "imgs"
    shutil.copytree(t.fx.train.parent / "images", images)
    (images / "00002.jpg").unlink()
    outside = t.dir / "secret.txt"
    outside.write_text("not an image")
    (images / "00002.jpg").symlink_to(outside)
    return t.error(_coco_load, t.write_coco(t.coco(), image_dir=images), names=["00002.jpg", "secret.txt"])


@attempt("data", "CocoDetection: a dangling image symlink")
def _(t: Trial) -> tuple[str, str]:
    images = t.dir / "imgs"
    shutil.copytree(t.fx.train.parent / "images", images)
    (images / "00002.jpg").unlink()
    (images / "00002.jpg").symlink_to(t.dir / "gone.jpg")
    return t.error(_coco_load, t.write_coco(t.coco(), image_dir=images), names=["00002.jpg", "gone.jpg"])


@attempt("data", "CocoDetection targets: xywh -> xyxy, labels from sorted category ids (float64 reference)")
def _(t: Trial) -> tuple[str, str]:
    data = t.coco()
    ids = [c["id"] for c in data["categories"]]
    remap = {cid: 100 - 7 * k for k, cid in enumerate(ids)}  # descending ids: label order must follow sorted ids
    for c in data["categories"]:
        c["id"] = remap[c["id"]]
    for a in data["annotations"]:
        a["category_id"] = remap[a["category_id"]]
    path = t.write_coco(data)
    sorted_ids = sorted(remap.values())

    def check(samples: list[Any]) -> Any:
        for (image, target), img in zip(samples, data["images"]):
            anns = [a for a in data["annotations"] if a["image_id"] == img["id"]]
            want = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], dtype=np.float64)
            labels = [sorted_ids.index(a["category_id"]) + 1 for a in anns]
            if not np.allclose(target["boxes"].double().numpy().reshape(-1, 4), want.reshape(-1, 4), atol=1e-4):
                return f"image {img['id']}: boxes differ"
            if target["labels"].tolist() != labels:
                return f"image {img['id']}: labels {target['labels'].tolist()} vs {labels}"
            if tuple(image.shape) != (3, img["height"], img["width"]) or not (0 <= float(image.min()) <= float(image.max()) <= 1):
                return f"image {img['id']}: shape {tuple(image.shape)} range {float(image.min())}..{float(image.max())}"
        return True
    return t.value(_coco_load, path, check=check)


def _write_mode_image(path: Path, mode: str) -> np.ndarray:
    """Save a small image of ``mode`` at ``path``; return the expected (3, H, W) float64 in [0, 1]."""
    from PIL import Image

    rng = np.random.default_rng(0)
    if mode == "RGBA":
        arr = rng.integers(0, 256, (6, 5, 4), dtype=np.uint8)
        arr[..., 3] = 0  # fully transparent: colour must be kept, not composited
        Image.fromarray(arr, "RGBA").save(path)
        return arr[..., :3].transpose(2, 0, 1) / 255.0
    if mode == "L":
        arr = rng.integers(0, 256, (6, 5), dtype=np.uint8)
        Image.fromarray(arr, "L").save(path)
        return np.repeat(arr[None] / 255.0, 3, 0)
    if mode == "1":
        arr = rng.integers(0, 2, (6, 5)).astype(bool)
        Image.fromarray(arr).convert("1").save(path)
        return np.repeat(arr[None].astype(np.float64), 3, 0)
    if mode == "P":
        img = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8), "RGB").quantize(8)
        img.save(path)
        return np.asarray(img.convert("RGB")).transpose(2, 0, 1) / 255.0
    if mode == "I;16-0":
        Image.fromarray(np.zeros((6, 5), dtype=np.uint16)).save(path)
        return np.zeros((3, 6, 5))
    if mode == "I;16-max":
        Image.fromarray(np.full((6, 5), 65535, dtype=np.uint16)).save(path)
        return np.ones((3, 6, 5))
    if mode == "LA":
        arr = rng.integers(0, 256, (6, 5, 2), dtype=np.uint8)
        Image.fromarray(arr, "LA").save(path)
        return np.repeat(arr[None, ..., 0] / 255.0, 3, 0)
    if mode == "F-1.0":
        Image.fromarray(np.full((6, 5), 1.0, dtype=np.float32), "F").save(path)
        return np.ones((3, 6, 5))
    raise ValueError(mode)


for _mode, _suffix in (("RGBA", "png"), ("L", "png"), ("1", "png"), ("P", "png"), ("I;16-0", "png"),
                       ("I;16-max", "png"), ("LA", "png"), ("F-1.0", "tif")):
    def _read_mode(t: Trial, mode: str = _mode, suffix: str = _suffix) -> tuple[str, str]:
        from course_utils.data import read_image

        path = t.dir / f"img.{suffix}"
        want = _write_mode_image(path, mode)
        return t.value(read_image, path, check=lambda x: (tuple(x.shape) == want.shape and
                                                          np.allclose(x.double().numpy(), want, atol=1e-6))
                       or f"shape {tuple(x.shape)}, max gap {np.abs(x.double().numpy() - want).max() if tuple(x.shape) == want.shape else 'n/a'}")
    add("data", f"read_image of a {_mode} {_suffix.upper()} (float64 reference)", _read_mode)


def _bad_pixels_tiff(t: Trial, arr: np.ndarray, mode: str) -> tuple[str, str]:
    from PIL import Image

    from course_utils.data import read_image

    path = t.dir / "odd.tif"
    Image.fromarray(arr, mode).save(path)
    return t.error(read_image, path, names=["odd.tif"])


add("data", "read_image of an 'F' TIFF at 1.5 (outside [0, 1])",
    lambda t: _bad_pixels_tiff(t, np.full((4, 4), 1.5, np.float32), "F"))
add("data", "read_image of an 'F' TIFF holding NaN",
    lambda t: _bad_pixels_tiff(t, np.full((4, 4), np.nan, np.float32), "F"))
add("data", "read_image of a 32-bit 'I' TIFF (no defined range)",
    lambda t: _bad_pixels_tiff(t, np.full((4, 4), 7, np.int32), "I"))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


@attempt("data", "read_image of a PNG whose header claims 100000x100000 (a decompression bomb)")
def _(t: Trial) -> tuple[str, str]:
    import struct

    from course_utils.data import read_image

    path = t.dir / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 0, 0, 0, 0))
                     + _png_chunk(b"IEND", b""))
    started = time.perf_counter()
    cls, detail = t.error(read_image, path, names=["bomb.png"])
    return cls, f"{time.perf_counter() - started:.2f} s: {detail}"


for _label, _maker in (("a zero-byte file", lambda p: p.write_bytes(b"")),
                       ("a folder", lambda p: p.mkdir()),
                       ("a missing file", lambda p: None),
                       ("an SVG", lambda p: p.write_text('<svg xmlns="http://www.w3.org/2000/svg"/>'))):
    def _read_bad(t: Trial, maker: Callable[[Path], Any] = _maker) -> tuple[str, str]:
        from course_utils.data import read_image

        path = t.dir / "picture.png"
        maker(path)
        return t.error(read_image, path, names=["picture.png"])
    add("data", f"read_image of {_label}", _read_bad)

for _mp in (0, True, 2.5, None):
    def _read_mp(t: Trial, mp: Any = _mp) -> tuple[str, str]:
        from course_utils.data import read_image

        return t.error(read_image, t.fx.images()[0], max_pixels=mp, names=["max_pixels"])
    add("data", f"read_image max_pixels={_mp!r}", _read_mp)


@attempt("data", "write_coco_split into a folder holding a dataset, no overwrite")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.data import SceneConfig, write_coco_split

    ann = t.copy_dataset("val")
    return t.error(write_coco_split, ann.parent, [1, 2], SceneConfig(image_size=48), names=[str(ann.parent.name)])


for _seeds in ([-1], [1.5], "abc", [True], None):
    def _bad_seeds(t: Trial, seeds: Any = _seeds) -> tuple[str, str]:
        from course_utils.data import SceneConfig, write_coco_split

        return t.error(write_coco_split, t.dir / "ds", seeds, SceneConfig(image_size=48), names=["seed"])
    add("data", f"write_coco_split seeds={_seeds!r}", _bad_seeds)

for _kw in ({"image_size": 0}, {"min_size": float("nan")}, {"max_overlap": 2.0}, {"min_objects": 5, "max_objects": 2},
            {"image_size": 5000, "supersample": 4}, {"noise_std": -1.0}):
    def _scene(t: Trial, kw: dict[str, Any] = _kw) -> tuple[str, str]:
        from course_utils.data import SceneConfig

        return t.error(SceneConfig, **kw, names=list(kw))
    add("data", f"SceneConfig({', '.join(f'{k}={v!r}' for k, v in _kw.items())})", _scene)


@attempt("data", "collate_detection([])")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.data import collate_detection

    return t.error(collate_detection, [], names=["empty"])


@attempt("data", "letterbox then undo_letterbox gives the boxes back (float64 reference)")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.data import letterbox, undo_letterbox

    image = torch.rand(3, 30, 70)
    boxes = torch.tensor([[1.0, 2.0, 20.0, 25.0], [40.0, 0.0, 70.0, 30.0]])
    target = {"boxes": boxes.clone(), "labels": torch.tensor([1, 2])}

    def roundtrip() -> Tensor:
        _, tgt = letterbox(image, target, 64)
        pred = {"boxes": tgt["boxes"].clone(), "scores": torch.ones(2), "labels": torch.tensor([1, 2])}
        (back,), _ = undo_letterbox([pred], [tgt])
        return back["boxes"]
    return t.value(roundtrip, check=lambda b: torch.allclose(b.double(), boxes.double(), atol=1e-3)
                   or f"{b.tolist()} vs {boxes.tolist()}")


# ---------------------------------------------------------------- boxes
@attempt("boxes", "nms with 4 boxes and 2 scores")
def _(t: Trial) -> tuple[str, str]:
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 5, 5]], dtype=torch.float32)
    return t.error(B.nms, boxes, torch.tensor([0.9, 0.8]), 0.5, names=["scores"])


@attempt("boxes", "box_area([[10,10,0,5]]) (inverted box)")
def _(t: Trial) -> tuple[str, str]:
    return t.error(B.box_area, torch.tensor([[10.0, 10.0, 0.0, 5.0]]), names=["box"])


@attempt("boxes", "nms on a 1-D tensor")
def _(t: Trial) -> tuple[str, str]:
    return t.error(B.nms, torch.tensor([0.0, 0.0, 10.0, 10.0]), torch.tensor([0.9]), 0.5, names=["boxes"])


@attempt("boxes", "box_convert on a 1-D box == torchvision")
def _(t: Trial) -> tuple[str, str]:
    import torchvision

    box = torch.tensor([10.0, 20.0, 4.0, 6.0])
    want = torchvision.ops.box_convert(box, "xywh", "xyxy")
    return t.value(B.box_convert, box, "xywh", "xyxy", check=lambda got: torch.equal(got, want) or f"{got} vs {want}")


@attempt("boxes", "make_anchors(0, 0, 0)")
def _(t: Trial) -> tuple[str, str]:
    return t.error(B.make_anchors, 0, 0, 0, names=["feature_size"])


@attempt("boxes", "batched_nms exact: overlapping pairs far apart, class ids ~1000")
def _(t: Trial) -> tuple[str, str]:
    import torchvision

    g = torch.Generator().manual_seed(0)
    centres = torch.rand(30, 1, 2, generator=g) * 5e4
    xy = (centres + torch.rand(30, 2, 2, generator=g) * 4).reshape(60, 2)  # 30 clusters of 2 overlapping boxes
    boxes = torch.cat([xy, xy + 20], 1)
    scores = torch.rand(60, generator=g)
    idxs = 1000 + torch.randint(0, 3, (60,), generator=g)
    keep = []  # reference: one torchvision nms per class in float64, merged by score
    for c in idxs.unique():
        m = (idxs == c).nonzero().flatten()
        keep += m[torchvision.ops.nms(boxes[m].double(), scores[m].double(), 0.5)].tolist()
    want = sorted(keep, key=lambda i: (-float(scores[i]), i))
    return t.value(B.batched_nms, boxes, scores, idxs, 0.5, check=lambda got: got.tolist() == want
                   or f"kept {len(got)} boxes, reference {len(want)}")


# ---------------------------------------------------------------- metrics
def _pred(boxes: Sequence[Sequence[float]], scores: Sequence[float], labels: Sequence[int]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.tensor(labels, dtype=torch.int64)}


def _gt(boxes: Sequence[Sequence[float]], labels: Sequence[int], **extra: Any) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.int64),
            **{k: torch.as_tensor(v) for k, v in extra.items()}}


@attempt("metrics", "bootstrap_map on 1 image")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import bootstrap_map

    preds = [_pred([[0, 0, 10, 10]], [0.9], [1])]
    targets = [_gt([[0, 0, 10, 10]], [1])]
    return t.value(bootstrap_map, preds, targets, n_boot=50, allow_error=True, names=["image"],
                   check=lambda r: all(math.isfinite(v) or math.isnan(v) for v in r.values() if isinstance(v, float))
                   and r.get("map", 1.0) == 1.0 or f"got {short(r)}")


# ---------------------------------------------------------------- boxes (more)
def _rand_boxes(n: int, seed: int, size: float = 100.0, dtype: torch.dtype = torch.float32) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size / 2 + 1
    return torch.cat([xy, xy + wh], 1).to(dtype)


def _tv() -> Any:
    import torchvision

    return torchvision.ops


def _same_tensor(want: Tensor, atol: float = 0.0) -> Callable[[Any], Any]:
    def check(got: Any) -> Any:
        if not isinstance(got, Tensor) or got.shape != want.shape:
            return f"got {short(got, 80)}, want shape {tuple(want.shape)}"
        if atol == 0.0 and got.dtype == want.dtype and torch.equal(got, want):
            return True
        if torch.allclose(got.double(), want.double(), atol=atol, rtol=1e-6, equal_nan=True):
            return True
        return f"max gap {float((got.double() - want.double()).abs().nan_to_num(float('inf')).max()):.3g}: {short(got, 120)}"
    return check


for _seed, _thr in ((1, 0.5), (2, 0.3), (3, 0.0), (4, 1.0), (5, 0.7)):
    def _nms_ref(t: Trial, seed: int = _seed, thr: float = _thr) -> tuple[str, str]:
        boxes = _rand_boxes(50, seed, 60)
        scores = torch.rand(50, generator=torch.Generator().manual_seed(seed))
        return t.value(B.nms, boxes, scores, thr, check=_same_tensor(_tv().nms(boxes, scores, thr)))
    add("boxes", f"nms == torchvision (50 random boxes, threshold {_thr})", _nms_ref)


@attempt("boxes", "nms in float64 == torchvision")
def _(t: Trial) -> tuple[str, str]:
    boxes = _rand_boxes(40, 9, 60, torch.float64)
    scores = torch.rand(40, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    return t.value(B.nms, boxes, scores, 0.5, check=_same_tensor(_tv().nms(boxes, scores, 0.5)))


@attempt("boxes", "nms with no boxes -> empty int64")
def _(t: Trial) -> tuple[str, str]:
    return t.value(B.nms, torch.zeros(0, 4), torch.zeros(0), 0.5,
                   check=lambda k: (k.dtype == torch.int64 and k.numel() == 0) or f"got {short(k)}")


@attempt("boxes", "nms of integer boxes == torchvision on their float copy")
def _(t: Trial) -> tuple[str, str]:
    boxes = _rand_boxes(30, 11, 60).round().to(torch.int64)
    scores = torch.rand(30, generator=torch.Generator().manual_seed(11))
    want = _tv().nms(boxes.float(), scores, 0.5)
    return t.value(B.nms, boxes, scores, 0.5, check=_same_tensor(want), allow_error=True, names=["int", "dtype"])


_NMS_BAD = [
    ("NaN scores", lambda: (_rand_boxes(4, 0), torch.tensor([0.9, float("nan"), 0.5, 0.4]), 0.5), ["nan", "scores"]),
    ("NaN in a box", lambda: (torch.tensor([[0, 0, float("nan"), 10.0], [1, 1, 9, 9.0]]), torch.tensor([0.9, 0.8]), 0.5),
     ["nan", "boxes"]),
    ("inf in a box", lambda: (torch.tensor([[0, 0, float("inf"), 10.0], [1, 1, 9, 9.0]]), torch.tensor([0.9, 0.8]), 0.5),
     ["inf", "boxes"]),
    ("iou_threshold NaN", lambda: (_rand_boxes(4, 0), torch.rand(4), float("nan")), ["iou_threshold", "nan"]),
    ("iou_threshold '0.5'", lambda: (_rand_boxes(4, 0), torch.rand(4), "0.5"), ["iou_threshold", "0.5"]),
    ("iou_threshold True", lambda: (_rand_boxes(4, 0), torch.rand(4), True), ["iou_threshold", "True"]),
    ("boxes of shape (N, 5)", lambda: (torch.rand(4, 5), torch.rand(4), 0.5), ["boxes", "5"]),
    ("scores of shape (N, 1)", lambda: (_rand_boxes(4, 0), torch.rand(4, 1), 0.5), ["scores"]),
    ("boxes as a list", lambda: (_rand_boxes(4, 0).tolist(), torch.rand(4), 0.5), ["boxes", "list"]),
    ("inverted boxes", lambda: (torch.tensor([[10, 10, 0, 0.0], [0, 0, 5, 5.0]]), torch.tensor([0.9, 0.8]), 0.5),
     ["boxes", "x2 < x1"]),
    ("complex boxes", lambda: (_rand_boxes(2, 0).to(torch.complex64), torch.rand(2), 0.5), ["boxes", "complex"]),
]
for _label, _args, _names in _NMS_BAD:
    add("boxes", f"nms with {_label}", lambda t, a=_args, n=_names: t.error(B.nms, *a(), names=n))


for _thr in (-0.1, 1.5):
    def _nms_odd_threshold(t: Trial, thr: float = _thr) -> tuple[str, str]:
        boxes, scores = _rand_boxes(12, 3, 30), torch.rand(12, generator=torch.Generator().manual_seed(3))
        return t.value(B.nms, boxes, scores, thr, check=_same_tensor(_tv().nms(boxes, scores, thr)), allow_error=True,
                       names=["iou_threshold"])
    add("boxes", f"nms with iou_threshold {_thr} == torchvision (or refused)", _nms_odd_threshold)


@attempt("boxes", "batched_nms with negative class ids == per-class torchvision")
def _(t: Trial) -> tuple[str, str]:
    boxes = _rand_boxes(40, 21, 50)
    scores = torch.rand(40, generator=torch.Generator().manual_seed(21))
    idxs = torch.randint(-3, 2, (40,), generator=torch.Generator().manual_seed(22))
    return t.value(B.batched_nms, boxes, scores, idxs, 0.5,
                   check=_same_tensor(_tv().batched_nms(boxes.double(), scores.double(), idxs, 0.5)))


@attempt("boxes", "batched_nms with no boxes")
def _(t: Trial) -> tuple[str, str]:
    return t.value(B.batched_nms, torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5,
                   check=lambda k: k.numel() == 0 or short(k))


@attempt("boxes", "batched_nms with idxs shorter than boxes")
def _(t: Trial) -> tuple[str, str]:
    return t.error(B.batched_nms, _rand_boxes(5, 0), torch.rand(5), torch.zeros(3, dtype=torch.int64), 0.5,
                   names=["idxs"])


@attempt("boxes", "batched_nms with float class ids 0.2 and 0.7 (two classes)")
def _(t: Trial) -> tuple[str, str]:
    boxes = torch.tensor([[0, 0, 10, 10.0], [0, 0, 10, 10.0]])
    scores, idxs = torch.tensor([0.9, 0.8]), torch.tensor([0.2, 0.7])
    return t.value(B.batched_nms, boxes, scores, idxs, 0.5, allow_error=True, names=["idxs"],
                   check=lambda k: k.tolist() == [0, 1] or f"kept {k.tolist()}; classes 0.2 and 0.7 differ, want [0, 1]")


@attempt("boxes", "box_iou == torchvision (random sets)")
def _(t: Trial) -> tuple[str, str]:
    a, b = _rand_boxes(13, 31), _rand_boxes(7, 32)
    return t.value(B.box_iou, a, b, check=_same_tensor(_tv().box_iou(a.double(), b.double()), 1e-6))


@attempt("boxes", "box_iou of (0, 4) and (3, 4) -> (0, 3)")
def _(t: Trial) -> tuple[str, str]:
    return t.value(B.box_iou, torch.zeros(0, 4), _rand_boxes(3, 0),
                   check=lambda r: tuple(r.shape) == (0, 3) or f"shape {tuple(r.shape)}")


@attempt("boxes", "box_iou of two zero-area boxes (0/0)")
def _(t: Trial) -> tuple[str, str]:
    a = torch.tensor([[5.0, 5.0, 5.0, 5.0]])
    return t.value(B.box_iou, a, a, allow_error=True, names=["area", "box"], check=_same_tensor(_tv().box_iou(a, a)))


@attempt("boxes", "box_iou with 1e20 coordinates == float64 reference")
def _(t: Trial) -> tuple[str, str]:
    a = torch.tensor([[0.0, 0.0, 1e20, 1e20]])
    b = torch.tensor([[0.0, 0.0, 5e19, 1e20]])
    return t.value(B.box_iou, a, b, allow_error=True, names=["1e+20", "float32", "overflow"],
                   check=lambda r: abs(float(r) - 0.5) < 1e-6 or f"IoU {float(r)}, want 0.5 (float32 area overflows; "
                                                                  f"torchvision gives {float(_tv().box_iou(a, b))} too)")


@attempt("boxes", "box_area == torchvision")
def _(t: Trial) -> tuple[str, str]:
    b = _rand_boxes(20, 41)
    return t.value(B.box_area, b, check=_same_tensor(_tv().box_area(b.double()), 1e-3))


@attempt("boxes", "box_area of int64 boxes (exact Python ints)")
def _(t: Trial) -> tuple[str, str]:
    b = torch.tensor([[0, 0, 3_000_000, 3_000_000], [1, 2, 4, 8]])
    want = [3_000_000 * 3_000_000, 3 * 6]
    return t.value(B.box_area, b, check=lambda r: [int(v) for v in r.tolist()] == want or f"{r.tolist()} vs {want}",
                   allow_error=True, names=["dtype", "int64"])


@attempt("boxes", "box_area of a box holding NaN == torchvision (NaN) or refused")
def _(t: Trial) -> tuple[str, str]:
    b = torch.tensor([[0, 0, float("nan"), 1.0]])
    return t.value(B.box_area, b, check=_same_tensor(_tv().box_area(b)), allow_error=True, names=["nan"])


@attempt("boxes", "box_area of an empty (0, 4) tensor")
def _(t: Trial) -> tuple[str, str]:
    return t.value(B.box_area, torch.zeros(0, 4), check=lambda r: tuple(r.shape) == (0,) or f"shape {tuple(r.shape)}")


for _label, _make, _names in (("a list", lambda: [[0, 0, 1, 1]], ["boxes", "list"]),
                              ("a numpy array", lambda: np.array([[0, 0, 1, 1.0]]), ["boxes", "ndarray", "numpy"]),
                              ("shape (4,)", lambda: torch.tensor([0, 0, 1, 1.0]), ["boxes", "(4,)"]),
                              ("a string", lambda: "0 0 1 1", ["boxes", "str"])):
    add("boxes", f"box_area of {_label}", lambda t, m=_make, n=_names: t.error(B.box_area, m(), names=n))

for _fin, _fout in (("xyxy", "xywh"), ("xyxy", "cxcywh"), ("xywh", "xyxy"), ("xywh", "cxcywh"), ("cxcywh", "xyxy"),
                    ("cxcywh", "xywh")):
    def _convert(t: Trial, fin: str = _fin, fout: str = _fout) -> tuple[str, str]:
        b = _rand_boxes(10, 51)
        return t.value(B.box_convert, b, fin, fout, check=_same_tensor(_tv().box_convert(b, fin, fout), 1e-5))
    add("boxes", f"box_convert {_fin} -> {_fout} == torchvision", _convert)


@attempt("boxes", "box_convert of a (2, 3, 4) batch == torchvision")
def _(t: Trial) -> tuple[str, str]:
    b = _rand_boxes(6, 52).reshape(2, 3, 4)
    return t.value(B.box_convert, b, "xywh", "cxcywh", check=_same_tensor(_tv().box_convert(b, "xywh", "cxcywh"), 1e-5))


for _fin, _fout in (("XYXY", "xywh"), ("xyxy", "xywh "), ("xyxy", None)):
    add("boxes", f"box_convert {_fin!r} -> {_fout!r}", lambda t, i=_fin, o=_fout: t.error(
        B.box_convert, _rand_boxes(2, 0), i, o, names=[repr(i), repr(o), "fmt"]))

add("boxes", "box_convert of shape (3, 3)", lambda t: t.error(B.box_convert, torch.rand(3, 3), "xyxy", "xywh",
                                                               names=["boxes", "3"]))


@attempt("boxes", "make_anchors == torchvision AnchorGenerator (3x4 cells, 2 sizes, 3 ratios)")
def _(t: Trial) -> tuple[str, str]:
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.image_list import ImageList

    gen = AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),))
    images = ImageList(torch.zeros(1, 3, 24, 32), [(24, 32)])
    want = gen(images, [torch.zeros(1, 8, 3, 4)])[0]
    return t.value(B.make_anchors, (3, 4), 8, (16, 32), (0.5, 1.0, 2.0), check=_same_tensor(want, 1e-4))


@attempt("boxes", "make_anchors((0, 5), 8, (16,)) -> no anchors")
def _(t: Trial) -> tuple[str, str]:
    return t.value(B.make_anchors, (0, 5), 8, (16,), check=lambda a: tuple(a.shape) == (0, 4) or f"shape {tuple(a.shape)}")


for _label, _args, _names in (("stride 0", ((2, 2), 0, (16,)), ["stride"]),
                              ("stride NaN", ((2, 2), float("nan"), (16,)), ["stride"]),
                              ("sizes []", ((2, 2), 8, ()), ["sizes"]),
                              ("sizes (-16,)", ((2, 2), 8, (-16,)), ["sizes"]),
                              ("aspect_ratios (0,)", ((2, 2), 8, (16,), (0.0,)), ["aspect_ratios"]),
                              ("feature_size (2.5, 3)", ((2.5, 3), 8, (16,)), ["feature_size"]),
                              ("feature_size (True, 3)", ((True, 3), 8, (16,)), ["feature_size"]),
                              ("sizes 16 (not a list)", ((2, 2), 8, 16), ["sizes"])):
    add("boxes", f"make_anchors with {_label}", lambda t, a=_args, n=_names: t.error(B.make_anchors, *a, names=n))


@attempt("boxes", "encode_boxes == torchvision BoxCoder.encode_single; decode inverts it")
def _(t: Trial) -> tuple[str, str]:
    from torchvision.models.detection._utils import BoxCoder

    gt, anchors = _rand_boxes(12, 61).double(), _rand_boxes(12, 62).double()
    weights = (10.0, 10.0, 5.0, 5.0)
    want = BoxCoder(weights).encode_single(gt, anchors)

    def both() -> Tensor:
        deltas = B.encode_boxes(gt, anchors, weights)
        return torch.cat([deltas, B.decode_boxes(deltas, anchors, weights)], 1)
    return t.value(both, check=_same_tensor(torch.cat([want, gt], 1), 1e-6))


@attempt("boxes", "decode_boxes of a wild dw=1e6 == torchvision decode_single (clamped)")
def _(t: Trial) -> tuple[str, str]:
    from torchvision.models.detection._utils import BoxCoder

    anchors = _rand_boxes(3, 63).double()
    deltas = torch.tensor([[0, 0, 1e6, 0], [0, 0, 0, -1e6], [1.0, -1.0, 0.5, 0.5]], dtype=torch.float64)
    want = BoxCoder((1.0, 1.0, 1.0, 1.0)).decode_single(deltas, anchors)
    return t.value(B.decode_boxes, deltas, anchors, check=_same_tensor(want, 1e-6))


@attempt("boxes", "encode_boxes against a zero-width anchor")
def _(t: Trial) -> tuple[str, str]:
    anchors = torch.tensor([[5.0, 5.0, 5.0, 15.0]])
    return t.value(B.encode_boxes, torch.tensor([[0.0, 0.0, 10.0, 10.0]]), anchors, allow_error=True,
                   names=["anchor"], check=lambda d: bool(torch.isfinite(d).all()) or f"non-finite deltas {d.tolist()}")


@attempt("boxes", "decode_boxes with deltas (3, 4) and anchors (2, 4)")
def _(t: Trial) -> tuple[str, str]:
    return t.error(B.decode_boxes, torch.zeros(3, 4), _rand_boxes(2, 0), names=["deltas", "anchors"])


@attempt("boxes", "encode_boxes with weights (1, 1, 1) (three numbers)")
def _(t: Trial) -> tuple[str, str]:
    return t.error(B.encode_boxes, _rand_boxes(2, 0), _rand_boxes(2, 1), (1.0, 1.0, 1.0), names=["weights"])


# ---------------------------------------------------------------- metrics
def _reference_coco(preds: list[dict[str, Any]], targets: list[dict[str, Any]]) -> np.ndarray:
    """pycocotools' 12 numbers, computed here from scratch (xywh in float64, area = w*h)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, dets, labels = [], [], [], set()
    for i, (p, g) in enumerate(zip(preds, targets), start=1):
        images.append({"id": i, "width": 1000, "height": 1000})
        crowd = g.get("iscrowd", torch.zeros(len(g["labels"]), dtype=torch.int64))
        for k, (box, label) in enumerate(zip(g["boxes"].double().tolist(), g["labels"].tolist())):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label), "bbox": [box[0], box[1], w, h],
                         "area": w * h, "iscrowd": int(crowd[k])})
            labels.add(int(label))
        for box, score, label in zip(p["boxes"].double().tolist(), p["scores"].tolist(), p["labels"].tolist()):
            dets.append({"image_id": i, "category_id": int(label), "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]],
                         "score": float(score)})
            labels.add(int(label))
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in sorted(labels)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(dets) if dets else COCO()
        if not dets:
            dt.dataset = {"images": images, "annotations": [], "categories": gt.dataset["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats)


def _matches_coco(preds: list[dict[str, Any]], targets: list[dict[str, Any]]) -> Callable[[Any], Any]:
    from course_utils.metrics import COCO_STATS

    want = _reference_coco(preds, targets)

    def check(got: dict[str, Any]) -> Any:
        have = np.array([float(got[k]) for k in COCO_STATS])
        if np.allclose(have, want, atol=1e-9):
            return True
        k = int(np.argmax(np.abs(have - want)))
        return f"{COCO_STATS[k]} = {have[k]:.6f}, pycocotools {want[k]:.6f}"
    return check


def _scene_targets(n: int, seed: int, crowd: bool = False, scale: float = 1.0) -> list[dict[str, Any]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        k = int(torch.randint(1, 6, (1,), generator=g))
        xy = torch.rand(k, 2, generator=g) * 300 * scale
        wh = (torch.rand(k, 2, generator=g) * 120 + 8) * scale
        target = {"boxes": torch.cat([xy, xy + wh], 1), "labels": torch.randint(1, 4, (k,), generator=g)}
        if crowd:
            target["iscrowd"] = (torch.rand(k, generator=g) < 0.3).long()
        out.append(target)
    return out


for _label, _kw in (("plain", {}), ("with crowd regions", {"crowd": True}), ("small objects", {"scale": 0.1}),
                    ("large objects", {"scale": 3.0})):
    def _map_ref(t: Trial, kw: dict[str, Any] = _kw, label: str = _label) -> tuple[str, str]:
        from course_utils.metrics import mean_average_precision, simulate_detections

        targets = _scene_targets(12, hash(label) % 1000, **kw)
        preds = simulate_detections(targets, num_classes=3, seed=3)
        return t.value(mean_average_precision, preds, targets, check=_matches_coco(preds, targets))
    add("metrics", f"mean_average_precision == pycocotools ({_label})", _map_ref)


@attempt("metrics", "mean_average_precision with no detections at all == pycocotools")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import mean_average_precision

    targets = _scene_targets(4, 5)
    preds = [_pred([], [], []) for _ in targets]
    return t.value(mean_average_precision, preds, targets, check=_matches_coco(preds, targets))


@attempt("metrics", "mean_average_precision with 1e6-pixel coordinates == pycocotools")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import mean_average_precision, simulate_detections

    targets = _scene_targets(5, 6, scale=3000.0)
    preds = simulate_detections(targets, num_classes=3, seed=1)
    return t.value(mean_average_precision, preds, targets, check=_matches_coco(preds, targets), allow_error=True,
                   names=["area"])


@attempt("metrics", "mean_average_precision with 1e4-pixel objects == pycocotools")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import mean_average_precision, simulate_detections

    targets = _scene_targets(5, 6, scale=80.0)
    preds = simulate_detections(targets, num_classes=3, seed=1)
    return t.value(mean_average_precision, preds, targets, check=_matches_coco(preds, targets))


@attempt("metrics", "mean_average_precision with float64 boxes and int32 labels == pycocotools")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import mean_average_precision, simulate_detections

    targets = _scene_targets(5, 7)
    preds = simulate_detections(targets, num_classes=3, seed=2)
    odd = [{"boxes": p["boxes"].double(), "scores": p["scores"].double(), "labels": p["labels"].int()} for p in preds]
    return t.value(mean_average_precision, odd, targets, check=_matches_coco(preds, targets))


def _map_bad(mutate: Callable[[list[dict[str, Any]], list[dict[str, Any]]], Any], names: Sequence[str],
             **kwargs: Any) -> Callable[[Trial], tuple[str, str]]:
    def run_it(t: Trial) -> tuple[str, str]:
        from course_utils.metrics import mean_average_precision

        targets = _scene_targets(3, 8)
        preds = [_pred([[0, 0, 10, 10], [5, 5, 20, 20]], [0.9, 0.4], [1, 2]) for _ in targets]
        args = mutate(preds, targets) or (preds, targets)
        return t.error(mean_average_precision, *args, names=names, **kwargs)
    return run_it


def _put(i: int, key: str, value: Any) -> Callable[[list[Any], list[Any]], None]:
    def mutate(preds: list[Any], targets: list[Any]) -> None:
        preds[i][key] = value
    return mutate


_MAP_BAD = [
    ("fewer preds than targets", lambda p, g: (p[:2], g), ["2", "3", "preds"]),
    ("NaN score", _put(0, "scores", torch.tensor([float("nan"), 0.4])), ["scores", "nan"]),
    ("inf score", _put(0, "scores", torch.tensor([float("inf"), 0.4])), ["scores", "inf"]),
    ("boxes of shape (2, 3)", _put(0, "boxes", torch.zeros(2, 3)), ["boxes"]),
    ("scores one too short", _put(0, "scores", torch.tensor([0.9])), ["scores"]),
    ("float labels 1.5", _put(0, "labels", torch.tensor([1.5, 2.0])), ["labels"]),
    ("a missing 'scores' key", lambda p, g: (p[0].pop("scores"), None)[1], ["scores"]),
    ("a dict instead of a list", lambda p, g: (p[0], g[0]), ["list", "preds"]),
    ("NaN in a target box", lambda p, g: g[0].__setitem__("boxes", g[0]["boxes"] * float("nan")) or None,
     ["nan", "boxes"]),
    ("inverted target box", lambda p, g: g[0].__setitem__("boxes", g[0]["boxes"][:, [2, 3, 0, 1]]) or None,
     ["boxes", "x2"]),
    ("iscrowd = 2", lambda p, g: g[0].__setitem__("iscrowd", torch.full((len(g[0]["labels"]),), 2)) or None,
     ["iscrowd"]),
    ("numpy arrays as boxes", _put(0, "boxes", np.zeros((2, 4))), None),
]
for _label, _mutate, _names in _MAP_BAD:
    if _names is None:  # numpy inputs: a right answer (or a clear refusal)
        continue
    add("metrics", f"mean_average_precision with {_label}", _map_bad(_mutate, _names))

for _md in (0, -1, 1.5, True, "100"):
    add("metrics", f"mean_average_precision max_detections={_md!r}",
        _map_bad(lambda p, g: None, ["max_detections"], max_detections=_md))


@attempt("metrics", "mean_average_precision of numpy-array preds == pycocotools")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import mean_average_precision, simulate_detections

    targets = _scene_targets(4, 9)
    preds = simulate_detections(targets, num_classes=3, seed=4)
    as_np = [{k: v.numpy() for k, v in p.items()} for p in preds]
    return t.value(mean_average_precision, as_np, targets, check=_matches_coco(preds, targets), allow_error=True,
                   names=["numpy", "tensor", "ndarray"])


def _boot_inputs(n: int = 6) -> tuple[list[Any], list[Any]]:
    from course_utils.metrics import simulate_detections

    targets = _scene_targets(n, 10)
    return simulate_detections(targets, num_classes=3, seed=5), targets


for _kw in ({"n_boot": 0}, {"n_boot": 2.5}, {"confidence": 1.5}, {"confidence": float("nan")}, {"metric": "bogus"},
            {"method": "xyz"}, {"seed": -1}, {"n_boot": True}):
    def _boot_bad(t: Trial, kw: dict[str, Any] = _kw) -> tuple[str, str]:
        from course_utils.metrics import bootstrap_map

        preds, targets = _boot_inputs()
        return t.error(bootstrap_map, preds, targets, **kw, names=list(kw))
    add("metrics", f"bootstrap_map {', '.join(f'{k}={v!r}' for k, v in _kw.items())}", _boot_bad)


@attempt("metrics", "bootstrap_map's value == mean_average_precision's map, low <= value <= high")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import bootstrap_map, mean_average_precision

    preds, targets = _boot_inputs()
    want = mean_average_precision(preds, targets)["map"]
    return t.value(bootstrap_map, preds, targets, n_boot=40,
                   check=lambda r: (abs(r["map"] - want) < 1e-12 if "map" in r else abs(r.get("value", -9) - want) < 1e-12)
                   and r["low"] <= want <= r["high"] or f"{short(r)} vs map {want}")


@attempt("metrics", "paired_bootstrap_map of a model against itself: difference 0")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import paired_bootstrap_map

    preds, targets = _boot_inputs()
    return t.value(paired_bootstrap_map, preds, preds, targets, n_boot=40,
                   check=lambda r: all(abs(float(r[k])) < 1e-12 for k in ("value", "low", "high")) or f"got {short(r)}")


@attempt("metrics", "paired_bootstrap_map with preds_b one image short")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import paired_bootstrap_map

    preds, targets = _boot_inputs()
    return t.error(paired_bootstrap_map, preds, preds[:-1], targets, n_boot=10, names=["preds_b", "5", "6"])


@attempt("metrics", "bootstrap_map on images without any object")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import bootstrap_map

    targets = [_gt([], []) for _ in range(4)]
    preds = [_pred([[0, 0, 5, 5]], [0.5], [1]) for _ in range(4)]
    return t.value(bootstrap_map, preds, targets, n_boot=10, allow_error=True, names=["object", "ground truth", "gt"],
                   check=lambda r: False)


@attempt("metrics", "seed_summary([1, 2, 3]) == statistics (mean 2, std 1)")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import seed_summary

    return t.value(seed_summary, [1, 2, 3], check=lambda r: (r["mean"], r["std"], r["n"]) == (2.0, 1.0, 3) or short(r))


@attempt("metrics", "seed_summary([1e308, 1e308]) -> mean 1e308 (no overflow)")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import seed_summary

    return t.value(seed_summary, [1e308, 1e308], allow_error=True, names=["1e+308"],
                   check=lambda r: (r["mean"] == 1e308 and r["std"] == 0.0) or f"mean {r['mean']}, std {r['std']}")


@attempt("metrics", "seed_summary of 0.1, 0.2, 0.3 == statistics.stdev")
def _(t: Trial) -> tuple[str, str]:
    import statistics

    from course_utils.metrics import seed_summary

    vals = [0.1, 0.2, 0.3]
    return t.value(seed_summary, vals, check=lambda r: math.isclose(r["std"], statistics.stdev(vals), rel_tol=1e-12)
                   and math.isclose(r["mean"], statistics.fmean(vals), rel_tol=1e-15) or short(r))


@attempt("metrics", "seed_summary([0.5]) -> std None")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import seed_summary

    return t.value(seed_summary, [0.5], check=lambda r: (r["mean"], r["std"]) == (0.5, None) or short(r))


@attempt("metrics", "seed_summary([True, False]): per-run outcomes count as 0 and 1 (documented)")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import seed_summary

    return t.value(seed_summary, [True, False], check=lambda r: r["mean"] == 0.5 or short(r))


@attempt("metrics", "seed_summary(['0.5', '0.6']): numeric strings count as their numbers (documented)")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import seed_summary

    return t.value(seed_summary, ["0.5", "0.6"], check=lambda r: math.isclose(r["mean"], 0.55) or short(r))


for _vals in ([], [float("nan"), 1.0], {"a": 1.0}, ["0.5", "n/a"], None, [[1.0, 2.0]], 0.5):
    def _ss_bad(t: Trial, v: Any = _vals) -> tuple[str, str]:
        from course_utils.metrics import seed_summary

        return t.error(seed_summary, v, names=["seed_summary", "values"])
    add("metrics", f"seed_summary({_vals!r})", _ss_bad)


@attempt("metrics", "seed_difference == scipy ttest_ind(equal_var=False) interval")
def _(t: Trial) -> tuple[str, str]:
    from scipy import stats

    from course_utils.metrics import seed_difference

    a, b = [0.41, 0.43, 0.40, 0.44], [0.38, 0.37, 0.40]
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.9)
    return t.value(seed_difference, a, b, 0.9, check=lambda r: math.isclose(r["low"], ci.low, rel_tol=1e-9)
                   and math.isclose(r["high"], ci.high, rel_tol=1e-9) or f"({r['low']}, {r['high']}) vs {tuple(ci)}")


@attempt("metrics", "seed_difference paired == scipy ttest_rel interval")
def _(t: Trial) -> tuple[str, str]:
    from scipy import stats

    from course_utils.metrics import seed_difference

    a, b = [0.41, 0.43, 0.40, 0.44], [0.38, 0.42, 0.37, 0.40]
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    return t.value(seed_difference, a, b, paired=True, check=lambda r: math.isclose(r["low"], ci.low, rel_tol=1e-9)
                   and math.isclose(r["high"], ci.high, rel_tol=1e-9) or f"({r['low']}, {r['high']}) vs {tuple(ci)}")


for _label, _args, _kw, _names in (("one run each", ([0.4], [0.3]), {}, ["2", "runs"]),
                                   ("paired, 3 vs 4 runs", ([0.4, 0.5, 0.6], [0.3, 0.4, 0.5, 0.6]), {"paired": True},
                                    ["3", "4", "paired"]),
                                   ("confidence 0", ([0.4, 0.5], [0.3, 0.4]), {"confidence": 0}, ["confidence"]),
                                   ("both deterministic", ([0.4, 0.4], [0.3, 0.3]), {}, ["paired_bootstrap_map",
                                                                                      "deterministic", "spread"]),
                                   ("paired='yes'", ([0.4, 0.5], [0.3, 0.4]), {"paired": "yes"}, ["paired"]),
                                   ("an inf run", ([0.4, float("inf")], [0.3, 0.4]), {}, ["inf"])):
    def _sd_bad(t: Trial, a: Any = _args, kw: dict[str, Any] = _kw, n: Any = _names) -> tuple[str, str]:
        from course_utils.metrics import seed_difference

        return t.error(seed_difference, *a, **kw, names=n)
    add("metrics", f"seed_difference with {_label}", _sd_bad)


for _a, _b in (((2, 1), (0, 1)), ((0, float("nan")), (0, 1)), ("ab", (0, 1)), ((0, 1, 2), (0, 1))):
    add("metrics", f"compare_intervals({_a!r}, {_b!r})", lambda t, a=_a, b=_b: t.error(
        __import__("course_utils.metrics", fromlist=["x"]).compare_intervals, a, b, names=["a"]))


@attempt("metrics", "compare_intervals: touching intervals are a tie; disjoint ones are ordered")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import compare_intervals

    return t.value(lambda: (compare_intervals((0, 1), (1, 2)), compare_intervals((2, 3), (0, 1)),
                            compare_intervals((2, 3), (0, 1), higher_is_better=False)),
                   check=lambda r: r == (0, 1, -1) or f"{r}, want (0, 1, -1)")


@attempt("metrics", "pareto_front of a small table (brute-force reference)")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import compare_intervals, pareto_front

    acc = {"a": (0.5, 0.5), "b": (0.6, 0.6), "c": (0.55, 0.55), "d": (0.6, 0.6)}
    cost = {"a": (1, 1), "b": (3, 3), "c": (3, 3), "d": (2, 2)}

    def beats(m: str, n: str) -> bool:
        x, y = compare_intervals(acc[m], acc[n]), compare_intervals(cost[m], cost[n], higher_is_better=False)
        return x >= 0 and y >= 0 and (x > 0 or y > 0)
    want = [n for n in acc if not any(beats(m, n) for m in acc if m != n)]
    return t.value(pareto_front, list(acc), lambda m, n: compare_intervals(acc[m], acc[n]),
                   lambda m, n: compare_intervals(cost[m], cost[n], higher_is_better=False),
                   check=lambda r: r == want or f"{r} vs {want}")


@attempt("metrics", "pareto_front with duplicate names")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import pareto_front

    return t.error(pareto_front, ["a", "a"], lambda m, n: 0, lambda m, n: 0, names=["names"])


@attempt("metrics", "pareto_front with a non-callable accuracy")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.metrics import pareto_front

    return t.error(pareto_front, ["a", "b"], {"a": 1, "b": 2}, lambda m, n: 0, names=["accuracy"])


# ---------------------------------------------------------------- distill
@attempt("distill", "kd_loss(s, t, 1e30)")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.distill import kd_loss

    s, te = torch.randn(4, 5), torch.randn(4, 5)
    return t.value(kd_loss, s, te, 1e30, allow_error=True, names=["1e+30", "temperature"],
                   check=lambda v: bool(torch.isfinite(v)) or f"non-finite loss {float(v)}")


# ---------------------------------------------------------------- quant
@attempt("quant", "IntegerAdd.from_scales(.1, 0, .1, 0, 0.0, 0)")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.quant import IntegerAdd

    return t.error(IntegerAdd.from_scales, 0.1, 0, 0.1, 0, 0.0, 0, names=["y_scale"])


def _Q() -> Any:
    import course_utils.quant as Q

    return Q


def _round_half_away(num: int, shift: int) -> int:
    """round(num / 2**shift), half away from zero, in exact integers."""
    f = fractions.Fraction(num, 2**shift)
    mag = math.floor(abs(f) + fractions.Fraction(1, 2))
    return mag if num >= 0 else -mag


for _bits, _signed, _want in ((8, True, (-128, 127)), (8, False, (0, 255)), (4, True, (-8, 7)), (16, False, (0, 65535)),
                              (2, True, (-2, 1))):
    add("quant", f"qrange({_bits}, signed={_signed}) == {_want}", lambda t, b=_bits, s=_signed, w=_want: t.value(
        _Q().qrange, b, s, check=lambda r: tuple(r) == w or f"{r} vs {w}"))

for _bits in (1, 17, True, 8.0, "8", None):
    add("quant", f"qrange({_bits!r}, True)", lambda t, b=_bits: t.error(_Q().qrange, b, True, names=["num_bits"]))


def _covers(x_min: float, x_max: float, num_bits: int = 8, symmetric: bool = False, signed: bool = False
            ) -> Callable[[Any], Any]:
    """calc_qparams' promise: the grid's end levels, as dequantize computes them (float32 ``S * (q - Z)``), cover
    ``[min(x_min, 0), max(x_max, 0)]``; the zero point is an integer level in range."""
    q_min, q_max = (-(2 ** (num_bits - 1)), 2 ** (num_bits - 1) - 1) if signed else (0, 2**num_bits - 1)

    def check(r: Any) -> Any:
        scale, zp = r
        for s, z, lo, hi in zip(torch.as_tensor(scale).reshape(-1).tolist(), torch.as_tensor(zp).reshape(-1).tolist(),
                                torch.as_tensor(x_min, dtype=torch.float64).reshape(-1).expand(torch.as_tensor(scale).numel()).tolist(),
                                torch.as_tensor(x_max, dtype=torch.float64).reshape(-1).expand(torch.as_tensor(scale).numel()).tolist()):
            lo, hi = np.float32(min(lo, 0.0)), np.float32(max(hi, 0.0))
            if not (s > 0 and math.isfinite(s) and float(z).is_integer() and q_min <= z <= q_max):
                return f"scale {s}, zero point {z} not a valid grid"
            first, last = np.float32(s) * np.float32(q_min - int(z)), np.float32(s) * np.float32(q_max - int(z))
            if first > lo or last < hi:
                return f"grid [{first}, {last}] (float32) misses [{lo}, {hi}]"
        return True
    return check


for _lo, _hi, _kw in ((-1.0, 1.0, {}), (-0.3, 2.7, {}), (0.0, 0.0, {}), (0.5, 4.0, {}), (-5.0, -1.0, {}),
                      (-1.0, 3.0, {"symmetric": True, "signed": True}), (-1e-30, 1e-30, {}), (-2.0, 1.0, {"num_bits": 4}),
                      (-1e30, 1e30, {})):
    add("quant", f"calc_qparams({_lo}, {_hi}{''.join(f', {k}={v}' for k, v in _kw.items())}) covers the range",
        lambda t, lo=_lo, hi=_hi, kw=_kw: t.value(_Q().calc_qparams, lo, hi, **kw, check=_covers(lo, hi, **kw),
                                                  allow_error=True, names=[repr(hi), "range", "float32"]))


@attempt("quant", "calc_qparams per channel covers every channel")
def _(t: Trial) -> tuple[str, str]:
    lo, hi = torch.tensor([-1.0, -0.2, 0.0, -3.3]), torch.tensor([1.0, 0.7, 0.0, 9.1])
    return t.value(_Q().calc_qparams, lo, hi, check=_covers(lo, hi))


for _label, _args, _names in (("swapped (2, 1)", (2.0, 1.0), ["swapped", "x_min"]),
                              ("NaN min", (float("nan"), 1.0), ["nan"]),
                              ("-inf min", (float("-inf"), 1.0), ["inf"]),
                              ("strings", ("a", "b"), ["x_min", "'a'"]),
                              ("shapes (3,) and (2,)", (torch.zeros(3), torch.ones(2)), ["shape"]),
                              ("num_bits 1", (-1.0, 1.0, 1), ["num_bits"]),
                              ("±3e38 (levels overflow float32)", (-3e38, 3e38), ["float32", "finite", "range"])):
    add("quant", f"calc_qparams with {_label}", lambda t, a=_args, n=_names: t.error(_Q().calc_qparams, *a, names=n))


def _torch_quantize_ref(x: Tensor, scale: float, zp: int, dtype: torch.dtype = torch.qint8) -> Tensor:
    return torch.quantize_per_tensor(x, scale, zp, dtype).int_repr().to(torch.int32)


for _scale, _zp, _lo, _hi, _dt in ((0.1, 0, -128, 127, torch.qint8), (0.05, 128, 0, 255, torch.quint8),
                                   (0.3, -7, -128, 127, torch.qint8), (1e-3, 3, 0, 255, torch.quint8)):
    def _quant_ref(t: Trial, s: float = _scale, z: int = _zp, lo: int = _lo, hi: int = _hi, dt: Any = _dt) -> tuple[str, str]:
        x = torch.randn(500, generator=torch.Generator().manual_seed(1)) * 10
        x[:4] = torch.tensor([0.25, -0.25, 0.15, s * 2.5])  # ties
        return t.value(_Q().quantize, x, s, z, lo, hi, check=_same_tensor(_torch_quantize_ref(x, s, z, dt)))
    add("quant", f"quantize(scale={_scale}, zero_point={_zp}) == torch.quantize_per_tensor", _quant_ref)


@attempt("quant", "dequantize of uint8 == torch.dequantize (no uint8 wrap-around)")
def _(t: Trial) -> tuple[str, str]:
    q = torch.arange(256, dtype=torch.uint8)
    want = torch.quantize_per_tensor(q.float() * 0.02 - 2.56, 0.02, 128, torch.quint8).dequantize()
    return t.value(_Q().dequantize, q, 0.02, 128, check=_same_tensor(want, 1e-6))


for _label, _args, _names in (("scale 0", (0.0, 0, -128, 127), ["scale"]),
                              ("scale -0.1", (-0.1, 0, -128, 127), ["scale"]),
                              ("scale NaN", (float("nan"), 0, -128, 127), ["scale"]),
                              ("zero_point 1.5", (0.1, 1.5, -128, 127), ["zero_point", "1.5"]),
                              ("zero_point 300 outside [0, 255]", (0.1, 300, 0, 255), ["zero_point", "300"]),
                              ("q_min > q_max", (0.1, 0, 127, -128), ["q_min", "q_max"]),
                              ("q_min == q_max", (0.1, 0, 0, 0), ["q_min", "q_max"])):
    add("quant", f"quantize with {_label}", lambda t, a=_args, n=_names: t.error(_Q().quantize, torch.randn(5), *a, names=n))

add("quant", "quantize of a tensor holding NaN", lambda t: t.error(
    _Q().quantize, torch.tensor([0.1, float("nan")]), 0.1, 0, -128, 127, names=["nan"]))
add("quant", "quantize of a Python list", lambda t: t.error(_Q().quantize, [0.1, 0.2], 0.1, 0, -128, 127,
                                                            names=["tensor", "list"]))


@attempt("quant", "quantize of ±inf saturates to q_min/q_max (== torch)")
def _(t: Trial) -> tuple[str, str]:
    x = torch.tensor([float("inf"), float("-inf"), 1e30])
    return t.value(_Q().quantize, x, 0.1, 0, -128, 127, allow_error=True, names=["inf"],
                   check=lambda q: q.tolist() == [127, -128, 127] or f"{q.tolist()}")


@attempt("quant", "quantize to int32's full range keeps 2^31-1 (no wrap)")
def _(t: Trial) -> tuple[str, str]:
    x = torch.tensor([1e12, -1e12, 5.0])
    return t.value(_Q().quantize, x, 1.0, 0, -(2**31), 2**31 - 1,
                   check=lambda q: q.tolist() == [2**31 - 1, -(2**31), 5] or f"{q.tolist()}")


for _dtype in (torch.float32, torch.float64, torch.float16):
    def _fq_ref(t: Trial, dtype: torch.dtype = _dtype) -> tuple[str, str]:
        x = (torch.randn(300, generator=torch.Generator().manual_seed(2)) * 3).to(dtype)
        want = torch.fake_quantize_per_tensor_affine(x.float(), 0.05, 10, -128, 127).to(dtype)
        return t.value(_Q().fake_quantize, x, 0.05, 10, -128, 127, check=_same_tensor(want))
    add("quant", f"fake_quantize {str(_dtype)[6:]} == torch.fake_quantize_per_tensor_affine", _fq_ref)


@attempt("quant", "fake_quantize gradient == torch's straight-through gradient")
def _(t: Trial) -> tuple[str, str]:
    x = (torch.randn(200, generator=torch.Generator().manual_seed(3)) * 8).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    torch.fake_quantize_per_tensor_affine(x2, 0.05, 0, -128, 127).sum().backward()

    def grad() -> Tensor:
        x.grad = None
        _Q().fake_quantize(x, 0.05, 0, -128, 127).sum().backward()
        return x.grad
    return t.value(grad, check=_same_tensor(x2.grad))


@attempt("quant", "fake_quantize_per_channel == torch.fake_quantize_per_channel_affine")
def _(t: Trial) -> tuple[str, str]:
    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(4))
    s, z = torch.tensor([0.01, 0.1, 0.05]), torch.tensor([0, 3, -2], dtype=torch.int32)
    want = torch.fake_quantize_per_channel_affine(x, s, z, 1, -128, 127)
    return t.value(_Q().fake_quantize_per_channel, x, s, z, 1, -128, 127, check=_same_tensor(want))


for _label, _args, _names in (("axis 3 of a 3-D tensor", (torch.randn(2, 3, 4), torch.ones(3) * .1, torch.zeros(3, dtype=torch.int32), 3),
                               ["axis"]),
                              ("3 scales for 4 channels", (torch.randn(4, 2), torch.ones(3) * .1, torch.zeros(3, dtype=torch.int32), 0),
                               ["scale", "3", "4"]),
                              ("a 0-d tensor", (torch.tensor(1.0), torch.ones(1) * .1, torch.zeros(1, dtype=torch.int32), 0),
                               ["0-dim"])):
    add("quant", f"fake_quantize_per_channel with {_label}", lambda t, a=_args, n=_names: t.error(
        _Q().fake_quantize_per_channel, *a, -128, 127, names=n))

add("quant", "fake_quantize with a per-channel scale", lambda t: t.error(
    _Q().fake_quantize, torch.randn(3), torch.tensor([0.1, 0.2, 0.3]), 0, -128, 127, names=["per_channel", "scale"]))


def _fpm_check(m: float) -> Callable[[Any], Any]:
    def check(r: Any) -> Any:
        m0, n = (int(v) for v in r)
        if not 2**30 <= m0 < 2**31:
            return f"m0 = {m0} outside [2^30, 2^31)"
        approx = fractions.Fraction(m0, 2 ** (31 + n)) if 31 + n >= 0 else fractions.Fraction(m0 * 2 ** (-(31 + n)))
        err = abs(approx - fractions.Fraction(m)) / fractions.Fraction(m)
        return err <= fractions.Fraction(1, 2**31) or f"relative error {float(err):.3g} > 2^-31"
    return check


for _m in (0.3, 1e-9, 0.9999999999999999, 2.0**29, 0.5, 1.0, 1e-300, 0.75 - 2**-40):
    add("quant", f"fixed_point_multiplier({_m!r}) within 2^-31 (Fractions)",
        lambda t, m=_m: t.value(_Q().fixed_point_multiplier, m, check=_fpm_check(m), allow_error=True,
                                names=[repr(m)]))

for _m in (0.0, -1.0, float("nan"), float("inf"), 2.0**30, "0.5"):
    add("quant", f"fixed_point_multiplier({_m!r})", lambda t, m=_m: t.error(
        _Q().fixed_point_multiplier, m, names=[repr(m), str(m), "M"]))


@attempt("quant", "rounding_shift == exact integer rounding (half away from zero), shifts 1..62")
def _(t: Trial) -> tuple[str, str]:
    g = torch.Generator().manual_seed(5)
    x = torch.randint(-(2**40), 2**40, (400,), generator=g, dtype=torch.int64)
    x[:6] = torch.tensor([1, -1, 3, -3, 2**61, -(2**61)])
    shift = torch.randint(1, 63, (400,), generator=g, dtype=torch.int64)
    want = [_round_half_away(int(a), int(s)) for a, s in zip(x, shift)]
    return t.value(_Q().rounding_shift, x, shift, check=lambda r: r.tolist() == want
                   or f"{sum(a != b for a, b in zip(r.tolist(), want))} of 400 differ")


@attempt("quant", "rounding_shift by 63 and 100 -> 0")
def _(t: Trial) -> tuple[str, str]:
    x = torch.tensor([2**61, -(2**61), 5])
    return t.value(_Q().rounding_shift, x, torch.tensor([63, 100, 64]), check=lambda r: r.tolist() == [0, 0, 0] or r.tolist())


for _label, _args, _names in (("shift 0", (torch.tensor([5]), 0), ["shift"]),
                              ("a float x", (torch.tensor([5.0]), 1), ["x", "float"]),
                              ("|x| = 2^62", (torch.tensor([2**62]), 1), ["2^62", str(2**62)]),
                              ("shift -3", (torch.tensor([5]), -3), ["shift"])):
    add("quant", f"rounding_shift with {_label}", lambda t, a=_args, n=_names: t.error(_Q().rounding_shift, *a, names=n))


@attempt("quant", "requantize == exact integers (per tensor)")
def _(t: Trial) -> tuple[str, str]:
    Q = _Q()
    acc = torch.randint(-(2**31) + 1, 2**31 - 1, (300,), generator=torch.Generator().manual_seed(6), dtype=torch.int64)
    acc[:3] = torch.tensor([0, 2**31 - 2, -(2**31) + 2])
    m0, n = Q.fixed_point_multiplier(0.0123)
    want = [min(255, max(0, 3 + _round_half_away(int(a) * int(m0), 31 + int(n)))) for a in acc]
    return t.value(Q.requantize, acc.to(torch.int32), m0, n, 3, 0, 255, check=lambda r: r.tolist() == want
                   or f"{sum(a != b for a, b in zip(r.tolist(), want))} of 300 differ")


@attempt("quant", "requantize == exact integers (per channel, axis 1)")
def _(t: Trial) -> tuple[str, str]:
    Q = _Q()
    acc = torch.randint(-(2**20), 2**20, (2, 3, 4), generator=torch.Generator().manual_seed(7)).to(torch.int32)
    ms = [1e-4, 3e-3, 0.5]
    m0, n = Q.fixed_point_multiplier(torch.tensor(ms, dtype=torch.float64))
    want = [[[min(127, max(-128, -5 + _round_half_away(int(acc[b, c, k]) * int(m0[c]), 31 + int(n[c]))))
              for k in range(4)] for c in range(3)] for b in range(2)]
    return t.value(Q.requantize, acc, m0, n, -5, -128, 127, check=lambda r: r.tolist() == want or "values differ")


@attempt("quant", "requantize of a float accumulator")
def _(t: Trial) -> tuple[str, str]:
    Q = _Q()
    m0, n = Q.fixed_point_multiplier(0.01)
    return t.error(Q.requantize, torch.tensor([100.0]), m0, n, 0, 0, 255, names=["acc"])


@attempt("quant", "quantize_bias == float64 round-half-even reference")
def _(t: Trial) -> tuple[str, str]:
    bias = torch.randn(16, generator=torch.Generator().manual_seed(8)) * 3
    ws = torch.rand(16, generator=torch.Generator().manual_seed(9)) * 0.01 + 1e-4
    want = np.round(bias.double().numpy() / (ws.double().numpy() * 0.02)).astype(np.int64)
    return t.value(_Q().quantize_bias, bias, 0.02, ws, check=lambda r: (r.dtype == torch.int32 and r.tolist() == want.tolist())
                   or f"{r.dtype}, {sum(a != b for a, b in zip(r.tolist(), want.tolist()))} differ")


for _label, _args, _names in (("a NaN bias", (torch.tensor([float("nan")]), 0.1, torch.tensor([0.1])), ["nan"]),
                              ("a bias too large for int32", (torch.tensor([1e6]), 1e-5, torch.tensor([1e-5])), ["int32"]),
                              ("x_scale 0", (torch.tensor([0.5]), 0.0, torch.tensor([0.1])), ["x_scale", "scale"]),
                              ("x_scale NaN", (torch.tensor([0.5]), float("nan"), torch.tensor([0.1])), ["x_scale", "scale", "nan"]),
                              ("a negative w_scale", (torch.tensor([0.5]), 0.1, torch.tensor([-0.1])), ["w_scale", "scale"]),
                              ("a list bias", ([0.5], 0.1, torch.tensor([0.1])), ["bias"])):
    add("quant", f"quantize_bias with {_label}", lambda t, a=_args, n=_names: t.error(_Q().quantize_bias, *a, names=n))


for _stride, _pad in ((1, 0), (2, 1)):
    def _iconv(t: Trial, stride: int = _stride, pad: int = _pad) -> tuple[str, str]:
        g = torch.Generator().manual_seed(10)
        qx = torch.randint(0, 256, (2, 3, 7, 7), generator=g).to(torch.uint8)
        qw = torch.randint(-128, 128, (4, 3, 3, 3), generator=g).to(torch.int8)
        qb = torch.randint(-1000, 1000, (4,), generator=g).to(torch.int32)
        want = torch.nn.functional.conv2d(qx.double() - 37, qw.double(), qb.double(), stride, pad).round().to(torch.int64)
        return t.value(_Q().integer_conv2d, qx, 37, qw, qb, stride, pad,
                       check=lambda r: (r.dtype == torch.int32 and torch.equal(r.to(torch.int64), want)) or f"{r.dtype} / values differ")
    add("quant", f"integer_conv2d (stride {_stride}, padding {_pad}) == float64 conv", _iconv)


@attempt("quant", "integer_conv2d that would overflow int32")
def _(t: Trial) -> tuple[str, str]:
    qx = torch.full((1, 8000, 3, 3), 255, dtype=torch.uint8)  # 8000 * 9 * 255 * 128 > 2^31
    qw = torch.full((1, 8000, 3, 3), -128, dtype=torch.int8)
    return t.error(_Q().integer_conv2d, qx, 0, qw, None, names=["int32", "2^31"])


@attempt("quant", "integer_conv2d with float inputs")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_Q().integer_conv2d, torch.rand(1, 3, 4, 4), 0, torch.ones(2, 3, 1, 1, dtype=torch.int8), None,
                   names=["q_x"])


@attempt("quant", "integer_conv2d with 3 bias values for 2 channels")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_Q().integer_conv2d, torch.ones(1, 3, 4, 4, dtype=torch.uint8), 0, torch.ones(2, 3, 1, 1, dtype=torch.int8),
                   torch.ones(3, dtype=torch.int32), names=["q_bias", "bias"])


@attempt("quant", "integer_conv2d with 4 input channels for a 3-channel kernel")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_Q().integer_conv2d, torch.ones(1, 4, 4, 4, dtype=torch.uint8), 0, torch.ones(2, 3, 1, 1, dtype=torch.int8),
                   None, names=["q_w", "q_x", "channel"])


for _label, _args, _names in (("a_scale NaN", (float("nan"), 0, 0.1, 0, 0.1, 0), ["a_scale"]),
                              ("b_scale -0.1", (0.1, 0, -0.1, 0, 0.1, 0), ["b_scale"]),
                              ("a_scale True", (True, 0, 0.1, 0, 0.1, 0), ["a_scale"]),
                              ("a_zero_point 1.5", (0.1, 1.5, 0.1, 0, 0.1, 0), ["a_zero_point"]),
                              ("y_scale '0.1'", (0.1, 0, 0.1, 0, "0.1", 0), ["y_scale"]),
                              ("a tiny y_scale (M >= 2^30)", (1.0, 0, 1.0, 0, 1e-300, 0), ["y_scale", "2^30", "large"])):
    add("quant", f"IntegerAdd.from_scales with {_label}", lambda t, a=_args, n=_names: t.error(
        _Q().IntegerAdd.from_scales, *a, names=n))


@attempt("quant", "IntegerAdd == float64 reference within 1 level (>= 99% exact)")
def _(t: Trial) -> tuple[str, str]:
    Q = _Q()
    add_ = Q.IntegerAdd.from_scales(0.05, 10, 0.02, 130, 0.07, 5)
    g = torch.Generator().manual_seed(11)
    qa, qb = torch.randint(0, 256, (1000,), generator=g).to(torch.uint8), torch.randint(0, 256, (1000,), generator=g).to(torch.uint8)
    real = 0.05 * (qa.double() - 10) + 0.02 * (qb.double() - 130)
    want = torch.clamp(torch.round(real / 0.07) + 5, 0, 255)

    def check(r: Tensor) -> Any:
        gap = (r.double() - want).abs()
        return (float(gap.max()) <= 1 and float((gap == 0).double().mean()) >= 0.99) or \
            f"max gap {float(gap.max())}, exact {float((gap == 0).double().mean()):.3f}"
    return t.value(add_, qa, qb, check=check)


@attempt("quant", "integer_add of shapes (3,) and (4,)")
def _(t: Trial) -> tuple[str, str]:
    Q = _Q()
    return t.error(Q.integer_add, torch.zeros(3, dtype=torch.uint8), torch.zeros(4, dtype=torch.uint8),
                   Q.IntegerAdd.from_scales(0.1, 0, 0.1, 0, 0.1, 0), names=["shape"])


@attempt("quant", "fold_bn: folded conv == conv + BatchNorm (eval, float64)")
def _(t: Trial) -> tuple[str, str]:
    torch.manual_seed(12)
    conv, bn = torch.nn.Conv2d(3, 5, 3, bias=False).double(), torch.nn.BatchNorm2d(5).double()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    bn.weight.data.uniform_(-2, 2)
    bn.bias.data.uniform_(-1, 1)
    conv.eval(), bn.eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    want = bn(conv(x)).detach()
    return t.value(lambda: _Q().fold_bn(conv, bn)(x).detach(), check=_same_tensor(want, 1e-9))


@attempt("quant", "fold_bn of a conv and a BatchNorm of other width")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_Q().fold_bn, torch.nn.Conv2d(3, 5, 3), torch.nn.BatchNorm2d(4), names=["5", "4", "channels"])


@attempt("quant", "fuse_conv_bn(TinyDetector) keeps its outputs (eval)")
def _(t: Trial) -> tuple[str, str]:
    model = t.fx.model()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        want = model.pyramid(x) if hasattr(model, "pyramid") else None
        fused = _Q().fuse_conv_bn(copy.deepcopy(model)).eval()
        got_feats = fused.pyramid(x)
    return t.value(lambda: got_feats, check=lambda r: all(torch.allclose(a, b, atol=1e-4) for a, b in zip(r, want))
                   or "features differ")


for _name, _kw in (("bogus", {}), ("minmax", {"num_bits": 0}), ("minmax", {"ch_axis": 1.5}), ("percentile", {"percentile": 150.0})):
    add("quant", f"make_observer({_name!r}, {_kw})", lambda t, n=_name, kw=_kw: t.error(
        _Q().make_observer, n, **kw, names=[n, *kw]))


@attempt("quant", "MinMaxObserver fed a NaN batch")
def _(t: Trial) -> tuple[str, str]:
    obs = _Q().MinMaxObserver()

    def feed() -> Any:
        obs(torch.tensor([0.5, float("nan")]))
        return obs.calculate_qparams()
    return t.error(feed, names=["nan"])


@attempt("quant", "an observer that saw nothing, asked for qparams")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_Q().MinMaxObserver().calculate_qparams, names=["observ", "calibrat", "no data", "empty"])


@attempt("quant", "sqnr_db(x, x) == inf")
def _(t: Trial) -> tuple[str, str]:
    x = torch.randn(10)
    return t.value(_Q().sqnr_db, x, x.clone(), check=lambda r: r == float("inf") or f"{r}")


@attempt("quant", "sqnr_db of shapes (10,) and (9,)")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_Q().sqnr_db, torch.randn(10), torch.randn(9), names=["shape", "10", "9"])


for _label, _x, _kw, _names in (("an empty tensor", torch.zeros(0), {}, ["empty"]),
                                ("num_bits 0", torch.randn(5), {"num_bits": 0}, ["num_bits"]),
                                ("ch_axis 5", torch.randn(2, 3), {"ch_axis": 5}, ["ch_axis"]),
                                ("inf values", torch.tensor([1.0, float("inf")]), {}, ["inf", "NaN"])):
    add("quant", f"quantize_tensor of {_label}", lambda t, x=_x, kw=_kw, n=_names: t.error(
        _Q().quantize_tensor, x, **kw, names=n))


@attempt("quant", "kmeans_codebook with bits=0")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_Q().kmeans_codebook, torch.randn(4, 4), 0, names=["bits"])


def _lloyd(w: np.ndarray, k: int, iters: int = 100) -> np.ndarray:
    """The documented algorithm, written again in numpy float64: linear start, empty clusters keep their centroid."""
    c = np.linspace(w.min(), w.max(), k)
    idx = np.abs(w[:, None] - c[None]).argmin(1)
    for _ in range(iters):
        c = np.sort(np.array([w[idx == j].mean() if (idx == j).any() else c[j] for j in range(k)]))
        new = np.abs(w[:, None] - c[None]).argmin(1)
        if (new == idx).all():
            break
        idx = new
    return c


for _label, _w, _bits in (("4 distinct weights, 2 bits", [[-1.0, 0.5], [2.0, 0.5], [-1.0, 7.0]], 2),
                          ("200 Gaussian weights, 3 bits", None, 3)):
    def _kmeans(t: Trial, w: Any = _w, bits: int = _bits) -> tuple[str, str]:
        w = torch.tensor(w, dtype=torch.float64) if w is not None else torch.randn(200, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
        want = _lloyd(w.reshape(-1).numpy(), 2**bits)
        return t.value(_Q().kmeans_codebook, w, bits, check=lambda r: np.allclose(r[0].numpy(), want, atol=1e-12)
                       and np.allclose(r[0][r[1]].reshape(-1).numpy(), want[np.abs(w.reshape(-1).numpy()[:, None] - want[None]).argmin(1)],
                                       atol=1e-12)
                       or f"codebook {r[0].tolist()} vs {want.tolist()}")
    add("quant", f"kmeans_codebook ({_label}) == a numpy Lloyd's reference", _kmeans)


@attempt("quant", "lsq_init_step of an all-zero tensor")
def _(t: Trial) -> tuple[str, str]:
    return t.value(_Q().lsq_init_step, torch.zeros(10), 127, allow_error=True, names=["zero"],
                   check=lambda s: (bool(torch.isfinite(s).all()) and bool((s > 0).all())) or f"step {s.tolist()}")


# ---------------------------------------------------------------- checkpoints
def _T() -> Any:
    import course_utils.train as T

    return T


def _tiny_model(num_classes: int = 3, width: float = 0.25) -> Any:
    from course_utils.models import TinyDetector

    torch.manual_seed(0)
    return TinyDetector(num_classes=num_classes, width=width)


def _saved(t: Trial, name: str = "ckpt.pt", **metadata: Any) -> Path:
    path = t.dir / name
    _T().save_checkpoint(path, _tiny_model(), epoch=3, note="course", **metadata)
    return path


def _zip_entry_span(path: Path, pick: Callable[[Any], bool]) -> tuple[int, int]:
    """(offset, size) of the raw bytes of the largest zip entry chosen by ``pick`` (torch stores them uncompressed)."""
    import struct
    import zipfile

    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if pick(i)), key=lambda i: i.file_size)
    raw = path.read_bytes()
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26: info.header_offset + 30])
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x10
    path.write_bytes(bytes(raw))


def _load_error(t: Trial, path: Path, model: Any = None, names: Sequence[str] = ()) -> tuple[str, str]:
    return t.error(_T().load_checkpoint, path, model, names=names or [path.name])


@attempt("checkpoints", "one flipped byte in the middle of a tensor inside a .pt -> clear error on load")
def _(t: Trial) -> tuple[str, str]:
    path = _saved(t)
    start, size = _zip_entry_span(path, lambda i: "/data/" in i.filename)
    _flip(path, start + size // 2)
    return _load_error(t, path)


@attempt("checkpoints", "one flipped byte in a tensor, loading into a model")
def _(t: Trial) -> tuple[str, str]:
    path = _saved(t)
    start, size = _zip_entry_span(path, lambda i: "/data/" in i.filename)
    _flip(path, start + size - 1)
    return _load_error(t, path, _tiny_model())


def _same_checkpoint(want: dict[str, Any]) -> Callable[[Any], Any]:
    """The loaded checkpoint holds exactly ``want``'s tensors (shape, stride, values) and metadata."""
    def check(got: dict[str, Any]) -> Any:
        if set(got["model"]) != set(want["model"]):
            return f"keys differ: {sorted(set(got['model']) ^ set(want['model']))[:3]}"
        for k, a in want["model"].items():
            b = got["model"][k]
            if a.shape != b.shape or a.stride() != b.stride() or not torch.equal(a, b):
                return f"{k} changed silently"
        return got["metadata"] == want["metadata"] or f"metadata {short(got['metadata'])} vs {short(want['metadata'])}"
    return check


for _frac in (0.1, 0.3, 0.5, 0.7, 0.9):
    def _pickle_flip(t: Trial, frac: float = _frac) -> tuple[str, str]:
        path = _saved(t)
        want = _T().load_checkpoint(path)
        start, size = _zip_entry_span(path, lambda i: i.filename.endswith("data.pkl"))
        _flip(path, start + int(size * frac))
        return t.value(_T().load_checkpoint, path, check=_same_checkpoint(want), allow_error=True, names=[path.name])
    add("checkpoints", f"one flipped byte at {int(_frac * 100)}% of the pickle (data.pkl): clear error or identical content",
        _pickle_flip)


@attempt("checkpoints", "one flipped byte in the zip's central directory")
def _(t: Trial) -> tuple[str, str]:
    path = _saved(t)
    _flip(path, path.stat().st_size - 30)
    return _load_error(t, path)


@attempt("checkpoints", "a flipped byte in the optimizer state of the fixture's last.pt")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "last.pt"
    shutil.copy(t.fx.ckpt, path)
    import zipfile

    with zipfile.ZipFile(path) as z:
        sizes = sorted((i.file_size, i.filename) for i in z.infolist() if "/data/" in i.filename)
    smallest = sizes[len(sizes) // 3][1]  # not the largest (a weight): some optimizer or RNG tensor
    start, size = _zip_entry_span(path, lambda i: i.filename == smallest)
    _flip(path, start + size // 2)
    return _load_error(t, path)


for _label, _cut in (("to half", lambda n: n // 2), ("by one byte", lambda n: n - 1), ("to 0 bytes", lambda n: 0),
                     ("to 100 bytes", lambda n: 100)):
    def _truncated(t: Trial, cut: Callable[[int], int] = _cut) -> tuple[str, str]:
        path = _saved(t)
        raw = path.read_bytes()
        path.write_bytes(raw[: cut(len(raw))])
        return _load_error(t, path)
    add("checkpoints", f"load_checkpoint of a .pt truncated {_label}", _truncated)


@attempt("checkpoints", "load_checkpoint of an unsafe pickle (code must not run)")
def _(t: Trial) -> tuple[str, str]:
    path, marker = _evil_checkpoint(t)
    return _judge_with_marker(*_load_error(t, path), marker)


@attempt("checkpoints", "load_checkpoint of a plain pickle file")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "plain.pt"
    path.write_bytes(pickle.dumps({"model": {"w": [1, 2]}}))
    return _load_error(t, path)


@attempt("checkpoints", "load_checkpoint of a bare state_dict saved with torch.save")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "bare.pt"
    torch.save(_tiny_model().state_dict(), path)
    return _load_error(t, path, names=["bare.pt", "model"])


@attempt("checkpoints", "load_checkpoint of a legacy (non-zip) torch.save file")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "legacy.pt"
    torch.save({"model": _tiny_model().state_dict(), "metadata": {}}, path, _use_new_zipfile_serialization=False)
    return t.value(_T().load_checkpoint, path, _tiny_model(), allow_error=True, names=["legacy.pt"],
                   check=lambda r: "model" in r or short(r))


for _label, _make in (("TinyDetector(num_classes=5)", lambda: _tiny_model(num_classes=5)),
                      ("TinyDetector(width=0.5)", lambda: _tiny_model(width=0.5)),
                      ("an nn.Linear", lambda: torch.nn.Linear(3, 3))):
    add("checkpoints", f"load_checkpoint into the wrong model: {_label}", lambda t, m=_make: t.error(
        _T().load_checkpoint, _saved(t), m(), names=["ckpt.pt", "shape", "size", "missing", "unexpected"]))


@attempt("checkpoints", "load_checkpoint of a missing file")
def _(t: Trial) -> tuple[str, str]:
    return _load_error(t, t.dir / "nope.pt")


@attempt("checkpoints", "load_checkpoint of a folder")
def _(t: Trial) -> tuple[str, str]:
    (t.dir / "run").mkdir()
    return _load_error(t, t.dir / "run")


for _loc in ("cuda", "bogus", 7):
    add("checkpoints", f"load_checkpoint map_location={_loc!r}", lambda t, loc=_loc: (
        ("ok_right_answer", "this machine has a GPU; nothing to check") if loc == "cuda" and torch.cuda.is_available()
        else t.error(_T().load_checkpoint, _saved(t), map_location=loc, names=[repr(loc), str(loc), "map_location"])))


@attempt("checkpoints", "save_checkpoint then load_checkpoint gives the same tensors and metadata")
def _(t: Trial) -> tuple[str, str]:
    model = _tiny_model()
    path = t.dir / "rt.pt"
    meta = {"epoch": 2, "history": {"map": [0.1, 0.2]}, "name": "ünïcode", "none": None, "t": torch.arange(3)}

    def roundtrip() -> Any:
        _T().save_checkpoint(path, model, **meta)
        return _T().load_checkpoint(path)

    def check(r: Any) -> Any:
        sd = model.state_dict()
        if set(r["model"]) != set(sd) or not all(torch.equal(r["model"][k], sd[k]) for k in sd):
            return "weights differ"
        m = r["metadata"]
        return (all(k in m for k in meta) and torch.equal(m["t"], meta["t"]) and m["history"] == meta["history"]
                and m["name"] == meta["name"]) or f"metadata {short(m)}"
    return t.value(roundtrip, check=check)


for _label, _meta in (("a pathlib.Path", {"where": Path("runs")}), ("a numpy float", {"map": np.float64(0.5)}),
                      ("a set", {"tags": {"a", "b"}}), ("a lambda", {"callback": lambda: 0}),
                      ("a nested Path", {"cfg": {"out": [Path("x")]}})):
    def _bad_meta(t: Trial, meta: dict[str, Any] = _meta) -> tuple[str, str]:
        path = t.dir / "keep.pt"
        _T().save_checkpoint(path, _tiny_model(), epoch=1)  # an earlier checkpoint that must survive
        return t.error(_T().save_checkpoint, path, _tiny_model(), **meta, names=list(meta))
    add("checkpoints", f"save_checkpoint with metadata holding {_label} (earlier file kept)", _bad_meta)


@attempt("checkpoints", "save_checkpoint onto a folder")
def _(t: Trial) -> tuple[str, str]:
    (t.dir / "run").mkdir()
    (t.dir / "run" / "notes.txt").write_text("keep")
    return t.error(_T().save_checkpoint, t.dir / "run", _tiny_model(), names=["run"])


@attempt("checkpoints", "save_checkpoint into a missing parent folder")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "a" / "b" / "c.pt"
    return t.value(_T().save_checkpoint, path, _tiny_model(), allow_error=True, names=["a/b", str(path.parent)],
                   check=lambda r: Path(r).is_file() or f"returned {r} but no file")


@attempt("checkpoints", "save_checkpoint of something that is not a model")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_T().save_checkpoint, t.dir / "x.pt", {"w": torch.zeros(2)}, names=["model", "dict", "Module"])


@attempt("checkpoints", "save_checkpoint with a metadata key 'model'")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_T().save_checkpoint, t.dir / "x.pt", _tiny_model(), **{"model": 1}, names=["model"])


@attempt("checkpoints", "load_checkpoint through a symlink")
def _(t: Trial) -> tuple[str, str]:
    path = _saved(t)
    link = t.dir / "link.pt"
    link.symlink_to(path)
    return t.value(_T().load_checkpoint, link, check=lambda r: r["metadata"].get("epoch") == 3 or short(r))


@attempt("checkpoints", "load_checkpoint of a file whose stored content hash was edited")
def _(t: Trial) -> tuple[str, str]:
    path = _saved(t)
    ckpt = torch.load(path, weights_only=True)
    key = next((k for k in ckpt if "hash" in k or "sha" in k), None)
    if key is None:
        key = next((k for k in ckpt.get("metadata", {}) if "hash" in k or "sha" in k), None)
        if key is None:
            return "ok_right_answer", "no stored hash found to edit; nothing to check"
        ckpt["metadata"][key] = "0" * 64
    else:
        ckpt[key] = "0" * 64
    torch.save(ckpt, path)
    return _load_error(t, path)


@attempt("checkpoints", "evaluate (CLI) a checkpoint truncated to half")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "half.pt"
    raw = t.fx.ckpt.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return t.cli_error("evaluate", path, "--data", t.fx.val, names=["half.pt"])


@attempt("checkpoints", "train --init with a checkpoint of another width")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "wide.pt"
    _T().save_checkpoint(path, _tiny_model(width=0.5))
    return t.cli_error("train", "--train", t.fx.train, "--val", t.fx.val, "--out", t.dir / "run", "--init", path,
                       *TRAIN_FLAGS, names=["wide.pt"])


# ---------------------------------------------------------------- models
def _M() -> Any:
    import course_utils.models as M

    return M


for _kw in ({"num_classes": 0}, {"num_classes": -1}, {"num_classes": 1.5}, {"num_classes": True}, {"num_classes": "3"},
            {"width": 0}, {"width": float("nan")}, {"width": -1.0}, {"width": float("inf")}, {"width": "1"},
            {"depth": -1}, {"levels": 4}, {"levels": 0}, {"score_threshold": 1.5}, {"nms_threshold": -0.1},
            {"detections_per_image": 0}, {"anchor_scale": 0.0}, {"center_radius": float("nan")}):
    add("models", f"TinyDetector({', '.join(f'{k}={v!r}' for k, v in _kw.items())})",
        lambda t, kw=_kw: t.error(_M().TinyDetector, **kw, names=list(kw)))


def _forward(model: Any, images: Any, targets: Any = None) -> Any:
    with torch.no_grad():
        return model(images) if targets is None else model(images, targets)


for _label, _images, _names in (("uint8 images", lambda: torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8),
                                 ["uint8", "dtype"]),
                                ("1-channel images", lambda: torch.rand(1, 1, 32, 32), ["channel"]),
                                ("images holding NaN", lambda: torch.full((1, 3, 32, 32), float("nan")), ["nan"]),
                                ("a 3-D tensor", lambda: torch.rand(3, 32, 32), ["shape", "(3, 32, 32)"]),
                                ("an empty list", lambda: [], ["empty", "image"]),
                                ("a numpy array", lambda: np.zeros((1, 3, 32, 32), np.float32), ["ndarray", "images"]),
                                ("values in 0..255 (float)", lambda: torch.rand(1, 3, 32, 32) * 255, ["[0, 1]", "255"]),
):
    def _bad_images(t: Trial, images: Callable[[], Any] = _images, names: Sequence[str] = _names) -> tuple[str, str]:
        return t.error(_forward, t.fx.model(), images(), names=names)
    add("models", f"TinyDetector forward on {_label}", _bad_images)


@attempt("models", "TinyDetector(width=1e-9): refused, or a working (minimum-width) model")
def _(t: Trial) -> tuple[str, str]:
    return t.value(lambda: _forward(_M().TinyDetector(width=1e-9).eval(), torch.rand(1, 3, 32, 32)), allow_error=True,
                   names=["width"], check=lambda out: (len(out) == 1 and out[0]["boxes"].shape[-1] == 4) or short(out))


@attempt("models", "TinyDetector on a 2x2 image: refused, or a valid (empty) detection list")
def _(t: Trial) -> tuple[str, str]:
    return t.value(_forward, t.fx.model(), torch.rand(1, 3, 2, 2), allow_error=True, names=["2", "size", "small"],
                   check=lambda out: (len(out) == 1 and out[0]["boxes"].shape[-1] == 4) or short(out))


@attempt("models", "TinyDetector on two images of different sizes in one list: refused or right")
def _(t: Trial) -> tuple[str, str]:
    return t.value(_forward, t.fx.model(), [torch.rand(3, 33, 47), torch.rand(3, 64, 17)], allow_error=True,
                   names=["shape", "size"], check=lambda out: len(out) == 2 or short(out))


for _hw in ((33, 47), (64, 17), (16, 16)):
  def _odd_size(t: Trial, hw: tuple[int, int] = _hw) -> tuple[str, str]:
    model = t.fx.model()
    model.score_threshold = 0.0
    images = [torch.rand(3, *hw, generator=torch.Generator().manual_seed(hw[0]))]

    def check(out: Any) -> Any:
        for img, o in zip(images, out):
            b, s, lab = o["boxes"], o["scores"], o["labels"]
            h, w = img.shape[1:]
            if len(b) and not (bool((b[:, 0] >= 0).all()) and bool((b[:, 2] <= w + 1e-3).all()) and bool((b[:, 3] <= h + 1e-3).all())):
                return f"boxes outside a {w}x{h} image: {b[:2].tolist()}"
            if len(s) and not (0 <= float(s.min()) and float(s.max()) <= 1):
                return f"scores outside [0, 1]: {s.min()} {s.max()}"
            if len(lab) and not (1 <= int(lab.min()) and int(lab.max()) <= 3):
                return f"labels {lab.unique().tolist()}"
        return len(out) == 1 or f"{len(out)} outputs for 1 image"
    return t.value(_forward, model, images, check=check)
  add("models", f"TinyDetector on a {_hw[1]}x{_hw[0]} image: boxes inside it, scores in [0, 1], labels 1..3", _odd_size)


@attempt("models", "TinyDetector in train mode without targets")
def _(t: Trial) -> tuple[str, str]:
    model = t.fx.model().train()
    return t.error(model, [torch.rand(3, 32, 32)], names=["targets"])


for _label, _target, _names in (("label 0", {"boxes": torch.tensor([[1.0, 1, 10, 10]]), "labels": torch.tensor([0])},
                                 ["label", "0"]),
                                ("label 4 of 3 classes", {"boxes": torch.tensor([[1.0, 1, 10, 10]]), "labels": torch.tensor([4])},
                                 ["label", "4"]),
                                ("boxes of shape (1, 3)", {"boxes": torch.tensor([[1.0, 1, 10]]), "labels": torch.tensor([1])},
                                 ["boxes"]),
                                ("no 'labels'", {"boxes": torch.tensor([[1.0, 1, 10, 10]])}, ["labels"]),
                                ("a NaN box", {"boxes": torch.tensor([[1.0, 1, float("nan"), 10]]), "labels": torch.tensor([1])},
                                 ["nan", "boxes"]),
                                ("float labels", {"boxes": torch.tensor([[1.0, 1, 10, 10]]), "labels": torch.tensor([1.0])},
                                 ["labels", "float", "int"])):
    def _bad_target(t: Trial, target: dict[str, Any] = _target, names: Sequence[str] = _names) -> tuple[str, str]:
        model = t.fx.model().train()
        return t.error(model, [torch.rand(3, 32, 32)], [target], names=names)
    add("models", f"TinyDetector training step with a target of {_label}", _bad_target)


@attempt("models", "TinyDetector training step with an image and no objects: finite losses")
def _(t: Trial) -> tuple[str, str]:
    model = t.fx.model().train()
    target = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    return t.value(model, [torch.rand(3, 32, 32)], [target],
                   check=lambda losses: all(bool(torch.isfinite(v)) for v in losses.values()) or short(losses))


@attempt("models", "TinyDetector: 2 images but 1 target")
def _(t: Trial) -> tuple[str, str]:
    model = t.fx.model().train()
    target = {"boxes": torch.tensor([[1.0, 1, 10, 10]]), "labels": torch.tensor([1])}
    return t.error(model, [torch.rand(3, 32, 32), torch.rand(3, 32, 32)], [target], names=["target", "2", "1"])


@attempt("models", "count_parameters == sum of numel")
def _(t: Trial) -> tuple[str, str]:
    model = _tiny_model()
    want = sum(p.numel() for p in model.parameters())
    return t.value(_M().count_parameters, model, check=lambda n: n == want or f"{n} vs {want}")


# ---------------------------------------------------------------- prune
def _P() -> Any:
    import course_utils.prune as P

    return P


def _convs_only(name: str, module: Any) -> bool:
    return isinstance(module, torch.nn.Conv2d)


@attempt("prune", "magnitude_masks global == torch.nn.utils.prune.global_unstructured")
def _(t: Trial) -> tuple[str, str]:
    import torch.nn.utils.prune as tp

    model = _tiny_model()
    masks = None

    def run_it() -> Any:
        return _P().magnitude_masks(model, 0.5, "global", include=_convs_only)
    ref = copy.deepcopy(model)
    convs = [(m, "weight") for m in ref.modules() if isinstance(m, torch.nn.Conv2d)]
    tp.global_unstructured(convs, pruning_method=tp.L1Unstructured, amount=0.5)
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    want = {n: m.weight_mask.bool() for n, (m, _) in zip(names, convs)}

    def check(masks: dict[str, Tensor]) -> Any:
        got = {k.removesuffix(".weight"): v for k, v in masks.items()}
        if set(got) != set(want):
            return f"mask names {sorted(got)[:3]} vs {sorted(want)[:3]}"
        differ = sum(int((got[k] != want[k]).sum()) for k in want)
        return differ == 0 or f"{differ} weights differ"
    return t.value(run_it, check=check)


@attempt("prune", "magnitude_masks layer == torch l1_unstructured per layer")
def _(t: Trial) -> tuple[str, str]:
    import torch.nn.utils.prune as tp

    model = _tiny_model()
    ref = copy.deepcopy(model)
    want = {}
    for name, m in ref.named_modules():
        if isinstance(m, torch.nn.Conv2d):
            tp.l1_unstructured(m, "weight", amount=0.3)
            want[name] = m.weight_mask.bool()

    def check(masks: dict[str, Tensor]) -> Any:
        got = {k.removesuffix(".weight"): v for k, v in masks.items()}
        differ = sum(int((got[k] != want[k]).sum()) for k in want if k in got)
        return (set(got) == set(want) and differ == 0) or f"{differ} weights differ; names equal: {set(got) == set(want)}"
    return t.value(_P().magnitude_masks, model, 0.3, "layer", include=_convs_only, check=check)


for _sp in (1.5, -0.1, float("nan"), True, "0.5"):
    add("prune", f"magnitude_masks sparsity={_sp!r}", lambda t, s=_sp: t.error(
        _P().magnitude_masks, _tiny_model(), s, names=["sparsity"]))

add("prune", "magnitude_masks scope='bogus'", lambda t: t.error(_P().magnitude_masks, _tiny_model(), 0.5, "bogus",
                                                                 names=["bogus", "scope"]))
add("prune", "magnitude_masks of a model with no prunable weights", lambda t: t.error(
    _P().magnitude_masks, torch.nn.ReLU(), 0.5, names=["weight", "prun"]))


@attempt("prune", "apply_masks with a mask of the wrong shape")
def _(t: Trial) -> tuple[str, str]:
    model = _tiny_model()
    masks = _P().magnitude_masks(model, 0.5)
    name = next(iter(masks))
    masks[name] = masks[name].flatten()[:5]
    return t.error(_P().apply_masks, model, masks, names=[name, "shape"])


@attempt("prune", "apply_masks with an unknown layer name")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_P().apply_masks, _tiny_model(), {"nope.weight": torch.ones(3, dtype=torch.bool)}, names=["nope"])


@attempt("prune", "apply_masks then sparsity == the masks' zero fraction")
def _(t: Trial) -> tuple[str, str]:
    model = _tiny_model()
    masks = _P().magnitude_masks(model, 0.4, "layer")
    want = sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())

    def run_it() -> float:
        _P().apply_masks(model, masks)
        return _P().sparsity(model)
    return t.value(run_it, check=lambda s: abs(s - want) < 1e-9 or f"{s} vs {want}")


for _kw in ({"keep_ratio": 0.0}, {"keep_ratio": 1.5}, {"keep_ratio": float("nan")}, {"criterion": "bogus"},
            {"multiple_of": 0}, {"scope": "everything"}, {"multiple_of": 10_000}):
    def _cm_bad(t: Trial, kw: dict[str, Any] = _kw) -> tuple[str, str]:
        args = {"keep_ratio": 0.5, **kw}
        return t.error(_P().channel_masks, _tiny_model(), **args, names=[*kw, *map(str, kw.values())])
    add("prune", f"channel_masks({', '.join(f'{k}={v!r}' for k, v in _kw.items())})", _cm_bad)


@attempt("prune", "prune_detector(0.5) == mask_channels on the same masks (outputs)")
def _(t: Trial) -> tuple[str, str]:
    model = t.fx.model()
    masks = _P().channel_masks(model, 0.5)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(15))
    masked = _P().mask_channels(copy.deepcopy(model), masks).eval()
    with torch.no_grad():
        want = masked.network(x)

    def run_it() -> Any:
        pruned = _P().prune_channels(copy.deepcopy(model), masks).eval()
        with torch.no_grad():
            return pruned.network(x)
    return t.value(run_it, check=lambda r: all(torch.allclose(a, b, atol=1e-5) for a, b in zip(r, want)) or "features differ")


@attempt("prune", "count_flops of one Conv2d == C_out*H*W*C_in*k*k")
def _(t: Trial) -> tuple[str, str]:
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    return t.value(_P().count_flops, conv, (20, 30), check=lambda n: n == 8 * 20 * 30 * 3 * 9 or f"{n}")


for _size in ((0, 0), (-1, 5), "128", (16.5, 16)):
    add("prune", f"count_flops image_size={_size!r}", lambda t, s=_size: t.error(
        _P().count_flops, _tiny_model(), s, names=["image_size"]))


@attempt("prune", "shrink_to_state_dict with an unrelated state_dict")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_P().shrink_to_state_dict, _tiny_model(), torch.nn.Linear(3, 3).state_dict(), names=["weight", "state_dict", "missing"])


@attempt("prune", "bn_l1_penalty strength -1")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_P().bn_l1_penalty, _tiny_model(), -1.0, names=["strength"])


# ---------------------------------------------------------------- distill
def _D() -> Any:
    import course_utils.distill as D

    return D


def _kd_reference(s: Tensor, te: Tensor, T: float) -> float:
    import torch.nn.functional as F

    s, te = s.double(), te.double()
    return float(T**2 * F.kl_div(F.log_softmax(s / T, -1), F.softmax(te / T, -1), reduction="batchmean"))


for _T_, _scale in ((4.0, 1.0), (1.0, 1.0), (2.0, 1e6), (100.0, 1.0)):
    def _kd_ref(t: Trial, T: float = _T_, scale: float = _scale) -> tuple[str, str]:
        g = torch.Generator().manual_seed(16)
        s, te = torch.randn(6, 5, generator=g) * scale, torch.randn(6, 5, generator=g) * scale
        want = _kd_reference(s, te, T)
        return t.value(_D().kd_loss, s, te, T, check=lambda v: math.isclose(float(v), want, rel_tol=1e-3, abs_tol=1e-6)
                       or f"{float(v)} vs {want}")
    add("distill", f"kd_loss == T^2 KL (float64), T={_T_}, logits x{_scale:g}", _kd_ref)


@attempt("distill", "kd_loss of integer logits: refused, or == the float reference")
def _(t: Trial) -> tuple[str, str]:
    s, te = torch.tensor([[1, 2, 3], [0, 0, 5]]), torch.tensor([[3, 2, 1], [1, 0, 0]])
    want = _kd_reference(s.double(), te.double(), 2.0)
    return t.value(_D().kd_loss, s, te, 2.0, allow_error=True, names=["int", "float", "dtype"],
                   check=lambda v: math.isclose(float(v), want, rel_tol=1e-5) or f"{float(v)} vs {want}")


@attempt("distill", "kd_loss of NaN logits: refused, or NaN (never a finite number)")
def _(t: Trial) -> tuple[str, str]:
    return t.value(_D().kd_loss, torch.tensor([[float("nan"), 1.0]]), torch.tensor([[0.0, 1.0]]), allow_error=True,
                   names=["nan"], check=lambda v: math.isnan(float(v)) or f"finite loss {float(v)} from NaN logits")


@attempt("distill", "kd_loss(s, s) == 0")
def _(t: Trial) -> tuple[str, str]:
    s = torch.randn(4, 7)
    return t.value(_D().kd_loss, s, s.clone(), check=lambda v: abs(float(v)) < 1e-6 or f"{float(v)}")


for _temp in (0, -1.0, float("nan"), True, "4", float("inf")):
    add("distill", f"kd_loss temperature={_temp!r}", lambda t, T=_temp: t.error(
        _D().kd_loss, torch.randn(2, 3), torch.randn(2, 3), T, names=["temperature"]))

for _label, _s, _te, _names in (("shapes (2, 3) and (2, 4)", torch.randn(2, 3), torch.randn(2, 4), ["shape"]),
                                ("1-D logits", torch.randn(3), torch.randn(3), ["(B, K)", "2-D", "shape"]),
                                ("lists", [[0.1, 0.2]], [[0.1, 0.3]], ["tensor", "list"]),
):
    add("distill", f"kd_loss with {_label}", lambda t, s=_s, te=_te, n=_names: t.error(_D().kd_loss, s, te, names=n))


@attempt("distill", "hinton_loss == alpha*kd + (1-alpha)*CE (float64)")
def _(t: Trial) -> tuple[str, str]:
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(17)
    s, te, y = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), torch.tensor([0, 3, 1, 2, 0])
    want = 0.7 * _kd_reference(s, te, 3.0) + 0.3 * float(F.cross_entropy(s.double(), y))
    return t.value(_D().hinton_loss, s, te, y, 0.7, 3.0, check=lambda v: math.isclose(float(v), want, rel_tol=1e-5) or f"{float(v)} vs {want}")


for _label, _args, _names in (("alpha 1.5", (1.5,), ["alpha"]), ("alpha NaN", (float("nan"),), ["alpha"]),
                              ("alpha '0.5'", ("0.5",), ["alpha"]), ("alpha None", (None,), ["alpha"])):
    add("distill", f"hinton_loss with {_label}", lambda t, a=_args, n=_names: t.error(
        _D().hinton_loss, torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]), *a, names=n))

add("distill", "hinton_loss with label 3 of 3 classes", lambda t: t.error(
    _D().hinton_loss, torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 3]), names=["label", "3"]))
add("distill", "hinton_loss with float labels", lambda t: t.error(
    _D().hinton_loss, torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0.0, 1.0]), names=["label", "float", "int"]))
add("distill", "soften with temperature 0", lambda t: t.error(_D().soften, torch.randn(2, 3), 0.0,
                                                               names=["temperature"]))


@attempt("distill", "dense_cls_distill_loss(s, s) == 0")
def _(t: Trial) -> tuple[str, str]:
    s = torch.randn(2, 10, 3)
    return t.value(_D().dense_cls_distill_loss, s, s.clone(), check=lambda v: abs(float(v)) < 1e-6 or f"{float(v)}")


@attempt("distill", "dense_cls_distill_loss with 3 vs 4 classes")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_D().dense_cls_distill_loss, torch.randn(2, 10, 3), torch.randn(2, 10, 4), names=["shape"])


@attempt("distill", "dense_cls_distill_loss with fg_weight -1")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_D().dense_cls_distill_loss, torch.randn(2, 10, 3), torch.randn(2, 10, 3), 2.0, -1.0,
                   names=["fg_weight"])


@attempt("distill", "feature_imitation_loss == sum of squares / (2 N C) (float64)")
def _(t: Trial) -> tuple[str, str]:
    g = torch.Generator().manual_seed(18)
    fs, ft = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 3, 3, generator=g)
    mask = torch.rand(2, 3, 3, generator=g) > 0.5
    sq = ((fs.double() - ft.double()) ** 2).sum(1)
    want = float(sq[mask].sum() / (2 * int(mask.sum()) * 4))
    return t.value(_D().feature_imitation_loss, fs, ft, mask, check=lambda v: math.isclose(float(v), want, rel_tol=1e-5) or f"{float(v)} vs {want}")


@attempt("distill", "feature_imitation_loss with a mask of the wrong size")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_D().feature_imitation_loss, torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3),
                   torch.ones(2, 5, 5, dtype=torch.bool), names=["mask"])


@attempt("distill", "feature_imitation_loss with an all-False mask")
def _(t: Trial) -> tuple[str, str]:
    return t.value(_D().feature_imitation_loss, torch.randn(1, 2, 3, 3), torch.randn(1, 2, 3, 3),
                   torch.zeros(1, 3, 3, dtype=torch.bool), allow_error=True, names=["mask"],
                   check=lambda v: float(v) == 0.0 or f"{float(v)}")


@attempt("distill", "box_distill_loss with deltas (B, A, 3)")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_D().box_distill_loss, torch.randn(1, 5, 3), torch.randn(1, 5, 3), torch.randn(1, 5, 2) + 5,
                   names=["deltas", "4", "shape"])


@attempt("distill", "box_distill_loss with fg_threshold 2 (nothing is foreground) == 0")
def _(t: Trial) -> tuple[str, str]:
    return t.value(_D().box_distill_loss, torch.randn(1, 5, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 2), 2.0,
                   allow_error=True, names=["fg_threshold", "threshold"], check=lambda v: float(v) == 0.0 or f"{float(v)}")


@attempt("distill", "jitter_boxes copies=0 -> the boxes themselves")
def _(t: Trial) -> tuple[str, str]:
    b = torch.tensor([[0.0, 0, 10, 10], [5, 5, 8, 9]])
    return t.value(_D().jitter_boxes, b, 0, check=lambda r: torch.equal(r, b) or short(r))


for _label, _args, _names in (("copies -1", {"copies": -1}, ["copies"]), ("scale NaN", {"scale": float("nan")}, ["scale"]),
                              ("boxes (3,)", {"boxes": torch.tensor([0.0, 0, 1, 1])}, ["boxes"])):
    add("distill", f"jitter_boxes with {_label}", lambda t, kw=_args, n=_names: t.error(
        _D().jitter_boxes, **{"boxes": torch.tensor([[0.0, 0, 10, 10]]), **kw}, names=n))


@attempt("distill", "teacher_bounded_regression_loss with mismatched shapes")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_D().teacher_bounded_regression_loss, torch.randn(3, 4), torch.randn(2, 4), torch.randn(3, 4),
                   names=["shape", "teacher"])


# ---------------------------------------------------------------- deploy
def _DP() -> Any:
    import course_utils.deploy as DP

    return DP


def _fx_onnx(fx: Fixture) -> Path:
    """The fixture checkpoint's network as ONNX (exported once, in ``shared/``)."""
    path = fx.shared / "model.onnx"
    if not path.exists():
        from course_utils.quant import fuse_conv_bn

        net = _DP().DetectorNetwork(fuse_conv_bn(fx.model())).eval()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            _DP().export_onnx(net, torch.rand(1, 3, 32, 32), path)
    return path


@attempt("deploy", "export_onnx: ONNX Runtime's outputs == PyTorch's (1e-4)")
def _(t: Trial) -> tuple[str, str]:
    path = _fx_onnx(t.fx)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(19))
    with torch.no_grad():
        want = t.fx.model().network(x)

    def run_it() -> Any:
        session = _DP().ort_session(path, threads=1)
        return session.run(None, {"images": x.numpy()})
    return t.value(run_it, check=lambda r: all(np.allclose(a, b.numpy(), atol=1e-4) for a, b in zip(r, want))
                   or f"max gap {max(float(np.abs(a - b.numpy()).max()) for a, b in zip(r, want)):.3g}")


for _label, _example, _names in (("an int64 example", lambda: torch.zeros(1, 3, 32, 32, dtype=torch.int64), ["example"]),
                                 ("a 3-D example", lambda: torch.rand(3, 32, 32), ["example"]),
                                 ("a 1-channel example", lambda: torch.rand(1, 1, 32, 32), ["channels", "example"]),
                                 ("a numpy example", lambda: np.zeros((1, 3, 32, 32), np.float32), ["example"])):
    def _bad_example(t: Trial, example: Callable[[], Any] = _example, names: Sequence[str] = _names) -> tuple[str, str]:
        net = _DP().DetectorNetwork(_tiny_model()).eval()
        return t.error(_DP().export_onnx, net, example(), t.dir / "m.onnx", names=names)
    add("deploy", f"export_onnx with {_label}", _bad_example)


@attempt("deploy", "quantize_onnx writing over its own fp32 input (int8_path == fp32_path)")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "m.onnx"
    shutil.copy(_fx_onnx(t.fx), path)
    images = torch.rand(4, 3, 32, 32)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return t.error(_DP().quantize_onnx, path, path, images, names=["m.onnx"])


for _label, _images, _kw, _names in (("a list of images", lambda: [torch.rand(3, 32, 32)], {}, ["calibration_images"]),
                                     ("an empty batch", lambda: torch.zeros(0, 3, 32, 32), {}, ["calibration_images"]),
                                     ("batch_size 0", lambda: torch.rand(2, 3, 32, 32), {"batch_size": 0}, ["batch_size"]),
                                     ("images of another size (48x48)", lambda: torch.rand(2, 3, 48, 48), {},
                                      ["48", "size", "shape"]),
                                     ("images holding NaN", lambda: torch.full((2, 3, 32, 32), float("nan")), {},
                                      ["nan", "calibration"])):
    def _qo_bad(t: Trial, images: Callable[[], Any] = _images, kw: dict[str, Any] = _kw,
                names: Sequence[str] = _names) -> tuple[str, str]:
        src = t.dir / "m.onnx"
        shutil.copy(_fx_onnx(t.fx), src)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return t.error(_DP().quantize_onnx, src, t.dir / "m.int8.onnx", images(), **kw, names=names)
    add("deploy", f"quantize_onnx with {_label}", _qo_bad)


@attempt("deploy", "quantize_onnx of a missing fp32 file")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_DP().quantize_onnx, t.dir / "none.onnx", t.dir / "q.onnx", torch.rand(1, 3, 32, 32), names=["none.onnx"])


@attempt("deploy", "quantize_onnx: the int8 model's logits stay close to fp32 (ORT)")
def _(t: Trial) -> tuple[str, str]:
    src = t.dir / "m.onnx"
    shutil.copy(_fx_onnx(t.fx), src)
    calib = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(20))

    def run_it() -> Any:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            q = _DP().quantize_onnx(src, t.dir / "m.int8.onnx", calib)
        a = _DP().ort_session(src, threads=1).run(None, {"images": calib.numpy()})[0]
        b = _DP().ort_session(q, threads=1).run(None, {"images": calib.numpy()})[0]
        return a, b
    return t.value(run_it, check=lambda r: float(np.abs(r[0] - r[1]).max()) < 0.1 * float(np.abs(r[0]).max()) + 0.05
                   or f"max gap {float(np.abs(r[0] - r[1]).max()):.3g} vs range {float(np.abs(r[0]).max()):.3g}")


for _label, _kw, _names in (("threads -1", {"threads": -1}, ["threads"]), ("threads '2'", {"threads": "2"}, ["threads"]),
                            ("threads True", {"threads": True}, ["threads"]),
                            ("optimization 'max'", {"optimization": "max"}, ["optimization", "max"])):
    add("deploy", f"ort_session with {_label}", lambda t, kw=_kw, n=_names: t.error(
        _DP().ort_session, _fx_onnx(t.fx), **kw, names=n))


@attempt("deploy", "ort_session of a text file named .onnx")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "fake.onnx"
    path.write_text("not a model")
    return t.error(_DP().ort_session, path, names=["fake.onnx"])


for _fn_name in ("ort_session", "file_size"):
    add("deploy", f"{_fn_name} of a missing file",
        lambda t, f=_fn_name: t.error(getattr(_DP(), f), t.dir / "none.onnx", names=["none.onnx"]))


@attempt("deploy", "ort_session of a truncated ONNX file")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "half.onnx"
    raw = _fx_onnx(t.fx).read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return t.error(_DP().ort_session, path, names=["half.onnx"])


for _label, _args, _names in (("fn not callable", (42,), ["fn"]), ("warmup -1", (lambda: 0, -1), ["warmup"]),
                              ("runs 0", (lambda: 0, 0, 0), ["runs"]), ("min_seconds NaN", (lambda: 0, 0, 1, float("nan")),
                                                                         ["min_seconds"]),
                              ("runs 2.5", (lambda: 0, 0, 2.5), ["runs"])):
    add("deploy", f"measure_latency with {_label}", lambda t, a=_args, n=_names: t.error(_DP().measure_latency, *a, names=n))


@attempt("deploy", "measure_latency: at least `runs` calls, p10 <= median <= p90")
def _(t: Trial) -> tuple[str, str]:
    calls = []
    return t.value(_DP().measure_latency, lambda: calls.append(1), 2, 7,
                   check=lambda r: (r["runs"] >= 7 and len(calls) == 2 + r["runs"] and r["p10_ms"] <= r["median_ms"] <= r["p90_ms"])
                   or f"{short(r)}, {len(calls)} calls")


@attempt("deploy", "measure_interleaved with an empty dict")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_DP().measure_interleaved, {}, names=["fns", "empty"])


@attempt("deploy", "file_size == os.stat size")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "f.bin"
    path.write_bytes(b"x" * 12345)
    return t.value(_DP().file_size, path, check=lambda n: n == 12345 or f"{n}")


@attempt("deploy", "cpu_int8_features of a missing cpuinfo file: all False, no crash")
def _(t: Trial) -> tuple[str, str]:
    return t.value(_DP().cpu_int8_features, t.dir / "nope", check=lambda r: (isinstance(r, dict) and not any(r.values()))
                   or short(r))


@attempt("deploy", "cpu_info of a binary file: no crash")
def _(t: Trial) -> tuple[str, str]:
    path = t.dir / "cpuinfo"
    path.write_bytes(bytes(range(256)) * 4)
    return t.value(_DP().cpu_info, path, check=lambda r: isinstance(r, dict) or short(r))


@attempt("deploy", "paired_speedup of two empty lists")
def _(t: Trial) -> tuple[str, str]:
    return t.error(_DP().paired_speedup, [], [], names=["baseline", "empty", "candidate"])


@attempt("deploy", "OrtDetector on an ONNX exported for 32x32, fed 48x48 images")
def _(t: Trial) -> tuple[str, str]:
    det = _DP().OrtDetector(_DP().ort_session(_fx_onnx(t.fx), threads=1), t.fx.model())
    return t.error(det, [torch.rand(3, 48, 48)], names=["48", "locations", "size"])


# ---------------------------------------------------------------- exercises
def _EX() -> Any:
    import course_utils.exercises as EX

    return EX


def _quiet_check(check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    with contextlib.redirect_stdout(io.StringIO()):
        return check(*args, **kwargs)


def _failed_result(r: Any) -> Any:
    return (r is not None and hasattr(r, "passed") and not bool(r) and isinstance(getattr(r, "message", None), str)) \
        or f"returned {r!r}"


def _raises(exc: BaseException) -> Callable[..., Any]:
    def learner(*args: Any) -> Any:
        raise exc
    return learner


def _exits(*args: Any) -> Any:
    sys.exit("learner gave up")


class _Weird:
    """A value that breaks whatever touches it."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")

    def __bool__(self) -> bool:
        raise RuntimeError("no truth")

    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __len__(self) -> int:
        raise RuntimeError("no len")


_LEARNERS: list[tuple[str, Callable[..., Any]]] = [
    ("raises ValueError", _raises(ValueError("my bug"))),
    ("calls sys.exit()", _exits),
    ("returns None", lambda *a: None),
    ("returns a string", lambda *a: "42"),
    ("returns a NaN tensor", lambda *a: torch.tensor(float("nan"))),
    ("returns a generator", lambda *a: (x for x in range(3))),
    ("returns an object that raises on every use", lambda *a: _Weird()),
    ("recurses forever", None),
]


def _recurse(*args: Any) -> Any:
    return _recurse(*args)


_CHECKS = ["check_box_area", "check_xywh_to_xyxy", "check_box_iou", "check_nms", "check_average_precision",
           "check_kd_loss", "check_fixed_point_multiplier", "check_magnitude_mask", "check_conv_macs",
           "check_qparams", "check_fake_quantize", "check_int32_bias", "check_speedup", "check_linear_scaling",
           "check_clip_grad_norm", "check_error_counts", "check_feature_imitation", "check_fold_bn", "check_agc"]
for _check_name in _CHECKS:
    for _label, _fn in _LEARNERS:
        if _label in ("recurses forever", "returns a generator") and _check_name not in ("check_box_area", "check_nms",
                                                                                       "check_kd_loss"):
            continue
        if _label in ("returns a string", "returns a NaN tensor") and _check_name not in (
                "check_box_area", "check_average_precision", "check_fixed_point_multiplier", "check_conv_macs",
                "check_speedup", "check_qparams"):
            continue
        def _ex(t: Trial, name: str = _check_name, fn: Any = _fn) -> tuple[str, str]:
            return t.value(_quiet_check, getattr(_EX(), name), fn or _recurse, check=_failed_result)
        add("exercises", f"{_check_name} with a learner function that {_label}", _ex)


_NAN = float("nan")
_NAN_ANSWERS: list[tuple[str, Callable[..., Any]]] = [
    ("check_box_area", lambda b: torch.full((len(b),), _NAN)),
    ("check_xywh_to_xyxy", lambda b: torch.full_like(b, _NAN)),
    ("check_box_iou", lambda a, b: torch.full((len(a), len(b)), _NAN)),
    ("check_average_precision", lambda is_tp, num_gt: _NAN),
    ("check_kd_loss", lambda s, te, T: torch.tensor(_NAN)),
    ("check_qparams", lambda lo, hi, bits: (torch.tensor(_NAN), torch.tensor(0))),
    ("check_fake_quantize", lambda x, *a: torch.full_like(x, _NAN)),
    ("check_feature_imitation", lambda fs, ft, m: torch.tensor(_NAN)),
    ("check_conv_macs", lambda *a: _NAN),
    ("check_int32_bias", lambda b, xs, ws: torch.full_like(b, _NAN)),
    ("check_speedup", lambda a, b: _NAN),
    ("check_linear_scaling", lambda *a: _NAN),
    ("check_fixed_point_multiplier", lambda m: (_NAN, _NAN)),
    ("check_clip_grad_norm", lambda params, max_norm: torch.tensor(_NAN)),
    ("check_average_precision", lambda is_tp, num_gt: float("inf")),
    ("check_speedup", lambda a, b: float("inf")),
]
for _k, (_check_name, _fn) in enumerate(_NAN_ANSWERS):
    add("exercises", f"{_check_name} with a learner returning {'inf' if _k >= len(_NAN_ANSWERS) - 2 else 'NaN'} "
        "in the answer's shape", lambda t, name=_check_name, fn=_fn: t.value(_quiet_check, getattr(_EX(), name), fn,
                                                                            check=_failed_result))


@attempt("exercises", "check_box_area with a right answer passes")
def _(t: Trial) -> tuple[str, str]:
    return t.value(_quiet_check, _EX().check_box_area, lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]),
                   check=lambda r: bool(r) or f"{r!r}: {getattr(r, 'message', '')[:120]}")


@attempt("exercises", "check_box_area with the +1 (VOC) answer fails with the hint")
def _(t: Trial) -> tuple[str, str]:
    return t.value(_quiet_check, _EX().check_box_area, lambda b: (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1),
                   check=lambda r: (not bool(r) and "+1" in r.message) or f"{r!r}: {getattr(r, 'message', '')[:120]}")


@attempt("exercises", "check_box_area with an answer that edits its input in place")
def _(t: Trial) -> tuple[str, str]:
    def learner(b: Tensor) -> Tensor:
        b[:, 2:] -= b[:, :2]
        return b[:, 2] * b[:, 3]
    return t.value(_quiet_check, _EX().check_box_area, learner, check=lambda r: bool(r) or r.message[:150])


@attempt("exercises", "check_nms with torchvision's nms passes")
def _(t: Trial) -> tuple[str, str]:
    return t.value(_quiet_check, _EX().check_nms, _tv().nms, check=lambda r: bool(r) or r.message[:150])


@attempt("exercises", "check_box_area given the result instead of the function")
def _(t: Trial) -> tuple[str, str]:
    return t.value(_quiet_check, _EX().check_box_area, torch.ones(3), check=_failed_result)


for _variant in (-1, "a", 10**9, True):
    add("exercises", f"check_box_area(variant={_variant!r})", lambda t, v=_variant: t.value(
        _quiet_check, _EX().check_box_area, lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]), variant=v,
        allow_error=True, names=["variant"], check=lambda r: hasattr(r, "passed") or f"returned {r!r}"))


for _hook in (int, None, "LossRecorder"):
    add("exercises", f"check_loss_recorder({_hook!r})", lambda t, h=_hook: t.value(
        _quiet_check, _EX().check_loss_recorder, h, check=_failed_result))
    add("exercises", f"check_freeze_bn_hook({_hook!r})", lambda t, h=_hook: t.value(
        _quiet_check, _EX().check_freeze_bn_hook, h, check=_failed_result))


@attempt("exercises", "check_loss_recorder with a Hook class whose methods call sys.exit()")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.train import Hook

    class Recorder(Hook):
        def __init__(self, *a: Any, **k: Any) -> None:
            super().__init__()

        def after_step(self, state: Any) -> None:
            sys.exit(1)

        def after_backward(self, state: Any) -> None:
            sys.exit(1)
    return t.value(_quiet_check, _EX().check_loss_recorder, Recorder, check=_failed_result)


# ---------------------------------------------------------------- cli (more)
@attempt("cli", "train on a file with no images and no annotations")
def _(t: Trial) -> tuple[str, str]:
    return _train_edited(t, lambda d: d.update(images=[], annotations=[]), ["images"])


@attempt("cli", "train on a file with no categories and no annotations")
def _(t: Trial) -> tuple[str, str]:
    return _train_edited(t, lambda d: d.update(categories=[], annotations=[]), ["categories"])


@attempt("cli", "train with --train and --val of different categories")
def _(t: Trial) -> tuple[str, str]:
    def edit(d: dict[str, Any]) -> None:
        d["categories"][0]["name"] = "hexagon"
    return _train_edited(t, edit, ["hexagon", "categories"], which="val")


@attempt("cli", "evaluate on a dataset whose categories differ from the checkpoint's")
def _(t: Trial) -> tuple[str, str]:
    data = t.coco("val")
    data["categories"][0]["name"] = "hexagon"
    ann = t.write_coco(data, image_dir=t.fx.val.parent / "images")
    return t.cli_error("evaluate", t.fx.ckpt, "--data", ann, names=["hexagon", "categories"])


@attempt("cli", "train --resume of a different --epochs")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "run"
    shutil.copytree(t.fx.ckpt.parent, out)
    return t.cli_error("train", "--train", t.fx.train, "--val", t.fx.val, "--out", out, "--resume", "--epochs", "5",
                       *TRAIN_FLAGS[2:], names=["--epochs", "1"])


@attempt("cli", "train --resume with another --lr")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "run"
    shutil.copytree(t.fx.ckpt.parent, out)
    return t.cli_error("train", "--train", t.fx.train, "--val", t.fx.val, "--out", out, "--resume", *TRAIN_FLAGS,
                       "--lr", "0.5", names=["lr"])


@attempt("cli", "train --resume in an empty --out")
def _(t: Trial) -> tuple[str, str]:
    return t.cli_error("train", "--train", t.fx.train, "--val", t.fx.val, "--out", t.dir / "run", "--resume",
                       *TRAIN_FLAGS, names=["last.pt", "--resume"])


@attempt("cli", "train --resume from a best.pt renamed to last.pt (no training state)")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "run"
    out.mkdir()
    shutil.copy(t.fx.ckpt.parent / "best.pt", out / "last.pt")
    return t.cli_error("train", "--train", t.fx.train, "--val", t.fx.val, "--out", out, "--resume", *TRAIN_FLAGS,
                       names=["last.pt", "training state"])


@attempt("cli", "evaluate with --images pointing at an empty folder")
def _(t: Trial) -> tuple[str, str]:
    (t.dir / "empty").mkdir()
    return t.cli_error("evaluate", t.fx.ckpt, "--data", t.fx.val, "--images", t.dir / "empty", names=["empty", "00001.jpg"])


@attempt("cli", "export --calib without --int8")
def _(t: Trial) -> tuple[str, str]:
    return t.cli_error("export", t.fx.ckpt, "--onnx", t.dir / "m.onnx", "--calib", t.fx.train, names=["--calib", "--int8"])


@attempt("cli", "export --int8 without --calib")
def _(t: Trial) -> tuple[str, str]:
    return t.cli_error("export", t.fx.ckpt, "--onnx", t.dir / "m.onnx", "--int8", names=["--calib"])


@attempt("cli", "export --int8 whose OUT.int8.onnx is the checkpoint")
def _(t: Trial) -> tuple[str, str]:
    ckpt = t.dir / "m.int8.onnx"
    shutil.copy(t.fx.ckpt, ckpt)
    return t.cli_error("export", ckpt, "--onnx", t.dir / "m.onnx", "--int8", "--calib", t.fx.train, "--overwrite",
                       names=["m.int8.onnx"])


@attempt("cli", "export --int8 --calib: both models written and runnable (right answer)")
def _(t: Trial) -> tuple[str, str]:
    res = t.cli("export", t.fx.ckpt, "--onnx", t.dir / "m.onnx", "--int8", "--calib", t.fx.train, "--num-calib", "4")
    files = sorted(p.name for p in t.dir.glob("*.onnx"))
    if res.rc == 0 and files == ["m.int8.onnx", "m.onnx"]:
        return "ok_right_answer", f"wrote {files}: {res.out.strip().splitlines()[-1][:120]}"
    return judge_cli_error(res) if res.rc != 0 else ("silent_wrong", f"exit 0 but files {files}")


@attempt("cli", "predict --out naming a new folder under a file (out.txt/sub)")
def _(t: Trial) -> tuple[str, str]:
    (t.dir / "out.txt").write_text("x")
    return t.cli_error("predict", t.fx.ckpt, t.fx.images()[0], "--out", t.dir / "out.txt" / "sub", names=["out.txt"])


@attempt("cli", "predict --overwrite replaces only the drawn PNG, keeps other files")
def _(t: Trial) -> tuple[str, str]:
    img, out = _earlier_drawing(t)
    (out / "keep.txt").write_text("mine")
    res = t.cli("predict", t.fx.ckpt, img, "--out", out, "--overwrite", may_change=[out / f"{img.stem}.png"])
    if res.rc == 0 and (out / f"{img.stem}.png").read_bytes()[:4] == b"\x89PNG":
        return "ok_right_answer", "replaced the PNG, kept keep.txt"
    return judge_cli_error(res)


@attempt("cli", "predict a symlink to an image")
def _(t: Trial) -> tuple[str, str]:
    link = t.dir / "link.jpg"
    link.symlink_to(t.fx.images()[0])
    res = t.cli("predict", t.fx.ckpt, link, "--out", t.dir / "p")
    ok = res.rc == 0 and (t.dir / "p" / "link.png").is_file()
    return ("ok_right_answer", "drew link.png") if ok else judge_cli_error(res)


@attempt("cli", "predict a grey 16-bit PNG and an RGBA PNG (right answer: both drawn)")
def _(t: Trial) -> tuple[str, str]:
    g16 = _grey16_png(t.dir / "g16.png", 30000)
    rgba = t.dir / "rgba.png"
    _write_mode_image(rgba, "RGBA")
    res = t.cli("predict", t.fx.ckpt, g16, rgba, "--out", t.dir / "p")
    drawn = sorted(p.name for p in (t.dir / "p").glob("*.png")) if (t.dir / "p").is_dir() else []
    return ("ok_right_answer", f"drew {drawn}") if res.rc == 0 and len(drawn) == 2 else judge_cli_error(res)


@attempt("cli", "evaluate --json into a missing folder")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "new" / "deeper" / "m.json"
    res = t.cli("evaluate", t.fx.ckpt, "--data", t.fx.val, "--json", out)
    if res.rc == 0 and out.is_file():
        return "ok_right_answer", "created the folder and wrote the JSON"
    return judge_cli_error(res)


@attempt("cli", "train from a read-only copy of the dataset (right answer: it trains)")
def _(t: Trial) -> tuple[str, str]:
    ann = t.copy_dataset("train", "ro")
    folders = [ann.parent, ann.parent / "images"]
    for f in folders:
        f.chmod(0o555)
    try:
        res = t.cli("train", "--train", ann, "--val", t.fx.val, "--out", t.dir / "run", *TRAIN_FLAGS)
    finally:
        for f in folders:
            f.chmod(0o755)
    if res.rc == 0 and (t.dir / "run" / "last.pt").is_file():
        return "ok_right_answer", "trained from read-only inputs"
    return judge_cli_error(res)


@attempt("cli", "predict --out a read-only folder (chmod 555; as root permissions do not bind)")
def _(t: Trial) -> tuple[str, str]:
    out = t.dir / "ro_out"
    out.mkdir()
    out.chmod(0o555)
    try:
        res = t.cli("predict", t.fx.ckpt, t.fx.images()[0], "--out", out)
    finally:
        out.chmod(0o755)
    if os.geteuid() == 0 and res.rc == 0:
        return "ok_right_answer", "running as root: the folder was writable after all, and the PNG was drawn"
    return judge_cli_error(res, ["ro_out"])


@attempt("cli", "train with COURSE_UTILS_TRACEBACK unset and a JSON that is a list")
def _(t: Trial) -> tuple[str, str]:
    folder = t.dir / "bad"
    folder.mkdir()
    (folder / "annotations.json").write_text("[]")
    return t.cli_error("train", "--train", folder / "annotations.json", "--val", t.fx.val, "--out", t.dir / "run",
                       *TRAIN_FLAGS, names=["annotations.json"])


# ---------------------------------------------------------------- exercises
@attempt("exercises", "a learner function calling sys.exit() inside check_box_area")
def _(t: Trial) -> tuple[str, str]:
    from course_utils.exercises import check_box_area

    def learner(boxes: torch.Tensor) -> torch.Tensor:
        sys.exit(3)

    with contextlib.redirect_stdout(io.StringIO()):
        return t.value(check_box_area, learner, check=lambda r: (r is not None and not bool(r)) or f"returned {r!r}")


# ============================================================================ running
def run(attempts: list[Attempt], json_path: Path | None) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="hostile_user_"))
    fx = Fixture(root)
    records: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for i, a in enumerate(attempts, start=1):
            t0 = time.perf_counter()
            shared_before = file_hashes(fx.shared)
            trial = Trial(fx, root / f"a{i:04d}")
            try:
                cls, detail = a.fn(trial)
            except KeyboardInterrupt:
                raise
            except BaseException as err:  # noqa: BLE001 -- an attempt that itself broke is reported, not fatal
                cls, detail = "obscure_crash", f"attempt raised {type(err).__name__}: {err}"
            shared_lost = lost_files(shared_before, file_hashes(fx.shared))
            lost = trial.lost + shared_lost
            if lost:
                cls, detail = "data_lost", f"{'; '.join(lost)[:150]} | {detail}"
            detail = " ".join(str(detail).replace(str(root), "$TMP").split())[:200]  # no machine paths in the record
            record = {"name": a.name, "area": a.area, "class": cls, "detail": detail,
                      "seconds": round(time.perf_counter() - t0, 2)}
            records.append(record)
            print(f"[{i:3d}/{len(attempts)}] {a.area:<10} {cls:<15} {record['seconds']:6.1f}s  {a.name[:70]}", flush=True)
            if json_path and i % 25 == 0:
                write_json(json_path, summary(records, time.perf_counter() - started, partial=True))
            with contextlib.suppress(OSError):
                shutil.rmtree(trial.dir)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    result = summary(records, time.perf_counter() - started)
    if json_path:
        write_json(json_path, result)
    return result


def summary(records: list[dict[str, Any]], seconds: float, partial: bool = False) -> dict[str, Any]:
    from course_utils.deploy import cpu_info

    per_area: dict[str, dict[str, int]] = {}
    for r in records:
        per_area.setdefault(r["area"], dict.fromkeys(CLASSES, 0))[r["class"]] += 1
    return {
        "what": "benchmarks/hostile_user.py: careless / hostile inputs to the course's CLI and library, each judged "
                "as a clear error or a right answer",
        "partial": partial,
        "cpu": cpu_info().get("model", platform.processor()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "seconds": round(seconds, 1),
        "attempts": len(records),
        "totals": {c: sum(r["class"] == c for r in records) for c in CLASSES},
        "per_area": per_area,
        "records": records,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", metavar="AREA", help="run one area (see --list)")
    parser.add_argument("--list", action="store_true", help="list the attempts and exit")
    parser.add_argument("--json", type=Path, help=f"where to write the results (default for a full run: {RESULTS})")
    args = parser.parse_args(argv)
    areas = sorted({a.area for a in ATTEMPTS})
    chosen = [a for a in ATTEMPTS if args.only in (None, a.area)]
    if args.only and not chosen:
        parser.error(f"--only {args.only!r}: no such area; choose one of {areas}")
    if args.list:
        for a in chosen:
            print(f"{a.area:<10} {a.name}")
        print(f"{len(chosen)} attempts in {len(areas)} areas: {', '.join(areas)}")
        return 0
    json_path = args.json or (RESULTS if args.only is None else None)
    result = run(chosen, json_path)
    print("totals:", result["totals"], f"in {result['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
