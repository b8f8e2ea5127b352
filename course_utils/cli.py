"""``python -m course_utils``: the course's detector on your own COCO-format data.

For your own data: the README's "Your own data" section walks through these commands.

Five subcommands, each with ``--help``::

    python -m course_utils train --train train.json --val val.json --out runs/mine   # resumable
    python -m course_utils evaluate runs/mine/last.pt --data val.json                # the full COCO table
    python -m course_utils export runs/mine/best.pt --onnx mine.onnx --int8 --calib train.json
    python -m course_utils predict runs/mine/best.pt photo1.jpg photo2.png --out predictions/
    python -m course_utils benchmark runs/mine/best.pt --data val.json   # which runtime and precision to deploy
    torchrun --nproc-per-node 2 -m course_utils train ...                             # DDP, see course_utils.distributed

From a notebook, :func:`run_command` runs the same commands in a new process and fails loudly (a
notebook's ``!`` line does not: a command that fails there leaves an error message and the cell goes on).

Images of any size are letterboxed to ``--image-size`` (aspect kept, grey padding) for the
network and scored in their own pixels (:class:`~course_utils.data.Letterbox`). Checkpoints are
written atomically after every epoch (``last.pt``, and ``best.pt`` for the best val mAP) with the
optimizer, the scheduler, the epoch and every random-number state, and load with
``weights_only=True``: ``train --resume`` continues an interrupted run exactly where it stopped.
Bad input -- a missing file, a malformed COCO file, a bad flag value, an unreadable image -- ends with
one line saying what is wrong and how to fix it (exit status 2), never a traceback. Every output path
is checked before any work starts; nothing you have is overwritten unless you pass ``--overwrite``
(never a command's own input), and two commands writing into one run folder at once are refused.
"""

from __future__ import annotations

import argparse
import json
import numbers
import os
import pickle
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

__all__ = ["main", "build_parser", "run_command", "CommandFailed"]


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class CommandFailed(RuntimeError):
    """:func:`run_command`: the command exited with another status than expected."""


def _shown(word: Any) -> str:
    """How one word of a command is printed: a path as given (relative stays relative), quoted for a shell."""
    return shlex.quote(str(word))


def run_command(*args: Any, processes: int = 1, expect_error: bool = False) -> None:
    """Run ``python -m course_utils ARGS`` (or, with ``processes=N``, the same under ``torchrun``) in a new
    process, and print the command (after a ``$``) and everything it prints.

    Unlike a notebook's ``!`` line, a failure is loud: a non-zero exit status raises
    :class:`CommandFailed` with the command's last lines. With ``expect_error=True`` the command is
    *meant* to fail (a demonstration of an error message): only its last line -- the one-line error the
    command line promises -- is printed, and a command that succeeds raises instead.

    ``processes > 1`` runs ``python -m torch.distributed.run --nproc-per-node N -m course_utils ARGS`` with
    ``OMP_NUM_THREADS=1`` (one thread per process, so N processes share N cores instead of fighting).
    Paths are passed as given: give relative ones, and neither the command nor its output names
    folders of your machine. Taught in: 10_your_own_data.
    """
    if isinstance(processes, bool) or not isinstance(processes, numbers.Integral) or processes < 1:
        raise ValueError(f"processes must be a whole number >= 1, got {processes!r}")
    if not isinstance(expect_error, bool):
        raise TypeError(f"expect_error must be True or False, got {expect_error!r}")
    wrong = [a for a in args if isinstance(a, bool) or not isinstance(a, (str, os.PathLike, numbers.Real))]
    if wrong:
        raise TypeError(f"run_command takes the command's words one by one (strings, paths, numbers), got {wrong[0]!r}; "
                        "e.g. run_command('evaluate', 'run/best.pt', '--data', 'val.json')")
    processes = int(processes)
    words = [str(a) for a in args]
    if processes == 1:
        argv, shown, env = [sys.executable, "-m", "course_utils", *words], "python -m course_utils", None
    else:
        argv = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes), "-m", "course_utils", *words]
        shown, env = f"OMP_NUM_THREADS=1 torchrun --nproc-per-node {processes} -m course_utils", dict(os.environ, OMP_NUM_THREADS="1")
    command = " ".join([shown, *(_shown(w) for w in words)])
    print(f"$ {command}", flush=True)
    lines = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if not expect_error:
                print(line, end="", flush=True)
    output, status = "".join(lines), proc.returncode
    last = next((line.strip() for line in reversed(lines) if line.strip()), "")
    if expect_error:
        if status == 0:
            raise CommandFailed(f"`{command}` was expected to fail, but it succeeded (exit status 0); its output:\n{output[-2000:]}")
        print(last)
        return
    if status != 0:
        raise CommandFailed(f"`{command}` failed with exit status {status}; its last lines:\n" + "".join(lines[-15:]))


# ------------------------------------------------------------------ argument types
def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _positive_int(text: str) -> int:
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _positive_float(text: str) -> float:
    value = _number(text)
    if not (value > 0 and np.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number > 0")
    return value


def _seed(text: str) -> int:
    value = _whole(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"{value} is outside 0 .. 4294967295 (2**32 - 1), the seeds NumPy accepts")
    return value


def _score(text: str) -> float:
    value = _number(text)
    if not 0 <= value <= 1:  # NaN fails too
        raise argparse.ArgumentTypeError(f"{value} is not a score between 0 and 1 (e.g. 0.3)")
    return value


def _image_size(text: str) -> int:
    value = _positive_int(text)
    if value < 16 or value % 16 or value > 2048:
        raise argparse.ArgumentTypeError(f"{value}: use a multiple of 16 from 16 (the detector's coarsest stride) to 2048, "
                                         "e.g. 128, 256 or 320")
    return value


def _width(text: str) -> float:
    value = _positive_float(text)
    if value > 16:
        raise argparse.ArgumentTypeError(f"{text}: the channel multiplier must be at most 16 (1.0 is the course's "
                                         "detector, 2.0 its teacher; 16 already has about 100 million weights)")
    return value


def _existing_file(text: str) -> Path:
    path = Path(text)
    try:
        path.stat()
    except OSError as err:
        if not isinstance(err, FileNotFoundError):  # a name too long, a loop of links, no permission
            raise argparse.ArgumentTypeError(f"cannot read {text[:80]!r}{'...' if len(text) > 80 else ''} "
                                             f"({err.strerror or err})") from None
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no file at {text!r}" + (" (it is a folder)" if path.is_dir() else ""))
    return path


def build_parser() -> argparse.ArgumentParser:
    """The command line: ``train``, ``evaluate``, ``export``, ``predict``, ``benchmark``."""
    parser = argparse.ArgumentParser(prog="python -m course_utils", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Run `python -m course_utils COMMAND --help` for each command's options.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train the course's detector on a COCO-format dataset",
                       description="Train TinyDetector on your COCO files. After every epoch: val mAP, and "
                                   "OUT/last.pt (+ OUT/best.pt) written atomically; --resume continues from OUT/last.pt.")
    t.add_argument("--train", type=_existing_file, required=True, nargs="+", metavar="ANN.json",
                   help="COCO annotations to train on (several files are trained on together; same categories)")
    t.add_argument("--val", type=_existing_file, required=True, metavar="ANN.json", help="COCO annotations to validate on")
    t.add_argument("--images", type=Path, help="image folder of --train (default: images/ beside each JSON)")
    t.add_argument("--val-images", type=Path, help="image folder of --val (default: images/ beside the JSON)")
    t.add_argument("--width", type=_width, default=1.0, help="channel multiplier of the detector (default 1.0)")
    t.add_argument("--levels", type=int, choices=(1, 2, 3), default=1,
                   help="pyramid levels to predict from: 1 = stride 8 only (default); 2 adds stride 16; 3 adds "
                        "strides 16 and 32, for large objects (on scenes with objects of 32-176 px it learned faster "
                        "but was not better after 32 epochs: benchmarks/results/multiscale.json)")
    t.add_argument("--epochs", type=_positive_int, default=12, help="total epochs (default 12)")
    t.add_argument("--batch-size", type=_positive_int, default=16, help="images per step (default 16)")
    t.add_argument("--lr", type=_positive_float, default=1e-3, help="peak learning rate of the one-cycle schedule (default 1e-3)")
    t.add_argument("--image-size", type=_image_size, default=128, help="side of the square network input (default 128)")
    t.add_argument("--out", type=Path, default=Path("runs") / "detector", help="run folder (default runs/detector)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    t.add_argument("--overwrite", action="store_true",
                   help="start afresh in an --out that holds a run: its last.pt and best.pt are deleted first")
    t.add_argument("--init", type=_existing_file, metavar="CKPT",
                   help="start from these weights (a course checkpoint of the same width and classes, e.g. "
                        "benchmarks/results/tiny_detector_converged.pt) instead of a random initialisation")
    t.add_argument("--seed", type=_seed, default=0, help="seeds initialisation and data order (default 0)")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: a GPU if there is one)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="the full COCO table of a checkpoint on a dataset",
                       description="COCO evaluation (AP, AP50, AP75, AP by size, AR@1/10/100, AR by size, AP per class), "
                                   "equal to pycocotools, printed as a table and optionally written as JSON.")
    e.add_argument("checkpoint", type=_existing_file, help="a checkpoint written by `train` (last.pt or best.pt)")
    e.add_argument("--data", type=_existing_file, required=True, metavar="ANN.json", help="COCO annotations to score on")
    e.add_argument("--images", type=Path, help="image folder (default: images/ beside the JSON)")
    e.add_argument("--json", type=Path, help="also write the numbers to this JSON file")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    e.add_argument("--device", default=None)

    x = sub.add_parser("export", help="ONNX (and int8 ONNX Runtime) models of a checkpoint",
                       description="Export the network (without post-processing) to ONNX; with --int8, also an int8 "
                                   "model (ONNX Runtime static quantization, calibrated on --calib images). Prints sizes "
                                   "and a latency line. OpenVINO reads both files as they are (no separate IR "
                                   "needed): `benchmark` runs them in ONNX Runtime and in OpenVINO.")
    x.add_argument("checkpoint", type=_existing_file)
    x.add_argument("--onnx", type=Path, required=True, metavar="OUT.onnx", help="where to write the fp32 ONNX model")
    x.add_argument("--int8", action="store_true", help="also write OUT.int8.onnx")
    x.add_argument("--calib", type=_existing_file, metavar="ANN.json", help="COCO file whose images calibrate int8")
    x.add_argument("--calib-images", type=Path, help="image folder of --calib (default: images/ beside the JSON)")
    x.add_argument("--num-calib", type=_positive_int, default=64, help="calibration images (default 64)")
    x.add_argument("--overwrite", action="store_true", help="replace existing ONNX files")

    p = sub.add_parser("predict", help="draw a checkpoint's detections on images",
                       description="Detect objects in image files and save each with its boxes drawn, as PNG "
                                   "(OUT/NAME.png; OUT/NAME_EXT.png when two inputs share a name). An image that cannot "
                                   "be read is reported and skipped (exit status 2 at the end); the others are drawn.")
    p.add_argument("checkpoint", type=_existing_file)
    p.add_argument("images", type=_existing_file, nargs="+", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--out", type=Path, required=True, help="folder for the PNGs")
    p.add_argument("--score-threshold", type=_score, default=0.3, help="draw detections scoring at least this (default 0.3)")
    p.add_argument("--overwrite", action="store_true", help="replace PNGs already in --out")
    p.add_argument("--device", default=None)

    b = sub.add_parser("benchmark", help="which runtime and precision to deploy: latency, file size and mAP of each",
                       description="Run the checkpoint in every runtime and precision this CPU offers (PyTorch fp32; "
                                   "ONNX Runtime fp32 and int8; OpenVINO fp32, bf16 where the CPU has bf16 instructions, "
                                   "and int8) and print one table: ms per image at batch 1 and 16 (network) and end to "
                                   "end at batch 16 (with decode + NMS), speed-ups over the fastest fp32 and the fastest "
                                   "float, file size, and mAP on --data. int8 is calibrated on --calib images.")
    b.add_argument("checkpoint", type=_existing_file, help="a checkpoint written by `train`")
    b.add_argument("--data", type=_existing_file, required=True, metavar="ANN.json", help="COCO annotations to score on")
    b.add_argument("--images", type=Path, help="image folder of --data (default: images/ beside the JSON)")
    b.add_argument("--calib", type=_existing_file, metavar="ANN.json",
                   help="COCO file whose images calibrate int8 (default: the checkpoint's first --train file)")
    b.add_argument("--calib-images", type=Path, help="image folder of --calib (default: images/ beside the JSON)")
    b.add_argument("--num-calib", type=_positive_int, default=64, help="calibration images (default 64)")
    b.add_argument("--threads", type=_positive_int, default=None, help="threads for every runtime (default: torch's)")
    b.add_argument("--rounds", type=_positive_int, default=3, help="interleaved timing rounds (default 3)")
    b.add_argument("--runs", type=_positive_int, default=20, help="timed calls per pair and round (default 20)")
    b.add_argument("--json", type=Path, help="also write the table to this JSON file")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    return parser


# ------------------------------------------------------------------ shared pieces
def _device(name: str | None) -> torch.device:
    from .train import get_device

    if name is None:
        return get_device()
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CLIError(f"--device {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"--device {name!r}: the course's commands run on cpu or cuda (cuda:N); use --device cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {name}: this machine has no CUDA GPU; use --device cpu")
    return device


def _dataset(ann: Path | Sequence[Path], images: Path | None, size: int, flag: str = "--data",
             objects: bool = True) -> Any:
    """One COCO file (or several, concatenated: their categories must agree), letterboxed to ``size``.

    Refused: a file with no images or no categories, and (``objects``) one whose annotations hold no
    object that counts (none, or only iscrowd=1 regions): nothing to learn from, or an undefined mAP."""
    from torch.utils.data import ConcatDataset

    from .data import CocoDetection, DatasetError, Letterbox

    files = [ann] if isinstance(ann, Path) else list(ann)
    try:
        parts = [CocoDetection(f, image_dir=images) for f in files]
    except DatasetError as err:
        raise CLIError(str(err)) from None
    for f, part in zip(files, parts):
        if not part.categories:
            raise CLIError(f"{flag} {f}: 'categories' is empty; list the classes to detect, e.g. "
                           '"categories": [{"id": 1, "name": "circle"}]')
        if len(part) == 0:
            raise CLIError(f"{flag} {f}: 'images' is empty; a dataset needs at least one image")
    if objects and sum(part.num_objects for part in parts) == 0:
        which = files[0] if len(files) == 1 else ", ".join(map(str, files))
        raise CLIError(f"{flag} {which}: no object to {'learn from' if flag == '--train' else 'score'} (every annotation "
                       "is a crowd region, iscrowd=1, or there are none): mAP would be undefined. Add annotated objects")
    names = [[c.get("name", str(c["id"])) for c in part.categories] for part in parts]
    for f, n in zip(files[1:], names[1:]):
        if n != names[0]:
            raise CLIError(f"{f} has categories {n}, {files[0]} has {names[0]}: files trained on together must list "
                           "the same categories")
    data = Letterbox(parts[0] if len(parts) == 1 else ConcatDataset(parts), size)
    data.categories = parts[0].categories
    return data


def _loader(dataset: Any, batch_size: int, shuffle: bool, generator: torch.Generator | None = None) -> DataLoader:
    from .data import collate_detection

    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, collate_fn=collate_detection)


def _rng_state(generator: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "data_order": generator.get_state(), "numpy": _numpy_state(),
             "python": _python_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> list[Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)]


def _python_state() -> list[Any]:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["data_order"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_categories(names: list[str], config: dict[str, Any], data: Path) -> None:
    """The data's class names are the checkpoint's (a course detector that records none: as many classes)."""
    trained = config["categories"]
    if trained is None and len(names) != config["num_classes"]:
        raise CLIError(f"{data} has {len(names)} categories ({names}); the checkpoint detects {config['num_classes']} classes")
    if trained is not None and names != trained:
        raise CLIError(f"{data} has categories {names}, the checkpoint was trained on {trained}")


def _load_model(path: Path, device: torch.device | None = None) -> tuple[Any, dict[str, Any]]:
    from .models import TinyDetector
    from .train import load_checkpoint

    try:
        payload = load_checkpoint(path)
    except (ValueError, RuntimeError, OSError, pickle.UnpicklingError) as err:
        raise CLIError(f"{path}: {err}") from None
    meta, config = payload["metadata"], payload["metadata"].get("config")
    head = payload["model"].get("cls_out.weight")
    if isinstance(config, dict) and "num_classes" not in config and "width" in config and isinstance(head, torch.Tensor):
        # one of the course's own detectors (benchmarks/train_tiny_detector.py): 128-px synthetic shapes
        config = {"num_classes": int(head.shape[0]), "width": config["width"], "depth": config.get("depth", 1),
                  "levels": 1, "image_size": 128, "categories": None}
        meta = {**meta, "config": config}
    if not isinstance(config, dict) or "num_classes" not in config:
        raise CLIError(f"{path} is a course checkpoint but not one written by `python -m course_utils train` (it has no "
                       "'config'); train with the command, or load it in Python with load_checkpoint")
    try:
        model = TinyDetector(num_classes=config["num_classes"], width=config["width"], depth=config.get("depth", 1),
                             levels=config.get("levels", 1))
        model.load_state_dict(payload["model"])  # already read and its hash checked above: not read twice
    except (ValueError, TypeError, KeyError, RuntimeError) as err:
        detail = " ".join(str(err).split())[:200]
        raise CLIError(f"{path}: its 'config' does not describe the weights it holds ({detail}); retrain it with "
                       "`python -m course_utils train`") from None
    return model.to(device or "cpu").eval(), meta


# ------------------------------------------------------------------ train
def train(args: argparse.Namespace) -> dict[str, Any]:
    """``train``: the run folder checked and locked before anything is loaded or trained (:func:`_train`)."""
    from contextlib import nullcontext

    from .outputs import FolderLock, same_file

    last, best = args.out / "last.pt", args.out / "best.pt"
    if args.resume and args.overwrite:
        raise CLIError("--resume continues the run in --out and --overwrite deletes it: pass one of them")
    existing = [f for f in (last, best) if f.exists()]
    if existing and not (args.resume or args.overwrite):
        raise CLIError(f"--out {args.out} already holds a run ({', '.join(f.name for f in existing)}): continue it with "
                       "--resume, start afresh with --overwrite (deletes them first), or choose another --out")
    inputs = [*args.train, args.val, *([args.init] if args.init else [])]
    if args.overwrite:
        for f in existing:
            source = next((i for i in inputs if same_file(f, i)), None)
            if source is not None:
                raise CLIError(f"--overwrite would delete {f}, which this command also reads ({source}); copy it "
                               "elsewhere first, or choose another --out")
    writer = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 writes the checkpoints
    with FolderLock(args.out) if writer else nullcontext():
        if args.overwrite and writer:
            for f in existing:
                f.unlink()
        return _train(args)


def _train(args: argparse.Namespace) -> dict[str, Any]:
    from .models import TinyDetector
    from .train import Hook, fit, load_checkpoint, make_optimizer, save_checkpoint, seed_everything

    from . import distributed as D

    distributed = D.launched_by_torchrun()
    device = D.init_from_env(args.device) if distributed else _device(args.device)
    rank, world_size = D.world()
    say = print if rank == 0 else (lambda *a, **k: None)
    seed_everything(args.seed)
    train_set = _dataset(args.train, args.images, args.image_size, "--train")
    val_set = _dataset(args.val, args.val_images, args.image_size, "--val")
    categories = [c.get("name", str(c["id"])) for c in train_set.categories]
    val_names = [c.get("name", str(c["id"])) for c in val_set.categories]
    if val_names != categories:
        raise CLIError(f"--train and --val have different categories ({categories} vs {val_names}); "
                       "both files must list the same categories")
    generator = torch.Generator().manual_seed(args.seed)
    if distributed:  # each rank reads 1/N of every epoch; the effective batch is N x --batch-size
        from .data import collate_detection

        train_loader = D.shard_loader(train_set, args.batch_size, shuffle=True, seed=args.seed, collate_fn=collate_detection)
    else:
        train_loader = _loader(train_set, args.batch_size, True, generator)
    val_loader = _loader(val_set, args.batch_size, False)
    config = {"num_classes": len(categories), "width": float(args.width), "levels": int(args.levels),
              "image_size": int(args.image_size),
              "categories": categories, "epochs": int(args.epochs), "batch_size": int(args.batch_size),
              "lr": float(args.lr), "seed": int(args.seed), "train": [str(f) for f in args.train], "val": str(args.val),
              "processes": world_size, "init": str(args.init) if args.init else None}
    model = TinyDetector(num_classes=len(categories), width=args.width, levels=args.levels)
    if args.init and not args.resume:
        try:
            load_checkpoint(args.init, model)
        except (ValueError, RuntimeError, OSError, pickle.UnpicklingError) as err:
            raise CLIError(f"--init {args.init}: {err} (it must be a checkpoint of TinyDetector(width={args.width}, "
                           f"levels={args.levels}) with {len(categories)} classes)") from None
    optimizer, scheduler = make_optimizer(model, args.lr, total_steps=args.epochs * len(train_loader))
    last, best = args.out / "last.pt", args.out / "best.pt"
    start, history, best_map = 0, {"val_map": [], "val_map_50": [], "epoch_time": []}, -1.0
    if args.resume:
        if not last.is_file():
            raise CLIError(f"--resume: there is no {last} to resume from; run without --resume to start the run")
        try:
            meta = load_checkpoint(last, model)["metadata"]
        except (ValueError, RuntimeError, OSError, pickle.UnpicklingError) as err:
            raise CLIError(f"--resume: {err}") from None
        if "rng" not in meta:
            raise CLIError(f"--resume: {last} has no training state (optimizer, scheduler, RNG); was it written by "
                           "`python -m course_utils train`?")
        saved = {"levels": 1, **{k: v for k, v in meta["config"].items() if k not in ("epochs",)}}
        mine = {k: v for k, v in config.items() if k not in ("epochs",)}
        if saved != mine:
            changed = sorted(k for k in mine if saved.get(k) != mine[k])
            raise CLIError(f"--resume: {last} was trained with other settings ({', '.join(changed)} differ); "
                           "resume with the same flags, or start a new run in another --out")
        if int(meta["config"]["epochs"]) != args.epochs:
            raise CLIError(f"--resume: the run was planned for {meta['config']['epochs']} epochs (its learning-rate "
                           f"schedule depends on it), not {args.epochs}; pass --epochs {meta['config']['epochs']}")
        optimizer.load_state_dict(meta["optimizer"])
        scheduler.load_state_dict(meta["scheduler"])
        _restore_rng(meta["rng"], generator)
        start, history, best_map = int(meta["epoch"]), meta["history"], float(meta["best_val_map"])
        say(f"resuming {last}: {start} of {args.epochs} epochs done")
        if start >= args.epochs:
            say("nothing left to train")
            return history
    network = D.prepare(model, device) if distributed else model.to(device)

    class SaveEachEpoch(Hook):
        """After every epoch: validate, then write last.pt (and best.pt) atomically."""

        def on_epoch_end(self, state: Any) -> None:
            nonlocal best_map
            from .train import evaluate

            if rank != 0:  # rank 0 evaluates and writes; the others wait for it
                D.barrier()
                return
            epoch = start + state.epoch + 1
            metrics = evaluate(model, val_loader, device, areas=False)
            model.train()
            history["val_map"].append(metrics["map"])
            history["val_map_50"].append(metrics["map_50"])
            history["epoch_time"].append(time.perf_counter() - self.started)
            self.started = time.perf_counter()
            improved = metrics["map"] > best_map
            best_map = max(best_map, metrics["map"])
            common = dict(config=config, epoch=epoch, history=history, best_val_map=best_map)
            save_checkpoint(last, model, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                            rng=_rng_state(generator), **common)
            if improved:
                save_checkpoint(best, model, **common)
            print(f"epoch {epoch}/{args.epochs}: val mAP {metrics['map']:.4f} (AP50 {metrics['map_50']:.4f})"
                  + ("  -> best.pt" if improved else ""), flush=True)
            D.barrier()

        def on_train_start(self, state: Any) -> None:
            self.started = time.perf_counter()

    hooks: list[Any] = [SaveEachEpoch()]
    if distributed:
        hooks.insert(0, D.SetEpoch(train_loader.sampler, start))
        say(f"{world_size} processes ({device.type}), {args.batch_size} images each per step: effective batch "
            f"{world_size * args.batch_size}")
    try:
        fit(network, train_loader, optimizer, args.epochs - start, device=device, hooks=hooks, scheduler=scheduler,
            progress=not args.no_progress and rank == 0)
    finally:
        if distributed:
            D.cleanup()
    say(f"done: {args.epochs} epochs, best val mAP {best_map:.4f}; checkpoints in {args.out}")
    return history


# ------------------------------------------------------------------ evaluate
STAT_NAMES = {"map": "AP @[.50:.95] all", "map_50": "AP @.50 all", "map_75": "AP @.75 all", "map_small": "AP small",
              "map_medium": "AP medium", "map_large": "AP large", "mar_1": "AR maxDets=1", "mar_10": "AR maxDets=10",
              "mar_100": "AR maxDets=100", "mar_small": "AR small", "mar_medium": "AR medium", "mar_large": "AR large"}


def evaluate_command(args: argparse.Namespace) -> dict[str, Any]:
    from .metrics import COCO_STATS
    from .train import evaluate

    from .outputs import check_output_file

    if args.json is not None:
        check_output_file(args.json, "--json", [args.checkpoint, args.data], args.overwrite)
    device = _device(args.device)
    model, meta = _load_model(args.checkpoint, device)
    config = meta["config"]
    data = _dataset(args.data, args.images, config["image_size"])
    names = [c.get("name", str(c["id"])) for c in data.categories]
    _check_categories(names, config, args.data)
    metrics = evaluate(model, _loader(data, 16, False), device)
    out = {name: metrics[name] for name in COCO_STATS}
    out["ap_per_class"] = {names[label - 1]: ap for label, ap in metrics["ap_per_class"].items()}
    out["images"] = len(data)
    print(f"{args.checkpoint} on {args.data} ({len(data)} images):")
    for name in COCO_STATS:
        value = out[name]
        print(f"  {STAT_NAMES[name]:<20} {value:6.3f}" if value >= 0 else f"  {STAT_NAMES[name]:<20}    -   (no objects of this size)")
    for label, ap in out["ap_per_class"].items():
        print(f"  AP {label:<17} {ap:6.3f}")
    if args.json:
        from .outputs import write_text

        write_text(args.json, json.dumps(out, indent=2) + "\n")
        print(f"wrote {args.json}")
    return out


# ------------------------------------------------------------------ export
def export_command(args: argparse.Namespace) -> dict[str, Any]:
    from .deploy import DetectorNetwork, export_onnx, file_size, measure_latency, ort_session, quantize_onnx
    from .quant import fuse_conv_bn

    from .outputs import check_output_file

    if args.int8 and args.calib is None:
        raise CLIError("--int8 needs --calib ANN.json: images to calibrate the int8 ranges on (e.g. your training file)")
    if not args.int8 and (args.calib is not None or args.calib_images is not None):
        raise CLIError("--calib is read only with --int8: add --int8 to also write an int8 model, or drop --calib")
    inputs = [args.checkpoint, *([args.calib] if args.calib else [])]
    targets = {"fp32": args.onnx, **({"int8": args.onnx.with_suffix(".int8.onnx")} if args.int8 else {})}
    for target in targets.values():
        check_output_file(target, "--onnx", inputs, args.overwrite)
    model, meta = _load_model(args.checkpoint)
    size = meta["config"]["image_size"]
    if args.int8:  # every calibration image read before anything is written
        calib = _dataset(args.calib, args.calib_images, size, "--calib", objects=False)
        images = torch.stack([calib[i][0] for i in range(min(args.num_calib, len(calib)))])
    network = DetectorNetwork(fuse_conv_bn(model)).eval()
    example = torch.rand(1, 3, size, size)
    paths = {"fp32": export_onnx(network, example, targets["fp32"])}
    if args.int8:
        paths["int8"] = quantize_onnx(paths["fp32"], targets["int8"], images)
    out: dict[str, Any] = {}
    batch = torch.rand(1, 3, size, size).numpy()
    for kind, path in paths.items():
        session = ort_session(path, threads=torch.get_num_threads())
        stats = measure_latency(lambda: session.run(None, {"images": batch}), warmup=5, runs=30)
        out[kind] = {"path": str(path), "bytes": file_size(path), "median_ms": stats["median_ms"]}
        print(f"{kind:<5} {path}: {file_size(path) / 1024:.0f} KiB, {stats['median_ms']:.2f} ms per {size}x{size} image "
              f"(network only, ONNX Runtime, {torch.get_num_threads()} threads, median of 30)")
    return out


# ------------------------------------------------------------------ predict
def _prediction_names(images: Sequence[Path], out: Path) -> list[Path]:
    """``OUT/NAME.png`` per input; ``OUT/NAME_EXT.png`` for inputs whose names collide (a.jpg, a.png).
    Two inputs with the very same file name (from two folders) are refused: name one differently."""
    stems = [p.stem for p in images]
    names = [f"{p.stem}_{p.suffix.lstrip('.')}" if stems.count(p.stem) > 1 else p.stem for p in images]
    for k, name in enumerate(names):
        if names.index(name) != k:
            raise CLIError(f"{images[names.index(name)]} and {images[k]} would both be drawn to {out / (name + '.png')}; "
                           "predict them in two runs with different --out folders, or rename one")
    return [out / f"{name}.png" for name in names]


def predict_command(args: argparse.Namespace) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data import DatasetError, letterbox, read_image, undo_letterbox
    from .outputs import make_output_folder, same_file
    from .viz import show_detections

    targets = _prediction_names(args.images, args.out)
    for target in targets:
        source = next((i for i in [args.checkpoint, *args.images] if same_file(target, i)), None)
        if source is not None:
            raise CLIError(f"--out {args.out}: predict would write {target}, which is one of its inputs ({source}); choose "
                           "another --out")
    existing = [t for t in targets if t.exists()]
    if existing and not args.overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise CLIError(f"--out {args.out} already holds {existing[0].name}{more}; pass --overwrite to replace them, or "
                       "choose another --out")
    device = _device(args.device)
    model, meta = _load_model(args.checkpoint, device)
    config = meta["config"]
    make_output_folder(args.out, "--out")
    written, failed = [], []
    for path, out in zip(args.images, targets):
        try:
            image = read_image(path)  # the decoder training and evaluation use (same modes, same pixel limit)
        except DatasetError as err:
            failed.append(path)
            print(f"skipped: {err}", file=sys.stderr, flush=True)
            continue
        empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
        boxed, target = letterbox(image, empty, config["image_size"])
        with torch.no_grad():
            pred = model([boxed.to(device)])[0]
        pred = {k: v.cpu() for k, v in pred.items()}
        (pred,), _ = undo_letterbox([pred], [target])
        keep = pred["scores"] >= args.score_threshold
        pred = {k: v[keep] for k, v in pred.items()}
        fig, ax = plt.subplots(figsize=(6, 6 * image.shape[1] / image.shape[2]))
        show_detections(image, pred=pred, class_names=config["categories"], score_threshold=args.score_threshold, ax=ax,
                        title=f"{path.name}: {len(pred['boxes'])} detections (score >= {args.score_threshold})")
        fig.savefig(out, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append(out)
        print(f"{path} -> {out}: {len(pred['boxes'])} detections", flush=True)
    if failed:
        names = ", ".join(str(p) for p in failed[:3]) + (f" and {len(failed) - 3} more" if len(failed) > 3 else "")
        rest = f"; the other {len(written)} were drawn into {args.out}" if written else ""
        raise CLIError(f"{len(failed)} of {len(args.images)} files could not be read as images ({names}; see above){rest}")
    return written


def benchmark_command(args: argparse.Namespace) -> dict[str, Any]:
    from .benchmark import benchmark_detector
    from .deploy import cpu_info
    from .outputs import check_output_file, write_text

    if args.json is not None:
        check_output_file(args.json, "--json", [args.checkpoint, args.data], args.overwrite)
    model, meta = _load_model(args.checkpoint)
    config = meta["config"]
    size = config["image_size"]
    calib_file = args.calib
    if calib_file is None:
        recorded = [Path(f) for f in config.get("train") or []]
        if not recorded or not recorded[0].is_file():
            raise CLIError("--calib ANN.json is needed: images to calibrate int8 on (your training file; the "
                           f"checkpoint's own --train file {recorded[0] if recorded else '(none recorded)'} is not here)")
        calib_file = recorded[0]
    data = _dataset(args.data, args.images, size)
    names = [c.get("name", str(c["id"])) for c in data.categories]
    _check_categories(names, config, args.data)
    calib = _dataset(calib_file, args.calib_images, size, "--calib", objects=False)
    images = torch.stack([calib[i][0] for i in range(min(args.num_calib, len(calib)))])
    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    result = benchmark_detector(model, _loader(data, 16, False), images, size, threads=threads, rounds=args.rounds,
                                runs=args.runs)
    result.update(cpu=cpu_info(), checkpoint=str(args.checkpoint), data=str(args.data), calib=str(calib_file),
                  calib_images=len(images), eval_images=len(data), image_size=size)
    print(benchmark_table(result))
    if args.json:
        write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return result


def benchmark_table(result: dict[str, Any]) -> str:
    """The benchmark's rows as a text table (ms per image; speed-ups over the fastest fp32 and fastest float)."""
    head = (f"{'runtime':<12}{'precision':<10}{'size':>9}{'mAP':>7}{'b1 ms/img':>11}{'b16 ms/img':>12}"
            f"{'e2e b16':>9}{'x fp32':>8}{'x float':>9}")
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        n1, n16, e2e = r["network_b1"], r["network_b16"], r["end_to_end_b16"]
        lines.append(f"{r['runtime']:<12}{r['precision']:<10}{r['file_bytes'] / 1024:>7.0f}KB{r['map']:>7.3f}"
                     f"{n1['ms_per_image']:>11.2f}{n16['ms_per_image']:>12.2f}{e2e['ms_per_image']:>9.2f}"
                     f"{n16['speedup_vs_fastest_fp32']:>7.2f}x{n16['speedup_vs_fastest_float']:>8.2f}x")
    cpu = result.get("cpu", {})
    flags = ", ".join(k for k in ("avx2", "avx512f", "vnni", "bf16", "amx_int8") if cpu.get("features", {}).get(k))
    lines.append(f"{result['threads']} threads, median of {result['rounds']} interleaved rounds x {result['runs']} calls; "
                 f"speed-ups: network at batch 16, paired per round. CPU: {cpu.get('model', '?')} ({flags or 'no AVX2'}). "
                 f"mAP: AP@[.50:.95] on {result.get('eval_images', '?')} images.")
    return "\n".join(lines)


COMMANDS = {"train": train, "evaluate": evaluate_command, "export": export_command, "predict": predict_command,
            "benchmark": benchmark_command}


def _one_line(err: BaseException) -> str:
    """An error's message on one line (whitespace runs, newlines included, become one space)."""
    return " ".join(str(err).split()) or type(err).__name__


#: Errors the library raises for bad input; their messages name the value and the fix (FloatingPointError:
#: training diverged, :class:`~course_utils.train.NonFiniteLossError`).
USER_ERRORS = (ValueError, TypeError, OSError, pickle.UnpicklingError, FloatingPointError)


def _out_of_memory(err: BaseException) -> bool:
    """A ``MemoryError``, or torch's allocator failing (CPU: "can't allocate memory", CUDA: "out of memory")."""
    return isinstance(err, MemoryError) or (isinstance(err, RuntimeError) and (
        "can't allocate memory" in str(err) or "out of memory" in str(err).lower()))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m course_utils`` (and the ``course-utils`` console script).

    Exit status 0 on success; 2 with one line ``error: ...`` for bad input (the library's ``ValueError``,
    ``TypeError``, ``OSError``, refused pickles and a diverged training, whose messages say what to fix; and
    running out of memory); 130 when interrupted;
    1 with one line for anything else (a bug: set ``COURSE_UTILS_TRACEBACK=1`` to see where it happened).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; `train --resume` continues from the last finished epoch", file=sys.stderr)
        return 130
    except (CLIError, *USER_ERRORS) as err:
        if os.environ.get("COURSE_UTILS_TRACEBACK"):
            raise
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 -- the promise: one line, never a traceback
        if os.environ.get("COURSE_UTILS_TRACEBACK"):
            raise
        if _out_of_memory(err):
            print("error: out of memory; lower --batch-size (or --image-size, --width), or close other programs",
                  file=sys.stderr)
            return 2
        print(f"error: unexpected {type(err).__name__}: {_one_line(err)[:300]} -- this is a bug in course_utils; rerun "
              "with COURSE_UTILS_TRACEBACK=1 to see where, and report it", file=sys.stderr)
        return 1
    return 0
