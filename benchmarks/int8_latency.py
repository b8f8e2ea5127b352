"""fp32 vs real int8: latency, file size and mAP of the course detector, in one run.

Runtimes, all with the same thread count, each timed in a fresh process of its
own (ONNX Runtime's and PyTorch's worker threads spin after a call and would tax
whatever runs next in the same process), in ``--rounds`` interleaved rounds: round
r times every runtime once, so a slow moment of the machine hits all of them
alike. Each runtime reports its median round (median, p10, p90 of its calls), and
every int8 speed-up is also given per round, a ratio of two timings of that round:

* fp32: eager PyTorch, ``torch.compile`` (inductor, freezing), ONNX Runtime, OpenVINO;
* bf16 (only on a CPU with AVX-512 BF16 or AMX-BF16): OpenVINO running the fp32 file with bf16 float layers;
* int8: the static QDQ file (the course's path) in ONNX Runtime and in OpenVINO, and torchao's pt2e flow
  (``X86InductorQuantizer`` + ``torch.compile`` with freezing) for comparison.

Every fp32 path runs the trained fp32 detector with BN folded; the int8 models
are made from the QAT-8 checkpoint (``qat_sweep.py``), BN folded. The int8 ONNX file
carries QAT's own scales (``export_qdq`` of ``integer_detector``, notebook 09); the file
ONNX Runtime's quantizer re-calibrates from the float export is scored too (mAP only).
Latency is the *network* (backbone + head) at batch 1 and 16, and *end to end*
(network, then decode + NMS in float PyTorch on one thread, as a deployment mixing two runtimes should;
ONNX Runtime's idle workers set not to spin there, so they leave the cores to PyTorch) at both; post-processing alone is
timed too, and, for the ONNX Runtime and OpenVINO int8 runtimes, where end to end
loses time beyond the sum of its parts: the network timed alone, right after the
post-processing, right after a write to a 64 MiB buffer (a cache flush) and right after an idle
pause as long as the post-processing. The teacher (width 2) is timed as well, network only, in ONNX Runtime and
OpenVINO (its int8 file: post-training quantization). On the test split, each int8
runtime's mAP is compared with the fake-quant model's and bf16's with fp32's
(paired bootstrap intervals). Writes ``benchmarks/results/int8_latency.json``.

The same rounds also time the oneDNN-based paths (eager and compiled fp32,
torchao int8) with ``ONEDNN_MAX_CPU_ISA`` set to ``AVX512_CORE`` (AVX-512 without
VNNI) and ``AVX2``, to measure what the int8 dot-product instruction (VNNI) is
worth on this CPU.

    python benchmarks/int8_latency.py              # about 24 min on 2 CPU cores (measured, 5 rounds)
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
import statistics
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
    DetectorNetwork, OrtDetector, cpu_info, cpu_int8_features, export_onnx, file_size, measure_latency, openvino_session,
    ort_session, paired_speedup, quantize_onnx,
)
from course_utils.metrics import paired_bootstrap_map
from course_utils.train import predict
from course_utils.quant import export_qdq, fuse_conv_bn, integer_detector, prepare_qat, to_float_folded

ROOT = Path(__file__).resolve().parents[1]


class _TorchDetector(torch.nn.Module):
    """Wraps a compiled network so ``evaluate`` can score it (same post-processing as OrtDetector)."""

    def __init__(self, network, detector: TinyDetector, post_threads: int | None = None) -> None:
        super().__init__()
        self.detector, self.post_threads = detector, post_threads
        self._network = [network]  # kept out of the module tree: exported programs refuse .eval()

    def network(self, x):
        return self._network[0](x)

    def postprocess(self, logits, deltas, size: tuple[int, int]):
        """Decode + NMS, on ``post_threads`` PyTorch threads if set (then the previous count is restored)."""
        h, w = size[0] // self.detector.stride, size[1] // self.detector.stride
        raw = {"logits": logits, "deltas": deltas, "anchors": self.detector.anchors((h, w), logits.device)}
        threads = torch.get_num_threads()
        if self.post_threads:
            torch.set_num_threads(self.post_threads)
        try:
            return self.detector.postprocess(raw, size)
        finally:
            torch.set_num_threads(threads)

    def forward(self, images):
        x = torch.stack(list(images)) if isinstance(images, (list, tuple)) else images
        with torch.no_grad():
            logits, deltas = self.network(x)
        return self.postprocess(logits, deltas, tuple(x.shape[-2:]))


def cpu_caches() -> dict[str, str]:
    """The first CPU's caches from sysfs, e.g. ``{"L1d": "32K", "L2": "1024K", "L3": "32768K"}`` (empty where unreadable)."""
    out = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind, size = ((index / f).read_text().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        out[f"L{level}" + {"Data": "d", "Instruction": "i"}.get(kind, "")] = size
    return out


def time_network(run, images: torch.Tensor, runs: int, whole=None) -> dict[str, dict[str, float]]:
    """Latency of ``run(batch)`` at batch 1 and 16; with ``whole`` (the network and its post-processing), also
    ``whole(batch)`` as ``e2e_batch1`` and ``e2e_batch16``."""
    out = {}
    for name, fn in (("batch", run), ("e2e_batch", whole)):
        if fn is None:
            continue
        for batch, n in ((1, runs * 4), (16, runs)):
            x = images[:batch].contiguous()
            with torch.inference_mode():
                out[f"{name}{batch}"] = measure_latency(lambda: fn(x), warmup=10, runs=n, min_seconds=2.0)
            gc.collect()
    return out


def cache_breakdown(whole: _TorchDetector, images: torch.Tensor, runs: int) -> dict[str, float]:
    """Why end to end costs more than network + post-processing: median ms over ``runs`` alternations at batch 16.

    Every step between two network calls runs on one PyTorch thread (as the end-to-end timing does), so the
    controls differ only in what they touch. ``network_alone``: back-to-back network calls;
    ``network_after_post`` / ``post_after_network``: the two halves of the end-to-end loop timed separately;
    ``network_after_flush``: right after writing a 64 MiB buffer (evicts the caches, computes nothing);
    ``network_after_idle``: right after sleeping as long as the post-processing takes (the runtime's threads
    go idle, the caches stay warm).
    """
    x, flush = images.contiguous(), torch.zeros(64 << 20, dtype=torch.uint8)
    run, size = whole.network, tuple(images.shape[-2:])
    names = {"alone": "network_alone", "post": "network_after_post", "flush": "network_after_flush", "idle": "network_after_idle"}
    times: dict[str, list[float]] = {k: [] for k in [*names.values(), "post_after_network"]}
    threads = torch.get_num_threads()
    with torch.inference_mode():
        for _ in range(10):
            run(x)
        for mode in ("alone", "post", "flush", "idle"):
            for i in range(runs + 5):
                t0 = time.perf_counter()
                logits, deltas = run(x)
                t1 = time.perf_counter()
                if mode == "post":
                    whole.postprocess(logits, deltas, size)
                elif mode == "flush":
                    torch.set_num_threads(1)
                    flush.add_(1)
                    torch.set_num_threads(threads)
                elif mode == "idle":
                    time.sleep(statistics.median(times["post_after_network"]) / 1e3)
                t2 = time.perf_counter()
                if i >= 5:
                    times[names[mode]].append((t1 - t0) * 1e3)
                    if mode == "post":
                        times["post_after_network"].append((t2 - t1) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def runtime_names(features: dict[str, bool], torchao: bool) -> list[str]:
    """The runtimes of the main table: fp32 (and bf16 where the CPU has it) and int8, in table order."""
    names = ["fp32_eager", "fp32_compile", "fp32_ort", "fp32_openvino"] + (["bf16_openvino"] if features["bf16"] else [])
    return names + ["int8_ort", "int8_openvino"] + (["int8_torchao"] if torchao else [])


def onnx_session(name: str, work: Path, threads: int, prefix: str = "", spin: bool = True):
    """The ONNX Runtime or OpenVINO session of runtime ``name`` on ``work/{prefix}{fp32|int8}.onnx``.

    ``spin=False``: ONNX Runtime's idle workers sleep at once instead of spinning, waiting for the next call --
    slower for back-to-back network calls, but they no longer take the cores PyTorch's post-processing needs.
    """
    precision, runtime = name.split("_", 1)
    path = work / f"{prefix}{'int8' if precision == 'int8' else 'fp32'}.onnx"
    if runtime == "ort":
        return ort_session(path, threads=threads, spin=spin)
    return openvino_session(path, threads=threads, precision="bf16" if precision == "bf16" else "fp32")


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


def build_runner(name: str, folded_fp32, folded_qat, calib: torch.Tensor, images: torch.Tensor, work: Path, threads: int,
                 spin: bool = True):
    """The network of runtime ``name`` as a callable on a (B, 3, H, W) batch, warmed up on both batch sizes."""
    if name.startswith("teacher_"):
        return OrtDetector(onnx_session(name[len("teacher_"):], work, threads, "teacher_"), TinyDetector(width=2.0)).network
    if name.endswith(("_ort", "_openvino")):
        return OrtDetector(onnx_session(name, work, threads, spin=spin), TinyDetector()).network
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
    fp32, _, folded_fp32, folded_qat, calib, images = load_models_and_images(args)
    runner = build_runner(args.time_one, folded_fp32, folded_qat, calib, images, args.work, args.threads)
    whole = None  # network + decode + NMS; ONNX Runtime's workers must not spin while PyTorch post-processes
    if not args.time_one.startswith("teacher_"):
        quiet = args.time_one.endswith("_ort")
        whole = _TorchDetector(build_runner(args.time_one, folded_fp32, folded_qat, calib, images, args.work, args.threads,
                                            spin=False) if quiet else runner, fp32, post_threads=1)
    timed = time_network(runner, images, args.runs, whole)
    if args.time_one in ("int8_ort", "int8_openvino"):
        timed["cache_breakdown_batch16"] = cache_breakdown(whole, images, args.runs)
    args.probe_out.write_text(json.dumps(timed))


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


def _best(latency: dict, names: list[str], key: str) -> str:
    return min(names, key=lambda k: latency[k][key]["median_ms"])


def summarize(latency: dict) -> dict:
    """Per measure (network and end to end, batch 1 and 16): the fastest fp32 and fastest float (fp32 or bf16) paths,
    the fastest int8 path, and paired speed-ups (the median of the per-round ratios, the course's estimate, with
    every round's ratio) of int8 ONNX Runtime and of the fastest int8 over both; the ratio of median rounds too."""
    main = {k: v for k, v in latency.items() if k.split("_")[0] in ("fp32", "bf16", "int8")}  # not isa_*, teacher
    fp32 = [k for k in main if k.startswith("fp32_")]
    floats = fp32 + [k for k in main if k.startswith("bf16_")]
    int8 = [k for k in main if k.startswith("int8_")]
    summary = {}
    for key in ("batch1", "batch16", "e2e_batch1", "e2e_batch16"):
        if not all(key in latency[k] for k in fp32 + int8):
            continue
        fastest, fastest_float, best_int8 = _best(latency, fp32, key), _best(latency, floats, key), _best(latency, int8, key)
        paired = paired_speedup(latency[fastest][key], latency["int8_ort"][key])
        summary[key] = {
            "fastest_fp32": fastest, "fastest_fp32_ms": latency[fastest][key]["median_ms"],
            "fastest_float": fastest_float, "fastest_float_ms": latency[fastest_float][key]["median_ms"],
            "fastest_int8": best_int8, "fastest_int8_ms": latency[best_int8][key]["median_ms"],
            "int8_ort_ms": latency["int8_ort"][key]["median_ms"],
            "speedup_int8_ort_vs_fastest_fp32": paired["speedup"],
            "speedup_int8_ort_vs_fastest_fp32_per_round": paired["rounds"],
            "speedup_int8_ort_vs_fastest_fp32_median_rounds": latency[fastest][key]["median_ms"] / latency["int8_ort"][key]["median_ms"],
            "speedup_int8_ort_vs_fp32_ort": paired_speedup(latency["fp32_ort"][key], latency["int8_ort"][key])["speedup"],
            "speedup_fastest_int8_vs_fastest_fp32": paired_speedup(latency[fastest][key], latency[best_int8][key])["speedup"],
            "speedup_fastest_int8_vs_fastest_fp32_per_round": paired_speedup(latency[fastest][key], latency[best_int8][key])["rounds"],
            "speedup_fastest_int8_vs_fastest_float": paired_speedup(latency[fastest_float][key], latency[best_int8][key])["speedup"],
            "speedup_fastest_float_vs_fastest_fp32": paired_speedup(latency[fastest][key], latency[fastest_float][key])["speedup"],
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
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (every runtime once per round)")
    parser.add_argument("--calib-images", type=int, default=64)
    parser.add_argument("--skip-torchao", action="store_true")
    parser.add_argument("--skip-isa", action="store_true", help="skip the oneDNN instruction-set comparison")
    parser.add_argument("--skip-teacher", action="store_true", help="skip the teacher's (width 2) timings")
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
    sizes, maps, test_maps, latency, seconds, test_preds = {}, {}, {}, {}, {}, {}
    features = cpu_int8_features()
    torch.save(fp32.state_dict(), work / "fp32.pt")
    sizes["fp32_state_dict"] = file_size(work / "fp32.pt")

    def score(name: str, model) -> None:  # both splits: nothing is chosen here, comparisons are reported on test
        maps[name], test_maps[name] = evaluate(model, val_loader)["map"], evaluate(model, test_loader)["map"]
        test_preds[name], test_preds["targets"] = predict(model, test_loader, torch.device("cpu"))

    score("fp32", fp32)
    score("qat8_fake_quant", qat)

    # --- ONNX Runtime fp32 and int8 (files shared with the timing processes)
    start = time.perf_counter()
    export_onnx(DetectorNetwork(folded_fp32), images[:2], work / "fp32.onnx")
    seconds["onnx_export"] = time.perf_counter() - start
    export_onnx(DetectorNetwork(folded_qat), images[:2], work / "qat8_float.onnx")
    start = time.perf_counter()
    export_qdq(integer_detector(qat, calib), work / "int8.onnx")  # QAT's own scales (notebook 09)
    seconds["export_qdq"] = time.perf_counter() - start
    quantize_onnx(work / "qat8_float.onnx", work / "int8_recalibrated.onnx", calib)  # ORT re-calibrates: scored only
    sizes["fp32_onnx"], sizes["int8_onnx"] = file_size(work / "fp32.onnx"), file_size(work / "int8.onnx")
    sizes["int8_recalibrated_onnx"] = file_size(work / "int8_recalibrated.onnx")
    onnx_runtimes = [n for n in runtime_names(features, torchao=False) if n.endswith(("_ort", "_openvino"))]
    for name in onnx_runtimes:
        score(name, OrtDetector(onnx_session(name, work, args.threads), fp32))
    score("int8_ort_recalibrated", OrtDetector(ort_session(work / "int8_recalibrated.onnx", threads=args.threads), fp32))
    if not args.skip_teacher:  # the teacher: fp32 and post-training int8 files (latency only)
        teacher = TinyDetector(width=2.0)
        load_checkpoint(ROOT / "benchmarks" / "results" / "teacher_converged.pt", teacher)
        export_onnx(DetectorNetwork(fuse_conv_bn(teacher.eval())), images[:2], work / "teacher_fp32.onnx")
        quantize_onnx(work / "teacher_fp32.onnx", work / "teacher_int8.onnx", calib)
        sizes["teacher_fp32_onnx"], sizes["teacher_int8_onnx"] = (file_size(work / f"teacher_{k}.onnx") for k in ("fp32", "int8"))
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

    paired = {}  # on test: int8 against the fake-quant model it was made from, bf16 against fp32
    for name in [n for n in test_preds if n.startswith(("int8_", "bf16_"))]:
        base = "qat8_fake_quant" if name.startswith("int8_") else "fp32"
        d = paired_bootstrap_map(test_preds[name], test_preds[base], test_preds["targets"])
        paired[f"{name}_minus_{base}"] = {k: d[k] for k in ("value", "low", "high", "std")}

    # --- latency: every runtime in a fresh process, round after round
    onednn_paths = ["fp32_eager", "fp32_compile"] + ([] if args.skip_torchao else ["int8_torchao"])
    runtimes: list[tuple[str, str | None]] = [(n, None) for n in runtime_names(features, not args.skip_torchao)]
    runtimes += [] if args.skip_teacher else [(f"teacher_{n}", None) for n in onnx_runtimes]
    runtimes += [] if args.skip_isa else [(p, isa) for isa in ("AVX512_CORE", "AVX2") for p in onednn_paths]
    rounds: dict[tuple[str, str | None], list[dict]] = {spec: [] for spec in runtimes}
    for r in range(args.rounds):
        for name, isa in runtimes[r % len(runtimes):] + runtimes[:r % len(runtimes)]:  # rotate: no runtime always first
            rounds[(name, isa)].append(time_in_child(name, isa, work, args))
            print(f"round {r}: {name}{f' ({isa})' if isa else ''}: batch 16 {rounds[(name, isa)][-1]['batch16']['median_ms']:.2f} ms",
                  flush=True)
    for (name, isa), timed in rounds.items():
        if isa is None and name in ("int8_ort", "int8_openvino"):
            breakdowns = [t.pop("cache_breakdown_batch16") for t in timed]
            latency.setdefault("cache_breakdown_batch16", {})[name] = {
                k: float(torch.tensor([b[k] for b in breakdowns]).median()) for k in breakdowns[0]}
        if name.startswith("teacher_"):
            latency.setdefault("teacher", {})[name[len("teacher_"):]] = median_round(timed)
        elif isa is None:
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
        "processor": platform.processor(), "cpu": cpu_info(), "cpu_int8_features": cpu_int8_features(), "cpu_caches": cpu_caches(),
        "latency_ms": latency, "file_bytes": sizes, "val_map": maps, "test_map": test_maps, "setup_seconds": seconds,
        "summary": summary,
        "size_ratio_fp32_onnx_over_int8_onnx": sizes["fp32_onnx"] / sizes["int8_onnx"],
        "size_ratio_fp32_state_dict_over_int8_onnx": sizes["fp32_state_dict"] / sizes["int8_onnx"],
        "int8_ort_minus_fake_quant_map": maps["int8_ort"] - maps["qat8_fake_quant"],
        "paired_test_map": paired,
    }
    if "teacher" in latency:
        t = latency["teacher"]
        t_fp32, t_float = [k for k in t if k.startswith("fp32_")], [k for k in t if k.startswith(("fp32_", "bf16_"))]
        t_int8 = [k for k in t if k.startswith("int8_")]
        result["teacher_summary"] = {key: {
            "fastest_fp32": _best(t, t_fp32, key), "fastest_float": _best(t, t_float, key), "fastest_int8": _best(t, t_int8, key),
            "speedup_fastest_int8_vs_fastest_fp32": paired_speedup(t[_best(t, t_fp32, key)][key], t[_best(t, t_int8, key)][key])["speedup"],
            "speedup_fastest_int8_vs_fastest_float": paired_speedup(t[_best(t, t_float, key)][key], t[_best(t, t_int8, key)][key])["speedup"],
        } for key in ("batch1", "batch16")}
    try:
        import onnxruntime
        import openvino

        result["onnxruntime"], result["openvino"] = onnxruntime.__version__, openvino.__version__
    except ImportError:  # pragma: no cover
        pass
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "int8_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("val_map", "file_bytes", "summary")}, indent=1))


if __name__ == "__main__":
    main()
