"""fp32 vs real int8: latency, file size and mAP of the course detector, in one run.

Runtimes, all with the same thread count, each timed in a fresh process of its
own (ONNX Runtime's and PyTorch's worker threads spin after a call and would tax
whatever runs next in the same process), in ``--rounds`` interleaved rounds: round
r times every runtime once, so a slow moment of the machine hits all of them
alike. Each runtime reports its median round (median, p10, p90 of its calls), and
every int8 speed-up is also given per round, a ratio of two timings of that round:

* fp32: eager PyTorch, ``torch.compile`` (inductor, freezing), ONNX Runtime;
* int8: ONNX Runtime static QDQ (the course's path), and torchao's pt2e flow
  (``X86InductorQuantizer`` + ``torch.compile`` with freezing) for comparison.

Every fp32 path runs the trained fp32 detector with BN folded; the int8 models
are made from the QAT-8 checkpoint (``qat_sweep.py``), BN folded.
Latency is the *network* (backbone + head) at batch 1 and 16; post-processing
(decode + NMS, float PyTorch) is timed separately. Writes
``benchmarks/results/int8_latency.json``.

The same rounds also time the oneDNN-based paths (eager and compiled fp32,
torchao int8) with ``ONEDNN_MAX_CPU_ISA`` set to ``AVX512_CORE`` (AVX-512 without
VNNI) and ``AVX2``, to measure what the int8 dot-product instruction (VNNI) is
worth on this CPU.

    python benchmarks/int8_latency.py              # about 10 min on 2 CPU cores
    python benchmarks/int8_latency.py --skip-torchao --skip-isa --rounds 1 --runs 20   # quicker
    python benchmarks/int8_latency.py --scores-only   # new weights, same shapes: re-score, keep the timings

``--scores-only`` re-measures file sizes and mAPs (about a minute) and keeps the
latencies of the existing JSON: they depend on the network's shapes, not on the
values of its weights, so a retrained checkpoint of the same architecture does
not need a new quiet-machine timing run. The JSON records which it did.
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
    DetectorNetwork, OrtDetector, cpu_info, cpu_int8_features, export_onnx, file_size, measure_latency, ort_session, paired_speedup, quantize_onnx,
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


def build_runner(name: str, folded_fp32, folded_qat, calib: torch.Tensor, images: torch.Tensor, work: Path, threads: int):
    """The network of runtime ``name`` as a callable on a (B, 3, H, W) batch, warmed up on both batch sizes."""
    if name.endswith("_ort"):
        return OrtDetector(ort_session(work / f"{name[:-4]}.onnx", threads=threads), TinyDetector()).network
    if name == "fp32_eager":
        return DetectorNetwork(folded_fp32).eval()
    import torch._inductor.config as inductor_config

    inductor_config.freezing = True
    if name == "fp32_compile":
        runner = torch.compile(DetectorNetwork(folded_fp32).eval(), dynamic=False)
    elif name == "int8_torchao":
        runner = torchao_int8(DetectorNetwork(folded_qat).eval(), calib, images)
    else:
        raise ValueError(f"unknown runtime {name!r}")
    with torch.inference_mode():
        runner(images[:1]), runner(images)  # compile for both batch sizes before timing
    return runner


def time_in_child(name: str, isa: str | None, work: Path, args) -> dict:
    """Time runtime ``name`` in a fresh process (with ``ONEDNN_MAX_CPU_ISA=isa`` if given)."""
    out_file = work / f"time_{name}_{isa or 'native'}.json"
    env = {**os.environ, **({"ONEDNN_MAX_CPU_ISA": isa} if isa else {})}
    cmd = [sys.executable, __file__, "--time-one", name, "--work", str(work), "--probe-out", str(out_file),
           "--runs", str(args.runs), "--threads", str(args.threads), "--calib-images", str(args.calib_images)]
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"timing {name} (ONEDNN_MAX_CPU_ISA={isa}) failed:\n{done.stderr[-3000:]}")
    return json.loads(out_file.read_text())


def probe_main(args) -> None:
    """Child process of :func:`time_in_child`: build one runtime and time it at batch 1 and 16."""
    _, _, folded_fp32, folded_qat, calib, images = load_models_and_images(args)
    runner = build_runner(args.time_one, folded_fp32, folded_qat, calib, images, args.work, args.threads)
    args.probe_out.write_text(json.dumps(time_network(runner, images, args.runs)))


def median_round(rounds: list[dict]) -> dict:
    """Per batch size: the round with the median ``median_ms`` (its p10/p90 too), plus every round's median."""
    out = {}
    for batch in rounds[0]:
        ordered = sorted(rounds, key=lambda r: r[batch]["median_ms"])
        out[batch] = {**ordered[len(ordered) // 2][batch], "round_medians_ms": [r[batch]["median_ms"] for r in rounds]}
    return out


def load_models_and_images(args):
    results = ROOT / "benchmarks" / "results"
    fp32 = TinyDetector()
    load_checkpoint(results / "tiny_detector_converged.pt", fp32)
    fp32.eval()
    qat = prepare_qat(TinyDetector(), weight_bits=8, act_bits=8)
    load_checkpoint(results / "qat8.pt", qat)
    qat.eval()
    folded_fp32 = fuse_conv_bn(fp32)  # every fp32 path runs the original detector, BN folded (the fair baseline)
    folded_qat = to_float_folded(qat)  # the int8 paths quantize the QAT-8 weights
    calib = torch.stack([img for img, _ in materialize(SyntheticShapes(args.calib_images, seed=123), progress=False)])
    images = torch.stack([img for img, _ in materialize(SyntheticShapes(16, seed=321), progress=False)])
    return fp32, qat, folded_fp32, folded_qat, calib, images


def summarize(latency: dict) -> dict:
    """Per batch size: the fastest fp32 path and int8 ONNX Runtime's speed-up over it -- paired (the median of the
    per-round ratios, the course's estimate), every round's ratio, and the ratio of the two median rounds."""
    fp32_paths = [k for k in latency if k.startswith("fp32_")]  # (not the isa_* probes)
    summary = {}
    for batch in ("batch1", "batch16"):
        fastest = min(fp32_paths, key=lambda k: latency[k][batch]["median_ms"])
        paired = paired_speedup(latency[fastest][batch], latency["int8_ort"][batch])
        summary[batch] = {
            "fastest_fp32": fastest,
            "fastest_fp32_ms": latency[fastest][batch]["median_ms"],
            "int8_ort_ms": latency["int8_ort"][batch]["median_ms"],
            "speedup_int8_ort_vs_fastest_fp32": paired["speedup"],
            "speedup_int8_ort_vs_fastest_fp32_per_round": paired["rounds"],
            "speedup_int8_ort_vs_fastest_fp32_median_rounds": latency[fastest][batch]["median_ms"] / latency["int8_ort"][batch]["median_ms"],
            "speedup_int8_ort_vs_fp32_ort": paired_speedup(latency["fp32_ort"][batch], latency["int8_ort"][batch])["speedup"],
        }
    return summary


def write_scores_only(path: Path, sizes: dict, maps: dict, test_maps: dict) -> None:
    """Update sizes and mAPs in an existing result file, keeping its latencies (same shapes, new weights)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run without --scores-only first to measure the latencies")
    result = json.loads(path.read_text())
    result.update({
        "file_bytes": sizes, "val_map": maps, "test_map": test_maps, "summary": summarize(result["latency_ms"]),
        "size_ratio_fp32_onnx_over_int8_onnx": sizes["fp32_onnx"] / sizes["int8_onnx"],
        "size_ratio_fp32_state_dict_over_int8_onnx": sizes["fp32_state_dict"] / sizes["int8_onnx"],
        "int8_ort_minus_fake_quant_map": maps["int8_ort"] - maps["qat8_fake_quant"],
        "scores_only_update": ("file_bytes, val_map and test_map re-measured with the current checkpoints "
                               "(tiny_detector_converged.pt, qat8.pt); latency_ms kept from the timing run "
                               "(same network shapes; latency depends on the shapes, not on the weights' values -- up to effects such as denormal floats, which neither runtime flushes by default)"),
    })
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("val_map", "file_bytes")}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=60, help="timed runs at batch 16 (4x as many at batch 1)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (every runtime once per round)")
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--skip-torchao", action="store_true")
    parser.add_argument("--skip-isa", action="store_true", help="skip the oneDNN instruction-set comparison")
    parser.add_argument("--scores-only", action="store_true",
                        help="re-score sizes and mAPs with the current checkpoints; keep the existing JSON's latencies")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--time-one", default=None, help=argparse.SUPPRESS)  # child process of time_in_child
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--probe-out", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: need at least 1")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.time_one is not None:
        return probe_main(args)

    fp32, qat, folded_fp32, folded_qat, calib, images = load_models_and_images(args)
    val_loader = DataLoader(materialize(CocoDetection(ROOT / "data" / "val" / "annotations.json"), progress=False),
                            batch_size=50, collate_fn=collate_detection)
    test_loader = DataLoader(materialize(CocoDetection(ROOT / "data" / "test" / "annotations.json"), progress=False),
                             batch_size=50, collate_fn=collate_detection)

    work = Path(tempfile.mkdtemp(prefix="int8_"))
    sizes, maps, test_maps, latency, seconds = {}, {}, {}, {}, {}
    torch.save(fp32.state_dict(), work / "fp32.pt")
    sizes["fp32_state_dict"] = file_size(work / "fp32.pt")

    def score(name: str, model) -> None:  # both splits: nothing is chosen here, comparisons are reported on test
        maps[name], test_maps[name] = evaluate(model, val_loader)["map"], evaluate(model, test_loader)["map"]

    score("fp32", fp32)
    score("qat8_fake_quant", qat)

    # --- ONNX Runtime fp32 and int8 (files shared with the timing processes)
    start = time.perf_counter()
    export_onnx(DetectorNetwork(folded_fp32), images[:2], work / "fp32.onnx")
    seconds["onnx_export"] = time.perf_counter() - start
    export_onnx(DetectorNetwork(folded_qat), images[:2], work / "qat8_float.onnx")
    start = time.perf_counter()
    quantize_onnx(work / "qat8_float.onnx", work / "int8.onnx", calib)
    seconds["ort_quantize"] = time.perf_counter() - start
    sizes["fp32_onnx"], sizes["int8_onnx"] = file_size(work / "fp32.onnx"), file_size(work / "int8.onnx")
    for name in ("fp32", "int8"):
        score(f"{name}_ort", OrtDetector(ort_session(work / f"{name}.onnx", threads=args.threads), fp32))
    if not args.skip_torchao:  # score torchao's own int8 model (the fp32 paths share the eager weights)
        start = time.perf_counter()
        runner = build_runner("int8_torchao", folded_fp32, folded_qat, calib, images, work, args.threads)
        seconds["int8_torchao"] = time.perf_counter() - start
        score("int8_torchao", _TorchDetector(runner, fp32))
        del runner
        torch._dynamo.reset()
        gc.collect()

    if args.scores_only:
        return write_scores_only(args.out / "int8_latency.json", sizes, maps, test_maps)

    # --- latency: every runtime in a fresh process, round after round
    onednn_paths = ["fp32_eager", "fp32_compile"] + ([] if args.skip_torchao else ["int8_torchao"])
    runtimes: list[tuple[str, str | None]] = [("fp32_ort", None), ("int8_ort", None)] + [(p, None) for p in onednn_paths]
    runtimes += [] if args.skip_isa else [(p, isa) for isa in ("AVX512_CORE", "AVX2") for p in onednn_paths]
    rounds: dict[tuple[str, str | None], list[dict]] = {spec: [] for spec in runtimes}
    for r in range(args.rounds):
        for name, isa in runtimes[r % len(runtimes):] + runtimes[:r % len(runtimes)]:  # rotate: no runtime always first
            rounds[(name, isa)].append(time_in_child(name, isa, work, args))
            print(f"round {r}: {name}{f' ({isa})' if isa else ''}: batch 16 {rounds[(name, isa)][-1]['batch16']['median_ms']:.2f} ms",
                  flush=True)
    for (name, isa), timed in rounds.items():
        if isa is None:
            latency[name] = median_round(timed)
        else:
            latency.setdefault(f"isa_{isa}", {})[name] = median_round(timed)

    # --- post-processing (float PyTorch): decode + score threshold + NMS
    with torch.inference_mode():
        for batch in (1, 16):
            raw = fp32.forward_raw(images[:batch])
            latency.setdefault("postprocess", {})[f"batch{batch}"] = measure_latency(
                lambda: fp32.postprocess(raw, (128, 128)), warmup=5, runs=args.runs, min_seconds=1.0)
    print("postprocess", latency["postprocess"], flush=True)

    summary = summarize(latency)
    result = {
        "description": ("Network latency (backbone + head) of the course detector in every runtime with the same "
                        "thread count, each runtime in a fresh process, in interleaved rounds; per runtime and batch "
                        "size the median round (median, p10, p90 of its calls) and every round's median. "
                        "Made by benchmarks/int8_latency.py."),
        "threads": args.threads, "rounds": args.rounds, "torch": torch.__version__, "machine": platform.machine(),
        "processor": platform.processor(), "cpu": cpu_info(), "cpu_int8_features": cpu_int8_features(),
        "latency_ms": latency, "file_bytes": sizes, "val_map": maps, "test_map": test_maps, "setup_seconds": seconds,
        "summary": summary,
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
