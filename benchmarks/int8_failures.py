"""When int8 goes wrong: the measurements behind notebook 11 (packed outputs, keep-in-float, calibration, formats, CPUs).

Every int8 file here is ONNX Runtime's static quantization of the converged course detector (BN folded by the
exporter), scored like any detector; every choice is made on val and every headline is reported on test with
a paired image-level bootstrap CI against the fp32 model.

Parts (``--parts``, default all):

* ``packed`` -- one output holding boxes (pixels) and scores shares one scale: the scores collapse. Compared
  with the course's two outputs and with the packing Concat kept in float.
* ``activations`` -- the same detector trained with ReLU, SiLU and Hardswish (same recipe): the int8 drop of
  each, the SQNR of every activation (where the error enters), the int8 model with the activation functions'
  own nodes kept in float, and a keep-in-float search over the convs (which may not meet its budget: then
  ``met`` is false).
* ``scan`` -- ONNX Runtime's all-but-one sensitivity scan over the 14 convs, the keep-in-float search under a
  maximum val drop (``--max-drop``), and the val/test mAP and batch-16 latency (interleaved rounds) of the
  models with the 0, 1, 2, 4, 8 and 14 most sensitive convs in float.
* ``calibration`` -- calibration set size (8 ... 512 training-style scenes) x method (MinMax, Entropy,
  Percentile), ``--draws`` independent image draws per cell (mean, std with ddof=1, n), plus blank scenes.
* ``formats`` -- fp32, dynamic quantization (ConvInteger), static QDQ and static QOperator: val mAP, batch-16
  latency in interleaved rounds (paired ratios against fp32) and ONNX Runtime's profile per operator type.
* ``cross_cpu`` -- the mAP of one int8 file (QAT-8's own scales, as in benchmarks/int8_latency.py) on this CPU,
  beside the same file's mAP recorded in int8_latency.json on another CPU.
* ``reduce_range`` -- 8-bit against ``reduce_range`` (about 7-bit, -64 ... 64) weights: val/test mAP (test paired CI
  against fp32 and between the two), the SQNR of every activation, and per conv how often the 8-bit file's u8 x s8
  pair sums would saturate 16 bits on a CPU without VNNI (``pair_saturation`` on 16 val images), for the
  course's int8 file, the 7-bit one and the QAT-8 file of ``cross_cpu``; and each file's mAP with its first conv's
  pair sums clamped to int16 (``NoVnniSession``, an emulation of a CPU without VNNI), paired against the same file
  run normally.
* ``summary`` -- one model before and one after the repair of each part, all timed together (batch 16, interleaved
  rounds, paired ratios against that network's fp32 file) and scored on test (paired CIs against fp32 and
  after minus before): the before/after table of the notebook's end. Part 7 there is real files: ``mixed``'s choice
  of 4-bit layers (and every conv, W4A8) written with 4-bit weights (``quantize_onnx(int4_weights=...)``).
* ``paired`` -- the repairs against the all-int8 model they repair, paired on the test images (the fp32
  comparisons alone cannot show that two int8 variants differ): the stem kept in float (the search's choice), and
  each activation's own nodes kept in float.
* ``mixed`` -- 4 or 8 weight bits per layer (8-bit activations, fake quantization in PyTorch) under a size
  budget, layers chosen from each layer's measured val drop (``allocate_bits``), against uniform W8A8 and W4A8
  and against the opposite choice (the most sensitive layers to 4 bits) at the same size.

    python benchmarks/int8_failures.py                       # everything, about 17 min on 2 cores
    python benchmarks/int8_failures.py --parts cross_cpu --out /tmp/x

Writes ``<out>/int8_failures.json`` (parts not run are kept from an existing file).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import RESULTS, ROOT, run_info, split_loader, write_json  # noqa: E402

from course_utils import SyntheticShapes, TinyDetector, evaluate, load_checkpoint, materialize, predict  # noqa: E402
from course_utils.data import SceneConfig  # noqa: E402
from course_utils.deploy import (DetectorNetwork, OrtDetector, export_onnx, file_size, measure_interleaved,  # noqa: E402
                                 ort_session, paired_speedup, quantize_onnx, quantize_onnx_dynamic)
from course_utils.int8_debug import (NoVnniSession, PackedDetectorNetwork, PackedOrtDetector, nodes_after_last_conv,  # noqa: E402
                                     profile_by_op, qdq_scales)
from course_utils.keep_float import keep_in_float_search, node_sensitivity, quantize_except  # noqa: E402
from course_utils.metrics import mean_average_precision, paired_bootstrap_map  # noqa: E402

PARTS = ("packed", "activations", "scan", "calibration", "formats", "cross_cpu", "reduce_range", "mixed", "paired", "summary")
ACTIVATION_OPS = ("Relu", "Sigmoid", "Mul", "HardSwish", "HardSigmoid")  # what the three activations export to
ACTIVATION_CHECKPOINTS = {"relu": "tiny_detector_converged.pt", "silu": "tiny_detector_silu.pt",
                          "hardswish": "tiny_detector_hardswish.pt"}
CALIB_SEED = 123  # the calibration scenes of notebooks 05 and 09


def scenes(n: int, seed: int, config: SceneConfig = SceneConfig()) -> torch.Tensor:
    return torch.stack([img for img, _ in materialize(SyntheticShapes(n, seed=seed, config=config), progress=False)])


class Scorer:
    """val / test mAP of ONNX files run by ONNX Runtime, and the paired test CI against the fp32 file."""

    def __init__(self, detector: TinyDetector, threads: int) -> None:
        self.detector, self.threads = detector, threads
        self.loaders = {split: split_loader(split) for split in ("val", "test")}
        self.baselines: dict = {}  # baseline path -> its test predictions (baseline files are never rewritten)

    def model(self, path: Path, packed: bool = False) -> OrtDetector:
        return (PackedOrtDetector if packed else OrtDetector)(ort_session(path, threads=self.threads), self.detector)

    def val(self, path: Path, packed: bool = False) -> float:
        return evaluate(self.model(path, packed), self.loaders["val"])["map"]

    def predict_test(self, path: Path, packed: bool = False) -> tuple[list, list]:
        return predict(self.model(path, packed), self.loaders["test"])

    def baseline_preds(self, path: Path, packed: bool = False) -> list:
        if (path, packed) not in self.baselines:
            self.baselines[path, packed] = self.predict_test(path, packed)[0]
        return self.baselines[path, packed]

    def test(self, path: Path, packed: bool = False, baseline: Path | None = None) -> dict:
        preds, targets = self.predict_test(path, packed)
        out = {"test_map": mean_average_precision(preds, targets, areas=False)["map"]}
        if baseline is not None:
            out["test_minus_fp32"] = ci(paired_bootstrap_map(preds, self.baseline_preds(baseline), targets))
        return out


def ci(d: dict) -> dict:
    return {k: d[k] for k in ("value", "low", "high")}


def spread(values: list[float]) -> dict:
    return {"values": values, "mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "ddof": 1, "n": len(values)}


def part_packed(detector, scorer, work: Path, calib: torch.Tensor) -> dict:
    export_onnx(PackedDetectorNetwork(detector), calib[:2], work / "packed_fp32.onnx")
    quantize_onnx(work / "packed_fp32.onnx", work / "packed_int8.onnx", calib)
    concat = [n for n in qdq_nodes(work / "packed_fp32.onnx", "Concat")][-1:]  # the packing Concat (the last one)
    quantize_onnx(work / "packed_fp32.onnx", work / "packed_concat_float.onnx", calib, nodes_to_exclude=concat)
    after_head = nodes_after_last_conv(work / "packed_fp32.onnx")  # the decode, the sigmoid and the packing
    quantize_onnx(work / "packed_fp32.onnx", work / "packed_convs_only.onnx", calib, nodes_to_exclude=after_head)
    quantize_onnx(work / "fp32.onnx", work / "int8.onnx", calib)
    out_scale = list(qdq_scales(work / "packed_int8.onnx").values())[-1]
    sess = ort_session(work / "packed_int8.onnx")
    packed = torch.from_numpy(sess.run(None, {"images": calib[:16].numpy()})[0])
    fp = torch.from_numpy(ort_session(work / "packed_fp32.onnx").run(None, {"images": calib[:16].numpy()})[0])
    result = {"output_grid": out_scale, "concat_kept_float": concat, "after_head_kept_float": after_head,
              "fp32_box_range": [float(fp[..., :4].min()), float(fp[..., :4].max())],
              "fp32_score_max": float(fp[..., 4:].max()),
              "int8_scores_zero_fraction": float((packed[..., 4:] == 0).float().mean()),
              "int8_score_values": sorted({round(float(v), 4) for v in packed[..., 4:].unique()}),
              "models": {}}
    for name, path, is_packed in (("fp32", work / "fp32.onnx", False), ("packed_int8", work / "packed_int8.onnx", True),
                                  ("packed_concat_float", work / "packed_concat_float.onnx", True),
                                  ("packed_convs_only", work / "packed_convs_only.onnx", True),
                                  ("two_outputs_int8", work / "int8.onnx", False)):
        result["models"][name] = {"val_map": scorer.val(path, is_packed),
                                  **scorer.test(path, is_packed, None if name == "fp32" else work / "fp32.onnx")}
    return result


def qdq_nodes(path: Path, op_type: str) -> list[str]:
    import onnx

    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type == op_type]


def part_scan(detector, scorer, work: Path, calib: torch.Tensor, max_drop: float, rounds: int, runs: int,
              threads: int) -> dict:
    fp32 = work / "fp32.onnx"
    start = time.perf_counter()
    scan = node_sensitivity(fp32, calib, scorer.val, work / "scan")
    scan_seconds = time.perf_counter() - start
    search = keep_in_float_search(fp32, calib, scorer.val, max_drop, work / "search", sensitivity=scan)
    order = sorted(scan["gain"], key=lambda n: -scan["gain"][n])
    curve, runners = [], {}
    images = scenes(16, 321)
    feed = {"images": images.numpy()}
    for k in tqdm(sorted({0, 1, 2, 4, 8, len(order)}), desc="float nodes", leave=False):
        path = quantize_except(fp32, work / f"curve_{k}.onnx", calib, order[:k])
        curve.append({"n_float": k, "nodes": order[:k], "val_map": scorer.val(path), **scorer.test(path, baseline=fp32)})
        sess = ort_session(path, threads=threads)
        runners[str(k)] = lambda s=sess: s.run(None, feed)
    sess32 = ort_session(fp32, threads=threads)
    runners["fp32"] = lambda s=sess32: s.run(None, feed)
    timing = measure_interleaved(runners, rounds=rounds, runs=runs)
    for row in curve:
        t = timing[str(row["n_float"])]
        row["ms_b16"] = {"median": t["median_ms"], "p10": t["p10_ms"], "p90": t["p90_ms"], "rounds": t["round_medians_ms"]}
        row["speedup_vs_fp32"] = paired_speedup(timing["fp32"], t)
    chosen = quantize_except(fp32, work / "chosen.onnx", calib, search["float_nodes"])
    search["test"] = scorer.test(chosen, baseline=fp32)
    return {"scan": scan, "scan_seconds": scan_seconds, "order": order, "search": search, "max_drop": max_drop,
            "curve": curve, "fp32_ms_b16": {"median": timing["fp32"]["median_ms"], "rounds": timing["fp32"]["round_medians_ms"]}}


def part_calibration(scorer, work: Path, sizes: list[int], draws: int) -> dict:
    cells: dict = {m: {} for m in ("minmax", "entropy", "percentile")}
    pool = {d: scenes(max(sizes), 200_000 + 10_000 * d) for d in range(draws)}  # draw d: its own scenes
    jobs = [(m, n, d) for m in cells for n in sizes for d in range(draws)]
    seconds: dict = {m: {} for m in cells}
    for method, n, d in tqdm(jobs, desc="calibration", leave=False):
        start = time.perf_counter()
        path = quantize_onnx(work / "fp32.onnx", work / "calib.onnx", pool[d][:n], method=method)
        seconds[method].setdefault(str(n), []).append(time.perf_counter() - start)
        cells[method].setdefault(str(n), []).append(scorer.val(path))
    blank_config = SceneConfig(min_objects=0, max_objects=0, clutter_lines=0)
    blank = [scorer.val(quantize_onnx(work / "fp32.onnx", work / "calib.onnx", scenes(64, 300_000 + 10_000 * d, blank_config)))
             for d in range(draws)]
    return {"sizes": sizes, "draws": draws, "split": "val",
            "cells": {m: {n: spread(v) for n, v in c.items()} for m, c in cells.items()},
            "calibration_seconds": {m: {n: statistics.median(v) for n, v in c.items()} for m, c in seconds.items()},
            "blank_64": spread(blank), "fp32_val_map": scorer.val(work / "fp32.onnx")}


def part_formats(scorer, work: Path, calib: torch.Tensor, rounds: int, runs: int, threads: int) -> dict:
    fp32 = work / "fp32.onnx"
    files = {"fp32": fp32,
             "dynamic": quantize_onnx_dynamic(fp32, work / "dynamic.onnx"),
             "static_qdq": quantize_onnx(fp32, work / "qdq.onnx", calib),
             "static_qoperator": quantize_onnx(fp32, work / "qop.onnx", calib, quant_format="qoperator")}
    images = scenes(16, 321)
    feed = {"images": images.numpy()}
    runners = {}
    for name, path in files.items():
        sess = ort_session(path, threads=threads)
        runners[name] = lambda s=sess: s.run(None, feed)
    timing = measure_interleaved(runners, rounds=rounds, runs=runs)
    out = {}
    for name, path in files.items():
        t = timing[name]
        out[name] = {"val_map": scorer.val(path), "file_bytes": file_size(path),
                     "ms_b16": {"median": t["median_ms"], "p10": t["p10_ms"], "p90": t["p90_ms"], "rounds": t["round_medians_ms"]},
                     "speedup_vs_fp32": paired_speedup(timing["fp32"], t),
                     "profile_ms_by_op": profile_by_op(path, images, threads=threads)}
    return out


def part_cpu(scorer, work: Path, calib: torch.Tensor) -> dict:
    from course_utils.quant import export_qdq, integer_detector, prepare_qat

    qat = prepare_qat(TinyDetector(), weight_bits=8, act_bits=8)
    load_checkpoint(RESULTS / "qat8.pt", qat)
    export_qdq(integer_detector(qat.eval(), calib), work / "qat8_int8.onnx")  # as benchmarks/int8_latency.py does
    here = {"val_map": scorer.val(work / "qat8_int8.onnx"), **scorer.test(work / "qat8_int8.onnx")}
    recorded = json.loads((RESULTS / "int8_latency.json").read_text())
    return {"here": here, "recorded": {"cpu": recorded["cpu"], "val_map": recorded["val_map"]["int8_ort"],
                                       "test_map": recorded["test_map"]["int8_ort"],
                                       "onnxruntime": recorded.get("onnxruntime")}}


def part_activations(work: Path, calib: torch.Tensor, max_drop: float, threads: int) -> dict:
    from course_utils.int8_debug import activation_sqnr

    out = {}
    images = scenes(16, 321)
    for act, ckpt in ACTIVATION_CHECKPOINTS.items():
        detector = TinyDetector(activation=act)
        meta = load_checkpoint(RESULTS / ckpt, detector)["metadata"]
        detector.eval()
        scorer = Scorer(detector, threads)
        fp32 = export_onnx(DetectorNetwork(detector), calib[:2], work / f"{act}_fp32.onnx")
        int8 = quantize_onnx(fp32, work / f"{act}_int8.onnx", calib)
        row = {"epochs": meta.get("epochs"), "fp32": {"val_map": scorer.val(fp32), **scorer.test(fp32)},
               "int8": {"val_map": scorer.val(int8), **scorer.test(int8, baseline=fp32)},
               "sqnr_db": activation_sqnr(fp32, int8, images)}
        import onnx

        act_nodes = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type in ACTIVATION_OPS]
        act_float = quantize_onnx(fp32, work / f"{act}_act_float.onnx", calib, nodes_to_exclude=act_nodes)
        row["activations_in_float"] = {"nodes": len(act_nodes), "op_types": sorted({n.op_type for n in onnx.load(str(fp32)).graph.node
                                                                                  if n.name in act_nodes}),
                                       "val_map": scorer.val(act_float), **scorer.test(act_float, baseline=fp32),
                                       "sqnr_db": activation_sqnr(fp32, act_float, images)}
        search = keep_in_float_search(fp32, calib, scorer.val, max_drop, work / f"{act}_search")
        chosen = quantize_except(fp32, work / f"{act}_chosen.onnx", calib, search["float_nodes"])
        search["test"] = scorer.test(chosen, baseline=fp32)
        row["search"] = {k: v for k, v in search.items()}
        row["search"]["sqnr_db"] = activation_sqnr(fp32, chosen, images)
        out[act] = row
    return out


def part_mixed(detector: TinyDetector, calib: torch.Tensor, budget_fraction: float, threads: int) -> dict:
    from course_utils.quant import allocate_bits, fuse_conv_bn, layer_weight_bytes, model_weight_bytes, post_training_quantize

    val, test = split_loader("val"), split_loader("test")
    batches = list(calib.split(32))

    def build(layer_bits: dict, weight_bits: int = 8):
        return post_training_quantize(detector, batches, lambda m, b: m.forward_raw(b), weight_bits=weight_bits,
                                      act_bits=8, act_observer="percentile", layer_bits=layer_bits)

    folded = fuse_conv_bn(detector)
    layers = list(layer_weight_bytes(folded, 8))
    base = evaluate(build({}), val)["map"]
    drops = {}
    for name in tqdm(layers, desc="4-bit sensitivity", leave=False):
        drops[name] = base - evaluate(build({name: 4}), val)["map"]
    w8, w4 = model_weight_bytes(folded, {}), model_weight_bytes(folded, {}, default_bits=4)
    budget = int(w4 + budget_fraction * (w8 - w4))
    mixed = allocate_bits(drops, folded, budget)
    worst = allocate_bits({n: -d for n, d in drops.items()}, folded, budget)  # the most sensitive layers first
    fp32_preds, targets = predict(detector, test)
    variants = {"W8A8": ({}, 8), "W4A8": ({}, 4), "mixed": (mixed, 8), "mixed_opposite": (worst, 8)}
    rows, preds_of = {}, {}
    for name, (bits, default) in variants.items():
        model = build(bits, default)
        preds_of[name] = preds = predict(model, test)[0]
        d = paired_bootstrap_map(preds, fp32_preds, targets)
        rows[name] = {"layer_bits": bits, "weight_bytes": model_weight_bytes(folded, bits, default_bits=default),
                      "val_map": evaluate(model, val)["map"], "test_map": mean_average_precision(preds, targets, areas=False)["map"],
                      "test_minus_fp32": {k: d[k] for k in ("value", "low", "high")}}
    return {"split_for_choices": "val", "w8a8_val_map": base, "drops_4bit": drops, "budget_bytes": budget,
            "mixed_minus_W4A8": ci(paired_bootstrap_map(preds_of["mixed"], preds_of["W4A8"], targets)),
            "budget_fraction": budget_fraction, "fp32_val_map": evaluate(detector, val)["map"],
            "fp32_test_map": mean_average_precision(fp32_preds, targets, areas=False)["map"], "variants": rows,
            "fake_quantization": "PyTorch fake quantization (weights per channel, activations percentile); bytes counted, "
                                 "not a deployed file"}


def sqnr_summary(sqnr: dict) -> dict:
    return {"min_db": min(sqnr.values()), "median_db": statistics.median(sqnr.values()), "logits_db": sqnr["logits"],
            "deltas_db": sqnr["deltas"], "per_tensor": sqnr}


def saturation_summary(per_conv: dict) -> dict:
    pairs = sum(c["pairs"] for c in per_conv.values())
    return {"fraction": sum(c["saturated"] for c in per_conv.values()) / pairs, "pairs": pairs,
            "convs_saturating": sum(c["saturated"] > 0 for c in per_conv.values()), "convs": len(per_conv),
            "per_conv": per_conv}


def part_reduce_range(scorer, work: Path, calib: torch.Tensor) -> dict:
    from course_utils.int8_debug import activation_sqnr, pair_saturation

    fp32 = work / "fp32.onnx"
    files = {"int8_8bit": quantize_onnx(fp32, work / "int8.onnx", calib),
             "int8_reduce_range": quantize_onnx(fp32, work / "int8_rr.onnx", calib, reduce_range=True)}
    val_images = torch.stack([img for img, _ in scorer.loaders["val"].dataset][:16])
    out: dict = {"images": "the first 16 val images", "models": {}}
    preds = {}
    for name, path in files.items():
        preds[name], targets = scorer.predict_test(path)
        out["models"][name] = {"val_map": scorer.val(path), "test_map": mean_average_precision(preds[name], targets, areas=False)["map"],
                               "test_minus_fp32": ci(paired_bootstrap_map(preds[name], scorer.baseline_preds(fp32), targets)),
                               "weight_range": weight_range(path),
                               "sqnr": sqnr_summary(activation_sqnr(fp32, path, val_images)),
                               "saturation": saturation_summary(pair_saturation(path, val_images))}
    out["reduce_range_minus_8bit"] = {
        "test": ci(paired_bootstrap_map(preds["int8_reduce_range"], preds["int8_8bit"], targets)),
        "val": out["models"]["int8_reduce_range"]["val_map"] - out["models"]["int8_8bit"]["val_map"]}
    qat = work / "qat8_int8.onnx"
    if not qat.is_file():
        part_cpu(scorer, work, calib)
    out["qat8_file_saturation"] = saturation_summary(pair_saturation(qat, val_images))
    # the same files with the first conv's pair sums clamped to int16, as on a CPU without VNNI (an emulation)
    out["no_vnni_estimate"] = {}
    for name, path in {**files, "qat8_int8": qat}.items():
        vnni_preds = preds.get(name) or scorer.predict_test(path)[0]
        session = NoVnniSession(path, threads=scorer.threads)
        model = OrtDetector(session, scorer.detector)
        no_vnni, targets = predict(model, scorer.loaders["test"])
        exact = NoVnniSession(path, saturate=False).first_conv_codes(val_images.numpy())
        out["no_vnni_estimate"][name] = {
            "val_map": evaluate(model, scorer.loaders["val"])["map"], "vnni_val_map": scorer.val(path),
            "test_map": mean_average_precision(no_vnni, targets, areas=False)["map"],
            "test_minus_vnni": ci(paired_bootstrap_map(no_vnni, vnni_preds, targets)),
            "first_conv_codes_changed": float((session.first_conv_codes(val_images.numpy()) != exact).float().mean())}
    return out


def weight_range(path: Path) -> list[int]:
    import numpy as np
    import onnx
    from onnx import numpy_helper

    arrays = [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]
    weights = [a for a in arrays if a.dtype == np.int8 and a.ndim == 4]
    return [int(min(a.min() for a in weights)), int(max(a.max() for a in weights))]


SUMMARY = (  # part, symptom, before (label), after (label), that network's fp32 file
    (1, "scores are 0 after int8", ("packed_int8", "one packed output"), ("packed_convs_only", "decode in float"), "packed_fp32"),
    (2, "SiLU loses more than ReLU", ("silu_int8", "SiLU, all int8"), ("silu_activations_float", "SiLU nodes in float"),
     "silu_fp32"),
    (3, "mAP lost, cause unknown", ("int8", "all int8"), ("stem_float", "stem in float"), "fp32"),
    (4, "wrong calibration images", ("calibrated_blank", "blank images"), ("int8", "scenes, MinMax"), "fp32"),
    (4, "Entropy clips too much", ("calibrated_entropy", "Entropy"), ("int8", "MinMax"), "fp32"),
    (5, "int8 slower than fp32", ("dynamic", "dynamic"), ("int8", "static QDQ"), "fp32"),
    (6, "16-bit pair saturation without VNNI", ("int8", "8-bit weights"), ("reduce_range", "reduce_range"), "fp32"),
    (7, "4-bit weights lose mAP", ("w4a8_file", "W4A8 file"), ("mixed_file", "mixed 4/8-bit file"), "fp32"),
)


def part_summary(detector, scorer, work: Path, calib: torch.Tensor, rounds: int, runs: int, threads: int,
                 stem_nodes: list[str], mixed_bits: dict) -> dict:
    import onnx

    fp32 = work / "fp32.onnx"
    export_onnx(PackedDetectorNetwork(detector), calib[:2], work / "packed_fp32.onnx")
    silu = TinyDetector(activation="silu")
    load_checkpoint(RESULTS / ACTIVATION_CHECKPOINTS["silu"], silu)
    silu.eval()
    silu_fp32 = export_onnx(DetectorNetwork(silu), calib[:2], work / "silu_fp32.onnx")
    silu_act = [n.name for n in onnx.load(str(silu_fp32)).graph.node if n.op_type in ACTIVATION_OPS]
    blank = scenes(64, 300_000, SceneConfig(min_objects=0, max_objects=0, clutter_lines=0))
    files = {
        "fp32": (fp32, False, detector), "int8": (quantize_onnx(fp32, work / "s_int8.onnx", calib), False, detector),
        "packed_fp32": (work / "packed_fp32.onnx", True, detector),
        "packed_int8": (quantize_onnx(work / "packed_fp32.onnx", work / "s_packed_int8.onnx", calib), True, detector),
        "packed_convs_only": (quantize_onnx(work / "packed_fp32.onnx", work / "s_packed_convs_only.onnx", calib,
                                            nodes_to_exclude=nodes_after_last_conv(work / "packed_fp32.onnx")), True, detector),
        "silu_fp32": (silu_fp32, False, silu), "silu_int8": (quantize_onnx(silu_fp32, work / "s_silu_int8.onnx", calib), False, silu),
        "silu_activations_float": (quantize_onnx(silu_fp32, work / "s_silu_act.onnx", calib, nodes_to_exclude=silu_act), False, silu),
        "stem_float": (quantize_except(fp32, work / "s_stem.onnx", calib, stem_nodes), False, detector),
        "calibrated_blank": (quantize_onnx(fp32, work / "s_blank.onnx", blank), False, detector),
        "calibrated_entropy": (quantize_onnx(fp32, work / "s_entropy.onnx", calib, method="entropy"), False, detector),
        "dynamic": (quantize_onnx_dynamic(fp32, work / "s_dynamic.onnx"), False, detector),
        "reduce_range": (quantize_onnx(fp32, work / "s_rr.onnx", calib, reduce_range=True), False, detector),
        # part 7 as real files: the chosen layers' weights in 4 bits (ONNX INT4), the rest as the int8 file
        "mixed_file": (quantize_onnx(fp32, work / "s_mixed.onnx", calib, int4_weights=[
            f"detector.{name}.weight" for name, bits in mixed_bits.items() if bits == 4]), False, detector),
        "w4a8_file": (quantize_onnx(fp32, work / "s_w4.onnx", calib, int4_weights=[
            n.input[1] for n in onnx.load(str(fp32)).graph.node if n.op_type == "Conv"]), False, detector),
    }
    feed = {"images": scenes(16, 321).numpy()}
    runners = {}
    for name, (path, _, _) in files.items():
        sess = ort_session(path, threads=threads)
        runners[name] = lambda s=sess: s.run(None, feed)
    timing = measure_interleaved(runners, rounds=rounds, runs=runs)
    preds, models = {}, {}
    for name, (path, packed, det) in tqdm(files.items(), desc="test split", leave=False):
        model = (PackedOrtDetector if packed else OrtDetector)(ort_session(path, threads=threads), det)
        preds[name], targets = predict(model, scorer.loaders["test"])
        t = timing[name]
        models[name] = {"test_map": mean_average_precision(preds[name], targets, areas=False)["map"], "file_bytes": file_size(path),
                        "ms_b16": {"median": t["median_ms"], "p10": t["p10_ms"], "p90": t["p90_ms"], "rounds": t["round_medians_ms"]}}
    rows = []
    for part, symptom, (before, before_label), (after, after_label), base in SUMMARY:
        row = {"part": part, "symptom": symptom, "before": before, "after": after, "fp32": base,
               "before_label": before_label, "after_label": after_label,
               "after_minus_before": ci(paired_bootstrap_map(preds[after], preds[before], targets)),
               "speedup_after_vs_before": paired_speedup(timing[before], timing[after])}
        for side in ("before", "after"):
            name = row[side]
            row[f"{side}_minus_fp32"] = ci(paired_bootstrap_map(preds[name], preds[base], targets))
            row[f"{side}_speedup_vs_fp32"] = paired_speedup(timing[base], timing[name])
        rows.append(row)
    return {"split": "test", "models": models, "rows": rows, "stem_nodes": stem_nodes, "mixed_layer_bits": mixed_bits,
            "calibration": "64 training-style scenes (seed 123); calibrated_blank: 64 blank scenes (seed 300000)"}


def part_paired(work: Path, calib: torch.Tensor, threads: int, scan_float_nodes: list[str]) -> dict:
    import onnx

    out = {}
    for act, ckpt in ACTIVATION_CHECKPOINTS.items():
        detector = TinyDetector(activation=act)
        load_checkpoint(RESULTS / ckpt, detector)
        detector.eval()
        scorer = Scorer(detector, threads)
        fp32 = export_onnx(DetectorNetwork(detector), calib[:2], work / f"{act}_fp32.onnx")
        int8 = quantize_onnx(fp32, work / f"{act}_int8.onnx", calib)
        act_nodes = [n.name for n in onnx.load(str(fp32)).graph.node if n.op_type in ACTIVATION_OPS]
        variants = {"activations_in_float": act_nodes}
        if act == "relu":
            variants["search_choice"] = scan_float_nodes
        base, targets = predict(scorer.model(int8), scorer.loaders["test"])
        for name, nodes in variants.items():
            path = quantize_except(fp32, work / f"{act}_{name}.onnx", calib, nodes)
            preds, _ = predict(scorer.model(path), scorer.loaders["test"])
            d = paired_bootstrap_map(preds, base, targets)
            out[f"{act}/{name}"] = {"float_nodes": len(nodes), "test_minus_all_int8": {k: d[k] for k in ("value", "low", "high")},
                                    "val_minus_all_int8": scorer.val(path) - scorer.val(int8)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32, 128, 512])
    parser.add_argument("--budget-fraction", type=float, default=0.5,
                        help="mixed: size budget between all-4-bit (0) and all-8-bit (1) weights")
    parser.add_argument("--max-drop", type=float, default=0.002, help="keep-in-float budget, val mAP (0.002 = 0.2 point)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_path = args.out / "int8_failures.json"
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    detector = TinyDetector()
    load_checkpoint(RESULTS / "tiny_detector_converged.pt", detector)
    detector.eval()
    scorer = Scorer(detector, args.threads)
    calib = scenes(64, CALIB_SEED)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_onnx(DetectorNetwork(detector), calib[:2], work / "fp32.onnx")
        for part in args.parts:
            start = time.perf_counter()
            print(f"part {part} ...", flush=True)
            if part == "packed":
                result[part] = part_packed(detector, scorer, work, calib)
            elif part == "activations":
                result[part] = part_activations(work, calib, args.max_drop, args.threads)
            elif part == "mixed":
                result[part] = part_mixed(detector, calib, args.budget_fraction, args.threads)
            elif part == "scan":
                result[part] = part_scan(detector, scorer, work, calib, args.max_drop, args.rounds, args.runs, args.threads)
            elif part == "calibration":
                result[part] = part_calibration(scorer, work, args.sizes, args.draws)
            elif part == "formats":
                result[part] = part_formats(scorer, work, calib, args.rounds, args.runs, args.threads)
            elif part == "paired":
                result[part] = part_paired(work, calib, args.threads, result["scan"]["search"]["float_nodes"])
            elif part == "cross_cpu":
                result[part] = part_cpu(scorer, work, calib)
            elif part == "reduce_range":
                result[part] = part_reduce_range(scorer, work, calib)
            elif part == "summary":
                result[part] = part_summary(detector, scorer, work, calib, args.rounds, args.runs, args.threads,
                                            result["scan"]["search"]["float_nodes"],
                                            result["mixed"]["variants"]["mixed"]["layer_bits"])
            result.setdefault("seconds", {})[part] = time.perf_counter() - start
    if any(p in ("scan", "formats", "summary") for p in args.parts):  # the timed parts set the threads the timings ran with
        result.update({"threads": args.threads, "rounds": args.rounds})
    result.update({"description": __doc__.split("\n")[0] + " Made by benchmarks/int8_failures.py.",
                   "calibration_images": "64 training-style scenes (random seed 123) unless a part says otherwise",
                   **run_info(torch.device("cpu"))})
    write_json(out_path, result)
    print(json.dumps({"seconds": result["seconds"]}, indent=1))


if __name__ == "__main__":
    main()
