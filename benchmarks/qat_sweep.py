"""PTQ vs QAT at 8 and 4 bits for the course detector, over several seeds.

Starts from the converged fp32 checkpoint of ``train_tiny_detector.py`` (48 epochs,
``tiny_detector_converged.pt``) and measures val and test mAP@[.5:.95] for:

* ``fp32``        -- the checkpoint as it is (its 95 % image-bootstrap CI is recorded too);
* ``fp32_ft8``, ``fp32_ft4`` -- the equal-budget controls: fine-tuned in float with
  exactly the QAT-8 / QAT-4 recipe (same epochs, learning rate, schedule, data
  order), so QAT's gain is not mistaken for the effect of extra training. Each
  QAT variant with another learning rate gets its own control too
  (``fp32_ft4_lr_x0.1``, ``fp32_ft4_lr_x3``);
* ``ptq8``, ``ptq4`` -- post-training quantization, W8A8 / W4A4 (weights per
  channel, min-max; activations per tensor, percentile observer), calibrated on
  ``--calib-images`` training images chosen by the seed;
* ``ptq4_w``      -- 4-bit weights only (activations in float);
* ``qat8``, ``qat4`` -- quantization-aware training from the fp32 checkpoint,
  same quantizer settings, BN statistics and activation ranges frozen for the
  last epoch (``QATSchedule``).

With ``--variants``, it then runs QAT-4 with other choices -- learning rate ×0.1
and ×3, and never freezing BN statistics -- and adds them to the same JSON
(``--variants-only`` runs just those, keeping the rest of an existing file).

Writes ``benchmarks/results/qat_sweep.json`` and the seed-0 QAT checkpoints
``qat8.pt`` / ``qat4.pt`` that notebook 05 loads.

Every entry of ``epochs`` in the JSON is the variant's total training epochs
(the start's 48 plus its fine-tuning); ``control`` names each QAT variant's float control.

    python benchmarks/qat_sweep.py --variants      # 3 seeds, about 30 min on 2 CPU cores
    python benchmarks/qat_sweep.py --seeds 0 --out /tmp/q   # a quick try
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from course_utils import (
    SyntheticShapes, fit, get_device,
    materialize, save_checkpoint, seed_everything,
)
from course_utils.quant import QATSchedule, calibrate, post_training_quantize, prepare_qat
from course_utils.metrics import bootstrap_map, seed_summary
from course_utils.train import make_finetune_optimizer, predict

from harness import load_start, seeded_loader, split_loader, split_scorers

ROOT = Path(__file__).resolve().parents[1]


def forward_raw(model: torch.nn.Module, images: torch.Tensor) -> dict:
    return model.forward_raw(images)


def finetune(model: torch.nn.Module, loader: DataLoader, epochs: int, lr: float, device: torch.device,
             hooks: list | None = None) -> float:
    """AdamW with a cosine decay from ``lr``; returns the training time in seconds."""
    optimizer, scheduler = make_finetune_optimizer(model, lr, total_steps=epochs * len(loader))
    start = time.perf_counter()
    fit(model, loader, optimizer, epochs, device=device, hooks=hooks or [], scheduler=scheduler, progress=False)
    return time.perf_counter() - start


def recipes(args: argparse.Namespace) -> dict[str, dict]:
    """Every fine-tuned entry's recipe: epochs, peak lr (AdamW, cosine), bits (None: float), BN frozen for the last epoch."""
    out = {"fp32_ft8": {"epochs": args.epochs_8, "lr": args.lr_8, "bits": None, "freeze_bn": False},
           "qat8": {"epochs": args.epochs_8, "lr": args.lr_8, "bits": 8, "freeze_bn": True},
           "fp32_ft4": {"epochs": args.epochs_4, "lr": args.lr_4, "bits": None, "freeze_bn": False},
           "qat4": {"epochs": args.epochs_4, "lr": args.lr_4, "bits": 4, "freeze_bn": True},
           "qat4_no_bn_freeze": {"epochs": args.epochs_4, "lr": args.lr_4, "bits": 4, "freeze_bn": False}}
    for suffix, factor in (("_lr_x0.1", 0.1), ("_lr_x3", 3.0)):
        out[f"fp32_ft4{suffix}"] = {**out["fp32_ft4"], "lr": args.lr_4 * factor}
        out[f"qat4{suffix}"] = {**out["qat4"], "lr": args.lr_4 * factor}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--epochs-8", type=int, default=2)
    parser.add_argument("--epochs-4", type=int, default=6)
    parser.add_argument("--lr-8", type=float, default=2e-4)
    parser.add_argument("--lr-4", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--checkpoint", type=Path, default=ROOT / "benchmarks" / "results" / "tiny_detector_converged.pt")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--variants", action="store_true", help="also QAT-4 with other learning rates / no BN freeze")
    parser.add_argument("--variants-only", action="store_true", help="run only the variants; keep the rest of the JSON")
    args = parser.parse_args()
    args.variants = args.variants or args.variants_only

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    fp32, start_epochs = load_start(args.checkpoint, device)
    train_set = materialize(SyntheticShapes(args.train_images, seed=0))  # the fp32 model's training data
    scorers = split_scorers(device)  # choices on val; the comparisons are reported on test

    runs: dict[str, list[float]] = {}
    test_runs: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}

    def record(name: str, model: torch.nn.Module | dict[str, float], secs: float = 0.0) -> None:
        scores = model if isinstance(model, dict) else {split: score(model) for split, score in scorers.items()}
        runs.setdefault(name, []).append(scores["val"])
        test_runs.setdefault(name, []).append(scores["test"])
        seconds.setdefault(name, []).append(round(secs, 1))
        print(f"  {name:>8}: val mAP {scores['val']:.4f}  test {scores['test']:.4f}  ({secs:.0f} s)", flush=True)

    fp32_scores = {split: score(fp32.to(device)) for split, score in scorers.items()}
    fp32_ci = bootstrap_map(*predict(fp32, split_loader("val"), device))
    fp32_test_ci = bootstrap_map(*predict(fp32, split_loader("test"), device))
    variants = {"qat4_lr_x0.1": (args.lr_4 / 10, True), "qat4_lr_x3": (args.lr_4 * 3, True),
                "qat4_no_bn_freeze": (args.lr_4, False)}
    # total epochs: the start's, plus the fine-tuning of the entries that have a recipe
    epochs = {name: start_epochs for name in ("fp32", "ptq8", "ptq4", "ptq4_w")}
    epochs |= {name: start_epochs + recipe["epochs"] for name, recipe in recipes(args).items()}
    control = {"qat8": "fp32_ft8", "qat4": "fp32_ft4", "qat4_lr_x0.1": "fp32_ft4_lr_x0.1",
               "qat4_lr_x3": "fp32_ft4_lr_x3", "qat4_no_bn_freeze": "fp32_ft4"}
    quant = {"weight_observer": "minmax", "act_observer": "percentile"}
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        seed_everything(seed)
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
        calib_images = torch.stack([train_set[int(i)][0] for i in order[: args.calib_images]]).to(device)
        calib = list(calib_images.split(32))
        if not args.variants_only:
            record("fp32", fp32_scores)
            for bits in (8, 4):
                start = time.perf_counter()
                ptq = post_training_quantize(fp32, calib, forward_raw, weight_bits=bits, act_bits=bits, **quant)
                record(f"ptq{bits}", ptq, time.perf_counter() - start)
            start = time.perf_counter()
            record("ptq4_w", post_training_quantize(fp32, calib, forward_raw, weight_bits=4, act_bits=None),
                   time.perf_counter() - start)

            for bits, n_epochs, lr in ((8, args.epochs_8, args.lr_8), (4, args.epochs_4, args.lr_4)):
                ft = copy.deepcopy(fp32)  # the equal-budget float control: same recipe, no quantizer
                secs = finetune(ft, seeded_loader(train_set, seed), n_epochs, lr, device)
                record(f"fp32_ft{bits}", ft, secs)
                qat = calibrate(prepare_qat(fp32, weight_bits=bits, act_bits=bits, act_observer="moving_average"), calib, forward_raw)
                last = max(1, n_epochs - 1)
                secs = finetune(qat, seeded_loader(train_set, seed), n_epochs, lr, device,
                                hooks=[QATSchedule(freeze_bn_epoch=last, freeze_observer_epoch=last)])
                record(f"qat{bits}", qat, secs)
                if seed == args.seeds[0]:
                    save_checkpoint(args.out / f"qat{bits}.pt", qat.cpu(), bits=bits, epochs=start_epochs + n_epochs,
                                    finetune_epochs=n_epochs, lr=lr, seed=seed, val_map=runs[f"qat{bits}"][-1])
                    qat.to(device)
        if args.variants:
            for name, (lr, freeze) in variants.items():
                if name != "qat4_no_bn_freeze":  # that one shares fp32_ft4's recipe
                    ft = copy.deepcopy(fp32)
                    secs = finetune(ft, seeded_loader(train_set, seed), args.epochs_4, lr, device)
                    record(control[name], ft, secs)
                qat = calibrate(prepare_qat(fp32, weight_bits=4, act_bits=4, act_observer="moving_average"), calib, forward_raw)
                last = max(1, args.epochs_4 - 1)
                hook = QATSchedule(freeze_bn_epoch=last if freeze else None, freeze_observer_epoch=last)
                secs = finetune(qat, seeded_loader(train_set, seed), args.epochs_4, lr, device, hooks=[hook])
                record(name, qat, secs)

    summary = {name: seed_summary(v) for name, v in runs.items()}
    test_summary = {name: seed_summary(v) for name, v in test_runs.items()}
    previous = args.out / "qat_sweep.json"
    if args.variants_only and previous.exists():  # keep the main results, replace the variants
        old = json.loads(previous.read_text())
        summary = {**old["val_map"], **summary}
        test_summary = {**old.get("test_map", {}), **test_summary}
        seconds = {**old["train_seconds"], **seconds}
        variants_config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}
        args = argparse.Namespace(**{**vars(args), **{k: v for k, v in old["config"].items() if k != "checkpoint"}})
        args.variants_run = variants_config
    # the share of PTQ-4's loss QAT-4 wins back, measured against its own float control:
    # (qat4 - ptq4) / (fp32_ft4 - ptq4)
    lost4 = summary["fp32_ft4"]["mean"] - summary["ptq4"]["mean"]
    recovered4 = (summary["qat4"]["mean"] - summary["ptq4"]["mean"]) / lost4 if lost4 > 0 else float("nan")
    result = {
        "config": {k: (str(v.relative_to(ROOT)) if isinstance(v, Path) and v.is_relative_to(ROOT) else str(v) if isinstance(v, Path) else v)
                   for k, v in vars(args).items() if k != "out"},
        "quantizer": {"weights": "signed symmetric per-channel, min-max", "activations": "unsigned asymmetric per-tensor",
                      "ptq_act_observer": "percentile 99.99", "qat_act_observer": "moving-average min-max"},
        "device": str(device), "torch": torch.__version__, "machine": platform.machine(),
        "splits": "every choice (the default recipe, a variant) is made on val; comparisons are reported on test",
        "val_map": summary,
        "test_map": test_summary,
        "fp32_bootstrap_ci": fp32_ci,
        "fp32_test_bootstrap_ci": fp32_test_ci,
        "epochs": {k: v for k, v in epochs.items() if k in summary},
        "control": {k: v for k, v in control.items() if k in summary},
        "recipes": {k: v for k, v in recipes(args).items() if k in summary},
        "train_seconds": seconds,
        "checks": {
            "qat8_minus_fp32": summary["qat8"]["mean"] - summary["fp32"]["mean"],
            "qat8_minus_fp32_ft8": summary["qat8"]["mean"] - summary["fp32_ft8"]["mean"],
            "qat4_minus_fp32_ft4": summary["qat4"]["mean"] - summary["fp32_ft4"]["mean"],
            "ptq8_minus_fp32": summary["ptq8"]["mean"] - summary["fp32"]["mean"],
            "qat4_recovers_fraction_of_ptq4_loss": recovered4,
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "qat_sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: (v["mean"], test_summary[k]["mean"]) for k, v in summary.items()}, indent=1))
    print(json.dumps(result["checks"], indent=1))


if __name__ == "__main__":
    main()
