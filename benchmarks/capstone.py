"""The capstone: walk one detector down the whole path and measure every step.

Variants, each scored on val and measured the same way:

1. ``teacher``            -- ``TinyDetector(width=2)``, ``teacher.pt`` (fp32);
2. ``student``            -- ``TinyDetector(width=1)``, ``tiny_detector.pt`` (fp32, trained alone);
3. ``distilled``          -- the same student architecture trained from scratch with the
                             teacher's three distillation terms (``Distiller``), same recipe;
4. ``pruned``             -- ``distilled`` with ``--keep`` of every channel group kept
                             (L1 filter norms, counts rounded to ``--multiple-of``, default 8), fine-tuned
                             6 more epochs as in ``prune_sweep.py``;
5. ``int8``               -- ``pruned`` after 2 epochs of 8-bit QAT (``prepare_qat`` + ``QATSchedule``,
                             teacher attached), BN folded, exported to ONNX and converted to
                             int8 by ONNX Runtime (static QDQ; notebook 05's path).

Recorded per variant: val and test mAP@[.5:.95], parameters, multiply-adds, file
size (the deployable ONNX file), and the network's median latency at batch 1 and
16 (2 threads, BN folded; fp32 variants timed in eager PyTorch and ONNX Runtime,
the faster one reported as the "fastest fp32" baseline; int8 in ONNX Runtime; the
ONNX Runtime sessions timed in 3 interleaved rounds, median).
Post-processing (decode + NMS) is the same float code for all and is timed once.
Writes ``benchmarks/results/capstone.json`` and the ``pruned`` variant's
checkpoint (``capstone_pruned.pt``).

    python benchmarks/capstone.py            # about 8 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from course_utils import (
    CocoDetection, SyntheticShapes, TinyDetector, collate_detection, count_parameters, evaluate, fit, get_device,
    load_checkpoint, materialize, save_checkpoint, seed_everything,
)
from course_utils.deploy import (
    DetectorNetwork, OrtDetector, export_onnx, file_size, measure_interleaved, measure_latency, ort_session, ort_nchwc_block_size, quantize_onnx,
)
from course_utils.distill import Distiller, cache_teacher_outputs
from course_utils.prune import count_flops, prune_detector
from course_utils.quant import QATSchedule, calibrate, fuse_conv_bn, prepare_qat, to_float_folded
from course_utils.train import make_finetune_optimizer, make_optimizer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def train(model, loader, epochs, lr, device, hooks=(), one_cycle=True):
    build = make_optimizer if one_cycle else make_finetune_optimizer  # fine-tuning: no warm-up, cosine from lr
    optimizer, scheduler = build(model, lr=lr, total_steps=epochs * len(loader))
    fit(model, loader, optimizer, epochs, device=device, hooks=list(hooks), scheduler=scheduler, progress=False)
    return model.eval()


def time_sessions(sessions: dict, images: torch.Tensor, runs: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Median ms per session and batch size, in ``rounds`` interleaved rounds (``measure_interleaved``);
    each measurement runs >= ``runs`` calls and >= 1 s."""
    time.sleep(1.0)  # PyTorch's worker threads, busy a moment ago, must be idle: they would compete with ONNX Runtime's
    feeds = {(name, b): {s.get_inputs()[0].name: images[:b].numpy()} for name, s in sessions.items() for b in (1, 16)}
    timed = measure_interleaved({key: (lambda s=sessions[key[0]], f=feed: s.run(None, f)) for key, feed in feeds.items()},
                                rounds, runs, min_seconds=1.0)
    out: dict[str, dict[str, float]] = {name: {} for name in sessions}
    for (name, b), result in timed.items():
        out[name][f"batch{b}"] = result["median_ms"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--multiple-of", type=int, default=8,
                        help="round kept channel counts to multiples of this (default 8 on every CPU; ONNX Runtime's "
                             f"block here is {ort_nchwc_block_size()}, but ort_block_size.py measured no gain from it)")
    parser.add_argument("--keep", type=float, default=0.75, help="fraction of every channel group kept by pruning (notebook 08 §3 discusses 0.5)")
    parser.add_argument("--epochs", type=int, default=6, help="training epochs of the distilled student")
    parser.add_argument("--finetune-epochs", type=int, default=6, help="fine-tuning epochs after pruning (as prune_sweep.py)")
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    val_loader = DataLoader(materialize(CocoDetection(ROOT / "data" / "val" / "annotations.json")), batch_size=50,
                            collate_fn=collate_detection)
    test_loader = DataLoader(materialize(CocoDetection(ROOT / "data" / "test" / "annotations.json")), batch_size=50,
                             collate_fn=collate_detection)
    teacher, student = TinyDetector(width=2.0), TinyDetector(width=1.0)
    load_checkpoint(RESULTS / "teacher.pt", teacher)
    load_checkpoint(RESULTS / "tiny_detector.pt", student)
    teacher, student = teacher.to(device).eval(), student.to(device).eval()

    train_set = cache_teacher_outputs(teacher, materialize(SyntheticShapes(2000, seed=0)), device=device)
    loader = DataLoader(train_set, batch_size=32, shuffle=True, collate_fn=collate_detection,
                        generator=torch.Generator().manual_seed(args.seed))
    seconds = {}

    seed_everything(args.seed)
    t0 = time.perf_counter()
    distilled = train(TinyDetector(width=1.0), loader, args.epochs, 4e-3, device,
                      [Distiller(teacher, {"cls": 1.0, "box": 1.0, "feature": 1.0}, temperature=2.0)])
    seconds["distill"] = time.perf_counter() - t0
    print(f"distilled: val {evaluate(distilled, val_loader, device)['map']:.4f} ({seconds['distill']:.0f} s)", flush=True)

    seed_everything(args.seed)
    t0 = time.perf_counter()
    pruned = prune_detector(distilled.cpu(), args.keep, criterion="l1", multiple_of=args.multiple_of).to(device)  # kernel-friendly counts (nb07)
    pruned = train(pruned, loader, args.finetune_epochs, 2e-3, device, one_cycle=False)
    seconds["prune_finetune"] = time.perf_counter() - t0
    print(f"pruned: val {evaluate(pruned, val_loader, device)['map']:.4f} ({seconds['prune_finetune']:.0f} s)", flush=True)
    save_checkpoint(args.out / "capstone_pruned.pt", pruned.cpu(), keep_ratio=args.keep)

    seed_everything(args.seed)
    t0 = time.perf_counter()
    calib = torch.stack([img for img, _ in materialize(SyntheticShapes(64, seed=123), progress=False)])
    qat = calibrate(prepare_qat(pruned.to(device), weight_bits=8, act_bits=8), [calib[i:i + 16].to(device) for i in range(0, 64, 16)],
                    lambda m, b: m.forward_raw(b))
    qat = train(qat, loader, args.qat_epochs, 5e-4, device,
                [QATSchedule(freeze_bn_epoch=1, freeze_observer_epoch=1),
                 Distiller(teacher, {"cls": 1.0, "box": 1.0}, temperature=2.0)], one_cycle=False)
    seconds["qat"] = time.perf_counter() - t0

    variants = {"teacher": teacher, "student": student, "distilled": distilled, "pruned": pruned}
    images = torch.stack([img for img, _ in materialize(SyntheticShapes(16, seed=7), progress=False)])
    result: dict = {"variants": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sessions = {}
        for name, model in variants.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                sessions[name] = export_onnx(DetectorNetwork(fuse_conv_bn(copy.deepcopy(model).cpu().eval())), images[:2],
                                             work / f"{name}.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_onnx(DetectorNetwork(to_float_folded(qat).cpu()), images[:2], work / "qat_float.onnx")
        quantize_onnx(work / "qat_float.onnx", work / "int8.onnx", calib)
        sessions["int8"] = work / "int8.onnx"
        for name, path in sessions.items():  # accuracy first: scoring runs PyTorch's post-processing
            model = variants.get(name, pruned).cpu()  # int8: the pruned architecture (also supplies anchors + post-processing)
            ort_model = OrtDetector(ort_session(path, threads=args.threads), model)
            result["variants"][name] = {"onnx_bytes": file_size(path), "parameters": count_parameters(model), "macs": count_flops(model),
                                        "val_map": evaluate(ort_model, val_loader, torch.device("cpu"))["map"],
                                        "test_map": evaluate(ort_model, test_loader, torch.device("cpu"))["map"]}
            del ort_model
        runners = {name: ort_session(path, threads=args.threads) for name, path in sessions.items()}
        for name, ms in time_sessions(runners, images, args.runs).items():  # then timing, ONNX Runtime alone
            result["variants"][name]["ort_ms"] = ms
            print(name, result["variants"][name], flush=True)
        del runners
        with torch.inference_mode():
            for name, model in variants.items():
                net = DetectorNetwork(fuse_conv_bn(copy.deepcopy(model).cpu().eval())).eval()
                result["variants"][name]["eager_ms"] = {f"batch{b}": measure_latency(lambda: net(images[:b]), runs=args.runs, min_seconds=1.0)["median_ms"]
                                                        for b in (1, 16)}
                torch.save({k: v.cpu() for k, v in model.state_dict().items()}, work / f"{name}.pt")
                result["variants"][name]["checkpoint_bytes"] = file_size(work / f"{name}.pt")
            raw = student.cpu().eval().forward_raw(images)
            result["postprocess_ms"] = {f"batch{b}": measure_latency(
                lambda: student.postprocess({k: v[:b] if k != "anchors" else v for k, v in raw.items()}, (128, 128)),
                runs=args.runs)["median_ms"] for b in (1, 16)}
    for name, entry in result["variants"].items():
        fastest = entry["ort_ms"] if "eager_ms" not in entry else {b: min(entry["ort_ms"][b], entry["eager_ms"][b]) for b in entry["ort_ms"]}
        entry["fastest_ms"] = fastest
    result.update(config={k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
                  device=str(device), torch=torch.__version__, machine=platform.machine(), train_seconds=seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "capstone.json").write_text(json.dumps(result, indent=2) + "\n")
    t = result["variants"]["teacher"]
    for name, e in result["variants"].items():
        print(f"{name:>10}: val {e['val_map']:.4f}  {e['onnx_bytes'] / 1e3:7.0f} kB ({t['onnx_bytes'] / e['onnx_bytes']:5.1f}x smaller)  "
              f"b1 {e['fastest_ms']['batch1']:.2f} ms  b16 {e['fastest_ms']['batch16']:.2f} ms "
              f"({t['fastest_ms']['batch16'] / e['fastest_ms']['batch16']:.1f}x faster)")


if __name__ == "__main__":
    main()
