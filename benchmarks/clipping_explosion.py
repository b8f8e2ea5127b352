"""The explosion lab: train the course detector at a learning rate where it blows up,
with no clipping and with each clipping rule, over several seeds.

The detector is built without BatchNorm (``TinyDetector(batch_norm=False)``), a
plain stack: with BatchNorm, too-high learning rates make SGD stall rather
than explode, because BN makes each layer insensitive to its weights' scale.

    python benchmarks/clipping_explosion.py                 # the full study (about 6 minutes on 2 cores)
    python benchmarks/clipping_explosion.py --seeds 2 --epochs 1 --out /tmp/x   # a quick try

Optimizer: SGD with momentum 0.9 at a constant, too-high learning rate (no
warm-up, which would hide the problem). A run *diverges* when its loss becomes
NaN/inf (the training loop's guard stops it) or ends higher than it started.

The norm threshold is picked the way notebook 03 teaches: run a few unclipped
steps at a safe learning rate, record the global gradient norm, and take a
percentile of it.

Writes ``benchmarks/results/clipping_explosion.json``: for every method and
seed, whether it diverged, the validation mAP, and the per-step loss,
gradient-norm and clip-activity traces that notebook 03 plots.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from course_utils import (
    CocoDetection, SyntheticShapes, TinyDetector, collate_detection, evaluate, fit, get_device, materialize, seed_everything,
)
from course_utils.clipping import GradientClipping, GradNormMonitor
from course_utils.metrics import seed_summary
from course_utils.train import NonFiniteLossError

ROOT = Path(__file__).resolve().parents[1]


def make_loader(train_set: list, batch_size: int, seed: int) -> DataLoader:
    return DataLoader(train_set, batch_size=batch_size, shuffle=True, collate_fn=collate_detection,
                      generator=torch.Generator().manual_seed(seed))


def calibrate_norm(train_set: list, args: argparse.Namespace) -> list[float]:
    """Global gradient norms of a short unclipped run at a safe learning rate."""
    seed_everything(1000)
    model = TinyDetector(width=args.width, batch_norm=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.safe_lr, momentum=0.9, weight_decay=1e-4)
    history = fit(model, make_loader(train_set, args.batch_size, 1000), optimizer, epochs=1,
                  device=get_device(), hooks=[GradNormMonitor()], progress=False)
    return history["grad_norm"]


def run_one(method: str, threshold: float, seed: int, train_set: list, val_loader: DataLoader, args: argparse.Namespace) -> dict:
    seed_everything(seed)
    model = TinyDetector(width=args.width, batch_norm=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    hooks = [GradNormMonitor(), GradientClipping(method, threshold)]
    nonfinite = False
    try:
        history = fit(model, make_loader(train_set, args.batch_size, seed), optimizer, args.epochs,
                      device=get_device(), hooks=hooks, progress=False)
    except NonFiniteLossError as err:  # diverged: keep what was recorded up to then
        nonfinite, history = True, err.history
    losses = history.get("loss", [])
    window = max(1, min(10, len(losses) // 4))
    ended_higher = bool(losses) and float(np.mean(losses[-window:])) > float(np.mean(losses[:window]))
    diverged = nonfinite or ended_higher
    metrics = {"map": 0.0, "map_50": 0.0}
    if not nonfinite:
        metrics = evaluate(model, val_loader)
    return {
        "seed": seed,
        "diverged": diverged,
        "nonfinite": nonfinite,
        "steps": len(losses),
        "map": float(metrics["map"]),
        "map_50": float(metrics["map_50"]),
        "loss": [round(v, 5) for v in losses],
        "grad_norm": [round(v, 5) for v in history.get("grad_norm", [])],
        "clip_active": history.get("clip_active", []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, default=0.1, help="the too-high learning rate")
    parser.add_argument("--safe-lr", type=float, default=0.02, help="learning rate of the calibration run")
    parser.add_argument("--percentile", type=float, default=90.0, help="norm threshold = this percentile of calibration norms")
    parser.add_argument("--value-threshold", type=float, default=0.05)
    parser.add_argument("--agc-factor", type=float, default=0.02)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    train_set = materialize(SyntheticShapes(args.train_images, seed=0))
    val_loader = DataLoader(CocoDetection(ROOT / "data" / "val" / "annotations.json"), batch_size=50, collate_fn=collate_detection)
    calibration = calibrate_norm(train_set, args)
    norm_threshold = float(np.percentile(calibration, args.percentile))
    methods = {"none": 0.0, "value": args.value_threshold, "norm": norm_threshold, "agc": args.agc_factor}

    runs: dict[str, list[dict]] = {}
    bar = tqdm(total=len(methods) * args.seeds, desc="runs")
    for method, threshold in methods.items():
        runs[method] = []
        for seed in range(args.seeds):
            runs[method].append(run_one(method, threshold, seed, train_set, val_loader, args))
            bar.update()
    bar.close()

    summary = {}
    for method, results in runs.items():
        maps = [r["map"] for r in results]
        summary[method] = {
            "threshold": methods[method],
            "diverged": sum(r["diverged"] for r in results),
            "runs": len(results),
            "map_mean": float(np.mean(maps)),
            "map_std": seed_summary(maps)["std"],
            "clip_fraction": float(np.mean([np.mean(r["clip_active"]) if r["clip_active"] else 0.0 for r in results])),
        }
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "calibration_grad_norms": [round(v, 5) for v in calibration],
        "norm_threshold": norm_threshold,
        "summary": summary,
        "runs": runs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "clipping_explosion.json").write_text(json.dumps(result) + "\n")
    print(f"norm threshold = p{args.percentile:g} of calibration norms = {norm_threshold:.3f}")
    print(f"{'method':8s} {'threshold':>10s} {'diverged':>9s} {'mAP mean ± std':>16s} {'clip active':>12s}")
    for method, s in summary.items():
        print(f"{method:8s} {s['threshold']:10.4g} {s['diverged']:>4d} / {s['runs']:<3d} "
              f"{s['map_mean']:8.3f} ± {s['map_std']:.3f} {s['clip_fraction']:11.0%}")
    print(f"({result['seconds']} s)")


if __name__ == "__main__":
    main()
