"""Two runtimes for one ONNX file: OpenVINO agrees with ONNX Runtime (fp32 exactly enough, bf16 within bf16's
rounding, int8 on the same QDQ file), and ``python -m course_utils benchmark`` measures every pair."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from course_utils import TinyDetector, cli
from course_utils.benchmark import VARIANTS, available_variants, benchmark_detector, open_variant
from course_utils.data import SceneConfig, SyntheticShapes, collate_detection, write_coco_split
from course_utils.deploy import DetectorNetwork, OrtDetector, cpu_int8_features, export_onnx, quantize_onnx
from course_utils.quant import fuse_conv_bn
from course_utils.runtimes import openvino_session, ort_session

BF16 = cpu_int8_features()["bf16"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("runtimes")
    torch.manual_seed(0)
    model = TinyDetector(width=0.5).eval()
    calib = torch.stack([SyntheticShapes(16, seed=3)[i][0] for i in range(16)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32 = export_onnx(DetectorNetwork(fuse_conv_bn(model)).eval(), calib[:1], folder / "fp32.onnx")
    return model, calib, {"fp32": fp32, "int8": quantize_onnx(fp32, folder / "int8.onnx", calib)}


def test_openvino_fp32_equals_onnx_runtime_and_bf16_is_close(files):
    model, images, paths = files
    x = {"images": images[:4].numpy()}
    ref = ort_session(paths["fp32"], threads=1).run(None, x)
    for got, want in zip(openvino_session(paths["fp32"], threads=1).run(None, x), ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    if BF16:  # 8 bits of mantissa: relative error about 2^-8 per rounding, accumulated in fp32
        for got, want in zip(openvino_session(paths["fp32"], threads=1, precision="bf16").run(None, x), ref):
            assert np.abs(got - want).max() < 0.05 * max(1.0, np.abs(want).max())
    with pytest.raises(ValueError, match="precision must be one of"):
        openvino_session(paths["fp32"], precision="int4")
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        openvino_session(paths["fp32"].with_name("missing.onnx"))


def test_openvino_runs_the_int8_qdq_file_like_onnx_runtime(files):
    model, images, paths = files
    x = {"images": images[:4].numpy()}
    ref_fp32 = ort_session(paths["fp32"], threads=1).run(None, x)[0]
    ort8 = ort_session(paths["int8"], threads=1).run(None, x)[0]
    ov8 = openvino_session(paths["int8"], threads=1).run(None, x)[0]
    scale = np.abs(ref_fp32).max()
    assert np.abs(ov8 - ort8).max() < 0.1 * scale  # two int8 kernels: equal up to a few quantization steps
    assert np.abs(ov8 - ref_fp32).max() < 0.2 * scale and np.abs(ov8 - ref_fp32).max() > 0  # int8, not fp32
    detections = OrtDetector(openvino_session(paths["int8"], threads=1), model)(images[:2])
    assert len(detections) == 2 and set(detections[0]) >= {"boxes", "scores", "labels"}


def test_an_unreadable_file_is_a_clear_error(tmp_path):
    (tmp_path / "bad.onnx").write_text("not a model")
    with pytest.raises(ValueError, match="OpenVINO cannot read this file"):
        openvino_session(tmp_path / "bad.onnx")


def test_bf16_is_offered_only_where_the_cpu_has_it():
    assert ("openvino", "bf16") not in available_variants({"bf16": False})
    assert available_variants({"bf16": True}) == list(VARIANTS)
    if not BF16:
        with pytest.raises(ValueError, match="no bf16 instructions"):
            openvino_session(__file__, precision="bf16")


def test_benchmark_detector_measures_every_pair(files):
    model, calib, _ = files
    data = [SyntheticShapes(8, seed=5)[i] for i in range(8)]
    loader = torch.utils.data.DataLoader(data, batch_size=4, collate_fn=collate_detection)
    result = benchmark_detector(model, loader, calib, 128, threads=1, rounds=2, runs=2, progress=False)
    rows = {(r["runtime"], r["precision"]): r for r in result["rows"]}
    assert list(rows) == available_variants()
    fp32_maps = {r["map"] for k, r in rows.items() if k[1] == "fp32"}
    assert max(fp32_maps) - min(fp32_maps) < 1e-3  # the same fp32 network in three runtimes
    assert rows[("onnxruntime", "int8")]["file_bytes"] < rows[("onnxruntime", "fp32")]["file_bytes"] / 3
    for r in rows.values():
        for measure in ("network_b1", "network_b16", "end_to_end_b16"):
            t = r[measure]
            assert t["p10_ms"] <= t["median_ms"] <= t["p90_ms"] and len(t["round_medians_ms"]) == 2
    fastest = min((k for k in rows if k[1] == "fp32"), key=lambda k: rows[k]["network_b16"]["median_ms"])
    assert rows[fastest]["network_b16"]["fastest_fp32"] == "/".join(fastest)
    with pytest.raises(ValueError, match="variants must be pairs"):
        benchmark_detector(model, loader, calib, 128, variants=[("tensorrt", "int8")])
    with pytest.raises(ValueError, match="is not one of"):
        open_variant("onnxruntime", "bf16", {}, model, 1)


@pytest.mark.slow  # a training and a benchmark in subprocesses: about 40 s
def test_benchmark_command_on_a_small_coco_folder(tmp_path):
    write_coco_split(tmp_path / "train", list(range(16)), SceneConfig(image_size=64))
    write_coco_split(tmp_path / "val", list(range(500, 508)), SceneConfig(image_size=64))
    run = tmp_path / "run"
    common = ["--no-progress", "--device", "cpu", "--image-size", "64", "--width", "0.5", "--epochs", "1"]
    assert cli.main(["train", "--train", str(tmp_path / "train" / "annotations.json"), "--val",
                     str(tmp_path / "val" / "annotations.json"), "--out", str(run), *common]) == 0
    done = subprocess.run([sys.executable, "-m", "course_utils", "benchmark", str(run / "best.pt"), "--data",
                           str(tmp_path / "val" / "annotations.json"), "--rounds", "2", "--runs", "3", "--threads", "1",
                           "--json", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "openvino" in done.stdout and "x float" in done.stdout
    result = json.loads((tmp_path / "b.json").read_text())
    assert len(result["rows"]) == len(available_variants()) and result["calib"].endswith("train/annotations.json")
    assert result["cpu"]["features"]["bf16"] == BF16
    again = subprocess.run([sys.executable, "-m", "course_utils", "benchmark", str(run / "best.pt"), "--data",
                            str(tmp_path / "val" / "annotations.json"), "--json", str(tmp_path / "b.json")],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.strip().splitlines()[-1].startswith("error: --json")


@pytest.mark.slow  # six runtimes scored on 200 images: about 40 s
def test_benchmark_command_on_the_shipped_detector(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-m", "course_utils", "benchmark",
                           str(root / "benchmarks" / "results" / "tiny_detector_converged.pt"),
                           "--data", str(root / "data" / "val" / "annotations.json"),
                           "--calib", str(root / "data" / "test" / "annotations.json"), "--num-calib", "32",
                           "--rounds", "1", "--runs", "3", "--json", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = {(r["runtime"], r["precision"]): r for r in json.loads((tmp_path / "b.json").read_text())["rows"]}
    assert abs(rows[("onnxruntime", "fp32")]["map"] - rows[("openvino", "fp32")]["map"]) < 1e-3
    assert rows[("onnxruntime", "fp32")]["map"] > 0.8  # the converged detector (0.865 on val)
    for runtime in ("onnxruntime", "openvino"):  # int8 costs well under a point here
        assert rows[(runtime, "fp32")]["map"] - rows[(runtime, "int8")]["map"] < 0.01
