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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "hostile_user.json"
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


@attempt("cli", "predict into an --out holding the same PNG, no --overwrite")
def _(t: Trial) -> tuple[str, str]:
    img = t.fx.images()[0]
    out = t.dir / "pred"
    out.mkdir()
    (out / f"{img.stem}.png").write_bytes(b"an earlier drawing")
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
            record = {"name": a.name, "area": a.area, "class": cls, "detail": " ".join(str(detail).split())[:200],
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


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
