"""Does predicting from more pyramid levels help on large objects? ``TinyDetector(levels=1)`` vs ``levels=3``.

The course's detector predicts from one stride-8 map with 32-px anchors: its deepest features see about
135 px of input (theoretical receptive field), and only the few locations within 12 px of an object's
centre learn it. Objects much larger than 32 px are the case it was not built for. ``levels=3`` adds a
stride-16 and a stride-32 level (an extra backbone stage, 64- and 128-px anchors, one head per level),
and every ground-truth box is learned on the level whose anchor is nearest its size.

Data with large objects: synthetic scenes of 192 x 192 px with 1-3 objects of 32-176 px (by COCO's area
ranges, on val: 5 % small, 76 % medium, 20 % large), ``--train-images`` for training and 200 other
scenes for validation. Every variant trains from scratch with the same recipe (AdamW, one-cycle, peak
``--lr``, batch 32), the same data in the same order per seed, for the same ``--epochs``:

* ``levels1``: the default detector (415,511 parameters);
* ``levels3``: three levels (942,053 parameters);
* ``levels1_w1.5``: the default detector at width 1.5 (933,151 parameters) -- the parameter control:
  is a gain due to the levels, or only to having twice the parameters? (It costs 2.2x the default's
  multiply-adds, 1.9x those of ``levels3``.)
* ``levels1_w1.1``: the default detector at width 1.1 (200 M multiply-adds per 192-px image, as ``levels3``'s
  198 M) -- the compute control: is a gain due to the levels, or only to spending more compute?

Every run is scored on the val scenes (seeds from 900,000) and on 200 test scenes (seeds from 950,000) that
no choice was made on: comparisons are reported on test. Every mAP is the mean over ``--seeds`` (std with
ddof=1, n); differences from ``levels1`` carry a Welch 95 % interval. ``--check-epochs`` trains seed 0 of ``levels1`` and ``levels3`` for longer, to show
whether the schedule had converged. Writes ``benchmarks/results/<--name>.json``; each finished run is
also kept in ``build/multiscale_runs/`` (``--cache``), so an interrupted sweep resumes where it stopped.

The shipped files:

    # 16 epochs, all three variants, and the check at 32 epochs -- which showed 16 epochs too short
    python benchmarks/multiscale.py --epochs 16 --check-epochs 32 --name multiscale_16ep     # ~35 min on 2 cores
    # 32 epochs, all three variants, and the check at 64 epochs (the comparison notebook 10 reports)
    python benchmarks/multiscale.py                                                       # ~90 min on 2 cores
    python benchmarks/multiscale.py --seeds 0 --epochs 2 --train-images 64 --check-epochs 0 --out /tmp/ms   # a quick try
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from harness import RESULTS, run_info, seeded_loader, write_json

from course_utils import SyntheticShapes, TinyDetector, collate_detection, count_flops, count_parameters, fit, materialize, seed_everything
from course_utils.data import SceneConfig
from course_utils.metrics import mean_average_precision, seed_difference, seed_summary
from course_utils.train import make_optimizer, predict

#: the large-object scenes (train seeds from 0, val from 900_000, test from 950_000: never the same scene)
SCENES = SceneConfig(image_size=192, min_size=32, max_size=176, min_objects=1, max_objects=3)
VAL_SEED, TEST_SEED = 900_000, 950_000
VARIANTS = {"levels1": {"levels": 1, "width": 1.0}, "levels3": {"levels": 3, "width": 1.0},
            "levels1_w1.5": {"levels": 1, "width": 1.5}, "levels1_w1.1": {"levels": 1, "width": 1.1}}
MEANING = {"levels1": "one prediction level, the course's default", "levels3": "strides 8, 16 and 32",
           "levels1_w1.5": "one level at width 1.5: the parameter count of three levels",
           "levels1_w1.1": "one level at width 1.1: the multiply-adds of three levels"}
TABLE = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100", "mar_small", "mar_medium",
         "mar_large")


def size_mix(dataset: list) -> dict[str, Any]:
    """How many ground-truth boxes fall in each of COCO's area ranges (small < 32², medium < 96², large)."""
    areas = torch.cat([(t["boxes"][:, 2] - t["boxes"][:, 0]) * (t["boxes"][:, 3] - t["boxes"][:, 1]) for _, t in dataset])
    counts = {"small": int((areas < 32 ** 2).sum()), "medium": int(((areas >= 32 ** 2) & (areas < 96 ** 2)).sum()),
              "large": int((areas >= 96 ** 2).sum())}
    return {"boxes": len(areas), **counts, **{f"{k}_fraction": round(v / len(areas), 3) for k, v in counts.items()}}


def difference(a: list[float], b: list[float]) -> dict[str, Any]:
    """``seed_difference(a, b)``, or why there is none (e.g. a quick try whose every mAP is 0)."""
    try:
        return seed_difference(a, b)
    except ValueError as err:
        return {"not_computed": str(err)}


def _cached(job: dict[str, Any]) -> Path:
    """Where one finished run is kept, so an interrupted sweep starts again where it stopped."""
    return Path(job["cache"]) / f"{job['variant']}_seed{job['seed']}_{job['epochs']}ep_{job['train_images']}img.json"


def train_one(job: dict[str, Any]) -> dict[str, Any]:
    """One variant, one seed, from scratch; the full COCO table on val and on test at the end (on the CPU)."""
    if _cached(job).is_file():
        return json.loads(_cached(job).read_text())
    torch.set_num_threads(job["threads"])
    train_set = materialize(SyntheticShapes(job["train_images"], seed=0, config=SCENES), progress=False)
    val_loader = DataLoader(materialize(SyntheticShapes(200, seed=VAL_SEED, config=SCENES), progress=False),
                            batch_size=50, collate_fn=collate_detection)
    seed_everything(job["seed"])
    model = TinyDetector(**VARIANTS[job["variant"]])
    loader = seeded_loader(train_set, job["seed"], batch_size=32)
    optimizer, scheduler = make_optimizer(model, lr=job["lr"], total_steps=job["epochs"] * len(loader))
    start = time.perf_counter()
    history = fit(model, loader, optimizer, job["epochs"], device=torch.device("cpu"), scheduler=scheduler,
                  val_loader=val_loader, progress=False)
    seconds = time.perf_counter() - start
    preds, targets = predict(model.eval(), val_loader, torch.device("cpu"))
    table = mean_average_precision(preds, targets, areas=True)
    test_loader = DataLoader(materialize(SyntheticShapes(200, seed=TEST_SEED, config=SCENES), progress=False),
                             batch_size=50, collate_fn=collate_detection)
    test_table = mean_average_precision(*predict(model, test_loader, torch.device("cpu")), areas=True)
    print(f"{job['variant']} seed {job['seed']} {job['epochs']} ep: val mAP {table['map']:.4f}, AP_L "
          f"{table['map_large']:.4f}; test mAP {test_table['map']:.4f}, AP_L {test_table['map_large']:.4f} ({seconds:.0f} s)", flush=True)
    run = {**{k: v for k, v in job.items() if k != "cache"}, "parameters": count_parameters(model),
           "macs": count_flops(model, (SCENES.image_size, SCENES.image_size)),
           "seconds": round(seconds, 1), "val_map_curve": history["map"], **{k: float(table[k]) for k in TABLE},
           "test": {k: float(test_table[k]) for k in TABLE}}
    write_json(_cached(job), run)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=32, help="epochs of every variant (default 32)")
    parser.add_argument("--check-epochs", type=int, default=64,
                        help="the longer schedule for seed 0 of levels1 and levels3 (0: no check; default 64)")
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=4e-3, help="peak learning rate (the course detector's recipe)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (each with --threads threads)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--name", default="multiscale", help="writes OUT/NAME.json (default multiscale)")
    parser.add_argument("--cache", type=Path, default=RESULTS.parents[1] / "build" / "multiscale_runs",
                        help="finished runs are kept here (untracked); a run found there is not trained again")
    args = parser.parse_args()

    common = {"train_images": args.train_images, "lr": args.lr, "threads": args.threads, "cache": str(args.cache)}
    jobs = [{"variant": v, "seed": s, "epochs": args.epochs, **common} for v in args.variants for s in args.seeds]
    if args.check_epochs:
        jobs += [{"variant": v, "seed": args.seeds[0], "epochs": args.check_epochs, **common}
                 for v in ("levels1", "levels3") if v in args.variants]
    with mp.get_context("spawn").Pool(args.jobs) as pool:
        runs = pool.map(train_one, jobs, chunksize=1)

    main_runs = [r for r in runs if r["epochs"] == args.epochs]
    summary: dict[str, Any] = {}
    for v in args.variants:
        mine = [r for r in main_runs if r["variant"] == v]
        summary[v] = {"parameters": mine[0]["parameters"], "macs": mine[0]["macs"], "epochs": args.epochs,
                      **{k: seed_summary([r[k] for r in mine]) for k in TABLE},
                      "test": {k: seed_summary([r["test"][k] for r in mine]) for k in TABLE}}
        if v != "levels1" and "levels1" in args.variants and len(args.seeds) > 1:
            base = [r for r in main_runs if r["variant"] == "levels1"]
            summary[v]["minus_levels1"] = {k: difference([r[k] for r in mine], [r[k] for r in base])
                                           for k in ("map", "map_small", "map_medium", "map_large", "mar_100")}
            summary[v]["test_minus_levels1"] = {k: difference([r["test"][k] for r in mine], [r["test"][k] for r in base])
                                                for k in ("map", "map_small", "map_medium", "map_large", "mar_100")}
    check = {v: {"epochs": [args.epochs, args.check_epochs],
                 "val_map": [next(r["map"] for r in runs if r["variant"] == v and r["seed"] == args.seeds[0]
                                  and r["epochs"] == e) for e in (args.epochs, args.check_epochs)]}
             for v in ("levels1", "levels3") if args.check_epochs and v in args.variants}
    train_preview = materialize(SyntheticShapes(args.train_images, seed=0, config=SCENES), progress=False)
    val_preview = materialize(SyntheticShapes(200, seed=VAL_SEED, config=SCENES), progress=False)
    test_preview = materialize(SyntheticShapes(200, seed=TEST_SEED, config=SCENES), progress=False)
    out = {
        "description": (f"TinyDetector variants {', '.join(f'{v} ({MEANING[v]})' for v in args.variants)}, each "
                        f"trained from scratch for {args.epochs} epochs on {args.train_images} synthetic 192x192 scenes "
                        "with large objects, seeds " + ", ".join(map(str, args.seeds)) + "; COCO's full table on 200 "
                        "other scenes (val) and on 200 more (test, which no choice was made on)" + (f"; seed {args.seeds[0]} of levels1 and levels3 also for {args.check_epochs} "
                                          "epochs (the convergence check)" if args.check_epochs else "")
                        + ". Made by benchmarks/multiscale.py."),
        "scenes": {k: getattr(SCENES, k) for k in ("image_size", "min_size", "max_size", "min_objects", "max_objects")},
        "train_sizes": size_mix(train_preview), "val_sizes": size_mix(val_preview), "test_sizes": size_mix(test_preview),
        "recipe": f"AdamW + one-cycle (make_optimizer), peak lr {args.lr:g}, batch 32, {args.epochs} epochs, "
                  "the same data order per seed for every variant",
        "seeds": args.seeds, "summary": summary, "convergence_check": check, "runs": runs,
        **run_info(torch.device("cpu")),
    }
    path = write_json(args.out / f"{args.name}.json", out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
