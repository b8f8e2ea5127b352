"""K-means (codebook) vs linear weight quantization of the course detector at 2, 3 and 4 bits.

Starts from the converged width-1 detector (``tiny_detector_converged.pt``, 48 epochs) and scores
mAP@[.5:.95] on val and test for, at each bit width b (weights only; activations stay float in every variant):

* ``codebook{b}``      -- BN folded, each Conv2d's weights clustered by 1-D k-means into 2^b centroids
                          (``codebook_quantize``), no training;
* ``codebook{b}_ft``   -- the same, then the centroids (and fp32 biases) fine-tuned for ``--epochs``;
* ``linear{b}``        -- linear per-channel symmetric min-max quantization, BN folded
                          (``quantize_model(weight_bits=b, act_bits=None)`` + ``calibrate``), no training;
* ``linear{b}_ft``     -- QAT with the straight-through estimator (``prepare_qat(weight_bits=b,
                          act_bits=None)``, BN folded while training, BN statistics frozen for the
                          last epoch as in ``qat_sweep.py``) for the same ``--epochs``;
* ``fp32_ft_lr{lr}``   -- the float control, fine-tuned the same way at each learning rate used above.

Every fine-tuned variant gets the same recipe from the same start (``harness.finetune``: AdamW, cosine
from its peak lr to 0, ``--epochs`` passes over the same 2000 SyntheticShapes training images, batch 32,
the data order set by the seed), so a gain is not the effect of more training. The peak lr is each
method's best of {1e-4, 3e-4, 1e-3} in a probe on seed 99, which is not among the reported seeds
(``lr_probe`` in the JSON): centroids 1e-3 at every width, QAT 1e-3 at 2 bits and 3e-4 at 3 and 4;
``control`` names each variant's float control (same lr). The un-fine-tuned variants are
deterministic and scored once. ``epochs`` in the JSON is each variant's total (48 + its fine-tuning).
``bytes`` counts the deployed network (BN folded): codebook = b-bit indices + 2^b fp32 centroids per
layer; linear = b-bit weights + one fp32 scale per output channel; both with fp32 biases.

Writes ``benchmarks/results/codebook.json``.

    python benchmarks/codebook_sweep.py --threads 1            # 3 seeds, about 20 min on one CPU core
    python benchmarks/codebook_sweep.py --seeds 0 --bits 2 --lr 1e-3 --out /tmp/cb   # a quick try
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import torch

from course_utils import SyntheticShapes, get_device, materialize, seed_everything
from course_utils.metrics import seed_summary
from course_utils.quant import (
    CodebookLayer, QATSchedule, calibrate, codebook_bytes, codebook_quantize, float_bytes, linear_bytes, prepare_qat,
    quantize_model,
)

from harness import RESULTS, ROOT, finetune, load_start, run_info, seeded_loader, split_scorers, write_json


def forward_raw(model: torch.nn.Module, images: torch.Tensor) -> dict:
    return model.forward_raw(images)


def max_distinct(model: torch.nn.Module) -> int:
    """The largest number of distinct weight values in any CodebookLayer (at most 2^b)."""
    return max(int(m.weight.detach().unique().numel()) for m in model.modules() if isinstance(m, CodebookLayer))


def lr_probe(paths: list[Path]) -> dict[str, dict]:
    """The fine-tuned variants' val mAP of earlier runs, keyed by their lr: how the choice of ``--lr`` was made."""
    out = {}
    for path in paths:
        old = json.loads(Path(path).read_text())
        out[str(old["config"]["lr"])] = {"seeds": old["config"]["seeds"], "epochs": old["config"]["epochs"],
                                         "val_map": {k: v["mean"] for k, v in old["val_map"].items() if k.endswith("_ft")}}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs of every fine-tuned variant")
    parser.add_argument("--lr", type=float, default=None,
                        help="one peak lr (AdamW, cosine) for every fine-tuned variant, instead of the per-method ones")
    parser.add_argument("--lr-codebook", type=float, nargs="+", default=[1e-3, 1e-3, 1e-3],
                        help="peak lr of codebook{b}_ft, one per --bits (chosen on seed 99, see lr_probe)")
    parser.add_argument("--lr-linear", type=float, nargs="+", default=[1e-3, 3e-4, 3e-4],
                        help="peak lr of linear{b}_ft, one per --bits (chosen on seed 99, see lr_probe)")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--kmeans-iters", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--checkpoint", type=Path, default=RESULTS / "tiny_detector_converged.pt")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--lr-probe", type=Path, nargs="*", default=[],
                        help="codebook.json files of earlier runs (other seeds, other --lr) to record under 'lr_probe'")
    args = parser.parse_args()

    if args.lr is not None:
        args.lr_codebook, args.lr_linear = [args.lr] * len(args.bits), [args.lr] * len(args.bits)
    if not len(args.lr_codebook) == len(args.lr_linear) == len(args.bits):
        raise ValueError(f"give one --lr-codebook and one --lr-linear per --bits {args.bits} (or one --lr for all), "
                         f"got {args.lr_codebook} and {args.lr_linear}")
    lrs = {f"codebook{b}_ft": lr for b, lr in zip(args.bits, args.lr_codebook)}
    lrs |= {f"linear{b}_ft": lr for b, lr in zip(args.bits, args.lr_linear)}
    control = {name: f"fp32_ft_lr{lr:g}" for name, lr in lrs.items()}  # each variant's float control: its own lr
    lrs |= {name: lrs[variant] for variant, name in control.items()}
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    fp32, start_epochs = load_start(args.checkpoint, device)
    train_set = materialize(SyntheticShapes(args.train_images, seed=0), progress=False)  # as qat_sweep.py
    scorers = split_scorers(device)  # the learning rates were chosen on val (lr_probe); the comparison is reported on test
    calib = list(torch.stack([train_set[i][0] for i in range(args.calib_images)]).to(device).split(32))

    runs: dict[str, list[float]] = {}
    test_runs: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    distinct: dict[str, int] = {}

    def record(name: str, model: torch.nn.Module, secs: float = 0.0) -> None:
        runs.setdefault(name, []).append(scorers["val"](model))
        test_runs.setdefault(name, []).append(scorers["test"](model))
        seconds.setdefault(name, []).append(round(secs, 1))
        print(f"  {name:>12}: val mAP {runs[name][-1]:.4f}  test {test_runs[name][-1]:.4f}  ({secs:.0f} s)", flush=True)

    record("fp32", fp32)
    start_codebooks = {}
    for b in args.bits:
        start = time.perf_counter()
        start_codebooks[b] = codebook_quantize(fp32, b, iters=args.kmeans_iters)
        record(f"codebook{b}", start_codebooks[b], time.perf_counter() - start)
        distinct[f"codebook{b}"] = max_distinct(start_codebooks[b])
        record(f"linear{b}", calibrate(quantize_model(fp32, weight_bits=b, act_bits=None), calib, forward_raw))

    last = max(1, args.epochs - 1)
    for seed in args.seeds:
        print(f"seed {seed}", flush=True)
        seed_everything(seed)
        for name in sorted(set(control.values())):
            start = time.perf_counter()
            ft = finetune(copy.deepcopy(fp32), seeded_loader(train_set, seed), args.epochs, lrs[name], device)
            record(name, ft, time.perf_counter() - start)
        for b in args.bits:
            start = time.perf_counter()
            cb = finetune(copy.deepcopy(start_codebooks[b]), seeded_loader(train_set, seed), args.epochs, lrs[f"codebook{b}_ft"], device)
            record(f"codebook{b}_ft", cb, time.perf_counter() - start)
            distinct[f"codebook{b}_ft"] = max(distinct.get(f"codebook{b}_ft", 0), max_distinct(cb))
            start = time.perf_counter()
            qat = calibrate(prepare_qat(fp32, weight_bits=b, act_bits=None), calib, forward_raw)
            qat = finetune(qat, seeded_loader(train_set, seed), args.epochs, lrs[f"linear{b}_ft"], device,
                           hooks=[QATSchedule(freeze_bn_epoch=last, freeze_observer_epoch=last)])
            record(f"linear{b}_ft", qat, time.perf_counter() - start)

    epochs = {name: start_epochs + (args.epochs if name in lrs else 0) for name in runs}
    bytes_ = {"fp32": float_bytes(fp32)} | {f"codebook{b}": codebook_bytes(start_codebooks[b]) for b in args.bits} \
        | {f"linear{b}": linear_bytes(fp32, b) for b in args.bits}
    result = {
        "description": __doc__.split("\n\n")[0] + " mAP@[.5:.95] of the converged width-1 detector on val and on "
                       "test (the learning rates were chosen on val, so comparisons are reported on test), weights "
                       "only; fine-tuned variants: mean and sample std (ddof=1) over seeds (data order); the others "
                       "are deterministic, scored once.",
        "config": {k: (str(v.relative_to(ROOT)) if isinstance(v, Path) and v.is_relative_to(ROOT) else str(v)
                       if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("out", "lr_probe")},
        "recipe": {"optimizer": "AdamW, weight decay 1e-4, cosine from lr to 0, no warm-up (harness.finetune)",
                   "trained": {"codebook": "centroids and fp32 biases (BN folded, indices fixed)",
                               "linear": "all weights via STE, BN folded while training, BN statistics and "
                                         "weight ranges frozen for the last epoch (QATSchedule)",
                               "fp32": "all parameters, BN kept"}},
        "lr": lrs,
        "control": control,
        "run_info": run_info(device),
        "runs": runs,
        "test_runs": test_runs,
        "train_seconds": seconds,
        "val_map": {name: seed_summary(v) for name, v in runs.items()},
        "test_map": {name: seed_summary(v) for name, v in test_runs.items()},
        "epochs": epochs,
        "bytes": bytes_,
        "compression_vs_fp32": {k: bytes_["fp32"] / v for k, v in bytes_.items()},
        "max_distinct_weights_per_layer": distinct,
    }
    previous = args.out / "codebook.json"
    if args.lr_probe:
        result["lr_probe"] = lr_probe(args.lr_probe)
    elif previous.is_file() and "lr_probe" in json.loads(previous.read_text()):  # a re-run keeps the probe its lrs came from
        result["lr_probe"] = json.loads(previous.read_text())["lr_probe"]
    path = write_json(previous, result)
    for name, s in result["test_map"].items():
        std = f"{s['std']:.4f}" if s["std"] is not None else "  -   "
        print(f"{name:>12}: test {s['mean']:.4f} ± {std} (n={s['n']}, {epochs[name]} epochs)")
    print(bytes_, "->", path)


if __name__ == "__main__":
    main()
