"""A careless user at the command line and in the library: nothing they have is lost, nothing is silently
wrong, and every mistake ends in one clear line (the CLI: ``error: ...``, exit status 2) -- one test per
reproduction of a hostile-user pass (the integer path's limits: ``tests/test_integer_limits.py``)."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from course_utils import boxes as B
from course_utils import cli
from course_utils import exercises as ex
from course_utils.data import CocoDetection, DatasetError, SceneConfig, read_image, write_coco_split
from course_utils.distill import kd_loss
from course_utils.metrics import bootstrap_map
from course_utils.models import TinyDetector
from course_utils.outputs import FolderLock
from course_utils.quant.integer import IntegerAdd
from course_utils.train import load_checkpoint, save_checkpoint

FAST = ["--epochs", "1", "--batch-size", "4", "--no-progress", "--device", "cpu", "--image-size", "32", "--width", "0.25"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("careless")
    write_coco_split(root / "train", list(range(8)), SceneConfig(image_size=48))
    write_coco_split(root / "val", list(range(100, 104)), SceneConfig(image_size=48))
    return root


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert cli.main(_train(data, out)) == 0
    return out


def _train(data: Path, out: Path, *extra: str, val: Path | None = None) -> list[str]:
    return ["train", "--train", str(data / "train" / "annotations.json"),
            "--val", str(val or data / "val" / "annotations.json"), "--out", str(out), *FAST, *extra]


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _fails(capsys, argv: list[str], *words: str) -> str:
    """``cli.main(argv)`` exits 2 with one ``error:`` line containing every word; returns all it wrote to stderr."""
    status = cli.main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert status == 2 and err and err[-1].startswith("error: "), (status, err)
    assert "epoch" not in captured.out, captured.out  # refused before any training
    for word in words:
        assert word in err[-1], err[-1]
    return captured.err


def _coco_with(data: Path, tmp_path: Path, change) -> Path:
    """A copy of the val COCO file (same images) after ``change(json_dict)``."""
    coco = json.loads((data / "val" / "annotations.json").read_text())
    change(coco)
    path = tmp_path / "changed.json"
    path.write_text(json.dumps(coco))
    if not (tmp_path / "images").exists():
        (tmp_path / "images").symlink_to(data / "val" / "images")
    return path


# ------------------------------------------------------------------ nothing lost
def test_export_never_writes_over_its_own_checkpoint(run, capsys):
    before = _digest(run)
    _fails(capsys, ["export", str(run / "best.pt"), "--onnx", str(run / "best.pt")], "input")
    _fails(capsys, ["export", str(run / "best.pt"), "--onnx", str(run / "best.pt"), "--overwrite"], "input")
    assert _digest(run) == before


def test_a_second_training_into_a_run_folder_is_refused_unless_asked(data, run, tmp_path, capsys):
    before = _digest(run)
    _fails(capsys, _train(data, run, "--seed", "2"), "already holds a run", "--resume", "--overwrite")
    _fails(capsys, _train(data, run, "--resume", "--overwrite"), "one of them")
    assert _digest(run) == before
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "best.pt").write_bytes((run / "best.pt").read_bytes())
    _fails(capsys, _train(data, copy, "--overwrite", "--init", str(copy / "best.pt")), "also reads")
    assert cli.main(_train(data, copy, "--overwrite", "--seed", "3")) == 0
    assert load_checkpoint(copy / "last.pt")["metadata"]["config"]["seed"] == 3


def test_two_trainings_into_one_folder_at_once_one_is_refused(data, tmp_path, capsys):
    out = tmp_path / "shared"
    with FolderLock(out):  # another command holds the folder (flock: refused across processes and descriptors)
        _fails(capsys, _train(data, out), "in use", str(os.getpid()))
        assert not (out / "last.pt").exists()
    assert not out.exists()  # the lock's holder created it and leaves nothing behind
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from course_utils.outputs import FolderLock\n"
                               f"with FolderLock({str(out)!r}):\n    print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        _fails(capsys, _train(data, out), "in use", str(holder.pid))
    finally:
        holder.kill()
        holder.wait()
    assert cli.main(_train(data, out)) == 0  # the killed holder's lock went with it
    assert not (out / ".lock").exists()


def test_predict_keeps_every_output_and_skips_only_the_bad_file(data, run, tmp_path, capsys):
    source = next((data / "val" / "images").iterdir())
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(source).save(photos / "a.jpg")
    Image.open(source).save(photos / "a.png")
    Image.open(source).save(photos / "z.jpg")
    (photos / "notes.txt").write_text("not an image")
    files = [str(photos / n) for n in ("a.jpg", "a.png", "notes.txt", "z.jpg")]
    out = tmp_path / "pred"
    line = _fails(capsys, ["predict", str(run / "best.pt"), *files, "--out", str(out)], "notes.txt", "1 of 4")
    assert sorted(p.name for p in out.iterdir()) == ["a_jpg.png", "a_png.png", "z.png"], line
    before = _digest(out)
    _fails(capsys, ["predict", str(run / "best.pt"), files[-1], "--out", str(out)], "already holds z.png", "--overwrite")
    assert _digest(out) == before
    assert cli.main(["predict", str(run / "best.pt"), files[-1], "--out", str(out), "--overwrite"]) == 0
    Image.open(source).save(tmp_path / "z.jpg")  # the same name in another folder
    _fails(capsys, ["predict", str(run / "best.pt"), str(photos / "z.jpg"), str(tmp_path / "z.jpg"), "--out", str(out)],
           "both be drawn")
    drawn = tmp_path / "drawn"
    drawn.mkdir()
    Image.open(source).save(drawn / "q.png")
    _fails(capsys, ["predict", str(run / "best.pt"), str(drawn / "q.png"), "--out", str(drawn), "--overwrite"],
           "one of its inputs")


def test_evaluate_json_is_checked_before_the_work(data, run, tmp_path, capsys):
    val = data / "val" / "annotations.json"
    before = val.read_bytes()
    _fails(capsys, ["evaluate", str(run / "best.pt"), "--data", str(val), "--json", str(val), "--overwrite"], "input")
    assert val.read_bytes() == before
    _fails(capsys, ["evaluate", str(run / "best.pt"), "--data", str(val), "--json", str(tmp_path)], "is a folder")
    (tmp_path / "old.json").write_text("{}")
    _fails(capsys, ["evaluate", str(run / "best.pt"), "--data", str(val), "--json", str(tmp_path / "old.json")],
           "already exists")
    assert (tmp_path / "old.json").read_text() == "{}"


# ------------------------------------------------------------------ one decoder
def _odd_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    grey16 = Image.fromarray(np.full((40, 48), 32768, dtype=np.uint16))
    grey16.save(folder / "grey16.png")
    Image.fromarray(np.full((40, 48), 0.5, dtype=np.float32), mode="F").save(folder / "half.tiff")
    return {"grey16": folder / "grey16.png", "float": folder / "half.tiff"}


def test_predict_decodes_images_as_training_does(run, tmp_path, monkeypatch, capsys):
    files = _odd_images(tmp_path / "odd")
    coco = {"images": [{"id": k, "file_name": p.name, "width": 48, "height": 40} for k, p in enumerate(files.values(), 1)],
            "annotations": [], "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "odd.json").write_text(json.dumps(coco))
    dataset = CocoDetection(tmp_path / "odd.json", image_dir=tmp_path / "odd")
    for k, path in enumerate(files.values()):
        assert torch.equal(read_image(path), dataset[k][0])
        assert abs(float(read_image(path).mean()) - 0.5) < 1e-4  # not white (16-bit through 8 bits), not black (float)
    import course_utils.data as D

    seen = []

    def spy(path, *args, **kwargs):
        seen.append(Path(path))
        return read_image(path, *args, **kwargs)

    monkeypatch.setattr(D, "read_image", spy)
    assert cli.main(["predict", str(run / "best.pt"), *map(str, files.values()), "--out", str(tmp_path / "p")]) == 0
    assert seen == list(files.values())


def test_predict_refuses_a_huge_image_before_decoding(run, tmp_path, capsys):
    Image.new("1", (8000, 8000)).save(tmp_path / "huge.png")  # 64 megapixels, a few KB on disk
    started = time.perf_counter()
    err = _fails(capsys, ["predict", str(run / "best.pt"), str(tmp_path / "huge.png"), "--out", str(tmp_path / "p")],
                 "huge.png", "1 of 1")
    assert "64,000,000 pixels" in err and "max_pixels" in err
    assert time.perf_counter() - started < 10


# ------------------------------------------------------------------ checkpoints
def test_one_flipped_byte_in_the_weights_is_caught(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", TinyDetector(width=0.25), epoch=1)
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:  # the largest tensor's bytes, wherever the zip put them
        info = max(archive.infolist(), key=lambda i: i.file_size)
        payload = archive.read(info)
    start = raw.index(payload[:64], info.header_offset)
    raw[start + len(payload) // 2] ^= 0x10
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="damaged.pt: the checkpoint is damaged"):
        load_checkpoint(damaged, TinyDetector(width=0.25))
    assert load_checkpoint(path)["metadata"] == {"epoch": 1}  # the hash is not part of what load returns


def test_an_unsafe_pickle_is_one_line_at_the_command_line(data, run, tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > pwned.txt",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "metadata": {"x": Evil()}}, evil)
    _fails(capsys, ["evaluate", str(evil), "--data", str(data / "val" / "annotations.json")], "refused to load")
    _fails(capsys, _train(data, tmp_path / "r", "--init", str(evil)), "refused to load")
    assert not Path("pwned.txt").exists() and not (tmp_path / "pwned.txt").exists()


# ------------------------------------------------------------------ bad input: one line, before any work
@pytest.mark.parametrize("change, words", [
    (lambda c: c.update(images=[], annotations=[]), ["'images' is empty"]),
    (lambda c: c.update(categories=[], annotations=[]), ["'categories' is empty"]),
    (lambda c: c["categories"][0].update(name=None), ["'name' is None"]),
    (lambda c: c["categories"][0].update(name=["a", "b"]), ["'name' is ['a', 'b']"]),
    (lambda c: c["categories"][1].update(name=c["categories"][0]["name"]), ["duplicate category name"]),
    (lambda c: c["annotations"][0].update(area=1e300), ["area=1e+300", "whole"]),
    (lambda c: [a.update(iscrowd=1) for a in c["annotations"]], ["no object to score"]),
])
def test_a_bad_val_file_is_refused_before_an_epoch(data, tmp_path, capsys, change, words):
    val = _coco_with(data, tmp_path, change)
    _fails(capsys, _train(data, tmp_path / "out", val=val), *words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["corrupt", "svg", "text", "truncated"])
def test_unreadable_images_are_one_line_in_train_evaluate_and_export(data, run, tmp_path, capsys, bad):
    images = tmp_path / "images"
    images.mkdir()
    for p in (data / "val" / "images").iterdir():
        (images / p.name).write_bytes(p.read_bytes())
    victim = sorted(images.iterdir())[1]
    good = victim.read_bytes()
    victim.write_bytes({"corrupt": good[:20] + bytes(200) + good[220:], "svg": b'<svg xmlns="http://www.w3.org/2000/svg"/>',
                        "text": b"hello", "truncated": good[: len(good) // 3]}[bad])
    (tmp_path / "val.json").write_bytes((data / "val" / "annotations.json").read_bytes())
    val = tmp_path / "val.json"
    _fails(capsys, _train(data, tmp_path / "out", val=val), victim.name)
    _fails(capsys, ["evaluate", str(run / "best.pt"), "--data", str(val)], victim.name)
    _fails(capsys, ["export", str(run / "best.pt"), "--onnx", str(tmp_path / "m.onnx"), "--int8", "--calib", str(val)],
           victim.name)
    assert not (tmp_path / "m.onnx").exists()  # the calibration images are read before anything is written


@pytest.mark.parametrize("argv, words", [
    (["--out", "{file}"], ["is a file"]),
    (["--seed", "-1"], []),
    (["--seed", "99999999999999999999"], []),
    (["--device", "meta"], ["cpu or cuda"]),
    (["--out", "/proc/nope"], ["cannot write there"]),
])
def test_bad_train_flags_fail_before_any_work(data, tmp_path, capsys, argv, words):
    (tmp_path / "file").write_text("mine")
    argv = [str(tmp_path / "file") if a == "{file}" else a for a in argv]
    out = argv[argv.index("--out") + 1] if "--out" in argv else str(tmp_path / "out")
    full = _train(data, Path(out)) + [a for a in argv if a not in ("--out", out)]
    if "--seed" in argv:  # argparse's own error: exit 2, its usage line, then one error line
        with pytest.raises(SystemExit) as stop:
            cli.main(full)
        assert stop.value.code == 2 and "0 .. 4294967295" in capsys.readouterr().err
        return
    started = time.perf_counter()
    _fails(capsys, full, *words)
    assert time.perf_counter() - started < 20
    assert (tmp_path / "file").read_text() == "mine"


def test_export_and_predict_output_paths(data, run, tmp_path, capsys):
    ck = str(run / "best.pt")
    empty = _coco_with(data, tmp_path, lambda c: c.update(images=[], annotations=[]))
    _fails(capsys, ["export", ck, "--onnx", str(tmp_path / "m.onnx"), "--int8", "--calib", str(empty)], "'images' is empty")
    assert not (tmp_path / "m.onnx").exists()
    _fails(capsys, ["export", ck, "--onnx", str(tmp_path)], "is a folder")
    (tmp_path / "file").write_text("mine")
    _fails(capsys, ["predict", ck, str(next((data / "val" / "images").iterdir())), "--out", str(tmp_path / "file")],
           "is a file")
    with pytest.raises(SystemExit):
        cli.main(["predict", ck, str(next((data / "val" / "images").iterdir())), "--out", str(tmp_path / "p"),
                  "--score-threshold", "nan"])
    assert "score between 0 and 1" in capsys.readouterr().err


def test_no_traceback_reaches_the_terminal(data, tmp_path):
    """In a real process (not cli.main): an unreadable training image and an unsafe pickle, one line each."""
    bad = _coco_with(data, tmp_path, lambda c: None)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(os.getcwd))
    for argv in (["evaluate", str(tmp_path / "evil.pt"), "--data", str(bad)],
                 ["train", "--train", str(bad), "--val", str(bad), "--images", str(tmp_path), *FAST, "--out", str(tmp_path / "o")]):
        done = subprocess.run([sys.executable, "-m", "course_utils", *argv], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.strip().splitlines()[-1].startswith("error: ")


# ------------------------------------------------------------------ the library
def test_boxes_refuse_what_they_would_get_wrong():
    with pytest.raises(ValueError, match=r"scores must be a tensor of shape \(4,\)"):
        B.nms(torch.rand(4, 4) + torch.tensor([0, 0, 1, 1]), torch.rand(2), 0.5)
    with pytest.raises(ValueError, match=r"shape \(4,\); need \(N, 4\) \(one box\?"):
        B.nms(torch.tensor([0.0, 0, 1, 1]), torch.tensor([1.0]), 0.5)
    with pytest.raises(ValueError, match=r"boxes\[0\] = \[10.0, 10.0, 0.0, 5.0\] has x2 < x1"):
        B.box_area(torch.tensor([[10.0, 10, 0, 5]]))
    with pytest.raises(ValueError, match="feature_size"):
        B.make_anchors(0, 0, 0)
    import torchvision

    one = torch.tensor([1.0, 2, 3, 5])
    for fmt in ("xywh", "cxcywh"):  # one box, as torchvision converts it
        assert torch.equal(B.box_convert(one, "xyxy", fmt), torchvision.ops.box_convert(one, "xyxy", fmt))


def test_batched_nms_is_exact_for_far_apart_boxes_and_large_class_ids():
    boxes = torch.tensor([[0, 0, 10, 10.0], [0, 0, 10, 10], [1e7, 1e7, 1e7 + 10, 1e7 + 10], [3, 0, 13, 10]])
    idxs, scores = torch.tensor([1000, 1000, 0, 1001]), torch.tensor([0.9, 0.8, 0.7, 0.6])
    # box 1 duplicates box 0 in class 1000: suppressed (the coordinate-offset trick loses it in float32)
    assert B.batched_nms(boxes, scores, idxs, 0.5).tolist() == [0, 2, 3]


def test_library_arguments_out_of_range_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.rand(2, 3), torch.rand(2, 3), 1e30)
    with pytest.raises(ValueError, match="y_scale must be a finite number > 0"):
        IntegerAdd.from_scales(0.1, 0, 0.1, 0, 0.0, 0)
    target = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "labels": torch.tensor([1])}
    pred = {"boxes": torch.tensor([[0.0, 0, 10, 10]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    with pytest.raises(ValueError, match="at least 2 images"):
        bootstrap_map([pred], [target])
    with pytest.raises(DatasetError, match="image file not found"):
        read_image("nowhere.png")


def test_a_check_survives_sys_exit_in_the_learners_code(capsys):
    class Quits:
        def __init__(self):
            sys.exit(0)

    assert not ex.check_box_area(lambda boxes: sys.exit(3))
    assert not ex.check_loss_recorder(Quits)
    out = capsys.readouterr().out
    assert "raised SystemExit: 3" in out and "SystemExit: 0" in out


def test_main_turns_every_error_into_one_line(monkeypatch, capsys):
    """Diverged training and bad input: exit 2; out of memory: exit 2 with the fix; anything else is a bug: exit 1,
    still one line (COURSE_UTILS_TRACEBACK=1 shows the traceback)."""
    from course_utils.train import NonFiniteLossError

    for error, status, words in ((NonFiniteLossError("loss is nan at epoch 0, step 3. Training has diverged", history={}),
                                  2, "diverged"),
                                 (RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"), 2, "out of memory"),
                                 (MemoryError(), 2, "out of memory"),
                                 (KeyError("boom"), 1, "bug in course_utils")):
        def fail(args, error=error):
            raise error

        monkeypatch.setitem(cli.COMMANDS, "evaluate", fail)
        assert cli.main(["evaluate", __file__, "--data", __file__]) == status
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err
    monkeypatch.setenv("COURSE_UTILS_TRACEBACK", "1")
    with pytest.raises(KeyError):
        cli.main(["evaluate", __file__, "--data", __file__])


def test_train_flags_that_would_exhaust_memory_are_refused(data, tmp_path, capsys):
    for flag, value in (("--width", "1e9"), ("--image-size", "1048576")):
        with pytest.raises(SystemExit) as stop:
            cli.main(_train(data, tmp_path / "o") + [flag, value])
        assert stop.value.code == 2 and value in capsys.readouterr().err


# ------------------------------------------------------------------ found by the hostile-user pass (benchmarks/hostile_user.py)
def _raises(fn, *words, kind=(ValueError, TypeError)):
    with pytest.raises(kind) as caught:
        fn()
    for word in words:
        assert word in str(caught.value), str(caught.value)


def test_second_pass_library_refusals(tmp_path):
    import course_utils.distill as Dl
    from course_utils.data import write_coco_split as write
    from course_utils.deploy import DetectorNetwork, export_onnx, quantize_onnx
    from course_utils.metrics import seed_summary
    from course_utils.quant.integer import fixed_point_multiplier, integer_conv2d, quantize_bias

    model = TinyDetector(width=0.25).eval()
    onnx = export_onnx(DetectorNetwork(model), torch.rand(1, 3, 32, 32), tmp_path / "m.onnx")
    before = onnx.read_bytes()
    _raises(lambda: quantize_onnx(onnx, onnx, torch.rand(4, 3, 32, 32)), "is the fp32 model itself")
    assert onnx.read_bytes() == before
    _raises(lambda: quantize_onnx(onnx, tmp_path / "q.onnx", torch.rand(4, 3, 48, 48)), "[4, 3, 48, 48]", "['N', 3, 32, 32]")
    _raises(lambda: quantize_onnx(onnx, tmp_path / "q.onnx", torch.full((4, 3, 32, 32), float("nan"))), "NaN")
    _raises(lambda: model([torch.rand(3, 32, 32) * 255]), "divided by 255")
    _raises(lambda: B.nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([float("nan")]), 0.5), "scores[0]")
    _raises(lambda: B.nms(torch.tensor([[0.0, 0, float("inf"), 1]]), torch.tensor([1.0]), 0.5), "boxes[0]")
    _raises(lambda: B.box_iou(torch.tensor([[0.0, 0, 1e20, 1e20]]), torch.tensor([[0.0, 0, 5e19, 1e20]])), "overflow")
    one = torch.tensor([[0.0, 0, 4, 4]])
    _raises(lambda: B.encode_boxes(one, torch.tensor([[1.0, 1, 1, 5]])), "no width or height")
    _raises(lambda: B.encode_boxes(one, one, (1.0, 1.0, 1.0)), "weights must be 4 numbers")
    _raises(lambda: B.decode_boxes(torch.zeros(3, 4), one.repeat(2, 1)), "3 rows", "2")
    assert seed_summary([1e308, 1e308])["mean"] == 1e308
    _raises(lambda: seed_summary(["0.5", "n/a"]), "not a number")
    s, t = torch.randn(2, 3), torch.randn(2, 3)
    _raises(lambda: Dl.soften(s, 0.0), "temperature")
    _raises(lambda: Dl.hinton_loss(s, t, torch.tensor([0, 3])), "0..2")
    _raises(lambda: Dl.hinton_loss(s, t, torch.tensor([0.0, 1.0])), "integer tensor")
    _raises(lambda: Dl.hinton_loss(s, t, torch.tensor([0, 1]), alpha="0.5"), "alpha")
    _raises(lambda: Dl.jitter_boxes(one, scale=float("nan")), "scale")
    _raises(lambda: Dl.jitter_boxes(torch.tensor([0.0, 0, 1, 1])), "boxes[None]")
    logits = torch.randn(2, 5, 3)
    _raises(lambda: Dl.dense_cls_distill_loss(logits, logits, 2.0, -1.0), "fg_weight")
    _raises(lambda: Dl.box_distill_loss(torch.zeros(2, 5, 3), torch.zeros(2, 5, 3), logits), "(B, A, 4)")
    _raises(lambda: Dl.teacher_bounded_regression_loss(torch.zeros(3, 4), torch.zeros(2, 4), torch.zeros(3, 4)), "(N, 4)")
    _raises(lambda: Dl.feature_imitation_loss(torch.zeros(2, 4, 3, 3), torch.zeros(2, 4, 3, 3),
                                              torch.ones(2, 5, 5, dtype=torch.bool)), "(2, 3, 3)")
    q_x, q_w = torch.zeros(1, 2, 3, 3, dtype=torch.uint8), torch.zeros(2, 2, 1, 1, dtype=torch.int8)
    _raises(lambda: integer_conv2d(q_x, 0, q_w, torch.zeros(3, dtype=torch.int32)), "q_bias must be (2,)")
    _raises(lambda: quantize_bias([0.5], 0.1, torch.tensor([0.1])), "must be a tensor")
    _raises(lambda: quantize_bias(torch.tensor([0.5]), 0.1, torch.tensor([-0.1])), "w_scale")
    _raises(lambda: fixed_point_multiplier("0.5"), "multipliers")
    _raises(lambda: load_checkpoint(save_checkpoint(tmp_path / "c.pt", model), map_location=7), "map_location")
    _raises(lambda: write(tmp_path / "d", None), "seeds must be a list")


def test_second_pass_checks_and_command_line(capsys):
    assert not ex.check_average_precision(lambda *args: float("nan"))  # NaN is never within tolerance
    done = subprocess.run([sys.executable, "-m", "course_utils", "predict", __file__, "/tmp/" + "x" * 300 + ".jpg",
                           "--out", "p"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "File name too long" in done.stderr
