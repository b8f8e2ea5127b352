"""Pruning the course detector: unstructured vs structured, accuracy vs size vs latency.

Starts from the trained fp32 detector (``tiny_detector.pt``) and, for each seed
(data order of the fine-tuning: every variant of a seed sees the same order, so a variant and
its control can be compared seed by seed, ``seed_difference(..., paired=True)``), compares:

* ``dense_ft``          -- no pruning, fine-tuned with the same recipe (the fair control);
* ``unstructured_S``    -- global magnitude pruning to sparsity S (output layers kept
                           dense), fine-tuned with the masks held (``MaskHook``);
* ``structured_K``      -- L1-norm channel pruning keeping K of every group's channels
                           (the layers physically shrink), then fine-tuned;
* ``global_K``          -- the same, but one threshold over all groups (L1 normalised per
                           group), so K of all channels survive, fewer where they matter less;
* ``bnscale_K``, ``folded_K``, ``random_K`` -- ``structured_K`` with other channel rankings:
                           ``|γ|`` of the BN after each conv, the L1 norm of the BN-folded filters,
                           and channels drawn at random (seeded by the run's seed) -- the control
                           every ranking must beat (``--controls`` adds all three);
* ``scratch_K``         -- ``structured_K``'s shape, re-initialised and trained from scratch with the
                           start model's recipe (one-cycle, its peak lr) for ``--scratch-epochs`` (default:
                           the start model's epochs + ``--epochs``, the pruned model's total): does
                           pruning a trained model beat training the small shape (Liu et al. 2019)?
* ``slim_K``            -- network slimming: fine-tune with an L1 penalty on the BN
                           scales first, prune by ``|γ|`` to K, then fine-tune (2 × ``--epochs`` in all);
* ``dense2x_ft``        -- slimming's equal-budget control: the dense model fine-tuned for
                           2 × ``--epochs`` (added whenever ``--slim-keep`` is given);
* ``iterative_K``       -- structured in two rounds: keep (1 + K) / 2, fine-tune half the
                           epochs, keep K, fine-tune the other half (same total training).

``--start`` picks the starting checkpoint (default: the course detector); ``--multiple-of M``
rounds the structured variants' channel counts to multiples of M (default 8 on every machine, so
that runs made on different CPUs can be merged; ``ort_block_size.py`` found multiples of 8 as fast
as multiples of ONNX Runtime's block of 16 on an AVX-512 CPU, notebook 07).
``--save-models DIR`` keeps the seed-0 models; ``--merge A.json B.json ...`` combines the
``val_map`` entries of several runs (e.g. one variant per process) into one file.

Every variant is scored on val before and after fine-tuning, and on test after it; ``total_epochs`` in the JSON gives each
variant's training epochs in all (the start model's plus its own). For seed 0 it also
measures, per variant: parameters, multiply-accumulates, checkpoint size (raw and
gzip-compressed), and the fp32 network's latency at batch 1 and 16 (BN folded;
eager PyTorch and ONNX Runtime, each timed on its own, ONNX Runtime first, the variants in
interleaved rounds; ``prune_sweep.json`` itself was timed before rounds existed, one pass).
Writes ``benchmarks/results/prune_sweep.json``.

    python benchmarks/prune_sweep.py                 # about 13 min on 2 CPU cores
    python benchmarks/prune_sweep.py --multiple-of 1 # prune_sweep.json: unrounded shapes (notebook 07 §4's 60 %)
    python benchmarks/prune_sweep.py --seeds 0 --skip-latency --out /tmp/prune   # a quick try
    python benchmarks/prune_sweep.py --sparsities 0.8 0.9 --keep 0.8 0.6 0.5 --global-keep 0.6 --slim-keep 0.6   # more variants

Notebook 07 §7b asks whether the results hold for a better-trained and for a wider detector::

    PARALLEL=2 bash benchmarks/prune_controls.sh   # notebook 07 §7: the converged detector, every control -> prune_controls.json
    PARALLEL=2 bash benchmarks/prune_converged.sh  # prune the width-1 detector after 6 more epochs -> prune_converged.json
    python benchmarks/prune_sweep.py --start benchmarks/results/teacher.pt --width 2 --multiple-of 8 \
        --keep 0.6 0.55 0.5 --name prune_teacher.json        # the width-2 teacher (~45 min on 2 cores)

``--skip-latency`` runs (e.g. on a GPU, whose timings say nothing about this CPU) can be completed
with ``--latency-only`` (no training: each variant's shape, timed here) and ``--merge``.
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

import numpy as np
import torch
from torch.utils.data import DataLoader

from course_utils import (
    CocoDetection, SyntheticShapes, TinyDetector, collate_detection, count_parameters, evaluate, fit, get_device,
    load_checkpoint, materialize, save_checkpoint, seed_everything,
)
from course_utils.deploy import DetectorNetwork, checkpoint_bytes, export_onnx, measure_interleaved, ort_nchwc_block_size, ort_session
from course_utils.prune import (
    MaskHook, SlimmingPenalty, channel_counts, count_flops, magnitude_masks, prune_detector, sparsity,
)
from course_utils.quant import fuse_conv_bn
from course_utils.metrics import seed_summary
from course_utils.train import make_optimizer

from harness import finetune

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_LAYERS = ("cls_out", "box_out")


def hidden_layers(name: str, module: torch.nn.Module) -> bool:
    """Unstructured pruning acts on every Conv2d except the two output layers (tiny, and they set the predictions)."""
    return isinstance(module, torch.nn.Conv2d) and name not in OUTPUT_LAYERS


def train_from_scratch(model: TinyDetector, loader: DataLoader, epochs: int, lr: float, device: torch.device) -> TinyDetector:
    """The start model's recipe (``make_optimizer``: AdamW, one-cycle, peak ``lr``) for ``epochs``: the same number
    of epochs as the pruned model had in all (Liu et al.'s "Scratch-E"; the smaller shape costs less per epoch)."""
    optimizer, scheduler = make_optimizer(model, lr, total_steps=epochs * len(loader))
    fit(model, loader, optimizer, epochs, device=device, scheduler=scheduler, progress=False)
    return model.eval()


#: structured variants that differ from ``structured_K`` only in how channels are ranked
RANKINGS = {"bnscale": "bn", "folded": "l1_folded", "random": "random"}


def latencies(models: dict[str, TinyDetector], runs: int, rounds: int = 3) -> dict[str, dict[str, dict[str, float]]]:
    """fp32 network latency (BN folded) at batch 1 and 16: ONNX Runtime for every model first, then eager PyTorch.

    Each runtime times all models in ``rounds`` interleaved rounds (a slow moment of the machine then
    hits every variant alike) and keeps the median round; each measurement runs >= ``runs`` calls and >= 0.5 s.
    """
    batches = {b: torch.rand(b, 3, 128, 128) for b in (1, 16)}
    networks = {name: DetectorNetwork(fuse_conv_bn(copy.deepcopy(m).cpu().eval())).eval() for name, m in models.items()}
    out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in models}
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name, net in networks.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                path = export_onnx(net, batches[1], Path(tmp) / f"{name}.onnx")
            sessions[name] = ort_session(path, threads=torch.get_num_threads())
        time.sleep(1.0)  # PyTorch's worker threads (busy exporting) must be idle: they would compete with ONNX Runtime's
        feeds = {(name, b): {s.get_inputs()[0].name: x.numpy()} for name, s in sessions.items() for b, x in batches.items()}
        timed = measure_interleaved({(name, b): (lambda s=s, f=feeds[name, b]: s.run(None, f))
                                     for name, s in sessions.items() for b in batches}, rounds, runs)
        for (name, b), result in timed.items():
            out[name][f"ort_batch{b}"] = result
        del sessions
    with torch.inference_mode():
        timed = measure_interleaved({(name, b): (lambda n=net, x=x: n(x)) for name, net in networks.items() for b, x in batches.items()},
                                    rounds, runs)
    for (name, b), result in timed.items():
        out[name][f"eager_batch{b}"] = result
    return out


def untrained_variant(base: TinyDetector, name: str, multiple_of: int) -> TinyDetector:
    """A variant's shape (and zeros) without any fine-tuning -- enough for size and latency, which do not depend on training."""
    kind, _, value = name.partition("_")
    if kind in ("dense", "dense2x"):
        return copy.deepcopy(base)
    if kind == "unstructured":
        model = copy.deepcopy(base)
        MaskHook(magnitude_masks(model, float(value), "global", include=hidden_layers)).apply(model)
        return model
    if kind in ("structured", "iterative", "scratch", *RANKINGS):  # these all end at the same counts
        return prune_detector(base, float(value), criterion="l1", multiple_of=multiple_of)
    if kind == "global":
        return prune_detector(base, float(value), criterion="l1", scope="global", multiple_of=multiple_of)
    raise ValueError(f"{name}: its shape depends on training (slimming); run without --latency-only")


def total_epochs(name: str, start_epochs: int | None, args: argparse.Namespace) -> int | None:
    """Training epochs in all of one variant: the start model's plus its own (None if the start's are unknown)."""
    kind = name.partition("_")[0]
    if kind == "scratch":
        return args.scratch_epochs
    if start_epochs is None:
        return None
    return start_epochs + (2 * args.epochs if kind in ("slim", "dense2x") else args.epochs)


def merge(paths: list[Path], out: Path, description: str | None = None) -> None:
    """Combine the ``val_map`` (and seed-0 ``cost_seed0``) entries of several runs; config and header from the first,
    ``config.seeds`` the union of all runs' seeds."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    result = runs[0]
    result["merged_from"] = [Path(p).name for p in paths]
    result["config"]["seeds"] = sorted({seed for r in runs for seed in r["config"]["seeds"]})
    result["config"]["name"] = out.name
    if description:
        result["description"] = description
    for path, other in zip(paths[1:], runs[1:]):
        if other["config"].get("multiple_of") != result["config"].get("multiple_of"):
            raise ValueError(f"{path} rounded channel counts to multiples of {other['config'].get('multiple_of')}, "
                             f"{paths[0]} to {result['config'].get('multiple_of')}: their shapes differ, so their "
                             "mAPs and latencies cannot be merged; re-run one with --multiple-of set to match")
        if other["dense"]["val_map"] != result["dense"]["val_map"]:
            print(f"warning: start models differ ({other['dense']['val_map']:.4f} vs {result['dense']['val_map']:.4f})")
        for name, entry in other["val_map"].items():
            if name in result["val_map"]:  # same variant, other seeds: pool the runs
                for stage in ("before_ft", "after_ft"):
                    pooled = result["val_map"][name][stage]["runs"] + entry[stage]["runs"]
                    result["val_map"][name][stage] = seed_summary(pooled)
            else:
                result["val_map"][name] = entry
        for name, entry in other.get("test_map", {}).items():
            mine = result.setdefault("test_map", {})
            mine[name] = {"after_ft": seed_summary(mine[name]["after_ft"]["runs"] + entry["after_ft"]["runs"])} if name in mine else entry
        result.setdefault("total_epochs", {}).update(other.get("total_epochs", {}))
        for name, entry in other.get("cost_seed0", {}).items():  # prefer entries that carry latencies
            if name not in result["cost_seed0"] or ("latency_ms" in entry and "latency_ms" not in result["cost_seed0"][name]):
                result["cost_seed0"][name] = entry
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({n: (round(s["after_ft"]["mean"], 4), len(s["after_ft"]["runs"])) for n, s in result["val_map"].items()}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sparsities", type=float, nargs="*", default=[0.8])
    parser.add_argument("--keep", type=float, nargs="*", default=[0.6, 0.5])
    parser.add_argument("--global-keep", type=float, nargs="*", default=[])
    parser.add_argument("--slim-keep", type=float, nargs="*", default=[])
    parser.add_argument("--slim-strength", type=float, default=1e-3)
    parser.add_argument("--iterative-keep", type=float, nargs="*", default=[])
    parser.add_argument("--bnscale-keep", type=float, nargs="*", default=[])
    parser.add_argument("--folded-keep", type=float, nargs="*", default=[])
    parser.add_argument("--random-keep", type=float, nargs="*", default=[])
    parser.add_argument("--scratch-keep", type=float, nargs="*", default=[])
    parser.add_argument("--controls", action="store_true",
                        help="for every --keep ratio also run bnscale_K, folded_K, random_K and scratch_K")
    parser.add_argument("--scratch-epochs", type=int, default=None,
                        help="training epochs of scratch_K (default: the start checkpoint's epochs + --epochs)")
    parser.add_argument("--multiple-of", type=int, default=8,
                        help="round structured channel counts to multiples of this (default 8, the same on every CPU: "
                             "ort_block_size.py measured multiples of 8 as fast as multiples of ONNX Runtime's block of "
                             f"{ort_nchwc_block_size()} on this CPU, which pads multiples of 4 up to its block)")
    parser.add_argument("--start", type=Path, default=ROOT / "benchmarks" / "results" / "tiny_detector.pt",
                        help="starting checkpoint (a TinyDetector state dict of width --width)")
    parser.add_argument("--width", type=float, default=1.0, help="width of the starting TinyDetector (2.0: the teacher)")
    parser.add_argument("--no-dense", action="store_true", help="skip the dense_ft control (e.g. when another process runs it)")
    parser.add_argument("--save-models", type=Path, default=None, help="save the seed-0 models as DIR/NAME.pt")
    parser.add_argument("--name", default="prune_sweep.json", help="output file name under --out")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, help="merge these result files into --out/--name and exit")
    parser.add_argument("--description", default=None, help="with --merge: a sentence saying how the runs were made")
    parser.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs after pruning")
    parser.add_argument("--lr", type=float, default=2e-3, help="fine-tuning: AdamW, cosine decay from lr, no warm-up")
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=50, help="timed runs per latency measurement")
    parser.add_argument("--latency-rounds", type=int, default=3, help="interleaved timing rounds (median kept)")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--latency-only", action="store_true",
                        help="no fine-tuning or scoring: size and latency of each variant's shape (merge with a training run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, args.out / args.name, args.description)
        return

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    base = TinyDetector(width=args.width)
    load_checkpoint(args.start, base)
    base.eval()
    val_loader = DataLoader(materialize(CocoDetection(ROOT / "data" / "val" / "annotations.json")), batch_size=50,
                            collate_fn=collate_detection)
    test_loader = DataLoader(materialize(CocoDetection(ROOT / "data" / "test" / "annotations.json")), batch_size=50,
                             collate_fn=collate_detection)  # choices on val; the comparisons are reported on test
    score = lambda m: evaluate(m, val_loader, device)["map"]  # noqa: E731
    test_score = lambda m: evaluate(m, test_loader, device)["map"]  # noqa: E731
    base_map = score(base.to(device))
    base_test_map = test_score(base)
    print(f"fp32 detector: val mAP {base_map:.4f}, {count_parameters(base):,} parameters", flush=True)
    train_set = materialize(SyntheticShapes(args.train_images, seed=0))

    if args.controls:
        for option in ("bnscale_keep", "folded_keep", "random_keep", "scratch_keep"):
            setattr(args, option, sorted(set(getattr(args, option)) | set(args.keep)))
    start_config = load_checkpoint(args.start)["metadata"].get("config")
    start_config = start_config if isinstance(start_config, dict) else {}
    args.scratch_lr = start_config.get("lr", 4e-3)  # the start model's peak learning rate
    if args.scratch_epochs is None:
        start_epochs = start_config.get("epochs")
        if args.scratch_keep and start_epochs is None:
            parser.error(f"{args.start} does not record its training epochs: give --scratch-epochs")
        args.scratch_epochs = (start_epochs or 0) + args.epochs
    names = ([] if args.no_dense else ["dense_ft"]) + (["dense2x_ft"] if args.slim_keep else []) + ([f"unstructured_{s:g}" for s in args.sparsities] + [f"structured_{k:g}" for k in args.keep]
             + [f"global_{k:g}" for k in args.global_keep] + [f"slim_{k:g}" for k in args.slim_keep]
             + [f"iterative_{k:g}" for k in args.iterative_keep] + [f"bnscale_{k:g}" for k in args.bnscale_keep]
             + [f"folded_{k:g}" for k in args.folded_keep] + [f"random_{k:g}" for k in args.random_keep]
             + [f"scratch_{k:g}" for k in args.scratch_keep])
    before: dict[str, list[float]] = {n: [] for n in names}
    after: dict[str, list[float]] = {n: [] for n in names}
    after_test: dict[str, list[float]] = {n: [] for n in names}
    seed0_models: dict[str, TinyDetector] = {"dense": copy.deepcopy(base).cpu()}
    for seed in [] if args.latency_only else args.seeds:
        for name in names:
            seed_everything(seed)  # every variant of a seed sees the same data order: comparisons are paired by seed
            loader = DataLoader(train_set, batch_size=32, shuffle=True, collate_fn=collate_detection,
                                generator=torch.Generator().manual_seed(seed))
            t0 = time.perf_counter()
            kind, _, value = name.partition("_")
            hooks = []
            if kind in ("dense", "dense2x"):
                model = copy.deepcopy(base)
            elif kind == "unstructured":
                model = copy.deepcopy(base)
                masks = magnitude_masks(model, float(value), "global", include=hidden_layers)
                MaskHook(masks).apply(model)
                hooks = [MaskHook(masks)]
            elif kind == "structured":
                model = prune_detector(base, float(value), criterion="l1", multiple_of=args.multiple_of)
            elif kind == "global":
                model = prune_detector(base, float(value), criterion="l1", scope="global", multiple_of=args.multiple_of)
            elif kind in RANKINGS:
                model = prune_detector(base, float(value), criterion=RANKINGS[kind], multiple_of=args.multiple_of, seed=seed)
            elif kind == "scratch":  # the same shape, new weights (seeded), the whole budget from scratch
                model = prune_detector(base, float(value), criterion="l1", multiple_of=args.multiple_of).reset_parameters()
            elif kind == "iterative":  # first cut to (1 + K) / 2, recover, then cut to K (the second fine-tune is below)
                half = (1 + float(value)) / 2
                model = prune_detector(base, half, criterion="l1", multiple_of=args.multiple_of)
                model = finetune(model, loader, args.epochs // 2, args.lr, device)
                model = prune_detector(model.cpu(), float(value) / half, criterion="l1", multiple_of=args.multiple_of)
            else:  # slim: sparsify the BN scales first, then prune by |γ|
                model = finetune(copy.deepcopy(base), loader, args.epochs, args.lr, device,
                                 [SlimmingPenalty(args.slim_strength)])
                model = prune_detector(model, float(value), criterion="bn", multiple_of=args.multiple_of)
            before[name].append(score(model.to(device).eval()))
            if kind == "scratch":
                model = train_from_scratch(model, loader, args.scratch_epochs, args.scratch_lr, device)
            else:
                epochs = {"iterative": args.epochs - args.epochs // 2, "dense2x": 2 * args.epochs}.get(kind, args.epochs)
                model = finetune(model, loader, epochs, args.lr, device, hooks)
            after[name].append(score(model))
            after_test[name].append(test_score(model))
            extra = f", {sum(channel_counts(model).values())} channels" if kind not in ("dense", "dense2x", "unstructured") else ""
            extra += f", sparsity {sparsity(model, hidden_layers):.3f}" if kind == "unstructured" else ""
            print(f"seed {seed} {name:>18}: {count_parameters(model):>7,} params, val mAP {before[name][-1]:.4f} -> "
                  f"{after[name][-1]:.4f} after fine-tuning (test {after_test[name][-1]:.4f}; {time.perf_counter() - t0:.0f} s{extra})", flush=True)
            if seed == args.seeds[0]:
                seed0_models[name] = model.cpu()
    if args.latency_only:
        seed0_models.update({name: untrained_variant(base.cpu(), name, args.multiple_of) for name in names if name != "dense_ft"})
        names = []
    args.out.mkdir(parents=True, exist_ok=True)
    if args.save_models is not None:
        for name, model in seed0_models.items():
            save_checkpoint(args.save_models / f"{name}.pt", model, channels=channel_counts(model))

    summary = {n: {"before_ft": {"mean": float(np.mean(before[n])), "runs": before[n]},
                   "after_ft": seed_summary(after[n])}
               for n in names}
    test_summary = {n: {"after_ft": seed_summary(after_test[n])} for n in names}
    cost = {}
    for name, model in seed0_models.items():
        raw, packed = checkpoint_bytes(model)
        cost[name] = {"parameters": count_parameters(model), "macs": count_flops(model),
                      "channels": sum(channel_counts(model).values()),
                      "nonzero_weights": int(sum((p != 0).sum() for p in model.parameters())),
                      "checkpoint_bytes": raw, "checkpoint_gzip_bytes": packed}
    if not args.skip_latency:
        timed = latencies(seed0_models, args.runs, args.latency_rounds)
        for name in cost:
            cost[name]["latency_ms"] = {k: v["median_ms"] for k, v in timed[name].items()}
            print(f"{name:>18}: " + "  ".join(f"{k} {v:.2f} ms" for k, v in cost[name]["latency_ms"].items()), flush=True)
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "device": str(device), "torch": torch.__version__, "machine": platform.machine(),
        "splits": "every choice (a ranking, a keep ratio) is made on val; comparisons are reported on test",
        "dense": {"val_map": base_map, "test_map": base_test_map, "start": str(args.start.resolve().relative_to(ROOT)) if args.start.resolve().is_relative_to(ROOT) else str(args.start)},
        "val_map": summary,
        "test_map": test_summary,
        "total_epochs": {n: total_epochs(n, start_config.get("epochs"), args) for n in names},
        "cost_seed0": cost,
    }
    (args.out / args.name).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({n: round(s["after_ft"]["mean"], 4) for n, s in summary.items()}, indent=1))


if __name__ == "__main__":
    main()
