"""course_utils.deploy: ONNX export, ONNX Runtime int8, the detector wrapper, timing helpers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_utils import TinyDetector
from course_utils.deploy import (
    DetectorNetwork, OrtDetector, cpu_info, cpu_int8_features, export_onnx, ort_nchwc_block_size, file_size, measure_latency, ort_session, quantize_onnx,
)
from course_utils.quant import fuse_conv_bn

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    detector = TinyDetector()
    for m in detector.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0), m.running_mean.uniform_(-0.2, 0.2)
    detector.eval()
    folded = fuse_conv_bn(detector)
    folder = tmp_path_factory.mktemp("onnx")
    images = torch.rand(16, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    fp32 = export_onnx(DetectorNetwork(folded), images[:2], folder / "fp32.onnx")
    int8 = quantize_onnx(fp32, folder / "int8.onnx", images)
    return detector, images, fp32, int8


def test_onnx_fp32_equals_pytorch_any_batch(exported) -> None:
    detector, images, fp32, _ = exported
    run = OrtDetector(ort_session(fp32), detector)
    for batch in (1, 5):  # the batch axis is dynamic
        logits, deltas = run.network(images[:batch])
        ref_logits, ref_deltas = DetectorNetwork(detector)(images[:batch])
        assert torch.allclose(logits, ref_logits, atol=1e-4) and torch.allclose(deltas, ref_deltas, atol=1e-4)


def test_int8_model_is_smaller_and_close(exported) -> None:
    detector, images, fp32, int8 = exported
    assert file_size(fp32) / file_size(int8) > 3.5  # int8 weights are 1 byte instead of 4
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    logits, _ = OrtDetector(ort_session(int8), detector).network(images[:4])
    ref, _ = DetectorNetwork(detector)(images[:4])
    err = (logits - ref).abs().max().item()
    assert 0 < err < 0.1 * ref.abs().max().item()


def test_ort_detector_returns_detections(exported) -> None:
    detector, images, _, int8 = exported
    out = OrtDetector(ort_session(int8), detector)(list(images[:3]))
    assert len(out) == 3 and set(out[0]) == {"boxes", "scores", "labels"}


def test_quantize_onnx_rejects_empty_calibration(exported, tmp_path) -> None:
    _, _, fp32, _ = exported
    with pytest.raises(ValueError, match="calibration_images"):
        quantize_onnx(fp32, tmp_path / "x.onnx", torch.empty(0, 3, 128, 128))


def test_measure_latency_and_cpu_features(tmp_path) -> None:
    calls = []
    stats = measure_latency(lambda: calls.append(1), warmup=3, runs=20)
    assert len(calls) == 23 and stats["runs"] == 20 and stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor : 0\nflags\t\t: fpu sse avx2 avx512f avx512_vnni\n")
    assert cpu_int8_features(fake) == {"avx2": True, "avx512f": True, "avx512_vnni": True, "avx_vnni": False,
                                       "avx512_bf16": False, "amx_int8": False, "amx_bf16": False, "vnni": True, "bf16": False}
    assert not any(cpu_int8_features(tmp_path / "missing").values())


def test_measure_interleaved_runs_rounds_in_turn_and_keeps_the_median_round(monkeypatch) -> None:
    from course_utils import deploy
    from course_utils.deploy import measure_interleaved

    calls = {"a": [], "b": []}
    fns = {n: (lambda n=n: calls[n].append(1)) for n in ("a", "b")}
    out = measure_interleaved(fns, rounds=3, runs=5, min_seconds=0.0)
    assert set(out) == {"a", "b"} and all(r["runs"] == 5 for r in out.values())
    assert len(calls["a"]) == len(calls["b"]) == 3 * (10 + 5)  # warm-up + runs, every round
    # interleaving: every round times every function once, each round starting one function later
    seen: list[str] = []
    fns = {n: (lambda n=n: seen.append(n)) for n in ("a", "b", "c")}
    measure_interleaved(fns, rounds=3, runs=1, min_seconds=0.0)
    assert "".join(seen) == "".join(n * 11 for n in "abc" + "bca" + "cab")
    fns = {n: (lambda n=n: seen.append(n)) for n in ("a", "b")}
    # the median round is kept: rounds of 1, 3 and 2 ms -> the 2 ms round (a fake clock: sleep overshoots on a busy machine)
    clock = [0.0]
    monkeypatch.setattr(deploy.time, "perf_counter", lambda: clock[0])
    durations = iter([0.001] * 11 + [0.003] * 11 + [0.002] * 11)

    def run() -> None:
        clock[0] += next(durations)

    out = measure_interleaved({"x": run}, rounds=3, runs=1, min_seconds=0.0)
    monkeypatch.undo()
    assert out["x"]["median_ms"] == pytest.approx(2.0)
    assert out["x"]["round_medians_ms"] == pytest.approx([1.0, 3.0, 2.0])  # every round, in round order
    with pytest.raises(ValueError, match="rounds"):
        measure_interleaved(fns, rounds=0)


def test_ort_block_size_follows_the_vector_width(tmp_path) -> None:
    cases = {"fpu sse2 avx2 avx512f avx512bw": 16, "fpu sse2 avx2 fma": 8, "fpu sse2 sse4_2": 1}
    for flags, block in cases.items():
        fake = tmp_path / f"cpuinfo_{block}"
        fake.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
        assert ort_nchwc_block_size(fake) == block
        info = cpu_info(fake)
        assert info["model"] == "Test CPU" and info["logical_cpus"] == 2 and info["ort_nchwc_block"] == block
        assert info["features"] == cpu_int8_features(fake)
    assert ort_nchwc_block_size(tmp_path / "missing") == 1
    assert cpu_info(tmp_path / "missing")["model"] == "unknown"


def test_ort_network_runner_runs_the_folded_network_and_leaves_the_model_alone() -> None:
    from course_utils.deploy import ort_network_runner

    torch.manual_seed(0)
    model = TinyDetector(width=0.5).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits, deltas = ort_network_runner(model, batch=3, threads=1, image_size=64)()
    h = 64 // model.stride
    assert logits.shape == (3, h * h, model.num_classes) and deltas.shape == (3, h * h, 4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN folded in a copy only
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with pytest.raises(ValueError, match="batch"):
        ort_network_runner(model, batch=0)


def test_checkpoint_bytes_counts_what_torch_save_writes_and_zeros_compress(tmp_path) -> None:
    from course_utils.deploy import checkpoint_bytes

    model = TinyDetector(width=0.5)
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp_path / "m.pt")
    raw, packed = checkpoint_bytes(model)
    assert abs(raw - (tmp_path / "m.pt").stat().st_size) < 0.02 * raw  # the archive's record names follow the file name
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    raw_zero, packed_zero = checkpoint_bytes(model)
    assert raw_zero == raw and packed_zero < packed / 5


def test_paired_speedup_divides_round_by_round_and_refuses_mismatched_rounds() -> None:
    from course_utils.deploy import paired_speedup

    out = paired_speedup({"round_medians_ms": [11.0, 30.0, 10.0]}, {"round_medians_ms": [5.0, 12.0, 4.0]})
    assert out["rounds"] == pytest.approx([2.2, 2.5, 2.5]) and out["speedup"] == pytest.approx(2.5)
    assert (out["low"], out["high"]) == pytest.approx((2.2, 2.5))
    assert paired_speedup([2.0, 4.0, 3.0], [1.0, 2.0, 1.5])["speedup"] == pytest.approx(2.0)  # plain lists too
    with pytest.raises(ValueError, match="rounds"):
        paired_speedup([2.0, 4.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="round_medians_ms"):
        paired_speedup({"median_ms": 2.0}, [1.0])
    with pytest.raises(ValueError, match="positive"):
        paired_speedup([2.0, 0.0], [1.0, 1.0])


def test_the_paired_speedup_wanders_less_when_whole_rounds_slow_down() -> None:
    """Simulated interleaved rounds of two models whose true speed-up is 2: each round's machine speed is
    shared by both models (another process, a clock change), each run adds its own noise. Over many
    repetitions the median of per-round ratios lands nearer 2 than the ratio of the two median rounds."""
    import numpy as np

    from course_utils.deploy import paired_speedup

    rng = np.random.default_rng(0)
    errors = {"paired": [], "median rounds": []}
    for _ in range(2000):
        slowdown = np.exp(rng.normal(0, 0.15, 3))  # per round, shared by both models
        base = 10.0 * slowdown * np.exp(rng.normal(0, 0.03, 3))
        cand = 5.0 * slowdown * np.exp(rng.normal(0, 0.03, 3))
        errors["paired"].append(abs(paired_speedup(list(base), list(cand))["speedup"] - 2.0))
        errors["median rounds"].append(abs(np.median(base) / np.median(cand) - 2.0))
    paired, unpaired = np.mean(errors["paired"]), np.mean(errors["median rounds"])
    assert paired < 0.9 * unpaired, (paired, unpaired)


def test_paired_speedup_refuses_strings_booleans_and_overflow() -> None:
    from course_utils.deploy import paired_speedup

    for bad in ("123", {"round_medians_ms": "12"}, [True, True], {1.0, 2.0}):
        with pytest.raises(ValueError, match="milliseconds"):
            paired_speedup(bad, [1.0, 2.0])
    with pytest.raises(ValueError, match="overflow"):
        paired_speedup([1e308], [1e-10])
