"""Train the course's TinyDetector to convergence; record learning curves, time it, measure mAP.

One one-cycle schedule per entry of ``--epochs`` (same seed, data and recipe,
only the length differs), each evaluated on val after every epoch. The kept
model is the shortest schedule that the next one (at least twice as long) beats
by less than ``--plateau`` val mAP, or else the longest.

Then the *plateau check*, the test that matters for the rest of the course:
every compression method fine-tunes its model for 6 more epochs (AdamW, cosine
from 2e-3: ``make_finetune_optimizer``, as in ``prune_sweep.py``). Give the kept
model exactly that extra training without compression (``--check-epochs``,
``--check-lr``, seeds ``--check-seeds``): it has plateaued when the extra epochs
add less than ``--plateau`` val mAP on average (the JSON also gives the one-sided
95 % upper bound of that gain). A baseline that still gains there would hand its
gain to whatever method is compared with it -- which is why every comparison also
gives its baseline the same extra training.

Every curve, the rule and the check's numbers go into the JSON;
``--check-only`` re-runs the check on an existing ``<name>.pt``/``<name>.json``.

Writes ``benchmarks/results/<name>.json`` and the checkpoint ``<name>.pt`` that
later notebooks load (with its val mAP, for a test to re-check).

    python benchmarks/train_tiny_detector.py                  # the converged course detector (~20 min on 2 cores)
    python benchmarks/train_tiny_detector.py --width 2 --epochs 24 48 --name teacher_converged   # (~40 min)
    python benchmarks/train_tiny_detector.py --epochs 6 --name tiny_detector   # notebook 02's short live recipe
    python benchmarks/train_tiny_detector.py --epochs 3 --out /tmp/quick      # a quick try
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from scipy import stats
from torch.utils.data import DataLoader

from course_utils import (
    CocoDetection, SyntheticShapes, TinyDetector, collate_detection, count_parameters, evaluate, fit,
    get_device, load_checkpoint, materialize, save_checkpoint, seed_everything,
)
from course_utils.deploy import cpu_info
from course_utils.metrics import bootstrap_map
from course_utils.metrics import seed_summary
from course_utils.train import make_finetune_optimizer, make_optimizer, predict

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


def train_schedule(args: argparse.Namespace, epochs: int, train_set, val_loader, device) -> tuple[TinyDetector, dict]:
    """One run of the standard recipe (AdamW + one-cycle over ``epochs``), val mAP after each epoch."""
    seed_everything(args.seed)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, collate_fn=collate_detection,
                              generator=torch.Generator().manual_seed(args.seed))
    model = TinyDetector(width=args.width, depth=args.depth, activation=args.activation)
    optimizer, scheduler = make_optimizer(model, lr=args.lr, total_steps=epochs * len(train_loader))
    start = time.perf_counter()
    history = fit(model, train_loader, optimizer, epochs, device=device, scheduler=scheduler, val_loader=val_loader)
    seconds = time.perf_counter() - start
    run = {"epochs": epochs, "seconds": round(seconds, 1), "val_map_curve": history["map"],
           "val_map_50_curve": history["map_50"], "val_map": history["map"][-1], "final_loss": history["loss"][-1]}
    print(f"{epochs} epochs: val mAP {run['val_map']:.4f} ({seconds:.0f} s)", flush=True)
    return model, run


def choose_plateau(runs: list[dict], min_gain: float) -> tuple[int, str]:
    """Index of the shortest schedule whose successor (>= 2x as long) adds < ``min_gain`` val mAP."""
    if len(runs) == 1:
        return 0, "not checked: a single schedule was trained"
    for i in range(len(runs) - 1):
        gain = runs[i + 1]["val_map"] - runs[i]["val_map"]
        if runs[i + 1]["epochs"] >= 2 * runs[i]["epochs"] and gain < min_gain:
            return i, (f"{runs[i]['epochs']} epochs: the {runs[i + 1]['epochs']}-epoch schedule adds "
                       f"{100 * gain:+.2f} points (< {100 * min_gain:.1f})")
    return len(runs) - 1, "not reached: the longest schedule still gained; it is kept"


def plateau_check(model: TinyDetector, train_set, val_loader, args: argparse.Namespace, device) -> dict:
    """Fine-tune copies of ``model`` as every compression method does; how much do the extra epochs add?"""
    start = evaluate(model.cpu(), val_loader, CPU)["map"]
    after, curves = [], []
    for seed in args.check_seeds:
        seed_everything(seed)
        loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, collate_fn=collate_detection,
                            generator=torch.Generator().manual_seed(seed))
        tuned = TinyDetector(width=args.width, depth=args.depth, activation=args.activation)
        tuned.load_state_dict(model.state_dict())
        optimizer, scheduler = make_finetune_optimizer(tuned, args.check_lr, total_steps=args.check_epochs * len(loader))
        history = fit(tuned, loader, optimizer, args.check_epochs, device=device, scheduler=scheduler, val_loader=val_loader)
        after.append(evaluate(tuned.cpu(), val_loader, CPU)["map"])  # recorded numbers: on the CPU, on any machine
        curves.append(history["map"])
        print(f"plateau check, seed {seed}: {start:.4f} -> {after[-1]:.4f}", flush=True)
    summary = seed_summary(after)
    gain = summary["mean"] - start
    # one-sided 95 % upper bound of the mean gain over the seeds (Student's t, n - 1 degrees of freedom)
    upper = gain + stats.t.ppf(0.95, len(after) - 1) * summary["std"] / len(after) ** 0.5 if len(after) > 1 else gain
    return {"recipe": f"{args.check_epochs} epochs of make_finetune_optimizer (AdamW, cosine from {args.check_lr:g}), "
                      f"seeds {list(args.check_seeds)}",
            "val_map_before": start, "val_map_after": summary, "val_map_curves": curves, "gain": gain,
            "gain_upper95": upper, "reached": gain < args.plateau}


def plateau_fields(runs: list[dict], args: argparse.Namespace, check: dict) -> dict:
    """The JSON's ``plateau`` entry: the rule in words, which schedule was kept and why, and the check."""
    chosen, verdict = choose_plateau(runs, args.plateau)
    rule = (f"kept: the shortest schedule whose successor (at least twice as long, same recipe) adds less than "
            f"{100 * args.plateau:.1f} val mAP points, else the longest. Plateaued: the check's extra fine-tuning "
            f"(the recipe every compression method gets) adds less than {100 * args.plateau:.1f} points on average "
            f"over its seeds; gain_upper95 is the one-sided 95 % upper bound of that mean (Student's t): how much "
            f"gain the seeds cannot exclude")
    return {"rule": rule, "min_gain": args.plateau, "verdict": verdict, "epochs": runs[chosen]["epochs"],
            "check": check, "reached": check["reached"]}


def description(args: argparse.Namespace) -> str:
    act = "" if args.activation == "relu" else f", activation={args.activation!r}"
    return (f"TinyDetector(width={args.width:g}{act}) trained with the standard recipe (AdamW, one-cycle, "
            f"{args.train_images} synthetic images, seed {args.seed}) for schedules of {args.epochs} epochs; "
            "the kept checkpoint and the plateau check are described under 'plateau'. Recorded mAPs are "
            "measured on the CPU. Made by benchmarks/train_tiny_detector.py.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--depth", type=int, default=1)
    parser.add_argument("--activation", default="relu", choices=["relu", "silu", "hardswish"],
                        help="every block's activation (notebook 11 quantizes SiLU and Hardswish detectors)")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, nargs="+", default=[12, 24, 48],
                        help="schedule lengths to compare (each a full one-cycle run)")
    parser.add_argument("--plateau", type=float, default=0.005,
                        help="plateaued: a schedule twice as long, or the check's extra epochs, add less than this val mAP")
    parser.add_argument("--check-epochs", type=int, default=6, help="plateau check: extra fine-tuning epochs")
    parser.add_argument("--check-lr", type=float, default=2e-3, help="plateau check: fine-tuning learning rate")
    parser.add_argument("--check-seeds", type=int, nargs="+", default=[0, 1, 2], help="plateau check: seeds")
    parser.add_argument("--check-only", action="store_true", help="only (re-)run the plateau check on <name>.pt")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the course assumes 2 cores)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if present)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="folder for JSON + checkpoint")
    parser.add_argument("--name", default="tiny_detector_converged")
    args = parser.parse_args()
    args.epochs = sorted(args.epochs)

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    json_path, ckpt_path = args.out / f"{args.name}.json", args.out / f"{args.name}.pt"
    if args.check_only:  # the model and data the file was made with
        result = json.loads(json_path.read_text())
        for key in ("width", "depth", "batch_size", "seed", "train_images"):
            setattr(args, key, result["config"][key])
        args.epochs = result["schedules"]
    start = time.perf_counter()
    train_set = materialize(SyntheticShapes(args.train_images, seed=args.seed))
    render_s = time.perf_counter() - start
    val = CocoDetection(ROOT / "data" / "val" / "annotations.json")
    test = CocoDetection(ROOT / "data" / "test" / "annotations.json")
    val_loader = DataLoader(val, batch_size=50, collate_fn=collate_detection)
    test_loader = DataLoader(test, batch_size=50, collate_fn=collate_detection)

    if args.check_only:
        model = TinyDetector(width=args.width, depth=args.depth, activation=args.activation)
        load_checkpoint(ckpt_path, model)
        fields = plateau_fields(result["runs"], args, plateau_check(model, train_set, val_loader, args, device))
        if fields["epochs"] != result["config"]["epochs"]:
            raise ValueError(f"{json_path}: the stored runs pick {fields['epochs']} epochs under --plateau "
                             f"{args.plateau}, but the checkpoint has {result['config']['epochs']}; retrain")
        result["plateau"], result["description"] = fields, description(args)
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result["plateau"]["check"] | {"val_map_curves": "..."}, indent=2))
        return

    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for epochs in args.epochs:
            model, run = train_schedule(args, epochs, train_set, val_loader, device)
            runs.append(run)
            save_checkpoint(Path(tmp) / f"{epochs}.pt", model.cpu())
        chosen, verdict = choose_plateau(runs, args.plateau)
        model = TinyDetector(width=args.width, depth=args.depth, activation=args.activation)
        model.load_state_dict(torch.load(Path(tmp) / f"{runs[chosen]['epochs']}.pt", weights_only=True)["model"])

    model.to(device)
    check = plateau_check(model, train_set, val_loader, args, device)
    model.cpu()  # recorded numbers are CPU numbers (a test re-evaluates them to 1e-6 on the CPU)
    val_metrics = evaluate(model, val_loader, CPU)
    test_metrics = evaluate(model, test_loader, CPU)
    val_ci = bootstrap_map(*predict(model, val_loader, CPU))
    test_ci = bootstrap_map(*predict(model, test_loader, CPU))
    args.out.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "out"}
    config["epochs"] = runs[chosen]["epochs"]
    result = {
        "description": description(args),
        "config": config,
        "schedules": args.epochs,
        "device": str(device),
        "cpu": cpu_info(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "parameters": count_parameters(model),
        "render_seconds": round(render_s, 2),
        "runs": runs,
        "plateau": plateau_fields(runs, args, check),
        "train_seconds": runs[chosen]["seconds"],
        "val_map": val_metrics["map"],
        "val_map_ci95": [val_ci["low"], val_ci["high"]],
        "val_map_50": val_metrics["map_50"],
        "val_map_75": val_metrics["map_75"],
        "val_ap_per_class": {str(k): v for k, v in val_metrics["ap_per_class"].items()},
        "test_map": test_metrics["map"],
        "test_map_ci95": [test_ci["low"], test_ci["high"]],
        "test_map_50": test_metrics["map_50"],
    }
    save_checkpoint(ckpt_path, model.cpu(), config=config, val_map=val_metrics["map"],
                    val_map_50=val_metrics["map_50"], epochs=runs[chosen]["epochs"])
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("plateau", "val_map", "val_map_ci95", "test_map")}, indent=2))


if __name__ == "__main__":
    main()
