"""Train the course's TinyDetector with the standard recipe; time it; measure mAP.

Writes ``benchmarks/results/tiny_detector.json`` (timings, mAP, config) and the
checkpoint ``benchmarks/results/tiny_detector.pt`` that later notebooks load.

    python benchmarks/train_tiny_detector.py            # the standard recipe
    python benchmarks/train_tiny_detector.py --epochs 3 --out /tmp/quick  # a quick try
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from course_utils import (
    CocoDetection, SyntheticShapes, TinyDetector, collate_detection, count_parameters, evaluate, fit,
    get_device, materialize, save_checkpoint, seed_everything,
)
from course_utils.train import make_optimizer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the course assumes 2 cores)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for JSON + checkpoint")
    parser.add_argument("--name", default="tiny_detector")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    seed_everything(args.seed)

    start = time.perf_counter()
    train_set = materialize(SyntheticShapes(args.train_images, seed=args.seed))
    render_s = time.perf_counter() - start
    val = CocoDetection(ROOT / "data" / "val" / "annotations.json")
    test = CocoDetection(ROOT / "data" / "test" / "annotations.json")
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, collate_fn=collate_detection,
                              generator=torch.Generator().manual_seed(args.seed))
    val_loader = DataLoader(val, batch_size=50, collate_fn=collate_detection)

    model = TinyDetector(width=args.width, depth=args.depth)
    optimizer, scheduler = make_optimizer(model, lr=args.lr, total_steps=args.epochs * len(train_loader))
    start = time.perf_counter()
    history = fit(model, train_loader, optimizer, args.epochs, device=device, scheduler=scheduler)
    train_s = time.perf_counter() - start

    start = time.perf_counter()
    metrics = evaluate(model, val_loader, device)
    eval_s = time.perf_counter() - start
    test_metrics = evaluate(model, DataLoader(test, batch_size=50, collate_fn=collate_detection), device)

    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    result = {
        "config": config,
        "device": str(device),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "parameters": count_parameters(model),
        "render_seconds": round(render_s, 2),
        "train_seconds": round(train_s, 2),
        "eval_seconds": round(eval_s, 2),
        "val_map": metrics["map"],
        "val_map_50": metrics["map_50"],
        "val_map_75": metrics["map_75"],
        "val_ap_per_class": {str(k): v for k, v in metrics["ap_per_class"].items()},
        "test_map": test_metrics["map"],
        "test_map_50": test_metrics["map_50"],
        "final_loss": history["loss"][-1],
        "targets": {"train_seconds_max": 90, "val_map_50_min": 0.90, "val_map_min": 0.60},
        "meets_targets": train_s <= 90 and metrics["map_50"] >= 0.90 and metrics["map"] >= 0.60,
    }
    save_checkpoint(args.out / f"{args.name}.pt", model.cpu(), config=config, val_map=metrics["map"], val_map_50=metrics["map_50"])
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
