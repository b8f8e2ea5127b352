"""PTQ weight rounding for the course detector: min-max vs MSE-optimal ranges vs AdaRound, at W4A8 and W8A8.

Starts from the converged fp32 checkpoint (``tiny_detector_converged.pt``, 48 epochs) and measures
val and test mAP@[.5:.95] of post-training quantized copies (BatchNorm folded; weights signed symmetric per
output channel; activations unsigned asymmetric per tensor, 8 bits, percentile 99.99 observer --
the same activation calibration for every method):

* ``minmax``          -- weight range = [min, max] per channel, round to nearest;
* ``mse``             -- weight range shrunk to minimise the weights' quantization MSE (MSEObserver), nearest;
* ``adaround``        -- min-max weight scale, rounding learned by AdaRound (Nagel et al. 2020,
  ``course_utils.quant.adaround``), layer by layer in network order;
* ``adaround_mse``    -- AdaRound on the MSE observer's weight scale (``--no-adaround-mse`` skips it).

Each method is calibrated on ``--calib-images`` images of ``SyntheticShapes(N, seed=1000 + s)`` for
each seed ``s`` (three different calibration sets by default), so the spread is the calibration
set's. QAT-4 from ``qat_sweep.json`` is listed beside it for reference: that is W4A4 (4-bit
activations too) after 6 epochs of training, a much larger budget than PTQ's minutes.

Writes ``benchmarks/results/ptq_methods.json`` (rewritten after every seed).

    python benchmarks/ptq_methods.py --threads 1                 # about 30 min on one core
    python benchmarks/ptq_methods.py --seeds 0 --iterations 200 --out /tmp/p   # a quick try
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from harness import RESULTS, ROOT, run_info, split_loader, write_json

from course_utils import SyntheticShapes, TinyDetector, evaluate, get_device, load_checkpoint, seed_difference
from course_utils.metrics import seed_summary
from course_utils.quant import adaround, post_training_quantize

ACT_OBSERVER = "percentile"
ITERATIONS_CHOICE = ("timed first on one core: 200 steps per layer took 20 s for all 14 layers at W4A8 (about "
                     "0.7 s per layer to capture its inputs, up to 10 ms per step on the widest layer); 2000 steps "
                     "(AIMET's default is 10000) keep 2 AdaRound variants x 2 bit widths x 3 seeds within 40 min on "
                     "one core")


def forward_raw(model: torch.nn.Module, images: torch.Tensor) -> dict:
    return model.forward_raw(images)


def calibration_batches(seed: int, n_images: int, device: torch.device) -> list[torch.Tensor]:
    """``n_images`` images of ``SyntheticShapes(n_images, seed=1000 + seed)`` in batches of 32."""
    data = SyntheticShapes(n_images, seed=1000 + seed)
    return list(torch.stack([data[i][0] for i in range(n_images)]).to(device).split(32))


def quantized(method: str, fp32: TinyDetector, batches: list[torch.Tensor], bits: int, args: argparse.Namespace,
              layer_stats: dict[str, dict[str, float]]) -> torch.nn.Module:
    """The PTQ copy of ``fp32`` for one method at W``bits``A8."""
    settings = {"weight_bits": bits, "act_bits": 8, "act_observer": ACT_OBSERVER}
    if method in ("minmax", "mse"):
        return post_training_quantize(fp32, batches, forward_raw, weight_observer=method, **settings)
    observer = "mse" if method == "adaround_mse" else "minmax"
    return adaround(fp32, batches, forward_raw, iterations=args.iterations, lam=args.lam, lr=args.lr,
                    batch_size=args.batch_size, num_samples=args.num_samples, weight_observer=observer,
                    log=lambda name, stats: layer_stats.__setitem__(name, stats), **settings)


def summarise(runs: dict[str, dict[str, list[float]]], fp32: dict[str, float], qat: dict[str, Any]) -> dict[str, Any]:
    """Seed summaries on val and test, AdaRound − min-max on each split (Welch CI, the paired t CI -- both methods
    use the same calibration set per seed -- and the per-seed pairs), and the QAT-4 reference."""
    out: dict[str, Any] = {"fp32": fp32["val"], "fp32_test": fp32["test"], "qat_reference": qat,
                           "splits": "nothing is chosen here; both splits are recorded and comparisons are reported on test"}
    for split, prefix in (("val", ""), ("test", "test_")):
        r = runs[split]
        diffs: dict[str, Any] = {}
        for name in r:
            method, bits = name.rsplit("_w", 1)
            base = f"minmax_w{bits}"
            if method.startswith("adaround") and base in r and len(r[name]) == len(r[base]):
                paired = [a - b for a, b in zip(r[name], r[base])]
                entry: dict[str, Any] = {"per_seed": paired, "paired_mean": sum(paired) / len(paired)}
                if len(paired) >= 2:
                    entry["welch"] = seed_difference(r[name], r[base])
                    entry["paired"] = seed_difference(r[name], r[base], paired=True)
                diffs[f"{name}_minus_{base}"] = entry
        out[f"{split}_map"] = {name: seed_summary(v) for name, v in r.items()}
        out[f"{prefix}adaround_minus_minmax"] = diffs
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="one calibration set per value s: SyntheticShapes(N, seed=1000 + s)")
    parser.add_argument("--calib-images", type=int, default=128)
    parser.add_argument("--bits", type=int, nargs="+", default=[4, 8], help="weight bits (activations: 8)")
    parser.add_argument("--iterations", type=int, default=2000, help="AdaRound Adam steps per layer")
    parser.add_argument("--lam", type=float, default=0.01, help="AdaRound regulariser weight λ")
    parser.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate for V")
    parser.add_argument("--batch-size", type=int, default=512, help="rows (output positions) per AdaRound step")
    parser.add_argument("--num-samples", type=int, default=8192, help="rows cached per layer")
    parser.add_argument("--no-adaround-mse", action="store_true", help="skip AdaRound on the MSE weight scale")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--checkpoint", type=Path, default=RESULTS / "tiny_detector_converged.pt")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    fp32 = TinyDetector()
    load_checkpoint(args.checkpoint, fp32)
    fp32.eval().to(device)
    val, test = split_loader("val"), split_loader("test")
    fp32_map = evaluate(fp32, val, device)["map"]
    fp32_test_map = evaluate(fp32, test, device)["map"]
    sweep = json.loads((RESULTS / "qat_sweep.json").read_text())
    qat = {"qat4": sweep["val_map"]["qat4"], "ptq4": sweep["val_map"]["ptq4"],
           **{f"{k}_test": sweep["test_map"][k] for k in ("qat4", "ptq4") if k in sweep.get("test_map", {})},
           "note": "from qat_sweep.json: W4A4 (4-bit activations too), QAT = 6 epochs of fine-tuning on 2000 "
                   "images from the converged checkpoint, PTQ-4 = min-max weights, percentile activations, 64 "
                   "calibration images; not the same bits nor the same budget as the PTQ rows here"}
    methods = ["minmax", "mse", "adaround"] + ([] if args.no_adaround_mse else ["adaround_mse"])
    runs: dict[str, dict[str, list[float]]] = {"val": {}, "test": {}}
    seconds: dict[str, list[float]] = {}
    layers: dict[str, dict[str, dict[str, float]]] = {}
    config = {k: (str(v.relative_to(ROOT)) if isinstance(v, Path) and v.is_relative_to(ROOT) else str(v)
                  if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}
    start_all = time.perf_counter()
    print(f"fp32 val mAP {fp32_map:.4f}", flush=True)
    for seed in args.seeds:
        batches = calibration_batches(seed, args.calib_images, device)
        for method in methods:
            for bits in args.bits:
                name = f"{method}_w{bits}a8"
                stats: dict[str, dict[str, float]] = {}
                start = time.perf_counter()
                torch.manual_seed(seed)
                model = quantized(method, fp32, batches, bits, args, stats)
                value = evaluate(model, val, device)["map"]
                runs["val"].setdefault(name, []).append(value)
                runs["test"].setdefault(name, []).append(evaluate(model, test, device)["map"])
                seconds.setdefault(name, []).append(round(time.perf_counter() - start, 1))
                if stats:
                    layers[f"{name}_seed{seed}"] = stats
                print(f"seed {seed} {name:>18}: val mAP {value:.4f}, test {runs['test'][name][-1]:.4f} "
                      f"({seconds[name][-1]:.0f} s)", flush=True)
        result = {
            "description": "Post-training quantization of the converged course detector (val mAP 0.865 in fp32) with "
                           "three ways of choosing the weights' integers: min-max range and round-to-nearest, "
                           "MSE-optimal range and round-to-nearest, and AdaRound (learned up-or-down rounding, Nagel "
                           "et al. 2020) on the min-max or MSE range. Weights signed symmetric per channel at 4 or 8 "
                           "bits, activations 8-bit unsigned asymmetric per tensor with the percentile 99.99 observer "
                           "for every method. n = 3 calibration sets (seeds), std with ddof = 1. AdaRound minimises "
                           "the layer output error between the float layer on float inputs and the soft-quantized "
                           "layer on the inputs of the quantized model (earlier layers already rounded), as AIMET "
                           "does. qat_reference is W4A4 after 6 epochs of QAT: a different bit width and budget.",
            "config": config,
            "quantizer": {"weights": "signed symmetric per-channel (axis 0)", "activations": "unsigned asymmetric "
                          "per-tensor, 8 bits", "act_observer": "percentile 99.99", "batch_norm": "folded"},
            "adaround": {"iterations": args.iterations, "iterations_choice": ITERATIONS_CHOICE, "lam": args.lam,
                         "beta": "20 -> 2, cosine, after a warm "
                         "start of 20 % of the steps without the regulariser", "optimizer": f"Adam lr {args.lr}",
                         "rows_per_step": args.batch_size, "rows_cached_per_layer": args.num_samples,
                         "inputs": "float layer on float-model inputs vs soft-quantized layer on quantized-model inputs",
                         "zeta_gamma": [1.1, -0.1]},
            "calibration": f"SyntheticShapes({args.calib_images}, seed=1000 + s) for s in seeds, batches of 32",
            "run_info": run_info(device),
            "seeds_done": args.seeds[: args.seeds.index(seed) + 1],
            **summarise(runs, {"val": fp32_map, "test": fp32_test_map}, qat),
            "seconds": seconds,
            "total_seconds": round(time.perf_counter() - start_all, 1),
            "adaround_layers": layers,
        }
        write_json(args.out / "ptq_methods.json", result)
    for name, s in result["test_map"].items():
        print(f"{name:>20}: {s['mean']:.4f} ± {s['std'] if s['std'] is not None else float('nan'):.4f} (n={s['n']})")


if __name__ == "__main__":
    main()
