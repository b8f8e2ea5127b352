"""The capstone: walk the converged detector down the whole path, and judge every step against its control.

Start from the two converged checkpoints:

* ``teacher`` -- ``TinyDetector(width=2)``, ``teacher_converged.pt`` (24 epochs; the model to beat);
* ``student`` -- ``TinyDetector(width=1)``, ``tiny_detector_converged.pt`` (48 epochs).

Then three steps, each starting from the previous step's model, on the same 2,000 training images
with the same fine-tuning recipe (AdamW, cosine decay from ``--lr``, no warm-up), and each with an
**equal-budget control** -- the same extra epochs from the same start, without the step's method:

=============  ===================================================  =======================================
step           method                                               control (same epochs, same start)
=============  ===================================================  =======================================
1 distill      +E epochs with the teacher's three KD terms          ``distill_control``: +E epochs, no teacher
2 prune        keep ``--keep`` of every channel group (L1, counts   ``prune_control``: +E epochs with KD,
               rounded to ``--multiple-of``), +E epochs with KD     unpruned
3 quantize     +Q epochs of 8-bit QAT with KD, then int8 ONNX       ``qat_control``: +Q float epochs with KD;
               Runtime with QAT's own scales (``int8``)             ``ptq_int8`` is that control converted
                                                                    to int8 without QAT (calibrated)
=============  ===================================================  =======================================

E = ``--epochs`` (6), Q = ``--qat-epochs`` (2). Every variant's total epochs are recorded. Two shortcuts are
measured beside the path: ``distilled_int8`` (the distilled model converted to int8 without pruning or QAT)
and ``student_int8`` (the converged student converted directly).

Two stages, so the training can run one seed per process and the timing on a quiet machine:

* ``train --seed S`` runs the three steps for one seed (data order; pruning and quantization are
  deterministic) and scores every variant on val and test (``capstone_seed{S}.json``); seed 0 also
  saves its models (``capstone_distilled.pt``, ``capstone_pruned.pt``, ``capstone_int8.onnx``).
* ``measure`` merges the seeds (mean, std with ddof = 1, Welch interval of every step against its
  control), adds an image-level bootstrap CI for seed 0's models and a paired one against the teacher,
  measures size (the deployable ONNX file), parameters, multiply-adds, and latency end to end
  (network + decode + NMS) and of the network alone, at batch 1 and 16, every model and runtime (eager
  PyTorch, torch.compile for the fp32 models, ONNX Runtime, OpenVINO; OpenVINO bf16 too where the CPU has it) in interleaved rounds (median
  round, with p10/p90), and judges the goals: >= 10x smaller on disk,
  >= 5x faster end to end at batch 16 than the fastest fp32 teacher (paired over the rounds), <= 3 mAP
  points below it -- on val (where the path is chosen) and on test (where it is reported).
  Writes ``capstone.json``.

    python benchmarks/capstone.py                      # all seeds, then measure: about 40 min on 2 CPU cores
    python benchmarks/capstone.py train --seed 1 --threads 1
    python benchmarks/capstone.py measure --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from course_utils import SyntheticShapes, TinyDetector, collate_detection, count_parameters, evaluate, get_device, load_checkpoint, \
    materialize, save_checkpoint, seed_everything
from course_utils.deploy import DetectorNetwork, OrtDetector, cpu_int8_features, export_onnx, file_size, measure_interleaved, \
    openvino_session, ort_session, paired_speedup, quantize_onnx
from course_utils.distill import Distiller, cache_teacher_outputs
from course_utils.metrics import bootstrap_map, mean_average_precision, paired_bootstrap_map, seed_difference, seed_summary
from course_utils.prune import count_flops, prune_detector, shrink_to_state_dict
from course_utils.quant import QATSchedule, calibrate, export_qdq, fuse_conv_bn, integer_detector, prepare_qat
from course_utils.train import predict

from harness import RESULTS, finetune, run_info, split_loader, write_json

TEACHER_EPOCHS, STUDENT_EPOCHS = 24, 48  # the converged checkpoints' schedules (train_tiny_detector.py)
KD_ALL = {"cls": 1.0, "box": 1.0, "feature": 1.0}
KD_OUTPUTS = {"cls": 1.0, "box": 1.0}  # QAT: the feature term would need a new adapter for the quantized features
#: variant -> (what it is, the step's control or None)
VARIANTS = {
    "teacher": ("width-2 detector, fp32", None),
    "student": ("width-1 detector, fp32", None),
    "distill_control": ("student + E epochs, no teacher", None),
    "distilled": ("student + E epochs with the teacher's KD terms", "distill_control"),
    "prune_control": ("distilled + E epochs with KD, unpruned", None),
    "pruned": ("distilled, channels pruned, + E epochs with KD", "prune_control"),
    "qat_control": ("pruned + Q float epochs with KD (fp32)", None),
    "ptq_int8": ("qat_control converted to int8 (ONNX Runtime, no QAT)", None),
    "int8": ("pruned + Q epochs of 8-bit QAT with KD, int8 ONNX Runtime with QAT's own scales", "qat_control"),
    "distilled_int8": ("distilled converted to int8 (ONNX Runtime, no QAT): the path without pruning", None),
}


def total_epochs(args: argparse.Namespace) -> dict[str, int]:
    e, q = args.epochs, args.qat_epochs
    return {"teacher": TEACHER_EPOCHS, "student": STUDENT_EPOCHS, "distill_control": STUDENT_EPOCHS + e, "distilled": STUDENT_EPOCHS + e,
            "prune_control": STUDENT_EPOCHS + 2 * e, "pruned": STUDENT_EPOCHS + 2 * e,
            "qat_control": STUDENT_EPOCHS + 2 * e + q, "ptq_int8": STUDENT_EPOCHS + 2 * e + q, "int8": STUDENT_EPOCHS + 2 * e + q,
            "distilled_int8": STUDENT_EPOCHS + e}


def load_start(device: torch.device) -> tuple[TinyDetector, TinyDetector]:
    teacher, student = TinyDetector(width=2.0), TinyDetector(width=1.0)
    load_checkpoint(RESULTS / "teacher_converged.pt", teacher)
    load_checkpoint(RESULTS / "tiny_detector_converged.pt", student)
    return teacher.to(device).eval(), student.to(device).eval()


def calibration_images() -> torch.Tensor:
    """64 training-distribution scenes, disjoint from the training set's seed: what int8 calibrates on."""
    return torch.stack([img for img, _ in materialize(SyntheticShapes(64, seed=123), progress=False)])


def export_int8(float_model: torch.nn.Module, path: Path) -> Path:
    """BN-folded float model -> ONNX -> ONNX Runtime static int8, calibrated (post-training: notebook 05's path)."""
    calib = calibration_images()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32 = export_onnx(DetectorNetwork(float_model.cpu().eval()), calib[:2], Path(tmp) / "fp32.onnx")
        return quantize_onnx(fp32, path, calib)


def export_fp32(model: TinyDetector, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_onnx(DetectorNetwork(fuse_conv_bn(copy.deepcopy(model).cpu().eval())).eval(), calibration_images()[:2], path)


def train_seed(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = get_device(args.device)
    teacher, student = load_start(device)
    train_set = cache_teacher_outputs(teacher, materialize(SyntheticShapes(2000, seed=0), progress=False), device=device)
    splits = {"val": split_loader("val"), "test": split_loader("test")}
    e, q, seed = args.epochs, args.qat_epochs, args.seed

    def loader() -> DataLoader:  # the same data order for a method and its control
        return DataLoader(train_set, batch_size=32, shuffle=True, collate_fn=collate_detection,
                          generator=torch.Generator().manual_seed(seed))

    def step(start: torch.nn.Module, epochs: int, lr: float, kd: dict[str, float] | None, extra_hooks=()) -> torch.nn.Module:
        seed_everything(seed)
        hooks = list(extra_hooks) + ([Distiller(teacher, kd, temperature=2.0)] if kd else [])
        return finetune(copy.deepcopy(start).to(device), loader(), epochs, lr, device, hooks)

    def score(model: torch.nn.Module) -> dict[str, float]:
        on = torch.device("cpu") if isinstance(model, OrtDetector) else device  # ONNX Runtime models run on the CPU
        return {f"{split}_map": evaluate(model, data, on)["map"] for split, data in splits.items()}

    models: dict[str, torch.nn.Module] = {}
    scores: dict[str, dict[str, float]] = {}
    seconds: dict[str, float] = {}

    def record(name: str, model: torch.nn.Module, t0: float) -> None:
        seconds[name] = round(time.perf_counter() - t0, 1)
        models[name], scores[name] = model, score(model)
        print(f"seed {seed} {name:>16}: val {scores[name]['val_map']:.4f}  test {scores[name]['test_map']:.4f}  "
              f"({seconds[name]:.0f} s)", flush=True)

    t0 = time.perf_counter(); record("distill_control", step(student, e, args.lr, None), t0)
    t0 = time.perf_counter(); record("distilled", step(student, e, args.lr, KD_ALL), t0)
    work = Path(tempfile.mkdtemp(prefix="capstone_"))

    def to_int8(name: str, source: str) -> None:
        t0 = time.perf_counter()
        path = export_int8(fuse_conv_bn(copy.deepcopy(models[source]).cpu().eval()), work / f"{name}.onnx")
        record(name, OrtDetector(ort_session(path, threads=args.threads), models[source].cpu()), t0)

    to_int8("distilled_int8", "distilled")
    if args.add_shortcut:  # an older seed file: add the shortcut, after checking this rerun reproduced its distilled model
        path = args.out / f"capstone_seed{seed}.json"
        old = json.loads(path.read_text())
        if old["scores"]["distilled"] != scores["distilled"]:
            raise SystemExit(f"seed {seed}: the rerun's distilled model scores {scores['distilled']}, the file says "
                             f"{old['scores']['distilled']}: training is not reproducible here, re-run the whole seed")
        old["scores"]["distilled_int8"] = scores["distilled_int8"]
        old["train_seconds"]["distilled_int8"] = seconds["distilled_int8"]
        write_json(path, old)
        return
    t0 = time.perf_counter(); record("prune_control", step(models["distilled"], e, args.lr, KD_ALL), t0)
    t0 = time.perf_counter()
    cut = prune_detector(copy.deepcopy(models["distilled"]).cpu(), args.keep, criterion="l1", multiple_of=args.multiple_of)
    record("pruned", step(cut, e, args.lr, KD_ALL), t0)
    t0 = time.perf_counter(); record("qat_control", step(models["pruned"], q, args.qat_lr, KD_OUTPUTS), t0)

    t0 = time.perf_counter()
    calib = calibration_images().to(device)
    qat = calibrate(prepare_qat(copy.deepcopy(models["pruned"]).to(device), weight_bits=8, act_bits=8),
                    [calib[i:i + 16] for i in range(0, len(calib), 16)], lambda m, b: m.forward_raw(b))
    qat = step(qat, q, args.qat_lr, KD_OUTPUTS, [QATSchedule(freeze_bn_epoch=1, freeze_observer_epoch=1)])
    # deployed with the scales QAT trained with (notebook 09), not re-calibrated: the int8 model is the one QAT trained
    int8_path = export_qdq(integer_detector(qat.cpu().eval(), calibration_images()),
                           (args.out if seed == 0 else work) / ("capstone_int8.onnx" if seed == 0 else "int8.onnx"))
    record("int8", OrtDetector(ort_session(int8_path, threads=args.threads), models["pruned"].cpu()), t0)
    to_int8("ptq_int8", "qat_control")

    if seed == 0:
        for name in ("distilled", "pruned"):
            save_checkpoint(args.out / f"capstone_{name}.pt", models[name].cpu(), seed=seed, val_map=scores[name]["val_map"],
                            keep_ratio=args.keep if name == "pruned" else 1.0, total_epochs=total_epochs(args)[name])
    write_json(args.out / f"capstone_seed{seed}.json",
               {"seed": seed, "scores": scores, "train_seconds": seconds, "config": config_of(args), **run_info(device)})


def config_of(args: argparse.Namespace) -> dict:
    return {k: v for k, v in vars(args).items() if k in ("keep", "multiple_of", "epochs", "qat_epochs", "lr", "qat_lr")}


def measure(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")  # deployment target: the CPU
    teacher, student = load_start(device)
    per_seed = [json.loads((args.out / f"capstone_seed{s}.json").read_text()) for s in args.seeds]
    for run in per_seed:
        if run["config"] != config_of(args):
            raise SystemExit(f"capstone_seed{run['seed']}.json was trained with {run['config']}, not {config_of(args)}: "
                             "re-run its train stage with the same options")
    state = load_checkpoint(args.out / "capstone_pruned.pt")["model"]
    pruned = shrink_to_state_dict(TinyDetector(width=1.0), state)
    pruned.load_state_dict(state)
    distilled = TinyDetector(width=1.0)
    load_checkpoint(args.out / "capstone_distilled.pt", distilled)
    fp32 = {"teacher": teacher, "student": student, "distilled": distilled.eval(), "pruned": pruned.eval()}
    val, test = split_loader("val"), split_loader("test")  # loaded once
    epochs = total_epochs(args)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        onnx = {name: export_fp32(model, work / f"{name}.onnx") for name, model in fp32.items()}
        onnx["int8"] = args.out / "capstone_int8.onnx"
        onnx["student_int8"] = export_int8(fuse_conv_bn(copy.deepcopy(student).eval()), work / "student_int8.onnx")
        onnx["distilled_int8"] = export_int8(fuse_conv_bn(copy.deepcopy(distilled).eval()), work / "distilled_int8.onnx")
        arch = {**fp32, "int8": pruned, "student_int8": student, "distilled_int8": distilled}  # the architecture each int8 model runs
        sessions = {name: ort_session(path, threads=args.threads) for name, path in onnx.items()}
        # OpenVINO reads the same files: fp32 (and bf16 where the CPU has bf16 instructions) for the float models,
        # the int8 QDQ files as int8 (their few float layers in fp32)
        bf16 = cpu_int8_features()["bf16"]
        ov = {(name, "openvino"): openvino_session(path, threads=args.threads) for name, path in onnx.items()}
        ov.update({(name, "openvino_bf16"): openvino_session(path, threads=args.threads, precision="bf16")
                   for name, path in onnx.items() if bf16 and not name.endswith("int8")})

        # accuracy of the deployable models (seed 0), on val and on test: bootstrap CI per model, paired against the
        # teacher, and paired between every two models (what the noise-aware Pareto front compares)
        preds, targets = {"val": {}, "test": {}}, {}
        for name in onnx:
            model = OrtDetector(sessions[name], arch[name]) if name.endswith("int8") else arch[name]
            for split, data in (("val", val), ("test", test)):
                preds[split][name], targets[split] = predict(model, data, device)
        variants: dict[str, dict] = {}
        for name in onnx:
            variants[name] = {"parameters": count_parameters(arch[name]), "macs": count_flops(arch[name]), "onnx_bytes": file_size(onnx[name])}
            for split in ("val", "test"):
                p, t = preds[split], targets[split]
                variants[name].update({
                    f"{split}_map_seed0": mean_average_precision(p[name], t)["map"],
                    f"{split}_bootstrap": bootstrap_map(p[name], t, n_boot=args.n_boot),
                    f"{split}_vs_teacher_paired": None if name == "teacher" else paired_bootstrap_map(p[name], p["teacher"], t, n_boot=args.n_boot),
                })
        for (name, runtime), session in ov.items():  # the same model in OpenVINO: its test mAP, paired against the above
            p_ov, _ = predict(OrtDetector(session, arch[name]), test, device)
            variants[name][f"{runtime}_test_map_seed0"] = mean_average_precision(p_ov, targets["test"])["map"]
            variants[name][f"{runtime}_test_minus_default_paired"] = paired_bootstrap_map(
                p_ov, preds["test"][name], targets["test"], n_boot=args.n_boot)
        paired_test = {a: {b: paired_bootstrap_map(preds["test"][a], preds["test"][b], targets["test"], n_boot=args.n_boot)
                           for b in onnx if b != a} for a in onnx}
        variants["student_int8"].update(description="student converted to int8 (ONNX Runtime, no QAT, unpruned)",
                                        total_epochs=STUDENT_EPOCHS, control=None, val_map=variants["student_int8"]["val_map_seed0"],
                                        test_map=variants["student_int8"]["test_map_seed0"])

        # latency: end to end (network + decode + NMS) and the network alone, every model and runtime interleaved.
        # Two thread pools on one small CPU fight: PyTorch's post-processing after an ONNX Runtime call runs with
        # one thread (ONNX Runtime keeps its ``--threads``); eager PyTorch runs everything with ``--threads``.
        # ``pitfall`` times the int8 pipeline once more with PyTorch's post-processing on ``--threads`` too.
        images = torch.stack([img for img, _ in materialize(SyntheticShapes(16, seed=7), progress=False)])
        fns = {}
        for name in onnx:
            for b in (1, 16):
                feed = {"images": images[:b].numpy()}
                fns[name, "ort", "network", b] = with_threads(1, lambda s=sessions[name], f=feed: s.run(None, f))
                fns[name, "ort", "end_to_end", b] = with_threads(1, lambda m=OrtDetector(sessions[name], arch[name]), x=images[:b]: m(x))
        for (name, runtime), session in ov.items():
            for b in (1, 16):
                feed = {"images": images[:b].numpy()}
                fns[name, runtime, "network", b] = with_threads(1, lambda s=session, f=feed: s.run(None, f))
                fns[name, runtime, "end_to_end", b] = with_threads(1, lambda m=OrtDetector(session, arch[name]), x=images[:b]: m(x))
        fns["int8", "pitfall", "end_to_end", 16] = with_threads(args.threads, lambda m=OrtDetector(sessions["int8"], pruned), x=images: m(x))
        eager = {name: fuse_conv_bn(copy.deepcopy(m)).eval() for name, m in fp32.items()}
        for name, model in eager.items():
            for b in (1, 16):
                fns[name, "eager", "network", b] = with_threads(args.threads, lambda m=model, x=images[:b]: m.forward_raw(x))
                fns[name, "eager", "end_to_end", b] = with_threads(args.threads, lambda m=model, x=images[:b]: m(x))
        for name, model in eager.items():  # torch.compile (inductor, freezing): often the fastest fp32 path (notebook 05)
            net = compiled_network(model, images)
            for b in (1, 16):
                fns[name, "compile", "network", b] = with_threads(args.threads, lambda n=net, x=images[:b]: n(x))
                fns[name, "compile", "end_to_end", b] = with_threads(args.threads, lambda n=net, m=model, x=images[:b]:
                                                                     compiled_end_to_end(n, m, x))
        time.sleep(1.0)  # let the worker threads that scored the models go idle
        with torch.inference_mode():
            timed = measure_interleaved(fns, rounds=args.rounds, runs=args.runs, min_seconds=1.0)
        torch.set_num_threads(args.threads)

    pitfall = timed.pop(("int8", "pitfall", "end_to_end", 16))
    for (name, runtime, what, b), t in timed.items():
        variants[name].setdefault(f"{runtime}_ms", {}).setdefault(what, {})[f"batch{b}"] = rounded(t)
    variants["int8"]["pitfall_torch_threads_ms"] = {"end_to_end": {"batch16": rounded(pitfall)},
                                                    "torch_threads": args.threads}
    for name, entry in variants.items():  # the fastest runtime per batch size and measure, in the model's own precision
        for key, runtimes in (("fastest", ("ort_ms", "eager_ms", "compile_ms", "openvino_ms")),  # fp32 models: fp32; int8: int8
                              ("fastest_float", ("ort_ms", "eager_ms", "compile_ms", "openvino_ms", "openvino_bf16_ms"))):  # + bf16
            found = [r for r in runtimes if r in entry]
            entry[f"{key}_ms"] = {what: {b: min((entry[r][what][b] for r in found), key=lambda t: t["median_ms"])
                                         for b in ("batch1", "batch16")} for what in ("network", "end_to_end")}
            entry[f"{key}_runtime"] = {what: {b: min(found, key=lambda r: entry[r][what][b]["median_ms"]).removesuffix("_ms")
                                              for b in ("batch1", "batch16")} for what in ("network", "end_to_end")}

    # the seeds: every variant's spread, every step against its control
    for name in VARIANTS:
        runs = {split: [run["scores"][name][f"{split}_map"] for run in per_seed] if name not in ("teacher", "student") else None
                for split in ("val", "test")}
        entry = variants.setdefault(name, {})
        entry.update(description=VARIANTS[name][0].replace("E epochs", f"{args.epochs} epochs").replace("Q epochs", f"{args.qat_epochs} epochs")
                     .replace("Q float", f"{args.qat_epochs} float"),
                     total_epochs=epochs[name], control=VARIANTS[name][1])
        if runs["val"] is None:  # a shipped checkpoint: one model, its noise is the bootstrap CI
            entry.update(val_map=entry["val_map_seed0"], test_map=entry["test_map_seed0"])
        else:
            entry.update(val_map=seed_summary(runs["val"])["mean"], test_map=seed_summary(runs["test"])["mean"],
                         val_seeds=seed_summary(runs["val"]), test_seeds=seed_summary(runs["test"]))
    def step_difference(a: str, b: str) -> dict:
        """a minus b over the seeds, on each split: Welch's interval, and the paired one (a method and its control
        share each seed's start and data order, so the seed-by-seed differences are the measurement)."""
        return {split: {"welch": seed_difference(variants[a][f"{split}_seeds"]["runs"], variants[b][f"{split}_seeds"]["runs"]),
                        "paired": seed_difference(variants[a][f"{split}_seeds"]["runs"], variants[b][f"{split}_seeds"]["runs"], paired=True)}
                for split in ("val", "test")}

    if len(args.seeds) > 1:
        for name, (_, control) in VARIANTS.items():
            if control:
                variants[name]["vs_control"] = step_difference(name, control)
        variants["ptq_int8"]["vs_int8"] = step_difference("ptq_int8", "int8")
        variants["distilled_int8"]["vs_distilled"] = step_difference("distilled_int8", "distilled")
    goals = {name: {split: judge_goals(variants["teacher"], variants[name], split) for split in ("val", "test")}
             for name in ("int8", "distilled_int8", "student_int8")}
    result = {
        "description": ("The capstone from the converged detectors: each step (distillation, channel pruning, 8-bit QAT + int8 "
                        "with QAT's own scales) starts from the previous step's model and is compared with its equal-budget control "
                        f"(same extra epochs from the same start); {len(args.seeds)} seeds per trained variant (val_seeds, test_seeds; "
                        "ddof = 1; vs_control: Welch and paired intervals of the difference, on val and on test), and an image-level "
                        "bootstrap CI of seed 0's deployable model (val_bootstrap, test_bootstrap; *_vs_teacher_paired: paired "
                        "against the teacher; paired_test: every two deployable models). Choices are made on val, the comparisons "
                        "and goals are reported on test. Sizes are the ONNX files; latency is measured end to end "
                        "(network + decode + NMS) and for the network alone, all models and runtimes in interleaved rounds (median "
                        "round, p10/p90 inside it, and every round's median); fastest_ms takes the fastest of eager PyTorch, torch.compile, ONNX "
                        "Runtime and OpenVINO in the model's own precision (fp32 or int8), fastest_float_ms also OpenVINO bf16 "
                        "where the CPU has it; openvino*_test_map_seed0: the same file scored in OpenVINO. With ONNX Runtime, PyTorch's post-processing runs on one thread: with two thread "
                        "pools on a 2-core CPU the pipeline is slower and far more erratic (int8.pitfall_torch_threads_ms)."),
        "variants": {name: variants[name] for name in list(VARIANTS) + ["student_int8"]},
        "deployable": list(onnx),
        "paired_test": paired_test,
        "goals": goals["int8"],
        "goals_other_paths": {name: g for name, g in goals.items() if name != "int8"},
        "seeds": args.seeds,
        "config": {**config_of(args), "threads": args.threads, "runs": args.runs, "rounds": args.rounds, "n_boot": args.n_boot,
                   "torch_threads_with_onnxruntime": 1},
        "train_seconds": {run["seed"]: run["train_seconds"] for run in per_seed},
        **run_info(device),
    }
    write_json(args.out / "capstone.json", result)
    for name, e in result["variants"].items():
        ms = e["fastest_ms"]["end_to_end"]["batch16"]["median_ms"] if "fastest_ms" in e else float("nan")
        print(f"{name:>16}: val {e['val_map']:.4f}  test {e['test_map']:.4f}  {e.get('total_epochs', '')!s:>3} ep  b16 end to end {ms:7.2f} ms")
    print(json.dumps(goals, indent=1))


def rounded(timing: dict) -> dict:
    """A timing of measure_interleaved with its milliseconds rounded to 4 decimals (lists too)."""
    return {k: [round(x, 4) for x in v] if isinstance(v, list) else round(v, 4) for k, v in timing.items()}


def compiled_network(model: TinyDetector, images: torch.Tensor):
    """``torch.compile`` (inductor, weights frozen in as constants) of ``model``'s network, compiled for batch 1 and 16."""
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    net = torch.compile(DetectorNetwork(model).eval(), dynamic=False)
    with torch.inference_mode():
        net(images[:1]), net(images)
    return net


def compiled_end_to_end(net, model: TinyDetector, x: torch.Tensor) -> list[dict]:
    """Detections from the compiled network ``net`` and ``model``'s decode + NMS (what ``model(x)`` does, compiled)."""
    logits, deltas = net(x)
    anchors, _ = model.all_anchors(model.level_sizes(tuple(x.shape[-2:])), x.device)
    return model.postprocess({"logits": logits, "deltas": deltas, "anchors": anchors}, tuple(x.shape[-2:]))


def with_threads(n: int, fn):
    """``fn`` with PyTorch's intra-op thread count set to ``n`` first (a no-op when it already is)."""
    def run():
        torch.set_num_threads(n)
        return fn()
    return run


def judge_goals(teacher: dict, final: dict, split: str) -> dict:
    """The capstone's three goals for one deployable model, against the fp32 teacher, with the accuracy on ``split``.
    Speed-ups are paired: the median over rounds of (teacher's round median / the model's), end to end."""
    smaller = teacher["onnx_bytes"] / final["onnx_bytes"]
    faster = {b: paired_speedup(teacher["fastest_ms"]["end_to_end"][b], final["fastest_ms"]["end_to_end"][b])["speedup"]
              for b in ("batch1", "batch16")}
    faster_float = paired_speedup(teacher["fastest_float_ms"]["end_to_end"]["batch16"],
                                  final["fastest_ms"]["end_to_end"]["batch16"])["speedup"]
    lost = (teacher[f"{split}_map"] - final[f"{split}_map"]) * 100
    paired = final[f"{split}_vs_teacher_paired"]
    std = final.get(f"{split}_seeds", {}).get("std")
    return {
        "smaller_10x": {"value": smaller, "met": smaller >= 10},
        "faster_5x_end_to_end_batch16": {"value": faster["batch16"], "met": faster["batch16"] >= 5, "batch1": faster["batch1"],
                                         "vs_fastest_float_teacher": faster_float},
        "within_3_points": {"value": lost, "met": lost <= 3, "seed_std_points": None if std is None else std * 100,
                            "seed0_paired_ci_points": [-paired["high"] * 100, -paired["low"] * 100]},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?", default="all", choices=("all", "train", "measure"))
    parser.add_argument("--seed", type=int, default=0, help="train: the seed to run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="all / measure: the seeds to run or merge")
    parser.add_argument("--keep", type=float, default=0.75, help="fraction of every channel group kept by pruning")
    parser.add_argument("--multiple-of", type=int, default=8,
                        help="round kept channel counts to multiples of this (ort_block_size.py measured no gain from 16 on this model)")
    parser.add_argument("--epochs", type=int, default=6, help="E: extra epochs of the distillation and pruning steps")
    parser.add_argument("--qat-epochs", type=int, default=2, help="Q: extra epochs of the quantization step")
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate of the distillation and pruning steps")
    parser.add_argument("--qat-lr", type=float, default=5e-4)
    parser.add_argument("--runs", type=int, default=30, help="timed calls per measurement (and >= 1 s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--add-shortcut", action="store_true",
                        help="train: re-run only the distillation step of an existing seed file (checking it reproduces) "
                             "and add distilled_int8 to it")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the per-seed results, models and capstone.json go")
    args = parser.parse_args()
    if not 0 < args.keep < 1:
        parser.error(f"--keep must be in (0, 1), got {args.keep}")
    if args.stage == "train":
        train_seed(args)
        return
    if args.stage == "all":
        for seed in args.seeds:
            train_seed(argparse.Namespace(**{**vars(args), "seed": seed}))
    measure(args)


if __name__ == "__main__":
    main()
