"""Channel counts and ONNX Runtime's blocked kernels: prune to multiples of 1, 8 or 16 and time each shape.

ONNX Runtime's fastest CPU convolutions (MLAS, NCHWc layout) work on channels in
blocks of the SIMD width: 16 floats on AVX-512 CPUs, 8 on AVX2
(``course_utils.deploy.ort_nchwc_block_size`` reads it from /proc/cpuinfo). The
capstone keeps 75 % of the course detector's channels (notebook 07 also tries 60 %);
rounding the kept counts to a multiple of 1, 8 or 16 gives shapes with nearly the
same work. The optimised graph of each shows which kernel ONNX Runtime chose per
convolution (blocked NCHWc or not). Each is
exported (BN folded) to fp32 and int8 (static QDQ) ONNX and timed at batch 1 and
16 in ``--rounds`` interleaved rounds (2 threads; ONNX Runtime's worker threads
told not to spin, since the sessions take turns in one process), beside the unpruned network.
Latency does not depend on the weights' values, so the pruned shapes are cut from
the shipped detector without fine-tuning. Writes ``benchmarks/results/ort_block_size.json``.

    python benchmarks/ort_block_size.py        # about 4 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import torch

from course_utils import SyntheticShapes, TinyDetector, load_checkpoint, materialize
from course_utils.deploy import (
    DetectorNetwork, cpu_info, export_onnx, file_size, measure_interleaved, ort_nchwc_block_size, ort_session, quantize_onnx,
)
from course_utils.prune import count_flops, prune_detector
from course_utils.quant import fuse_conv_bn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def conv_channels(model: torch.nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def optimized_conv_ops(path: Path, threads: int) -> dict[str, int]:
    """Which convolution kernels ONNX Runtime chose: op types in its optimised graph (``com.microsoft.nchwc.Conv``
    is the blocked NCHWc kernel, plain ``Conv`` the generic im2col + GEMM path)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    counts: dict[str, int] = {}
    for node in onnx.load(options.optimized_model_filepath).graph.node:
        if "Conv" in node.op_type:  # the blocked kernels live in the com.microsoft.nchwc domain
            key = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
            counts[key] = counts.get(key, 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=float, nargs="+", default=[0.75, 0.6])
    parser.add_argument("--multiples", type=int, nargs="+", default=[1, 8, 16])
    parser.add_argument("--start", type=Path, default=RESULTS / "tiny_detector.pt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    import onnxruntime as ort

    ort.set_default_logger_severity(3)  # no warning about saving a hardware-specific optimised graph

    base = TinyDetector()
    load_checkpoint(args.start, base)
    base.eval()
    shapes = {"dense": base}
    shapes.update({f"keep{keep:g}_m{m}": prune_detector(base, keep, criterion="l1", multiple_of=m).eval()
                   for keep in args.keep for m in args.multiples})
    calib = torch.stack([img for img, _ in materialize(SyntheticShapes(32, seed=123), progress=False)])
    images = torch.stack([img for img, _ in materialize(SyntheticShapes(16, seed=321), progress=False)])
    work = Path(tempfile.mkdtemp(prefix="block_"))
    info, fns = {}, {}
    for name, model in shapes.items():
        fp32, int8 = work / f"{name}.onnx", work / f"{name}_int8.onnx"
        export_onnx(DetectorNetwork(fuse_conv_bn(model)), images[:2], fp32)
        quantize_onnx(fp32, int8, calib)
        info[name] = {"conv_out_channels": conv_channels(model), "macs": count_flops(model),
                      "fp32_bytes": file_size(fp32), "int8_bytes": file_size(int8),
                      "fp32_conv_ops": optimized_conv_ops(fp32, args.threads),
                      "int8_conv_ops": optimized_conv_ops(int8, args.threads)}
        for precision, path in (("fp32", fp32), ("int8", int8)):
            session = ort_session(path, threads=args.threads, spin=False)  # many sessions take turns in this process
            for batch in (1, 16):
                feed = {session.get_inputs()[0].name: images[:batch].numpy()}
                fns[f"{name}|{precision}|batch{batch}"] = (lambda s=session, f=feed: s.run(None, f))
    timed = measure_interleaved(fns, rounds=args.rounds, runs=args.runs, min_seconds=0.5)
    latency: dict = {}
    for key, value in timed.items():
        name, precision, batch = key.split("|")
        latency.setdefault(name, {}).setdefault(precision, {})[batch] = value
    dense = latency["dense"]
    speedup = {name: {p: {b: dense[p][b]["median_ms"] / lat[p][b]["median_ms"] for b in lat[p]} for p in lat}
               for name, lat in latency.items()}
    result = {
        "description": ("Latency of the course detector's network in ONNX Runtime (fp32 and int8 QDQ), unpruned and "
                        f"with {' or '.join(f'{k:.0%}' for k in args.keep)} of each channel group kept, kept counts rounded to multiples of "
                        f"{args.multiples}; {args.threads} threads, {args.rounds} interleaved rounds, median round. "
                        "speedup = dense latency / variant latency. Made by benchmarks/ort_block_size.py."),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cpu": cpu_info(), "ort_nchwc_block": ort_nchwc_block_size(),
        "shapes": info, "latency_ms": latency, "speedup_vs_dense": speedup,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ort_block_size.json").write_text(json.dumps(result, indent=2) + "\n")
    for name in shapes:
        print(f"{name:<16} channels {info[name]['conv_out_channels']}  MACs {info[name]['macs'] / 1e6:.1f}M  "
              f"kernels fp32 {info[name]['fp32_conv_ops']} int8 {info[name]['int8_conv_ops']}  "
              + "  ".join(f"{p} b{b[5:]} {latency[name][p][b]['median_ms']:.2f} ms" for p in ("fp32", "int8") for b in ("batch1", "batch16")))


if __name__ == "__main__":
    main()
