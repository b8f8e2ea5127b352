"""Where int8 pays: its speed-up over batch size and image size, in ONNX Runtime and OpenVINO.

The course detector's network (backbone + head, no post-processing) at batch 1, 4, 16, 64 and
image size 64, 128, 256 pixels, 2 threads, in every ONNX runtime and precision of
``int8_latency.py``: fp32 in ONNX Runtime and OpenVINO, bf16 in OpenVINO (only on a CPU with bf16
instructions), int8 in both (the QDQ file with QAT's own scales). Each runtime runs in a fresh
process and times every cell; ``--rounds`` interleaved rounds (rotated so no runtime is always
first); per cell, each runtime's median round, and the speed-ups of the fastest int8 runtime over the
fastest fp32 and over the fastest float runtime as medians of per-round ratios.

Small inputs are *overhead-bound*: fixed costs per call and per layer (thread hand-over, layout
changes, requantization) weigh as much as the multiply-adds, and int8 gains little. Large inputs are
*compute-bound* and int8 approaches what its instructions allow. Writes
``benchmarks/results/int8_scaling.json``.

    python benchmarks/int8_scaling.py            # about 4 min on 2 CPU cores (measured)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from course_utils import SyntheticShapes, TinyDetector, load_checkpoint, materialize
from course_utils.deploy import DetectorNetwork, cpu_info, cpu_int8_features, export_onnx, measure_latency, paired_speedup
from course_utils.quant import export_qdq, fuse_conv_bn, integer_detector, prepare_qat

from harness import RESULTS, write_json
from int8_latency import median_round, onnx_session

BATCHES, SIZES = (1, 4, 16, 64), (64, 128, 256)


def runtimes(features: dict[str, bool]) -> list[str]:
    """fp32 and int8 in ONNX Runtime and OpenVINO, and bf16 in OpenVINO where the CPU has bf16 instructions."""
    return ["fp32_ort", "fp32_openvino"] + (["bf16_openvino"] if features["bf16"] else []) + ["int8_ort", "int8_openvino"]


def export_files(work: Path) -> None:
    """fp32 files per image size (the export fixes it) and one int8 QDQ file (any size) with QAT's own scales."""
    fp32 = TinyDetector()
    load_checkpoint(RESULTS / "tiny_detector_converged.pt", fp32)
    qat = prepare_qat(TinyDetector(), weight_bits=8, act_bits=8)
    load_checkpoint(RESULTS / "qat8.pt", qat)
    calib = torch.stack([img for img, _ in materialize(SyntheticShapes(64, seed=123), progress=False)])
    network = DetectorNetwork(fuse_conv_bn(fp32.eval()))
    for size in SIZES:
        (work / str(size)).mkdir()
        export_onnx(network, torch.rand(2, 3, size, size), work / str(size) / "fp32.onnx")
    export_qdq(integer_detector(qat.eval(), calib), work / "int8.onnx")
    for size in SIZES:
        (work / str(size) / "int8.onnx").symlink_to(work / "int8.onnx")


def time_cells(name: str, work: Path, threads: int, min_seconds: float) -> dict[str, dict[str, float]]:
    """Child process: every (size, batch) cell of runtime ``name``, keyed ``"{size}px_b{batch}"``."""
    torch.manual_seed(0)
    out = {}
    for size in SIZES:
        session = onnx_session(name, work / str(size), threads)
        for batch in BATCHES:
            x = torch.rand(batch, 3, size, size).numpy()
            out[f"{size}px_b{batch}"] = measure_latency(lambda: session.run(None, {"images": x}), warmup=5, runs=10,
                                                        min_seconds=min_seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--min-seconds", type=float, default=0.5, help="time each cell at least this long per round")
    parser.add_argument("--out", type=Path, default=RESULTS / "int8_scaling.json")
    parser.add_argument("--time-one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: need at least 1")
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    if args.time_one is not None:
        print(json.dumps(time_cells(args.time_one, args.work, args.threads, args.min_seconds)))
        return

    features = cpu_int8_features()
    names = runtimes(features)
    work = Path(tempfile.mkdtemp(prefix="int8_scaling_"))
    export_files(work)
    rounds: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            cmd = [sys.executable, __file__, "--time-one", name, "--work", str(work), "--threads", str(args.threads),
                   "--min-seconds", str(args.min_seconds)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"timing {name} failed:\n{done.stderr[-3000:]}")
            rounds[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r}: {name}: 128px b16 {rounds[name][-1]['128px_b16']['median_ms']:.2f} ms", flush=True)

    cells = {}
    summaries = {name: median_round(rounds[name]) for name in names}  # per cell: the median round, every round's median
    for size in SIZES:
        for batch in BATCHES:
            key = f"{size}px_b{batch}"
            per = {name: summaries[name][key] for name in names}
            best = {kind: min((n for n in names if n.startswith(prefixes)), key=lambda n: per[n]["median_ms"])
                    for kind, prefixes in (("fp32", ("fp32_",)), ("float", ("fp32_", "bf16_")), ("int8", ("int8_",)))}
            cells[key] = {
                "size": size, "batch": batch, "latency_ms": per, "fastest": best,
                "ms_per_image_fastest_int8": per[best["int8"]]["median_ms"] / batch,
                "speedup_int8_vs_fp32": paired_speedup(per[best["fp32"]]["round_medians_ms"],
                                                       per[best["int8"]]["round_medians_ms"])["speedup"],
                "speedup_int8_vs_float": paired_speedup(per[best["float"]]["round_medians_ms"],
                                                        per[best["int8"]]["round_medians_ms"])["speedup"],
                "speedup_int8_ort_vs_fp32_ort": paired_speedup(per["fp32_ort"]["round_medians_ms"],
                                                               per["int8_ort"]["round_medians_ms"])["speedup"],
            }
    write_json(args.out, {
        "description": ("Network latency (no post-processing) of the course detector over batch size and image size, "
                        "each runtime in a fresh process, interleaved rounds; per cell the median round of every "
                        "runtime and paired speed-ups of the fastest int8 runtime. Made by benchmarks/int8_scaling.py."),
        "threads": args.threads, "rounds": args.rounds, "batches": list(BATCHES), "sizes": list(SIZES),
        "cpu": cpu_info(), "cpu_int8_features": features, "runtimes": names, "cells": cells,
    })
    for key, c in cells.items():
        print(f"{key:>12}: int8 {c['speedup_int8_vs_fp32']:.2f}x over fp32, {c['speedup_int8_vs_float']:.2f}x over float "
              f"({c['fastest']['int8']} vs {c['fastest']['fp32']} / {c['fastest']['float']})")
    print("median speed-up over fp32:", round(statistics.median(c["speedup_int8_vs_fp32"] for c in cells.values()), 2))


if __name__ == "__main__":
    main()
