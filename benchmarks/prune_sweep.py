"""Pruning the course detector: unstructured vs structured, accuracy vs size vs latency.

Starts from the trained fp32 detector (``tiny_detector.pt``) and, for each seed
(data order of the fine-tuning), compares:

* ``dense_ft``          -- no pruning, fine-tuned with the same recipe (the fair control);
* ``unstructured_S``    -- global magnitude pruning to sparsity S (output layers kept
                           dense), fine-tuned with the masks held (``MaskHook``);
* ``structured_K``      -- L1-norm channel pruning keeping K of every group's channels
                           (the layers physically shrink), then fine-tuned;
* ``global_K``          -- the same, but one threshold over all groups (L1 normalised per
                           group), so K of all channels survive, fewer where they matter less;
* ``slim_K``            -- network slimming: fine-tune with an L1 penalty on the BN
                           scales first, prune by ``|γ|`` to K, then fine-tune.

Every variant is scored on val before and after fine-tuning. For seed 0 it also
measures, per variant: parameters, multiply-accumulates, checkpoint size (raw and
gzip-compressed), and the fp32 network's latency at batch 1 and 16 (BN folded;
eager PyTorch and ONNX Runtime, each timed on its own, ONNX Runtime first).
Writes ``benchmarks/results/prune_sweep.json``.

    python benchmarks/prune_sweep.py                 # about 13 min on 2 CPU cores
    python benchmarks/prune_sweep.py --seeds 0 --skip-latency --out /tmp/prune   # a quick try
    python benchmarks/prune_sweep.py --sparsities 0.8 0.9 --keep 0.8 0.6 0.5 --global-keep 0.6 --slim-keep 0.6   # more variants
"""

from __future__ import annotations

import argparse
import copy
import gzip
import io
import json
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from course_utils import (
    CocoDetection, SyntheticShapes, TinyDetector, collate_detection, count_parameters, evaluate, fit, get_device,
    load_checkpoint, materialize, seed_everything,
)
from course_utils.deploy import DetectorNetwork, export_onnx, measure_latency, ort_session
from course_utils.prune import (
    MaskHook, SlimmingPenalty, channel_counts, count_flops, magnitude_masks, prune_detector, sparsity,
)
from course_utils.quant import fuse_conv_bn
from course_utils.train import make_finetune_optimizer

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_LAYERS = ("cls_out", "box_out")


def hidden_layers(name: str, module: torch.nn.Module) -> bool:
    """Unstructured pruning acts on every Conv2d except the two output layers (tiny, and they set the predictions)."""
    return isinstance(module, torch.nn.Conv2d) and name not in OUTPUT_LAYERS


def finetune(model: TinyDetector, loader: DataLoader, epochs: int, lr: float, device: torch.device, hooks=()) -> TinyDetector:
    """AdamW with cosine decay from ``lr``, no warm-up (the weights are trained already). Measured on the
    60 % model, seed 0: 6 epochs this way reached val mAP 0.765; our first recipe, 3 epochs of the
    training schedule (one-cycle, peak 1e-3), only 0.697."""
    optimizer, scheduler = make_finetune_optimizer(model, lr, total_steps=epochs * len(loader))
    fit(model, loader, optimizer, epochs, device=device, hooks=list(hooks), scheduler=scheduler, progress=False)
    return model.eval()


def checkpoint_bytes(model: torch.nn.Module) -> tuple[int, int]:
    """Size of the state dict as torch.save writes it, and gzip-compressed (zeros compress; dense kernels don't care)."""
    buffer = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buffer)
    raw = buffer.getvalue()
    return len(raw), len(gzip.compress(raw, compresslevel=6))


def latencies(models: dict[str, TinyDetector], runs: int) -> dict[str, dict[str, dict[str, float]]]:
    """fp32 network latency (BN folded) at batch 1 and 16: ONNX Runtime for every model first, then eager PyTorch."""
    out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in models}
    batches = {b: torch.rand(b, 3, 128, 128) for b in (1, 16)}
    networks = {name: DetectorNetwork(fuse_conv_bn(copy.deepcopy(m).cpu().eval())).eval() for name, m in models.items()}
    with tempfile.TemporaryDirectory() as tmp:
        for name, net in networks.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = export_onnx(net, batches[1], Path(tmp) / f"{name}.onnx")
            session = ort_session(path, threads=torch.get_num_threads())
            for b, x in batches.items():
                feed = {session.get_inputs()[0].name: x.numpy()}
                out[name][f"ort_batch{b}"] = measure_latency(lambda: session.run(None, feed), runs=runs)
            del session
    with torch.inference_mode():
        for name, net in networks.items():
            for b, x in batches.items():
                out[name][f"eager_batch{b}"] = measure_latency(lambda: net(x), runs=runs)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsities", type=float, nargs="*", default=[0.8])
    parser.add_argument("--keep", type=float, nargs="*", default=[0.6, 0.5])
    parser.add_argument("--global-keep", type=float, nargs="*", default=[])
    parser.add_argument("--slim-keep", type=float, nargs="*", default=[])
    parser.add_argument("--slim-strength", type=float, default=1e-3)
    parser.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs after pruning")
    parser.add_argument("--lr", type=float, default=2e-3, help="fine-tuning: AdamW, cosine decay from lr, no warm-up")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=50, help="timed runs per latency measurement")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    base = TinyDetector()
    load_checkpoint(ROOT / "benchmarks" / "results" / "tiny_detector.pt", base)
    base.eval()
    val_loader = DataLoader(materialize(CocoDetection(ROOT / "data" / "val" / "annotations.json")), batch_size=50,
                            collate_fn=collate_detection)
    score = lambda m: evaluate(m, val_loader, device)["map"]  # noqa: E731
    base_map = score(base.to(device))
    print(f"fp32 detector: val mAP {base_map:.4f}, {count_parameters(base):,} parameters", flush=True)
    train_set = materialize(SyntheticShapes(args.train_images, seed=0))

    names = (["dense_ft"] + [f"unstructured_{s:g}" for s in args.sparsities] + [f"structured_{k:g}" for k in args.keep]
             + [f"global_{k:g}" for k in args.global_keep] + [f"slim_{k:g}" for k in args.slim_keep])
    before: dict[str, list[float]] = {n: [] for n in names}
    after: dict[str, list[float]] = {n: [] for n in names}
    seed0_models: dict[str, TinyDetector] = {"dense": copy.deepcopy(base).cpu()}
    for seed in args.seeds:
        loader = DataLoader(train_set, batch_size=32, shuffle=True, collate_fn=collate_detection,
                            generator=torch.Generator().manual_seed(seed))
        for name in names:
            seed_everything(seed)
            t0 = time.perf_counter()
            kind, _, value = name.partition("_")
            hooks = []
            if kind == "dense":
                model = copy.deepcopy(base)
            elif kind == "unstructured":
                model = copy.deepcopy(base)
                masks = magnitude_masks(model, float(value), "global", include=hidden_layers)
                MaskHook(masks).apply(model)
                hooks = [MaskHook(masks)]
            elif kind == "structured":
                model = prune_detector(base, float(value), criterion="l1")
            elif kind == "global":
                model = prune_detector(base, float(value), criterion="l1", scope="global")
            else:  # slim: sparsify the BN scales first, then prune by |γ|
                model = finetune(copy.deepcopy(base), loader, args.epochs, args.lr, device,
                                 [SlimmingPenalty(args.slim_strength)])
                model = prune_detector(model, float(value), criterion="bn")
            before[name].append(score(model.to(device).eval()))
            model = finetune(model, loader, args.epochs, args.lr, device, hooks)
            after[name].append(score(model))
            extra = f", {sum(channel_counts(model).values())} channels" if kind in ("structured", "global", "slim") else ""
            extra += f", sparsity {sparsity(model, hidden_layers):.3f}" if kind == "unstructured" else ""
            print(f"seed {seed} {name:>18}: {count_parameters(model):>7,} params, val mAP {before[name][-1]:.4f} -> "
                  f"{after[name][-1]:.4f} after fine-tuning ({time.perf_counter() - t0:.0f} s{extra})", flush=True)
            if seed == args.seeds[0]:
                seed0_models[name] = model.cpu()
    args.out.mkdir(parents=True, exist_ok=True)

    summary = {n: {"before_ft": {"mean": float(np.mean(before[n])), "runs": before[n]},
                   "after_ft": {"mean": float(np.mean(after[n])), "std": float(np.std(after[n])), "runs": after[n]}}
               for n in names}
    cost = {}
    for name, model in seed0_models.items():
        raw, packed = checkpoint_bytes(model)
        cost[name] = {"parameters": count_parameters(model), "macs": count_flops(model),
                      "channels": sum(channel_counts(model).values()),
                      "nonzero_weights": int(sum((p != 0).sum() for p in model.parameters())),
                      "checkpoint_bytes": raw, "checkpoint_gzip_bytes": packed}
    if not args.skip_latency:
        timed = latencies(seed0_models, args.runs)
        for name in cost:
            cost[name]["latency_ms"] = {k: v["median_ms"] for k, v in timed[name].items()}
            print(f"{name:>18}: " + "  ".join(f"{k} {v:.2f} ms" for k, v in cost[name]["latency_ms"].items()), flush=True)
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "device": str(device), "torch": torch.__version__, "machine": platform.machine(),
        "dense": {"val_map": base_map},
        "val_map": summary,
        "cost_seed0": cost,
    }
    (args.out / "prune_sweep.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({n: round(s["after_ft"]["mean"], 4) for n, s in summary.items()}, indent=1))


if __name__ == "__main__":
    main()
