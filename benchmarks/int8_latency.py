"""fp32 vs real int8: latency, file size and mAP of the course detector, in one run.

Runtimes, each timed on its own (one after another, never interleaved: ONNX
Runtime's worker threads spin and would slow whatever runs beside them), all with
the same thread count:

* fp32: eager PyTorch, ``torch.compile`` (inductor, freezing), ONNX Runtime;
* int8: ONNX Runtime static QDQ (the course's path), and torchao's pt2e flow
  (``X86InductorQuantizer`` + ``torch.compile`` with freezing) for comparison.

ONNX Runtime goes first: PyTorch's OpenMP worker threads stay alive (and spin
for a while after each call) once PyTorch has run, which would tax it.

Every fp32 path runs the trained fp32 detector with BN folded; the int8 models
are made from the QAT-8 checkpoint (``qat_sweep.py``), BN folded.
Latency is the *network* (backbone + head) at batch 1 and 16; post-processing
(decode + NMS, float PyTorch) is timed separately. Writes
``benchmarks/results/int8_latency.json``.

It then re-times the oneDNN-based paths (eager and compiled fp32, torchao int8)
in fresh processes with ``ONEDNN_MAX_CPU_ISA`` set to ``AVX512_CORE`` (AVX-512
without VNNI) and ``AVX2``, to measure what the int8 dot-product instruction
(VNNI) is worth on this CPU.

    python benchmarks/int8_latency.py              # about 5 min on 2 CPU cores
    python benchmarks/int8_latency.py --skip-torchao --skip-isa --runs 20   # quicker
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from course_utils import CocoDetection, SyntheticShapes, TinyDetector, collate_detection, evaluate, load_checkpoint, materialize
from course_utils.deploy import (
    DetectorNetwork, OrtDetector, cpu_int8_features, export_onnx, file_size, measure_latency, ort_session, quantize_onnx,
)
from course_utils.quant import fuse_conv_bn, prepare_qat, to_float_folded

ROOT = Path(__file__).resolve().parents[1]


class _TorchDetector(torch.nn.Module):
    """Wraps a compiled network so ``evaluate`` can score it (same post-processing as OrtDetector)."""

    def __init__(self, network, detector: TinyDetector) -> None:
        super().__init__()
        self.detector = detector
        self._network = [network]  # kept out of the module tree: exported programs refuse .eval()

    def network(self, x):
        return self._network[0](x)

    def forward(self, images):
        x = torch.stack(list(images)) if isinstance(images, (list, tuple)) else images
        with torch.no_grad():
            logits, deltas = self.network(x)
        h, w = x.shape[-2] // self.detector.stride, x.shape[-1] // self.detector.stride
        raw = {"logits": logits, "deltas": deltas, "anchors": self.detector.anchors((h, w), x.device)}
        return self.detector.postprocess(raw, tuple(x.shape[-2:]))


def time_network(run, images: torch.Tensor, runs: int) -> dict[str, dict[str, float]]:
    """Latency of ``run(batch)`` at batch 1 and 16."""
    out = {}
    for batch, n in ((1, runs * 4), (16, runs)):
        x = images[:batch].contiguous()
        with torch.inference_mode():
            out[f"batch{batch}"] = measure_latency(lambda: run(x), warmup=10, runs=n, min_seconds=2.0)
        gc.collect()
    return out


def torchao_int8(network: torch.nn.Module, calib: torch.Tensor, example: torch.Tensor):
    """pt2e: export -> prepare (X86InductorQuantizer) -> calibrate -> convert -> torch.compile(freezing)."""
    import torch._inductor.config as inductor_config
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config,
    )

    inductor_config.freezing = True
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(network, (example,), dynamic_shapes={"images": {0: batch}}).module()
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(exported, quantizer)
    with torch.no_grad():
        for chunk in calib.split(16):
            prepared(chunk)
    converted = convert_pt2e(prepared)
    return torch.compile(converted, dynamic=False)  # one specialised kernel set per batch size


def compiled_paths(folded_fp32, folded_qat, calib: torch.Tensor, images: torch.Tensor, args, score=None) -> dict:
    """fp32 ``torch.compile`` (freezing) and, unless skipped, int8 torchao.

    Returns {name: (latency, setup seconds, score(runner) or None)}: each runner is
    built once, warmed up on both batch sizes, timed, optionally scored, then freed.
    """
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    builders = {"fp32_compile": lambda: torch.compile(DetectorNetwork(folded_fp32).eval(), dynamic=False)}
    if not args.skip_torchao:
        builders["int8_torchao"] = lambda: torchao_int8(DetectorNetwork(folded_qat).eval(), calib, images)
    out = {}
    for name, build in builders.items():
        start = time.perf_counter()
        runner = build()
        with torch.inference_mode():
            runner(images[:1]), runner(images)  # compile for both batch sizes before timing
        setup = time.perf_counter() - start
        out[name] = (time_network(runner, images, args.runs), setup, score(name, runner) if score else None)
        print(name, out[name][0], flush=True)
        del runner
        torch._dynamo.reset()
    return out


def isa_probe(isa: str, args) -> dict:
    """Re-run the torch paths in a fresh process with ``ONEDNN_MAX_CPU_ISA=isa`` (oneDNN runs the convs of
    both eager/compiled fp32 and torchao's int8). Returns {path: latency}."""
    out_file = Path(tempfile.mkdtemp(prefix="isa_")) / "latency.json"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa}
    cmd = [sys.executable, __file__, "--probe-out", str(out_file), "--runs", str(args.runs), "--threads", str(args.threads)]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out_file.read_text())


def probe_main(args) -> None:
    """Child process of :func:`isa_probe`: time eager fp32, compiled fp32 and torchao int8 only."""
    fp32, qat, folded_fp32, folded_qat, calib, images = load_models_and_images(args)
    latency = {"fp32_eager": time_network(DetectorNetwork(folded_fp32).eval(), images, args.runs)}
    latency.update({name: value for name, (value, _, _) in compiled_paths(folded_fp32, folded_qat, calib, images, args).items()})
    args.probe_out.write_text(json.dumps(latency))


def load_models_and_images(args):
    results = ROOT / "benchmarks" / "results"
    fp32 = TinyDetector()
    load_checkpoint(results / "tiny_detector.pt", fp32)
    fp32.eval()
    qat = prepare_qat(TinyDetector(), weight_bits=8, act_bits=8)
    load_checkpoint(results / "qat8.pt", qat)
    qat.eval()
    folded_fp32 = fuse_conv_bn(fp32)  # every fp32 path runs the original detector, BN folded (the fair baseline)
    folded_qat = to_float_folded(qat)  # the int8 paths quantize the QAT-8 weights
    calib = torch.stack([img for img, _ in materialize(SyntheticShapes(args.calib_images, seed=123), progress=False)])
    images = torch.stack([img for img, _ in materialize(SyntheticShapes(16, seed=321), progress=False)])
    return fp32, qat, folded_fp32, folded_qat, calib, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=60, help="timed runs at batch 16 (4x as many at batch 1)")
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--skip-torchao", action="store_true")
    parser.add_argument("--skip-isa", action="store_true", help="skip the oneDNN instruction-set comparison")
    parser.add_argument("--probe-out", type=Path, default=None, help=argparse.SUPPRESS)  # child process of isa_probe
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.probe_out is not None:
        return probe_main(args)

    fp32, qat, folded_fp32, folded_qat, calib, images = load_models_and_images(args)
    val_loader = DataLoader(materialize(CocoDetection(ROOT / "data" / "val" / "annotations.json"), progress=False),
                            batch_size=50, collate_fn=collate_detection)

    work = Path(tempfile.mkdtemp(prefix="int8_"))
    sizes, maps, latency, seconds = {}, {}, {}, {}
    torch.save(fp32.state_dict(), work / "fp32.pt")
    sizes["fp32_state_dict"] = file_size(work / "fp32.pt")

    maps["fp32"] = evaluate(fp32, val_loader)["map"]
    maps["qat8_fake_quant"] = evaluate(qat, val_loader)["map"]

    # --- ONNX Runtime fp32 and int8
    start = time.perf_counter()
    export_onnx(DetectorNetwork(folded_fp32), images[:2], work / "fp32.onnx")
    seconds["onnx_export"] = time.perf_counter() - start
    export_onnx(DetectorNetwork(folded_qat), images[:2], work / "qat8_float.onnx")
    start = time.perf_counter()
    quantize_onnx(work / "qat8_float.onnx", work / "int8.onnx", calib)
    seconds["ort_quantize"] = time.perf_counter() - start
    sizes["fp32_onnx"], sizes["int8_onnx"] = file_size(work / "fp32.onnx"), file_size(work / "int8.onnx")
    for name in ("fp32", "int8"):
        session = ort_session(work / f"{name}.onnx", threads=args.threads)
        detector = OrtDetector(session, fp32)
        maps[f"{name}_ort"] = evaluate(detector, val_loader)["map"]
        latency[f"{name}_ort"] = time_network(detector.network, images, args.runs)
        print(f"{name} ort", latency[f"{name}_ort"], flush=True)
        del session, detector
        gc.collect()

    # --- fp32, eager PyTorch (BN folded too: the fair baseline)
    net_fp32 = DetectorNetwork(folded_fp32).eval()
    latency["fp32_eager"] = time_network(net_fp32, images, args.runs)
    print("fp32 eager", latency["fp32_eager"], flush=True)

    # --- fp32 torch.compile, int8 torchao
    def score(name, runner):  # only the int8 runner has weights of its own worth scoring
        return evaluate(_TorchDetector(runner, fp32), val_loader)["map"] if name == "int8_torchao" else None

    for name, (value, secs, mean_ap) in compiled_paths(folded_fp32, folded_qat, calib, images, args, score).items():
        latency[name], seconds[name] = value, secs
        if mean_ap is not None:
            maps[name] = mean_ap

    # --- the same oneDNN kernels restricted to older instruction sets, each in a fresh process
    for isa in ([] if args.skip_isa else ["AVX512_CORE", "AVX2"]):
        latency[f"isa_{isa}"] = isa_probe(isa, args)
        print(f"oneDNN limited to {isa}", latency[f"isa_{isa}"], flush=True)

    # --- post-processing (float PyTorch): decode + score threshold + NMS
    with torch.inference_mode():
        for batch in (1, 16):
            raw = fp32.forward_raw(images[:batch])
            latency.setdefault("postprocess", {})[f"batch{batch}"] = measure_latency(
                lambda: fp32.postprocess(raw, (128, 128)), warmup=5, runs=args.runs, min_seconds=1.0)
    print("postprocess", latency["postprocess"], flush=True)

    fp32_paths = [k for k in latency if k.startswith("fp32_")]  # (not the isa_* probes)
    summary = {}
    for batch in ("batch1", "batch16"):
        fastest = min(fp32_paths, key=lambda k: latency[k][batch]["median_ms"])
        summary[batch] = {
            "fastest_fp32": fastest,
            "fastest_fp32_ms": latency[fastest][batch]["median_ms"],
            "int8_ort_ms": latency["int8_ort"][batch]["median_ms"],
            "speedup_int8_ort_vs_fastest_fp32": latency[fastest][batch]["median_ms"] / latency["int8_ort"][batch]["median_ms"],
            "speedup_int8_ort_vs_fp32_ort": latency["fp32_ort"][batch]["median_ms"] / latency["int8_ort"][batch]["median_ms"],
        }
    result = {
        "threads": args.threads, "torch": torch.__version__, "machine": platform.machine(),
        "processor": platform.processor(), "cpu_int8_features": cpu_int8_features(),
        "latency_ms": latency, "file_bytes": sizes, "val_map": maps, "setup_seconds": seconds, "summary": summary,
        "size_ratio_fp32_onnx_over_int8_onnx": sizes["fp32_onnx"] / sizes["int8_onnx"],
        "size_ratio_fp32_state_dict_over_int8_onnx": sizes["fp32_state_dict"] / sizes["int8_onnx"],
        "int8_ort_minus_fake_quant_map": maps["int8_ort"] - maps["qat8_fake_quant"],
    }
    try:
        import onnxruntime

        result["onnxruntime"] = onnxruntime.__version__
    except ImportError:  # pragma: no cover
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("val_map", "file_bytes", "summary")}, indent=1))


if __name__ == "__main__":
    main()
