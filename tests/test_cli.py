"""``python -m course_utils``: train (resumable), evaluate, export, predict on a COCO folder the course never saw;
and Letterbox, which lets one dataset mix image sizes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_utils import cli
from course_utils.data import Letterbox, SceneConfig, undo_letterbox, write_coco_split

COMMON = ["--epochs", "3", "--batch-size", "8", "--no-progress", "--device", "cpu", "--image-size", "64", "--width", "0.5"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_coco_split(root / "train", list(range(24)), SceneConfig(image_size=80))
    write_coco_split(root / "val", list(range(500, 508)), SceneConfig(image_size=96))  # another size than train
    return root


def _train_args(folders, out):
    return ["train", "--train", str(folders / "train" / "annotations.json"), "--val", str(folders / "val" / "annotations.json"),
            "--out", str(out), *COMMON]


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_every_command_explains_itself():
    for command in ([], ["train"], ["evaluate"], ["export"], ["predict"]):
        done = subprocess.run([sys.executable, "-m", "course_utils", *command, "--help"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "usage:" in done.stdout and len(done.stdout) > 300, done.stderr


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_an_interrupted_run_resumes_to_the_same_weights(folders, tmp_path, monkeypatch, capsys):
    import course_utils.train as T

    assert cli.main(_train_args(folders, tmp_path / "full")) == 0
    real_save, saves = T.save_checkpoint, []

    def crash_after_epoch_two(path, model, **meta):  # the machine dies right after epoch 2's checkpoint
        real_save(path, model, **meta)
        saves.append(meta.get("epoch"))
        if Path(path).name == "last.pt" and meta.get("epoch") == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(T, "save_checkpoint", crash_after_epoch_two)
    assert cli.main(_train_args(folders, tmp_path / "cut")) == 130
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    torch.manual_seed(12345)  # stale random state must not matter: resume restores its own
    assert cli.main(_train_args(folders, tmp_path / "cut") + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "2 of 3 epochs done" in out
    full = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    for key, value in full["model"].items():
        assert torch.equal(value, cut["model"][key]), key
    assert full["metadata"]["history"]["val_map"] == cut["metadata"]["history"]["val_map"]
    assert cut["metadata"]["epoch"] == 3
    # resuming with other settings is refused, with the fix
    assert cli.main(_train_args(folders, tmp_path / "cut")[:-len(COMMON)] + [*COMMON[:-2], "--width", "1.0", "--resume"]) == 2
    assert "width" in capsys.readouterr().err


@pytest.fixture(scope="module")
def trained(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert cli.main(_train_args(folders, out)) == 0
    return out


def test_evaluate_prints_the_coco_table_and_writes_json(folders, trained, tmp_path, capsys):
    from course_utils import CocoDetection, evaluate, load_checkpoint, TinyDetector
    from course_utils.data import collate_detection
    from course_utils.metrics import COCO_STATS
    from torch.utils.data import DataLoader

    code = cli.main(["evaluate", str(trained / "last.pt"), "--data", str(folders / "val" / "annotations.json"),
                     "--json", str(tmp_path / "m.json"), "--device", "cpu"])
    assert code == 0
    text = capsys.readouterr().out
    assert "AP @[.50:.95] all" in text and "AR maxDets=100" in text
    written = json.loads((tmp_path / "m.json").read_text())
    model = TinyDetector(num_classes=3, width=0.5)
    load_checkpoint(trained / "last.pt", model)
    data = Letterbox(CocoDetection(folders / "val" / "annotations.json"), 64)
    ref = evaluate(model.eval(), DataLoader(data, batch_size=4, collate_fn=collate_detection), torch.device("cpu"))
    for name in COCO_STATS:
        assert written[name] == pytest.approx(ref[name], abs=1e-12), name


def test_export_writes_fp32_and_int8_onnx(folders, trained, tmp_path, capsys):
    code = cli.main(["export", str(trained / "best.pt"), "--onnx", str(tmp_path / "m.onnx"), "--int8",
                     "--calib", str(folders / "train" / "annotations.json"), "--num-calib", "8"])
    assert code == 0
    text = capsys.readouterr().out
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.int8.onnx").is_file()
    assert "KiB" in text and "ms per 64x64 image" in text
    assert (tmp_path / "m.int8.onnx").stat().st_size < (tmp_path / "m.onnx").stat().st_size


def test_predict_draws_pngs(folders, trained, tmp_path, capsys):
    image = next((folders / "val" / "images").iterdir())
    assert cli.main(["predict", str(trained / "best.pt"), str(image), "--out", str(tmp_path / "pred"), "--device", "cpu"]) == 0
    pngs = list((tmp_path / "pred").glob("*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 1000


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
@pytest.mark.parametrize("argv, message", [
    (["train", "--train", "missing.json", "--val", "missing.json"], "no file at 'missing.json'"),
    (["train", "--train", "{ann}", "--val", "{ann}", "--epochs", "0"], "must be >= 1"),
    (["train", "--train", "{ann}", "--val", "{ann}", "--image-size", "100"], "multiple of 16"),
    (["train", "--train", "{ann}", "--val", "{ann}", "--lr", "-1"], "finite number > 0"),
    (["train", "--train", "{bad}", "--val", "{ann}", "--epochs", "1"], "annotations"),
    (["train", "--train", "{ann}", "--val", "{ann}", "--epochs", "1", "--device", "cuda:7"], "device"),
    (["evaluate", "{ann}", "--data", "{ann}"], "checkpoint"),
    (["export", "{ckpt}", "--onnx", "x.onnx", "--int8"], "--int8 needs --calib"),
    (["predict", "{ckpt}", "{ann}", "--out", "p"], "1 of 1 files could not be read as images"),
    (["train", "--train", "{ann}", "--val", "{ann}", "--resume", "--out", "{empty}"], "no .*last.pt to resume"),
])
def test_bad_input_gets_one_clear_line_and_exit_status_2(folders, trained, tmp_path, argv, message):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [], "categories": []}')
    fill = {"{ann}": str(folders / "val" / "annotations.json"), "{bad}": str(bad), "{ckpt}": str(trained / "best.pt"),
            "{empty}": str(tmp_path / "empty")}
    argv = [fill.get(a, a) for a in argv]
    if "--device" in argv and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    done = subprocess.run([sys.executable, "-m", "course_utils", *argv], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    import re

    assert re.search(message, done.stderr), done.stderr


# ------------------------------------------------------------------ Letterbox
def test_letterbox_maps_boxes_there_and_back(folders):
    from course_utils import CocoDetection

    base = CocoDetection(folders / "val" / "annotations.json")
    image, target = Letterbox(base, 64)[0]
    assert image.shape == (3, 64, 64)
    original = base[0][1]
    (pred,), (back,) = undo_letterbox([{"boxes": target["boxes"], "scores": torch.ones(len(target["boxes"])),
                                        "labels": target["labels"]}], [target])
    assert torch.allclose(pred["boxes"], original["boxes"], atol=1e-4)
    assert torch.equal(back["boxes"], original["boxes"])


def test_one_dataset_may_mix_image_sizes(tmp_path):
    from torch.utils.data import ConcatDataset, DataLoader

    from course_utils import CocoDetection, TinyDetector, evaluate
    from course_utils.data import collate_detection

    a = CocoDetection(write_coco_split(tmp_path / "a", [1, 2], SceneConfig(image_size=64)))
    b = CocoDetection(write_coco_split(tmp_path / "b", [3, 4], SceneConfig(image_size=112)))
    mixed = Letterbox(ConcatDataset([a, b]), 96)
    loader = DataLoader(mixed, batch_size=4, collate_fn=collate_detection)
    metrics = evaluate(TinyDetector(width=0.5).eval(), loader, torch.device("cpu"))  # no stacking error
    assert 0 <= metrics["map"] <= 1

    class Oracle(torch.nn.Module):  # returns the letterboxed ground truth: scored in original pixels, mAP must be 1
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.seen = iter([t for _, t in mixed])

        def forward(self, images):
            out = []
            for _ in images:
                t = next(self.seen)
                out.append({"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])), "labels": t["labels"]})
            return out

    assert evaluate(Oracle().eval(), loader, torch.device("cpu"))["map"] == pytest.approx(1.0)


def test_letterbox_refuses_a_bad_size():
    with pytest.raises(ValueError, match="int >= 16"):
        Letterbox([], 8)


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_train_on_two_files_of_different_image_sizes(folders, tmp_path, capsys):
    argv = ["train", "--train", str(folders / "train" / "annotations.json"), str(folders / "val" / "annotations.json"),
            "--val", str(folders / "val" / "annotations.json"), "--out", str(tmp_path / "two"), *COMMON[:1], "1", *COMMON[2:]]
    assert cli.main(argv) == 0
    meta = torch.load(tmp_path / "two" / "last.pt", weights_only=True)["metadata"]
    assert len(meta["config"]["train"]) == 2 and meta["epoch"] == 1
    other = json.loads((folders / "val" / "annotations.json").read_text())
    other["categories"][0]["name"] = "renamed"
    (tmp_path / "other.json").write_text(json.dumps(other))
    (tmp_path / "images").symlink_to(folders / "val" / "images")
    argv[3] = str(tmp_path / "other.json")
    argv[argv.index("--out") + 1] = str(tmp_path / "other_run")
    assert cli.main(argv) == 2
    assert "same categories" in capsys.readouterr().err


def test_init_starts_from_a_course_checkpoint_and_refuses_another_shape(folders, tmp_path, capsys):
    from course_utils import TinyDetector, save_checkpoint

    start = TinyDetector(width=0.5)
    torch.nn.init.constant_(start.cls_out.bias, 1.5)
    save_checkpoint(tmp_path / "start.pt", start)
    argv = _train_args(folders, tmp_path / "run")
    argv[argv.index("3")] = "1"  # one epoch
    assert cli.main(argv + ["--init", str(tmp_path / "start.pt")]) == 0
    trained = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]["cls_out.bias"]
    assert (trained - 1.5).abs().max() < 0.5  # started from the given weights (a random start has -4.6)
    save_checkpoint(tmp_path / "wide.pt", TinyDetector(width=1.0))
    assert cli.main(argv + ["--init", str(tmp_path / "wide.pt"), "--out", str(tmp_path / "r2")]) == 2
    assert "--init" in capsys.readouterr().err


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_levels_flag_trains_evaluates_and_exports_a_three_level_detector(folders, tmp_path, capsys):
    argv = _train_args(folders, tmp_path / "run")
    argv[argv.index("3")] = "1"  # one epoch
    assert cli.main(argv + ["--levels", "3"]) == 0
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert saved["metadata"]["config"]["levels"] == 3 and any(k.startswith("level_heads.1.") for k in saved["model"])
    assert cli.main(["evaluate", str(tmp_path / "run" / "last.pt"), "--data", str(folders / "val" / "annotations.json")]) == 0
    assert cli.main(["export", str(tmp_path / "run" / "last.pt"), "--onnx", str(tmp_path / "m.onnx"), "--int8",
                     "--calib", str(folders / "train" / "annotations.json"), "--num-calib", "8"]) == 0
    done = subprocess.run([sys.executable, "-m", "course_utils", *argv, "--levels", "4"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "--levels: invalid choice: 4" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_run_command_prints_the_command_and_fails_loudly(capsys):
    """What notebook 10 runs its commands with: the command and its output are printed; a failure raises
    (a notebook's `!` line would not); an expected failure prints only its one-line error."""
    assert cli.run_command("evaluate", "--help") is None  # a notebook cell shows what it prints, nothing twice
    printed = capsys.readouterr().out
    assert printed.startswith("$ python -m course_utils evaluate --help\nusage:") and "--data ANN.json" in printed
    with pytest.raises(cli.CommandFailed, match=r"(?s)exit status 2.*no file at 'nothing.pt'"):
        cli.run_command("evaluate", "nothing.pt", "--data", "missing.json")
    capsys.readouterr()
    cli.run_command("train", "--train", "missing.json", "--val", "missing.json", expect_error=True)
    printed = capsys.readouterr().out.splitlines()  # just the command and the error line, no usage text
    assert len(printed) == 2 and printed[0].startswith("$ python -m course_utils train --train missing.json")
    assert printed[1].startswith("python -m course_utils train: error:") and "no file at 'missing.json'" in printed[1]
    with pytest.raises(cli.CommandFailed, match="expected to fail, but it succeeded"):
        cli.run_command("train", "--help", expect_error=True)
    with pytest.raises(ValueError, match="processes"):
        cli.run_command("train", processes=0)
