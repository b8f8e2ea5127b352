"""Which runtime and precision to deploy: one detector measured in every (runtime, precision) pair on this CPU.

Taught in: 05_qat_and_int8 (the decision) and 09 (why the numbers differ). ``python -m course_utils benchmark``
prints the table for your own checkpoint and data.

The pairs (:data:`VARIANTS`): PyTorch fp32 (eager), ONNX Runtime fp32 and int8, OpenVINO fp32, bf16 (where
the CPU has bf16 instructions) and int8. Both int8 rows run the *same* int8 QDQ file
(:func:`course_utils.deploy.quantize_onnx`); fp32 and bf16 run the same fp32 file. For each pair:

* **latency** of the network (backbone + head) at batch 1 and 16, and end to end at batch 16 (network,
  then decode + NMS in PyTorch): every pair timed in each of ``rounds`` interleaved rounds
  (:func:`course_utils.deploy.measure_interleaved`), one thread count for all; medians with p10/p90;
* **speed-ups** per round (:func:`course_utils.deploy.paired_speedup`) against the fastest fp32 pair and
  against the fastest float pair (fp32 or bf16) -- int8 is only worth its accuracy risk if it beats the
  fastest float, not merely the slowest;
* **file size** and **mAP** on the data given (COCO AP@[.50:.95], :func:`course_utils.train.evaluate`).

All pairs run in one process: ONNX Runtime's worker threads are told not to spin between calls
(``spin=False``), so one pair does not tax the next; ``benchmarks/int8_latency.py`` times each in a fresh
process instead, for the course's headline numbers.
"""

from __future__ import annotations

import copy
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .deploy import (
    DetectorNetwork, OrtDetector, checkpoint_bytes, cpu_int8_features, export_onnx, file_size, measure_interleaved,
    paired_speedup, quantize_onnx,
)
from .runtimes import openvino_session, ort_session

__all__ = ["VARIANTS", "available_variants", "TorchSession", "export_variants", "open_variant", "benchmark_detector"]

#: Every (runtime, precision) pair, in table order. ``bf16`` needs a CPU with bf16 instructions.
VARIANTS = (("pytorch", "fp32"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"), ("openvino", "fp32"),
            ("openvino", "bf16"), ("openvino", "int8"))


def available_variants(features: dict[str, bool] | None = None) -> list[tuple[str, str]]:
    """:data:`VARIANTS` this CPU can run: bf16 only where ``features["bf16"]`` (default: this CPU's
    :func:`course_utils.deploy.cpu_int8_features`)."""
    features = cpu_int8_features() if features is None else features
    return [v for v in VARIANTS if v[1] != "bf16" or features.get("bf16", False)]


class TorchSession:
    """The fp32 network in eager PyTorch, called like an ONNX Runtime session: ``run(None, {"images": x})``."""

    def __init__(self, detector: nn.Module) -> None:
        from .quant import fuse_conv_bn

        self.network = DetectorNetwork(fuse_conv_bn(copy.deepcopy(detector).cpu().eval())).eval()

    def run(self, output_names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        (x,) = feed.values()
        with torch.inference_mode():
            return [t.numpy() for t in self.network(torch.from_numpy(x))]


def export_variants(detector: nn.Module, calibration_images: Tensor, folder: str | Path) -> dict[str, Path]:
    """``folder/fp32.onnx`` (batch norm folded) and ``folder/int8.onnx`` (static QDQ, calibrated on
    ``calibration_images`` (N, 3, S, S): the files every pair runs. Returns ``{"fp32": path, "int8": path}``."""
    from .quant import fuse_conv_bn

    if not isinstance(calibration_images, Tensor) or calibration_images.ndim != 4 or len(calibration_images) == 0:
        shape = tuple(calibration_images.shape) if isinstance(calibration_images, Tensor) else type(calibration_images).__name__
        raise ValueError(f"calibration_images must be a (N, 3, S, S) tensor with N >= 1, got {shape}")
    folder = Path(folder)
    network = DetectorNetwork(fuse_conv_bn(copy.deepcopy(detector).cpu().eval())).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes
        fp32 = export_onnx(network, calibration_images[:1], folder / "fp32.onnx")
    return {"fp32": fp32, "int8": quantize_onnx(fp32, folder / "int8.onnx", calibration_images)}


def open_variant(runtime: str, precision: str, files: dict[str, Path], detector: nn.Module, threads: int) -> Any:
    """A session (``run(None, {"images": x})``) of one pair: eager PyTorch, ONNX Runtime or OpenVINO on the
    file of its precision (bf16 runs the fp32 file with OpenVINO's bf16 hint)."""
    if (runtime, precision) not in VARIANTS:
        raise ValueError(f"({runtime!r}, {precision!r}) is not one of {list(VARIANTS)}")
    if runtime == "pytorch":
        return TorchSession(detector)
    path = files["int8" if precision == "int8" else "fp32"]
    if runtime == "onnxruntime":
        return ort_session(path, threads=threads, spin=False)
    return openvino_session(path, threads=threads, precision="bf16" if precision == "bf16" else "fp32")


def _score(session: Any, detector: nn.Module, loader: Any) -> dict[str, float]:
    from .train import evaluate

    metrics = evaluate(OrtDetector(session, detector), loader, torch.device("cpu"), areas=False)
    return {"map": float(metrics["map"]), "map_50": float(metrics["map_50"])}


def benchmark_detector(detector: nn.Module, loader: Any, calibration_images: Tensor, image_size: int, threads: int = 2,
                       rounds: int = 3, runs: int = 20, variants: Sequence[tuple[str, str]] | None = None,
                       progress: bool = True) -> dict[str, Any]:
    """Measure ``detector`` in every pair of ``variants`` (default :func:`available_variants`).

    ``loader`` yields the evaluation batches (mAP); ``calibration_images`` (N, 3, S, S) calibrate int8 (use
    training images, not the evaluation set); ``image_size`` S is the network's input side. Returns
    ``{"rows": [...], "threads", "rounds", "runs"}``; each row: runtime, precision, file_bytes, map, map_50,
    and per measure (``network_b1``, ``network_b16``, ``end_to_end_b16``) the median ms per *call*, p10, p90,
    ms per image, and the paired speed-ups over the fastest fp32 and the fastest float pair.
    """
    from .data import progress_bar

    variants = list(variants) if variants is not None else available_variants()
    unknown = [v for v in variants if tuple(v) not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"variants must be pairs from {list(VARIANTS)}, got {variants!r}")
    torch.manual_seed(0)
    inputs = {1: torch.rand(1, 3, image_size, image_size), 16: torch.rand(16, 3, image_size, image_size)}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        files = export_variants(detector, calibration_images, tmp)
        sessions = {v: open_variant(*v, files, detector, threads) for v in variants}
        for v, session in progress_bar(sessions.items(), desc="mAP per runtime", disable=not progress):
            size = checkpoint_bytes(detector)[0] if v[0] == "pytorch" else file_size(files["int8" if v[1] == "int8" else "fp32"])
            rows.append({"runtime": v[0], "precision": v[1], "file_bytes": int(size), **_score(session, detector, loader)})
        measures = {"network_b1": (1, False), "network_b16": (16, False), "end_to_end_b16": (16, True)}
        for measure, (batch, whole) in progress_bar(measures.items(), desc="latency", disable=not progress):
            x = inputs[batch]
            fns = {v: _runner(sessions[v], detector, x, whole) for v in variants}
            timing = measure_interleaved(fns, rounds=rounds, runs=runs, min_seconds=0.2)
            _add_timing(rows, timing, measure, batch)
    return {"rows": rows, "threads": int(threads), "rounds": int(rounds), "runs": int(runs)}


def _runner(session: Any, detector: nn.Module, x: Tensor, whole: bool) -> Any:
    """What to time: the network alone (``session.run``) or end to end (network, decode, NMS)."""
    if whole:
        wrapped = OrtDetector(session, detector)
        return lambda: wrapped(x)
    feed = {"images": x.numpy()}
    return lambda: session.run(None, feed)


def _add_timing(rows: list[dict[str, Any]], timing: dict[Any, dict[str, Any]], measure: str, batch: int) -> None:
    """Each row's timing of ``measure``, and its paired speed-ups over the fastest fp32 and fastest float pair."""
    keyed = {(r["runtime"], r["precision"]): r for r in rows}
    fp32 = [v for v in timing if v[1] == "fp32"]
    floats = [v for v in timing if v[1] in ("fp32", "bf16")]
    fastest_fp32 = min(fp32, key=lambda v: timing[v]["median_ms"]) if fp32 else None
    fastest_float = min(floats, key=lambda v: timing[v]["median_ms"]) if floats else None
    for v, t in timing.items():
        entry = {"median_ms": t["median_ms"], "p10_ms": t["p10_ms"], "p90_ms": t["p90_ms"],
                 "ms_per_image": t["median_ms"] / batch, "round_medians_ms": t["round_medians_ms"]}
        if fastest_fp32 is not None:
            entry["speedup_vs_fastest_fp32"] = paired_speedup(timing[fastest_fp32], t)["speedup"]
            entry["fastest_fp32"] = "/".join(fastest_fp32)
        if fastest_float is not None:
            entry["speedup_vs_fastest_float"] = paired_speedup(timing[fastest_float], t)["speedup"]
            entry["fastest_float"] = "/".join(fastest_float)
        keyed[v][measure] = entry
