"""QAT's own scales carried to ONNX Runtime, the integer network from scratch, and int8 latency.

Starts from the shipped QAT-8 model (``qat8.pt``: the converged width-1 detector after 2 epochs of
8-bit QAT, see ``qat_sweep.py``) and compares, on the val and the test split (200 images each):

* ``fake_quant`` -- the QAT model itself (fake quantization in PyTorch);
* ``integer`` -- :func:`course_utils.quant.integer_detector`: the same network in integer arithmetic
  (int32 accumulators, fixed-point requantization), written from scratch;
* ``qat_scales`` -- that network exported as ONNX QDQ with the model's *own* scales, the ranges
  QAT trained with (:func:`course_utils.quant.export_qdq`), run by ONNX Runtime;
* ``recalibrated`` -- today's path in notebook 05: the QAT weights as a float model, re-calibrated by
  ONNX Runtime's quantizer (min-max over the same 64 calibration images).

For each: val and test mAP (with a paired image-level bootstrap CI against ``fake_quant``), the fraction of raw
logits within one output step of the fake-quant model's, and which kernels ONNX Runtime runs; and a
paired bootstrap of the two deployments against each other. It also compares every integer layer
with ONNX Runtime's ``QLinearConv`` on the same integer input, element by element.

``--latency`` then times, in interleaved rounds at ``--threads`` threads (median round, p10/p90),
the network alone at batch 1 and 16: fp32 eager PyTorch and fp32 ONNX Runtime (BN folded; graph
optimization levels "all" and "extended") -- the fastest is the baseline -- against the int8 model
with QAT's scales and the changes tried on it: graph optimization level (basic / extended / all),
int8 instead of uint8 activations (with and without ONNX Runtime's ``session.qdqisint8allowed``),
the two head convs fused into one, and the first conv (3 input channels) left in float. Each variant is also scored on val and test (a change that is faster
but loses accuracy is not a win) and its kernels are listed. Every ONNX Runtime session has
spinning off (its threads sleep between calls), so sessions timed in turn do not tax each other.
Writes ``integer_inference.json``.

    python benchmarks/integer_inference.py --latency          # about 4 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

from course_utils import SyntheticShapes, TinyDetector, evaluate, load_checkpoint, materialize, paired_bootstrap_map
from course_utils.deploy import DetectorNetwork, OrtDetector, export_onnx, file_size, measure_interleaved, ort_session, paired_speedup, \
    quantize_onnx
from course_utils.quant import conv_qdq_model, export_qdq, fuse_conv_bn, integer_detector, optimized_op_types, prepare_qat, \
    to_float_folded
from course_utils.train import predict

from harness import RESULTS, run_info, split_loader, write_json

CPU = torch.device("cpu")


def load_qat8() -> torch.nn.Module:
    model = prepare_qat(TinyDetector(), weight_bits=8, act_bits=8)
    load_checkpoint(RESULTS / "qat8.pt", model)
    return model.eval()


def calibration_images(n: int = 64) -> torch.Tensor:
    """The calibration images notebook 05 uses: ``SyntheticShapes(n, seed=123)``."""
    return torch.stack([img for img, _ in materialize(SyntheticShapes(n, seed=123), progress=False)])


def logit_agreement(logits: torch.Tensor, reference: torch.Tensor, step: float) -> dict[str, float]:
    """Fraction of raw outputs within one (and within half an) output step of the reference, and the largest gap."""
    gap = (logits - reference).abs()
    return {"within_one_step": float((gap <= step * (1 + 1e-6)).float().mean()),
            "within_half_step": float((gap <= step / 2 * (1 + 1e-6)).float().mean()),
            "max_steps": float(gap.max() / step), "step": step}


def layer_matches(det, images: torch.Tensor, work: Path) -> dict[str, dict[str, int]]:
    """Each integer conv against ONNX Runtime's QLinearConv on the integer network's own input."""
    keep = {"input": det.quantize_input(images)}
    det.integer_forward(keep["input"], keep)
    names = list(det.layers)
    source = dict(zip(names[1:], names))
    source.update({names[0]: "input", "lateral3": [n for n in names if n.startswith("stage3")][-1],
                   "lateral4": [n for n in names if n.startswith("stage4")][-1], "smooth.0": "add",
                   "box_out": [n for n in names if n.startswith("tower")][-1]})
    source[[n for n in names if n.startswith("stage4")][0]] = source["lateral3"]
    out = {}
    for name in names:
        session = ort_session(conv_qdq_model(det.layers[name], work / f"{name}.onnx"), threads=1)
        got = torch.from_numpy(session.run(None, {"q_x": keep[source[name]].numpy()})[0]).int()
        diff = (got - keep[name].int()).abs()
        out[name] = {"elements": diff.numel(), "differ": int((diff > 0).sum()), "max_units": int(diff.max())}
    return out


def accuracy(args, work: Path) -> dict:
    qat8, calib = load_qat8(), calibration_images()
    val, test = split_loader("val"), split_loader("test")
    det = integer_detector(qat8, calib)
    paths = {"qat_scales": export_qdq(det, work / "qat_scales.onnx")}
    float_path = export_onnx(DetectorNetwork(to_float_folded(qat8)), calib[:2], work / "float.onnx")
    paths["recalibrated"] = quantize_onnx(float_path, work / "recalibrated.onnx", calib)
    models = {"fake_quant": qat8, "integer": det}
    models.update({k: OrtDetector(ort_session(p, threads=args.threads), TinyDetector()) for k, p in paths.items()})
    preds, maps, test_preds, test_maps = {}, {}, {}, {}
    for name, model in models.items():
        preds[name], targets = predict(model, val, CPU)
        maps[name] = evaluate(model, val, CPU)["map"]
        test_preds[name], test_targets = predict(model, test, CPU)
        test_maps[name] = evaluate(model, test, CPU)["map"]
        print(f"{name:<14} val mAP {maps[name]:.4f}, test {test_maps[name]:.4f}", flush=True)
    images = torch.cat([b[0] if isinstance(b[0], torch.Tensor) else torch.stack(list(b[0])) for b in val])
    with torch.no_grad():
        ref = qat8.forward_raw(images)
    step_cls, step_box = det.layers["cls_out"].y_scale, det.layers["box_out"].y_scale
    agreement = {}
    for name, model in models.items():
        if name == "fake_quant":
            continue
        logits, deltas = model.network(images)
        agreement[name] = {"logits": logit_agreement(logits, ref["logits"], step_cls),
                           "deltas": logit_agreement(deltas, ref["deltas"], step_box)}
    diffs = {name: paired_bootstrap_map(preds[name], preds["fake_quant"], targets, n_boot=args.n_boot, seed=0)
             for name in models if name != "fake_quant"}
    diffs["integer_vs_qat_scales"] = paired_bootstrap_map(preds["integer"], preds["qat_scales"], targets,
                                                          n_boot=args.n_boot, seed=0)
    diffs["qat_scales_vs_recalibrated"] = paired_bootstrap_map(preds["qat_scales"], preds["recalibrated"], targets,
                                                               n_boot=args.n_boot, seed=0)
    test_diffs = {name: paired_bootstrap_map(test_preds[name], test_preds["fake_quant"], test_targets, n_boot=args.n_boot, seed=0)
                  for name in models if name != "fake_quant"}
    test_diffs["qat_scales_vs_recalibrated"] = paired_bootstrap_map(test_preds["qat_scales"], test_preds["recalibrated"],
                                                                    test_targets, n_boot=args.n_boot, seed=0)
    ops = {name: dict(optimized_op_types(p)) for name, p in paths.items()}
    return {"val_map": maps, "test_map": test_maps, "difference_vs_fake_quant": diffs,
            "test_difference_vs_fake_quant": test_diffs, "agreement_vs_fake_quant": agreement,
            "optimized_op_types": ops, "onnx_bytes": {k: file_size(p) for k, p in paths.items()},
            "layer_vs_ort": layer_matches(det, images[:50], work), "shared_scale_gap": det.shared_scale_gap}


S8 = {"session.qdqisint8allowed": "1"}  # lets ONNX Runtime fuse int8 (not only uint8) activations on x86


def latency(args, work: Path) -> dict:
    qat8, calib = load_qat8(), calibration_images()
    det = integer_detector(qat8, calib)
    fp32 = TinyDetector()
    load_checkpoint(RESULTS / "tiny_detector_converged.pt", fp32)
    eager = DetectorNetwork(fuse_conv_bn(fp32.eval())).eval()
    float_path = export_onnx(eager, calib[:2], work / "fp32.onnx")
    u8, s8 = export_qdq(det, work / "u8.onnx"), export_qdq(det, work / "s8.onnx", "int8")
    fused = export_qdq(det, work / "fh.onnx", fuse_head=True)
    float_stem = export_qdq(det, work / "fs.onnx", float_stem=True)
    variants = {  # name -> (ONNX file, graph optimization level, session config)
        "fp32_ort": (float_path, "all", None), "fp32_ort_extended": (float_path, "extended", None),
        "int8": (u8, "all", None), "int8_opt_basic": (u8, "basic", None), "int8_opt_extended": (u8, "extended", None),
        "int8_s8_activations": (s8, "all", S8), "int8_s8_activations_default": (s8, "all", None),
        "int8_fused_head": (fused, "all", None), "int8_float_stem": (float_stem, "all", None),
    }
    sessions = {name: ort_session(path, args.threads, spin=False, optimization=level, config=config)
                for name, (path, level, config) in variants.items()}
    splits = {"val": split_loader("val"), "test": split_loader("test")}  # changes are chosen on val, reported on test
    torch.set_num_threads(1)  # post-processing beside ONNX Runtime (see capstone.py)
    scores = {split: {name: evaluate(OrtDetector(s, TinyDetector()), data, CPU)["map"] for name, s in sessions.items()
                      if name.startswith("int8")} for split, data in splits.items()}
    torch.set_num_threads(args.threads)
    result = {}
    for batch in (1, 16):
        x = torch.rand(batch, 3, 128, 128, generator=torch.Generator().manual_seed(0))
        feed = {"images": x.numpy()}
        fns = {"fp32_eager": lambda: eager(x)}
        fns.update({name: (lambda s=s: s.run(None, feed)) for name, s in sessions.items()})
        time.sleep(1.0)
        with torch.no_grad():
            result[f"batch{batch}"] = measure_interleaved(fns, rounds=args.rounds, runs=args.runs, min_seconds=0.5)
        print({k: round(v["median_ms"], 2) for k, v in result[f"batch{batch}"].items()}, flush=True)
    fp32 = ("fp32_eager", "fp32_ort", "fp32_ort_extended")
    fastest = {b: min(fp32, key=lambda k: r[k]["median_ms"]) for b, r in result.items()}
    speedup = {b: {k: paired_speedup(r[fastest[b]], v)["speedup"] for k, v in r.items()} for b, r in result.items()}
    ops = {name: dict(optimized_op_types(path, optimization=level, config=config))
           for name, (path, level, config) in variants.items()}
    return {"variants": {name: {"file": Path(path).name, "optimization": level, "config": config}
                         for name, (path, level, config) in variants.items()},
            "latency_ms": result, "fastest_fp32": fastest, "speedup_vs_fastest_fp32": speedup,
            "speedup": "paired: the median over rounds of (fastest fp32's round median / the variant's)",
            "val_map": scores["val"], "test_map": scores["test"],
            "optimized_op_types": ops, "threads": args.threads, "rounds": args.rounds, "runs": args.runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads for PyTorch and ONNX Runtime")
    parser.add_argument("--latency", action="store_true", help="also time int8 against the fastest fp32 path")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--runs", type=int, default=50, help="timed calls per runtime per round")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the val images")
    parser.add_argument("--out", type=Path, default=RESULTS / "integer_inference.json")
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 1 or args.runs < 1:
        parser.error("--threads, --rounds and --runs must be >= 1")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        out = {"description": "QAT-8 detector: fake quantization vs the integer network written from scratch vs ONNX "
                              "Runtime with the model's own scales (the ranges QAT trained with) vs ONNX Runtime "
                              "re-calibrated; val and test splits, 200 images each (choices on val, comparisons "
                              "reported on test); latency of the network alone (no post-processing), interleaved "
                              "rounds (paired per-round speed-ups), every variant also scored.",
               "model": "benchmarks/results/qat8.pt (width-1 detector, 48 epochs fp32 + 2 epochs QAT-8)",
               "calibration": "SyntheticShapes(64, seed=123), min-max", **run_info(CPU)}
        if args.out.exists():  # keep the other stage's numbers when only one is re-run
            import json

            old = json.loads(args.out.read_text())
            out.update({k: v for k, v in old.items() if k in ("latency",)})
        out["accuracy"] = accuracy(args, work)
        if args.latency:
            out["latency"] = latency(args, work)
    write_json(args.out, out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
