"""Notebook 11's tools: the packed export and its collapse, the scales in a QDQ file, SQNR per tensor, the profiler,
the other quantization formats, 16-bit pair saturation and reduce_range, Entropy calibration that really clips, mixed 4/8-bit allocation, smooth activations."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from course_utils import TinyDetector
from course_utils.deploy import (DetectorNetwork, OrtDetector, _entropy_ranges, export_onnx, ort_session, quantize_onnx,
                                 quantize_onnx_dynamic)
from course_utils.int8_debug import (NoVnniSession, PackedDetectorNetwork, PackedOrtDetector, activation_sqnr,
                                     nodes_after_last_conv, pair_saturation, profile_by_op, qdq_scales, unpack_outputs)
from course_utils.quant import (allocate_bits, fuse_conv_bn, layer_weight_bytes, model_weight_bytes, pairwise_int16_sums,
                                quantize_model)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A freshly initialised detector (seeded) exported both ways, with int8 copies of each."""
    work = tmp_path_factory.mktemp("int8_debug")
    torch.manual_seed(0)
    detector = TinyDetector().eval()
    calib = torch.rand(16, 3, 64, 64)
    paths = {"fp32": export_onnx(DetectorNetwork(detector), calib[:2], work / "fp32.onnx"),
             "packed_fp32": export_onnx(PackedDetectorNetwork(detector, (64, 64)), calib[:2], work / "packed_fp32.onnx")}
    paths["int8"] = quantize_onnx(paths["fp32"], work / "int8.onnx", calib)
    paths["packed_int8"] = quantize_onnx(paths["packed_fp32"], work / "packed_int8.onnx", calib)
    return detector, calib, paths, work


def test_unpack_inverts_the_packing(files):
    detector, calib, _, _ = files
    with torch.no_grad():
        packed = PackedDetectorNetwork(detector, (64, 64))(calib[:4])
        logits, deltas = detector.network(calib[:4])
    anchors, _ = detector.all_anchors(detector.level_sizes((64, 64)), torch.device("cpu"))
    got_logits, got_deltas = unpack_outputs(packed, anchors)
    assert packed.shape == (4, 64, 4 + detector.num_classes)
    torch.testing.assert_close(got_logits, logits, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(got_deltas, deltas, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="packed outputs must be"):
        unpack_outputs(packed[:, :10], anchors)


def test_the_packed_file_scores_like_the_two_output_file_in_fp32(files):
    detector, calib, paths, _ = files
    a = OrtDetector(ort_session(paths["fp32"]), detector)(calib[:4])
    b = PackedOrtDetector(ort_session(paths["packed_fp32"]), detector)(calib[:4])
    for x, y in zip(a, b):
        torch.testing.assert_close(x["scores"], y["scores"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(x["boxes"], y["boxes"], atol=1e-2, rtol=1e-4)
    with pytest.raises(ValueError, match="has 2 outputs"):
        PackedOrtDetector(ort_session(paths["fp32"]), detector)(calib[:1])


def test_one_shared_scale_zeroes_the_scores_and_qdq_scales_shows_why(files):
    _, calib, paths, _ = files
    x = calib[:8].numpy()
    packed = ort_session(paths["packed_int8"]).run(None, {"images": x})[0]
    fp32 = ort_session(paths["packed_fp32"]).run(None, {"images": x})[0]
    assert (fp32[..., 4:] > 0).all() and (packed[..., 4:] == 0).mean() > 0.9  # scores near the prior 0.01 vanish
    grid = list(qdq_scales(paths["packed_int8"]).values())[-1]
    assert grid["scale"] > 2 * float(fp32[..., 4:].max())  # one step is larger than any score
    assert grid["high"] - grid["low"] == pytest.approx(255 * grid["scale"], rel=1e-5)
    assert grid["low"] <= float(fp32.min()) + grid["scale"] and grid["high"] >= float(fp32.max()) - grid["scale"]
    logits = ort_session(paths["int8"]).run(None, {"images": x})[0]  # two outputs: the logits have their own grid
    assert (1 / (1 + np.exp(-logits)) > 0.005).all()  # the scores stay near their prior 0.01
    with pytest.raises(ValueError, match="no per-tensor QuantizeLinear"):
        qdq_scales(paths["fp32"])
    after = nodes_after_last_conv(paths["packed_fp32"])  # the repair: the decoding and packing stay in float
    assert {n.op_type for n in onnx.load(str(paths["packed_fp32"])).graph.node if n.name in after} >= {"Concat", "Sigmoid"}
    fixed = quantize_onnx(paths["packed_fp32"], paths["packed_int8"].with_name("fixed.onnx"), calib, nodes_to_exclude=after)
    assert (ort_session(fixed).run(None, {"images": x})[0][..., 4:] > 0).all()


def test_activation_sqnr_is_in_graph_order_and_falls_where_ranges_are_clipped(files):
    _, calib, paths, work = files
    good = activation_sqnr(paths["fp32"], paths["int8"], calib[:8])
    order = [o for n in onnx.load(str(paths["fp32"])).graph.node for o in n.output]
    assert list(good) == [o for o in order if o in good] and len(good) >= 10
    assert all(math.isfinite(v) and v > 15 for v in good.values())
    dark = quantize_onnx(paths["fp32"], work / "dark.onnx", calib * 0.05)  # calibrated on almost black images
    bad = activation_sqnr(paths["fp32"], dark, calib[:8])
    assert min(bad.values()) < min(good.values()) - 6  # clipped ranges: at least a bit's worth lower somewhere


def test_profile_by_op_names_the_kernels_of_each_format(files):
    _, calib, paths, work = files
    fp32 = profile_by_op(paths["fp32"], calib[:4], threads=1, runs=3)
    assert "Conv" in fp32 and all(v > 0 for v in fp32.values())
    assert list(fp32.values()) == sorted(fp32.values(), reverse=True)
    assert "QLinearConv" in profile_by_op(paths["int8"], calib[:4], threads=1, runs=3)
    dynamic = quantize_onnx_dynamic(paths["fp32"], work / "dynamic.onnx")
    assert "ConvInteger" in {n.op_type for n in onnx.load(str(dynamic)).graph.node}
    assert "ConvInteger" in profile_by_op(dynamic, calib[:4], threads=1, runs=3)
    qop = quantize_onnx(paths["fp32"], work / "qop.onnx", calib, quant_format="qoperator")
    assert "QLinearConv" in {n.op_type for n in onnx.load(str(qop)).graph.node}
    with pytest.raises(ValueError, match="quant_format"):
        quantize_onnx(paths["fp32"], work / "x.onnx", calib, quant_format="QDQ8")
    with pytest.raises(ValueError, match="runs must be"):
        profile_by_op(paths["fp32"], calib[:1], runs=0)
    with pytest.raises(ValueError, match="would destroy it"):
        quantize_onnx_dynamic(paths["fp32"], paths["fp32"])


def test_entropy_calibration_really_searches_a_range(files):
    """quantize_static's own Entropy calibrator (128 bins) returns MinMax's ranges; ours clips some."""
    _, calib, paths, work = files
    minmax = qdq_scales(quantize_onnx(paths["fp32"], work / "mm.onnx", calib))
    entropy = qdq_scales(quantize_onnx(paths["fp32"], work / "ent.onnx", calib, method="entropy"))
    assert set(minmax) == set(entropy)
    narrower = [t for t in minmax if entropy[t]["high"] < 0.9 * minmax[t]["high"]]
    assert narrower, "every Entropy range equals MinMax's: the calibrator had a single candidate threshold"
    assert all(entropy[t]["high"] <= minmax[t]["high"] + 1e-6 for t in minmax)

    class Reader:
        def __init__(self):
            self.batches = iter([{"images": calib.numpy()}])

        def get_next(self):
            return next(self.batches, None)

    ranges = _entropy_ranges(paths["fp32"], Reader())
    assert {t: max(hi, 0.0) for t, (lo, hi) in ranges.items() if t in entropy} == pytest.approx(  # grids include 0
        {t: entropy[t]["high"] for t in entropy if t in ranges}, rel=0.02, abs=2 * max(e["scale"] for e in entropy.values()))

    # ONNX Runtime's own quantize_static with Entropy, one batch: its 128/128 bins leave only the full range
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(str(paths["fp32"]), str(work / "ort_entropy.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=CalibrationMethod.Entropy)
    ort_entropy = qdq_scales(work / "ort_entropy.onnx")
    one_batch_minmax = qdq_scales(quantize_onnx(paths["fp32"], work / "mm1.onnx", calib, batch_size=len(calib)))
    assert {t: g["high"] for t, g in ort_entropy.items()} == pytest.approx({t: g["high"] for t, g in one_batch_minmax.items()},
                                                                           rel=1e-5)


class TwoConvs(nn.Module):
    """conv 3x3 (stride 2, pad 1) -> ReLU -> conv 1x1: returns (second conv, first conv's ReLU output)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(4, 5, 1)

    def forward(self, x):
        y = self.c1(x).relu()
        return self.c2(y), y


def _reference_pairs(q_x: np.ndarray, zero_point: int, q_w: np.ndarray, stride: int, pad: int) -> tuple[int, int]:
    """Loop over output positions: each patch laid out (ky, kx, c), K padded to even, pairs by pairwise_int16_sums.
    Returns (saturated pairs, total pairs)."""
    x = np.pad(q_x, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=zero_point)
    k = q_w.shape[-1]
    w = torch.from_numpy(q_w.transpose(0, 2, 3, 1).reshape(len(q_w), -1).astype(np.int64))
    if w.shape[1] % 2:
        w = torch.cat([w, torch.zeros(len(w), 1, dtype=w.dtype)], 1)
    saturated = total = 0
    out = (x.shape[-1] - k) // stride + 1
    for n in range(len(x)):
        for oy in range(out):
            for ox in range(out):
                patch = x[n, :, oy * stride:oy * stride + k, ox * stride:ox * stride + k].transpose(1, 2, 0).reshape(-1)
                row = torch.from_numpy(patch.astype(np.int64))
                row = torch.cat([row, torch.zeros(w.shape[1] - len(row), dtype=row.dtype)])
                _, sat = pairwise_int16_sums(row.expand(len(w), -1), w)
                saturated, total = saturated + int(sat.sum()), total + sat.numel()
    return saturated, total


def test_pair_saturation_counts_like_a_loop_over_patches_and_reduce_range_prevents_it(tmp_path):
    from onnx import numpy_helper

    torch.manual_seed(0)
    net = TwoConvs().eval()
    with torch.no_grad():  # every weight of c1's first channel large and positive: its pairs must saturate
        net.c1.weight[0] = 1.0
    images = torch.rand(3, 3, 8, 8)
    fp32 = export_onnx(net, images[:2], tmp_path / "two.onnx")
    int8 = quantize_onnx(fp32, tmp_path / "two_int8.onnx", images)
    got = pair_saturation(int8, images, chunk=7)
    assert len(got) == 2
    first = next(iter(got.values()))
    assert first["weight"] == "c1.weight" and first["pairs"] == 3 * 16 * 4 * 14  # N·L rows x Cout x ceil(27 / 2) pairs
    graph = onnx.load(str(int8)).graph
    q_w = next(numpy_helper.to_array(t) for t in graph.initializer if t.name == "c1.weight_quantized")
    grid = qdq_scales(int8)["images"]
    q_x = np.clip(np.rint(images.numpy() / grid["scale"]) + grid["zero_point"], 0, 255).astype(np.int64)
    saturated, total = _reference_pairs(q_x, grid["zero_point"], q_w, stride=2, pad=1)
    assert (first["saturated"], first["pairs"]) == (saturated, total)
    assert first["saturated"] > 0 and first["outputs_hit"] >= 0.05 and first["max_abs_pair"] > 32767
    assert first["fraction"] == pytest.approx(saturated / total)

    seven = quantize_onnx(fp32, tmp_path / "two_rr.onnx", images, reduce_range=True)
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(seven)).graph.initializer]
    assert max(int(np.abs(w).max()) for w in weights if w.dtype == np.int8) <= 64
    assert all(c["saturated"] == 0 and c["max_abs_pair"] <= 2 * 255 * 64 for c in pair_saturation(seven, images).values())
    with pytest.raises(TypeError, match="reduce_range"):
        quantize_onnx(fp32, tmp_path / "x.onnx", images, reduce_range="yes")
    with pytest.raises(ValueError, match="no Conv with uint8 input"):
        pair_saturation(fp32, images)
    with pytest.raises(ValueError, match="images must be"):
        pair_saturation(int8, images[0])


def test_no_vnni_session_is_exact_without_saturation_and_changes_only_saturated_outputs(tmp_path):
    torch.manual_seed(1)
    net = TwoConvs().eval()
    with torch.no_grad():
        net.c1.weight[0] = 1.0  # channel 0 saturates (see above); with one scale per tensor, 1-3 stay small
        net.c1.weight[1:] *= 0.1
    images = torch.rand(4, 3, 8, 8)
    fp32 = export_onnx(net, images[:2], tmp_path / "two.onnx")
    int8 = quantize_onnx(fp32, tmp_path / "two_int8.onnx", images, per_channel=False)
    feed = {"images": images.numpy()}
    reference = ort_session(int8).run(None, feed)
    exact = NoVnniSession(int8, saturate=False)
    for got, want in zip(exact.run(None, feed), reference):  # the integer formula reproduces ONNX Runtime's kernel
        np.testing.assert_array_equal(got, want)
    clamped = NoVnniSession(int8).first_conv_codes(images.numpy())
    codes = exact.first_conv_codes(images.numpy())
    changed = (clamped != codes).flatten(2).any(-1)  # (N, C_out): which output channels moved
    assert changed[:, 0].all() and not changed[:, 1:].any()
    assert (clamped[:, 0].int() <= codes[:, 0].int()).all()  # positive pairs clamped: the sums can only shrink
    assert not np.array_equal(NoVnniSession(int8).run(None, feed)[1], reference[1])
    seven = quantize_onnx(fp32, tmp_path / "two_rr.onnx", images, reduce_range=True)
    torch.testing.assert_close(NoVnniSession(seven).first_conv_codes(images.numpy()),
                               NoVnniSession(seven, saturate=False).first_conv_codes(images.numpy()), rtol=0, atol=0)
    with pytest.raises(ValueError, match="no Conv with uint8 input"):
        NoVnniSession(fp32)
    with pytest.raises(ValueError, match="no Conv with uint8 input"):
        pair_saturation(fp32, images)
    with pytest.raises(TypeError, match="saturate must be"):
        NoVnniSession(int8, saturate=1)


def test_no_vnni_session_reproduces_onnx_runtime_on_the_per_channel_detector(files):
    """The course's own layout: a TinyDetector, weights per channel, the image normalised inside the network."""
    _, calib, paths, _ = files
    feed = {"images": calib[:6].numpy()}
    for got, want in zip(NoVnniSession(paths["int8"], saturate=False).run(None, feed), ort_session(paths["int8"]).run(None, feed)):
        np.testing.assert_array_equal(got, want)


def test_int4_weights_are_stored_in_four_bits_and_bad_names_refused(files):
    from onnx import numpy_helper

    _, calib, paths, work = files
    names = ["detector.stage4.0.0.weight", "detector.stage4.1.0.weight"]
    mixed = quantize_onnx(paths["fp32"], work / "int4.onnx", calib, int4_weights=names)
    stored = {t.name: t for t in onnx.load(str(mixed)).graph.initializer}
    for name in names:
        tensor = stored[f"{name}_quantized"]
        assert tensor.data_type == onnx.TensorProto.INT4
        values = numpy_helper.to_array(tensor).astype(int)
        assert values.min() >= -8 and values.max() <= 7 and values.max() - values.min() >= 8  # the 4-bit grid, used
    assert stored["detector.stage3.1.0.weight_quantized"].data_type == onnx.TensorProto.INT8  # the others: int8
    four_bit_weights = sum(np.prod(stored[f"{n}_quantized"].dims) for n in names) // 2  # bytes saved, about
    assert paths["int8"].stat().st_size - mixed.stat().st_size >= 0.9 * four_bit_weights
    a, b = (ort_session(p).run(None, {"images": calib[:4].numpy()})[1] for p in (paths["int8"], mixed))
    assert np.isfinite(b).all() and np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.9  # the same network, coarser
    with pytest.raises(ValueError, match="not conv weights"):
        quantize_onnx(paths["fp32"], work / "x.onnx", calib, int4_weights=["stage4.0.0.weight"])
    with pytest.raises(TypeError, match="int4_weights must be a list"):
        quantize_onnx(paths["fp32"], work / "x.onnx", calib, int4_weights="detector.stem.0.weight")
    with pytest.raises(ValueError, match="int4_weights needs the defaults"):
        quantize_onnx(paths["fp32"], work / "x.onnx", calib, int4_weights=names, per_channel=False)


def test_smooth_activations_build_and_bad_ones_are_refused():
    assert any(isinstance(m, nn.SiLU) for m in TinyDetector(activation="silu").modules())
    assert any(isinstance(m, nn.Hardswish) for m in TinyDetector(activation="hardswish").modules())
    assert not any(isinstance(m, nn.SiLU) for m in TinyDetector().modules())
    with pytest.raises(ValueError, match="activation must be one of"):
        TinyDetector(activation="gelu")


def test_layer_bytes_and_the_greedy_allocation():
    torch.manual_seed(0)
    model = fuse_conv_bn(TinyDetector())
    at8, at4 = layer_weight_bytes(model, 8), layer_weight_bytes(model, 4)
    conv = model.stem[0]
    assert at8["stem.0"] == conv.weight.numel() + 8 * conv.out_channels
    assert at4["stem.0"] == math.ceil(conv.weight.numel() / 2) + 8 * conv.out_channels
    assert model_weight_bytes(model, {}) == sum(at8.values())
    assert model_weight_bytes(model, {"stem.0": 4}) == sum(at8.values()) - at8["stem.0"] + at4["stem.0"]
    drops = {name: 1.0 for name in at8}
    drops["stage4.1.0"] = 0.0  # a free layer: it goes to 4 bits first
    drops["box_out"] = 100.0  # the costliest: never, if the budget allows
    saving = at8["stage4.1.0"] - at4["stage4.1.0"]
    assert allocate_bits(drops, model, sum(at8.values()) - saving) == {"stage4.1.0": 4}
    assert allocate_bits(drops, model, sum(at8.values())) == {}
    half = allocate_bits(drops, model, (sum(at8.values()) + sum(at4.values())) // 2)
    assert "stage4.1.0" in half and "box_out" not in half
    assert model_weight_bytes(model, half) <= (sum(at8.values()) + sum(at4.values())) // 2
    with pytest.raises(ValueError, match="below the model at 4 bits"):
        allocate_bits(drops, model, sum(at4.values()) - 1)
    with pytest.raises(KeyError, match="no value for layers"):
        allocate_bits({"stem.0": 1.0}, model, sum(at8.values()))


def test_quantize_model_gives_the_named_layers_their_bits():
    torch.manual_seed(0)
    model = quantize_model(TinyDetector().eval(), weight_bits=8, layer_bits={"box_out": 4})
    assert model.box_out.weight_fq.observer.q_max == 7 and model.cls_out.weight_fq.observer.q_max == 127
    with pytest.raises(KeyError, match="not layers of the model"):
        quantize_model(TinyDetector().eval(), layer_bits={"no_such_layer": 4})
