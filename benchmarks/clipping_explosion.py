"""The explosion lab: what gradient clipping is for, measured against a baseline that works.

Every run trains the same detector on the same data for the same number of
steps, over ``--seeds`` seeds:

* ``safe``  -- (a) the largest learning rate of the grid that trains without clipping
  (``--safe-lr``), no clipping: the baseline;
* ``none``  -- (b) the aggressive learning rate ``--lr``, no clipping: it diverges;
* ``value``, ``norm``, ``agc`` -- (c) the aggressive learning rate with each clipping rule.

The detector is built without BatchNorm (``TinyDetector(batch_norm=False)``), a
plain stack: with BatchNorm, too-high learning rates make SGD stall rather
than explode, because BN makes each layer insensitive to its weights' scale.

    python benchmarks/clipping_explosion.py                 # the full study (about 20 minutes on 2 cores)
    python benchmarks/clipping_explosion.py --seeds 2 --epochs 1 --train-images 256 --out /tmp/x   # a quick try

Optimizer: SGD with momentum 0.9 and weight decay 1e-4, the learning rate
decayed by a cosine from its peak to 0 over the run, *without warm-up*: a
warm-up is the other common cure for early explosions and would hide the
problem. A run *diverges* when its loss becomes NaN/inf (the training loop's
guard stops it) or ends higher than it started; a diverged run scores mAP 0.

The norm threshold is picked the way notebook 03 teaches: run one unclipped
epoch at the safe learning rate, record the global gradient norm, and take a
percentile of it.

The goal the lab checks (``goal`` in the JSON): at least one clipped run at the
aggressive rate reaches mAP@0.5 >= 0.5, or >= 80 % of the baseline's mAP@0.5. The best
clipping rule is chosen on val; the goal is judged on test, which no choice was made on.

Writes ``benchmarks/results/clipping_explosion.json``: for every method and
seed, whether it diverged, the validation mAP and mAP@0.5, and the per-step
loss, gradient-norm and clip-activity traces that notebook 03 plots.
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


def run_one(method: str, threshold: float, lr: float, seed: int, train_set: list, val_loader: DataLoader,
            test_loader: DataLoader, args: argparse.Namespace) -> dict:
    """One seeded run: SGD (momentum 0.9) at peak ``lr``, cosine decay to 0, the clipping rule ``method``."""
    seed_everything(seed)
    model = TinyDetector(width=args.width, batch_norm=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    loader = make_loader(train_set, args.batch_size, seed)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * len(loader))
    hooks = [GradNormMonitor(), GradientClipping(method, threshold)]
    nonfinite = False
    try:
        history = fit(model, loader, optimizer, args.epochs, device=get_device(), hooks=hooks,
                      scheduler=scheduler, progress=False)
    except NonFiniteLossError as err:  # diverged: keep what was recorded up to then
        nonfinite, history = True, err.history
    losses = history.get("loss", [])
    window = max(1, min(10, len(losses) // 4))
    ended_higher = bool(losses) and float(np.mean(losses[-window:])) > float(np.mean(losses[:window]))
    diverged = nonfinite or ended_higher
    metrics = test = {"map": 0.0, "map_50": 0.0}
    if not nonfinite:
        metrics, test = evaluate(model, val_loader), evaluate(model, test_loader)
    return {
        "seed": seed,
        "diverged": diverged,
        "nonfinite": nonfinite,
        "steps": len(losses),
        "map": float(metrics["map"]),
        "map_50": float(metrics["map_50"]),
        "test_map": float(test["map"]),
        "test_map_50": float(test["map_50"]),
        "loss": [round(v, 5) for v in losses],
        "grad_norm": [round(v, 5) for v in history.get("grad_norm", [])],
        "clip_active": history.get("clip_active", []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lr", type=float, default=0.1, help="the aggressive (peak) learning rate")
    parser.add_argument("--safe-lr", type=float, default=0.03,
                        help="the baseline's (peak) learning rate, also used for the calibration run")
    parser.add_argument("--percentile", type=float, default=90.0, help="norm threshold = this percentile of calibration norms")
    parser.add_argument("--value-threshold", type=float, default=0.05)
    parser.add_argument("--agc-factor", type=float, default=0.02)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    train_set = materialize(SyntheticShapes(args.train_images, seed=0))
    val_loader = DataLoader(CocoDetection(ROOT / "data" / "val" / "annotations.json"), batch_size=50, collate_fn=collate_detection)
    test_loader = DataLoader(CocoDetection(ROOT / "data" / "test" / "annotations.json"), batch_size=50, collate_fn=collate_detection)
    calibration = calibrate_norm(train_set, args)
    norm_threshold = float(np.percentile(calibration, args.percentile))
    # name: (clipping rule, threshold, peak learning rate)
    settings = {"safe": ("none", 0.0, args.safe_lr), "none": ("none", 0.0, args.lr), "value": ("value", args.value_threshold, args.lr),
                "norm": ("norm", norm_threshold, args.lr), "agc": ("agc", args.agc_factor, args.lr)}

    runs: dict[str, list[dict]] = {}
    bar = tqdm(total=len(settings) * args.seeds, desc="runs")
    for name, (method, threshold, lr) in settings.items():
        runs[name] = []
        for seed in range(args.seeds):
            runs[name].append(run_one(method, threshold, lr, seed, train_set, val_loader, test_loader, args))
            bar.update()
    bar.close()

    summary = {}
    for name, results in runs.items():
        method, threshold, lr = settings[name]
        summary[name] = {
            "method": method,
            "threshold": threshold,
            "lr": lr,
            "diverged": sum(r["diverged"] for r in results),
            "runs": len(results),
            "map": seed_summary([r["map"] for r in results]),
            "map_50": seed_summary([r["map_50"] for r in results]),
            "test_map": seed_summary([r["test_map"] for r in results]),
            "test_map_50": seed_summary([r["test_map_50"] for r in results]),
            "clip_fraction": float(np.mean([np.mean(r["clip_active"]) if r["clip_active"] else 0.0 for r in results])),
        }
    baseline_50 = summary["safe"]["map_50"]["mean"]
    for name in ("value", "norm", "agc"):
        summary[name]["map_50_vs_safe"] = summary[name]["map_50"]["mean"] / baseline_50 if baseline_50 > 0 else float("nan")
    best = max(("value", "norm", "agc"), key=lambda k: summary[k]["map_50"]["mean"])  # chosen on val
    test_base, test_best = summary["safe"]["test_map_50"]["mean"], summary[best]["test_map_50"]["mean"]
    goal = {
        "rule": "the clipping rule with the best mean val mAP@0.5 at the aggressive learning rate reaches mean test "
                "mAP@0.5 >= 0.5 or >= 80 % of the baseline's (the rule chosen on val, judged on test)",
        "baseline_map_50": baseline_50,
        "best_clipped": best,
        "best_clipped_map_50": summary[best]["map_50"]["mean"],
        "test_baseline_map_50": test_base,
        "test_best_clipped_map_50": test_best,
        "unclipped_diverged": summary["none"]["diverged"],
        "met": bool(test_best >= 0.5 or (test_base > 0 and test_best >= 0.8 * test_base)),
    }
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "calibration_grad_norms": [round(v, 5) for v in calibration],
        "norm_threshold": norm_threshold,
        "summary": summary,
        "goal": goal,
        "steps_per_run": args.epochs * len(make_loader(train_set, args.batch_size, 0)),
        "runs": runs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "clipping_explosion.json").write_text(json.dumps(result) + "\n")
    print(f"norm threshold = p{args.percentile:g} of calibration norms = {norm_threshold:.3f}")
    print(f"{'run':6s} {'lr':>5s} {'threshold':>10s} {'diverged':>9s} {'mAP':>14s} {'mAP@0.5':>14s} {'clip active':>12s}")
    for name, s in summary.items():
        print(f"{name:6s} {s['lr']:5.3g} {s['threshold']:10.4g} {s['diverged']:>4d} / {s['runs']:<3d} "
              f"{s['map']['mean']:6.3f} ± {s['map']['std'] or 0:.3f} {s['map_50']['mean']:6.3f} ± {s['map_50']['std'] or 0:.3f} "
              f"{s['clip_fraction']:11.0%}")
    print(f"goal met on test: {goal['met']} (best clipped on val: {best}; test mAP@0.5 {test_best:.3f} vs baseline {test_base:.3f})")
    print(f"({result['seconds']} s)")


if __name__ == "__main__":
    main()
