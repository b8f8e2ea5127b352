"""Knowledge distillation for the course detector: student alone vs each distillation term vs all.

Teacher: the converged ``TinyDetector(width=2)``, ``teacher_converged.pt`` (``train_tiny_detector.py --width 2
--epochs 24 48 --name teacher_converged``; 24 epochs, val mAP 0.893).
Student: ``TinyDetector(width=--student-width)`` trained from scratch with the standard
recipe (same data, epochs, learning rate as the fp32 detector), with these extra
loss terms (``course_utils.distill.Distiller``):

* ``student``  -- none (the baseline);
* ``cls``      -- soft targets on the dense class scores, foreground-weighted;
* ``box``      -- imitate the teacher's box offsets where it sees objects;
* ``feature``  -- imitate the teacher's neck features through a 1×1 adapter, on object regions;
* ``all``      -- the three together.

With ``--labeled N`` only the first N training images keep their labels (the
rest are unlabelled): the soft-target settings train on the N labelled images
(for as many steps as the full recipe), and two more settings use the others:

* ``pseudo``     -- the teacher's detections (score >= 0.5) on the unlabelled images as targets;
* ``pseudo_all`` -- the same plus the three soft terms.

Each over ``--seeds`` (data order and initialisation). The teacher's outputs are
computed once for the fixed training set (``cache_teacher_outputs``). Writes
``benchmarks/results/distill_sweep.json`` (``distill_sweep_labeled{N}.json`` with
``--labeled``) and the seed-0 students' checkpoints.

    python benchmarks/distill_sweep.py                    # 5 settings x 3 seeds, about 15 min on 2 CPU cores
    python benchmarks/distill_sweep.py --labeled 300 --configs student all pseudo pseudo_all
    python benchmarks/distill_sweep.py --seeds 0 --configs student all --out /tmp/kd   # a quick try
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
    CocoDetection, SyntheticShapes, TinyDetector, collate_detection, count_parameters, evaluate, fit, get_device,
    load_checkpoint, materialize, save_checkpoint, seed_everything,
)
from course_utils.distill import Distiller, cache_teacher_outputs, pseudo_label
from course_utils.metrics import seed_summary
from course_utils.train import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "student": {},
    "cls": {"cls": 1.0},
    "box": {"box": 1.0},
    "feature": {"feature": 1.0},
    "all": {"cls": 1.0, "box": 1.0, "feature": 1.0},
    "pseudo": {},
    "pseudo_all": {"cls": 1.0, "box": 1.0, "feature": 1.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--student-width", type=float, default=0.5)
    parser.add_argument("--teacher", type=Path, default=ROOT / "benchmarks" / "results" / "teacher_converged.pt")
    parser.add_argument("--teacher-width", type=float, default=2.0)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--lr", type=float, default=4e-3)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--kd-scale", type=float, default=1.0, help="multiply every distillation term's weight")
    parser.add_argument("--labeled", type=int, default=None, help="keep labels for only the first N training images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tag", default="", help="suffix for the JSON and checkpoint names (e.g. _weak_teacher)")
    parser.add_argument("--merge", action="store_true",
                        help="keep the other settings already in the JSON (same tag) and replace only those run now")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    teacher = TinyDetector(width=args.teacher_width)
    load_checkpoint(args.teacher, teacher)
    teacher = teacher.to(device).eval()
    val_loader = DataLoader(materialize(CocoDetection(ROOT / "data" / "val" / "annotations.json")), batch_size=50,
                            collate_fn=collate_detection)
    test_loader = DataLoader(materialize(CocoDetection(ROOT / "data" / "test" / "annotations.json")), batch_size=50,
                             collate_fn=collate_detection)  # choices on val; the comparisons are reported on test
    teacher_map = evaluate(teacher, val_loader, device)["map"]
    teacher_test_map = evaluate(teacher, test_loader, device)["map"]
    print(f"teacher (width {args.teacher_width}, {count_parameters(teacher):,} parameters): val mAP {teacher_map:.4f}, "
          f"test {teacher_test_map:.4f}", flush=True)

    start = time.perf_counter()
    train_set = cache_teacher_outputs(teacher, materialize(SyntheticShapes(args.train_images, seed=0)), device=device)
    cache_seconds = time.perf_counter() - start
    labeled = train_set if args.labeled is None else train_set[: args.labeled]
    pseudo = [] if args.labeled is None else pseudo_label(teacher, train_set[args.labeled:], score_threshold=0.5)
    steps_per_run = args.epochs * len(train_set)  # images seen per run: the same for every setting

    suffix = ("" if args.labeled is None else f"_labeled{args.labeled}") + args.tag
    json_path = args.out / f"distill_sweep{suffix}.json"
    runs: dict[str, list[float]] = {}
    test_runs: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}
    total_epochs: dict[str, int] = {}  # every student trains from scratch: its epochs are all its training
    for seed in args.seeds:
        for name in args.configs:
            seed_everything(seed)
            student = TinyDetector(width=args.student_width)
            data = labeled + pseudo if name.startswith("pseudo") else labeled
            if name.startswith("pseudo") and not pseudo:
                raise SystemExit("the pseudo settings need --labeled N (unlabelled images to pseudo-label)")
            epochs = max(1, round(steps_per_run / len(data)))
            total_epochs[name] = epochs
            loader = DataLoader(data, batch_size=32, shuffle=True, collate_fn=collate_detection,
                                generator=torch.Generator().manual_seed(seed))
            optimizer, scheduler = make_optimizer(student, lr=args.lr, total_steps=epochs * len(loader))
            weights = {term: w * args.kd_scale for term, w in CONFIGS[name].items()}
            hooks = [Distiller(teacher, weights, temperature=args.temperature)] if weights else []
            t0 = time.perf_counter()
            fit(student, loader, optimizer, epochs, device=device, hooks=hooks, scheduler=scheduler, progress=False)
            seconds.setdefault(name, []).append(round(time.perf_counter() - t0, 1))
            runs.setdefault(name, []).append(evaluate(student, val_loader, device)["map"])
            test_runs.setdefault(name, []).append(evaluate(student, test_loader, device)["map"])
            print(f"seed {seed} {name:>8}: val mAP {runs[name][-1]:.4f}  test {test_runs[name][-1]:.4f}  "
                  f"({seconds[name][-1]:.0f} s)", flush=True)
            if seed == args.seeds[0]:
                save_checkpoint(args.out / f"student_{name}{suffix}.pt", student.cpu(), config=name, seed=seed,
                                val_map=runs[name][-1])

    summary = {name: seed_summary(v) for name, v in runs.items()}
    test_summary = {name: seed_summary(v) for name, v in test_runs.items()}
    if args.merge and json_path.exists():  # settings run earlier with the same options stay
        old = json.loads(json_path.read_text())
        summary = {**{k: v for k, v in old["val_map"].items() if k not in summary}, **summary}
        test_summary = {**{k: v for k, v in old.get("test_map", {}).items() if k not in test_summary}, **test_summary}
        seconds = {**{k: v for k, v in old["train_seconds"].items() if k not in seconds}, **seconds}
        total_epochs = {**old.get("epochs", {}), **total_epochs}
    result = {
        "config": {k: (str(v.relative_to(ROOT)) if isinstance(v, Path) and v.is_relative_to(ROOT) else str(v) if isinstance(v, Path) else v)
                   for k, v in vars(args).items() if k not in ("out", "merge")},
        "terms": CONFIGS,
        "device": str(device), "torch": torch.__version__, "machine": platform.machine(),
        "teacher": {"width": args.teacher_width, "parameters": count_parameters(teacher), "val_map": teacher_map,
                    "test_map": teacher_test_map},
        "student_parameters": count_parameters(TinyDetector(width=args.student_width)),
        "teacher_cache_seconds": round(cache_seconds, 1),
        "splits": "every choice (a setting, a weight) is made on val; comparisons are reported on test",
        "val_map": summary,
        "test_map": test_summary,
        "epochs": total_epochs,
        "train_seconds": seconds,
    }
    result["config"]["configs"] = list(summary)
    if "student" in summary:
        gap = teacher_map - summary["student"]["mean"]
        result["gap_closed"] = {name: (s["mean"] - summary["student"]["mean"]) / gap if gap > 0 else float("nan")
                                for name, s in summary.items() if name != "student"}
    if "student" in test_summary:
        gap = teacher_test_map - test_summary["student"]["mean"]
        result["test_gap_closed"] = {name: (s["mean"] - test_summary["student"]["mean"]) / gap if gap > 0 else float("nan")
                                     for name, s in test_summary.items() if name != "student"}
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("val_map",) + (("gap_closed",) if "gap_closed" in result else ())}, indent=1))


if __name__ == "__main__":
    main()
