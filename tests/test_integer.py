"""Integer-only inference (course_utils.quant.integer / convert / qdq) against exact arithmetic,
fake quantization and ONNX Runtime's integer kernels."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from course_utils import SyntheticShapes, TinyDetector, evaluate, load_checkpoint, materialize
from course_utils.deploy import OrtDetector, ort_session
from course_utils.quant import (
    IntegerAdd,
    IntegerConv,
    calibrate,
    conv_qdq_model,
    export_qdq,
    fake_quantize,
    fixed_point_multiplier,
    integer_conv2d,
    integer_detector,
    optimized_op_types,
    prepare_qat,
    quantize_bias,
    quantize_model,
    requantize,
    rounding_shift,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _has_vnni() -> bool:
    from course_utils.deploy import cpu_int8_features

    features = cpu_int8_features()
    return features["avx512_vnni"] or features["avx_vnni"]


# Without VNNI, ONNX Runtime's u8 x s8 kernel sums pairs of products in saturating int16 (vpmaddubsw), so its
# integers may differ from exact arithmetic by more than the float32 ties these comparisons allow.
needs_vnni = pytest.mark.skipif(not _has_vnni(), reason="exact ONNX Runtime comparisons assume an x86 CPU with VNNI")


def round_half_away(x: Fraction) -> int:
    """Exact rounding of a rational, half away from zero."""
    magnitude = (abs(x.numerator) * 2 + x.denominator) // (2 * x.denominator)
    return magnitude if x >= 0 else -magnitude


# ------------------------------------------------------------------ the fixed-point multiplier
def test_fixed_point_multiplier_represents_m_to_31_bits():
    rng = np.random.default_rng(0)
    m = torch.tensor(10.0 ** rng.uniform(-7, 1.5, size=2000))
    m0, n = fixed_point_multiplier(m)
    assert bool(((m0 >= 2**30) & (m0 < 2**31)).all()), "M0 must lie in [0.5, 1) as a Q31 integer"
    approx = m0.double() * torch.pow(2.0, -(31 + n).double())
    assert float(((approx - m) / m).abs().max()) <= 2.0**-31


def test_fixed_point_multiplier_carry_keeps_m0_in_range():
    m = torch.tensor([1 - 2.0**-40, 0.5 - 2.0**-42])  # mantissas that round up to 2^31
    m0, n = fixed_point_multiplier(m)
    assert m0.tolist() == [2**30, 2**30] and n.tolist() == [-1, 0]


@pytest.mark.parametrize("bad", [0.0, -1e-3, float("nan"), float("inf")])
def test_fixed_point_multiplier_refuses_non_positive(bad):
    with pytest.raises(ValueError, match="M > 0"):
        fixed_point_multiplier(bad)


def test_rounding_shift_is_round_half_away_from_zero():
    values = list(range(-40, 41)) + [random.Random(1).randint(-2**40, 2**40) for _ in range(500)]
    for shift in (1, 2, 3, 7, 20):
        got = rounding_shift(torch.tensor(values), shift).tolist()
        assert got == [round_half_away(Fraction(v, 2**shift)) for v in values]


def test_requantize_is_exact_rounding_of_acc_times_m0():
    """requantize computes round(acc · m0 / 2^(31+n)) exactly; against round(acc · M) it differs by at most
    one unit, and only rarely (M0 carries 31 bits of M)."""
    rng = random.Random(0)
    acc = torch.tensor([rng.randint(-2**24, 2**24) for _ in range(4000)], dtype=torch.int32)
    scales = [10 ** rng.uniform(-6, -1) for _ in range(4000)]
    off_by_one = 0
    for m in scales[:40]:
        m0, n = fixed_point_multiplier(m)
        got = requantize(acc, m0, n, 0, -2**40, 2**40).tolist()
        exact_fp = [round_half_away(Fraction(a) * int(m0) / 2 ** (31 + int(n))) for a in acc.tolist()]
        assert got == exact_fp
        exact_m = [round_half_away(Fraction(a) * Fraction(m)) for a in acc.tolist()]
        diffs = [abs(g - e) for g, e in zip(got, exact_m)]
        assert max(diffs) <= 1
        off_by_one += sum(diffs)
    assert off_by_one < 0.001 * 40 * len(acc), f"{off_by_one} outputs off by one"


def test_requantize_per_channel_saturates_and_adds_the_zero_point():
    acc = torch.tensor([[[[1000]], [[-1000]]]], dtype=torch.int32)  # (1, 2, 1, 1)
    m0, n = fixed_point_multiplier(torch.tensor([0.5, 0.01]))
    out = requantize(acc, m0, n, 10, 0, 255)
    assert out.flatten().tolist() == [255, 0]  # 10 + 500 saturates; 10 - 10 = 0
    assert requantize(torch.tensor([[[[100]], [[-100]]]], dtype=torch.int32), m0, n, 10, 0, 255).flatten().tolist() == [60, 9]


def test_requantize_refuses_float_accumulators():
    with pytest.raises(TypeError, match="integer tensor"):
        requantize(torch.ones(3), torch.tensor(2**30), torch.tensor(0), 0, 0, 255)


def test_quantize_bias_is_at_the_accumulator_scale():
    b = torch.tensor([0.3, -0.02, 1.7])
    w_scale = torch.tensor([0.01, 0.02, 0.005])
    q = quantize_bias(b, 0.04, w_scale)
    assert q.dtype == torch.int32
    assert q.tolist() == [round(0.3 / 4e-4), round(-0.02 / 8e-4), round(1.7 / 2e-4)]
    with pytest.raises(ValueError, match="does not fit int32"):
        quantize_bias(torch.tensor([1e6]), 1e-4, torch.tensor([1e-4]))
    g = torch.Generator().manual_seed(4)  # quotients that are not integers: rounding, not truncation
    b, w_scale = torch.randn(500, generator=g), torch.rand(500, generator=g) * 0.01 + 1e-3
    want = torch.round(b.double() / (w_scale.double() * 0.03))
    assert torch.equal(quantize_bias(b, 0.03, w_scale).double(), want)
    assert bool((want != torch.trunc(b.double() / (w_scale.double() * 0.03))).any())


# ------------------------------------------------------------------ one integer convolution
def _random_layer(seed: int, c_in: int = 8, c_out: int = 6, relu: bool = True, stride: int = 1, y_zero_point: int | None = None):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(c_out, c_in, 3, 3, generator=g) * 0.2
    bias = torch.randn(c_out, generator=g) * 0.1
    w_scale = weight.abs().amax(dim=(1, 2, 3)) / 127
    zp = y_zero_point if y_zero_point is not None else (0 if relu else 120)
    layer = IntegerConv.from_float(weight, bias, x_scale=0.02, x_zero_point=37, w_scale=w_scale, y_scale=0.05,
                                   y_zero_point=zp, relu=relu, stride=stride, padding=1)
    q_x = torch.randint(0, 256, (2, c_in, 9, 11), generator=g, dtype=torch.uint8)
    return layer, q_x, weight, bias


def test_integer_conv_accumulator_is_exact_integer_arithmetic():
    layer, q_x, _, _ = _random_layer(0)
    acc = integer_conv2d(q_x, layer.x_zero_point, layer.weight, layer.bias, padding=1)
    assert acc.dtype == torch.int32
    ref = F.conv2d(q_x.double() - layer.x_zero_point, layer.weight.double(), padding=1) + layer.bias.double().reshape(1, -1, 1, 1)
    assert torch.equal(acc.double(), ref)  # float64 is exact for these sums, so the two must agree bit for bit
    # padding with the zero point is padding the real input with 0
    padded = F.pad(q_x.int(), (1, 1, 1, 1), value=layer.x_zero_point)
    assert torch.equal(integer_conv2d(padded, layer.x_zero_point, layer.weight, layer.bias), acc)


@pytest.mark.parametrize("relu, y_zero_point", [(True, 0), (True, 40), (False, 120)])
def test_integer_conv_matches_fake_quantized_float_conv_within_one_step(relu, y_zero_point):
    """With Z_y > 0 the fused ReLU must clamp at Z_y (real 0), not at 0: the 40 case tells the two apart."""
    layer, q_x, weight, bias = _random_layer(1, relu=relu, y_zero_point=y_zero_point)
    out = layer(q_x)
    assert out.dtype == torch.uint8
    x = (q_x.double() - layer.x_zero_point) * layer.x_scale
    w = layer.weight.double() * layer.w_scale.double().reshape(-1, 1, 1, 1)
    y = F.conv2d(x, w, bias.double(), padding=1)
    ref = torch.clamp(torch.round((torch.relu(y) if relu else y) / layer.y_scale) + layer.y_zero_point, 0, 255)
    assert int((out.double() - ref).abs().max()) <= 1  # the int32 bias and M0 each round once
    assert float((out.double() != ref).double().mean()) < 0.02
    if relu:
        assert int(out.min()) >= layer.y_zero_point


@pytest.mark.parametrize("stride", [1, 2])
@needs_vnni
def test_integer_conv_equals_onnx_runtime_qlinearconv(tmp_path, stride):
    layer, q_x, _, _ = _random_layer(2, c_in=16, c_out=8, stride=stride)
    path = conv_qdq_model(layer, tmp_path / "conv.onnx")
    ops = optimized_op_types(path)
    assert ops["QLinearConv"] == 1 and ops["Conv"] == 0, ops
    got = torch.from_numpy(ort_session(path, threads=1).run(None, {"q_x": q_x.numpy()})[0])
    mine = layer(q_x)
    assert got.shape == mine.shape
    diff = (got.int() - mine.int()).abs()
    assert int(diff.max()) <= 1 and int((diff > 0).sum()) <= 0.001 * diff.numel(), f"{int((diff > 0).sum())} of {diff.numel()} differ"


def test_integer_add_matches_the_real_sum_within_one_unit():
    g = torch.Generator().manual_seed(3)
    add = IntegerAdd.from_scales(0.031, 12, 0.047, 130, 0.06, 40)
    q_a = torch.randint(0, 256, (4, 5, 6), generator=g, dtype=torch.uint8)
    q_b = torch.randint(0, 256, (4, 5, 6), generator=g, dtype=torch.uint8)
    real = 0.031 * (q_a.double() - 12) + 0.047 * (q_b.double() - 130)
    ref = torch.clamp(torch.round(real / 0.06) + 40, 0, 255)
    out = add(q_a, q_b)
    assert out.dtype == torch.uint8 and int((out.double() - ref).abs().max()) <= 1
    assert float((out.double() == ref).double().mean()) > 0.99  # off by one only at near-ties, not systematically
    with pytest.raises(ValueError, match="same shape"):
        add(q_a, q_b[:, :2])


# ------------------------------------------------------------------ the whole detector in integers
@pytest.fixture(scope="module")
def calib():
    return torch.stack([img for img, _ in materialize(SyntheticShapes(16, seed=5), progress=False)])


@pytest.fixture(scope="module")
def ptq_model(calib):
    torch.manual_seed(0)
    model = TinyDetector(width=0.5).eval()
    return calibrate(quantize_model(model, weight_bits=8, act_bits=8), [calib], lambda m, b: m.forward_raw(b))


class _DtypeRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.float_ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.float_ops.append(str(func))
        return out


def test_integer_network_uses_no_float_arithmetic(ptq_model, calib):
    det = integer_detector(ptq_model, calib)
    q = det.quantize_input(calib[:2])
    assert q.dtype == torch.uint8
    with _DtypeRecorder() as rec:
        q_cls, q_box = det.integer_forward(q)
    assert rec.float_ops == [], f"float ops inside the integer network: {sorted(set(rec.float_ops))}"
    assert q_cls.dtype == torch.uint8 and q_box.dtype == torch.uint8
    assert q_cls.shape == (2, 3, 16, 16) and q_box.shape == (2, 4, 16, 16)


def test_integer_network_follows_the_fake_quantized_model(ptq_model, calib):
    det = integer_detector(ptq_model, calib)
    logits, deltas = det.network(calib[:4])
    with torch.no_grad():
        raw = ptq_model.forward_raw(calib[:4])
    for mine, ref, head in ((logits, raw["logits"], "cls_out"), (deltas, raw["deltas"], "box_out")):
        step = det.layers[head].y_scale
        within = float(((mine - ref).abs() <= step).float().mean())
        assert within > 0.5, f"{head}: only {within:.0%} of outputs within one step"
        assert float((mine - ref).abs().mean()) < 2 * step


@needs_vnni
def test_qdq_export_fuses_into_integer_kernels_and_matches_the_integer_network(ptq_model, calib, tmp_path):
    det = integer_detector(ptq_model, calib)
    path = export_qdq(det, tmp_path / "net.onnx")
    ops = optimized_op_types(path)
    n_convs = len(det.layers)
    assert ops["QLinearConv"] == n_convs and ops["Conv"] == 0 and ops["QLinearAdd"] == 1, ops
    ort_logits, ort_deltas = OrtDetector(ort_session(path, threads=1), TinyDetector(width=0.5)).network(calib[:4])
    logits, deltas = det.network(calib[:4])
    for a, b, head in ((ort_logits, logits, "cls_out"), (ort_deltas, deltas, "box_out")):
        units = ((a - b).abs() / det.layers[head].y_scale).round()
        # a one-unit tie-rounding difference early on can grow through an untrained network; most outputs agree
        assert float((units == 0).float().mean()) > 0.85 and float(units.max()) <= 16


@needs_vnni
def test_every_layer_of_the_integer_network_equals_onnx_runtime(ptq_model, calib, tmp_path):
    """Layer by layer, on the integer network's own inputs: ORT's QLinearConv gives the same integers except
    where its float32 requantization meets a rounding tie (at most one unit, very rarely)."""
    det = integer_detector(ptq_model, calib)
    keep = {"input": det.quantize_input(calib[:4])}
    det.integer_forward(keep["input"], keep)
    names = list(det.layers)
    source = dict(zip(names[1:], names), **{names[0]: "input", "lateral3": "stage3.1.0", "lateral4": "stage4.1.0",
                                            "stage4.0.0": "stage3.1.0", "smooth.0": "add", "box_out": "tower.1.0"})
    differ = total = 0
    for name in names:
        session = ort_session(conv_qdq_model(det.layers[name], tmp_path / f"{name}.onnx"), threads=1)
        got = torch.from_numpy(session.run(None, {"q_x": keep[source[name]].numpy()})[0]).int()
        diff = (got - keep[name].int()).abs()
        assert int(diff.max()) <= 1, name
        differ, total = differ + int((diff > 0).sum()), total + diff.numel()
    assert differ <= 1e-4 * total, f"{differ} of {total} outputs differ"


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
@needs_vnni
def test_integer_detector_scores_like_onnx_runtime_on_the_shipped_qat8_model(tmp_path):
    """Acceptance: the whole integer network's mAP equals the ORT int8 model's to within 0.1 point."""
    from course_utils import CocoDetection, collate_detection
    from torch.utils.data import DataLoader

    qat8 = prepare_qat(TinyDetector(), weight_bits=8, act_bits=8)
    load_checkpoint(RESULTS / "qat8.pt", qat8)
    images = torch.stack([img for img, _ in materialize(SyntheticShapes(64, seed=123), progress=False)])
    det = integer_detector(qat8.eval(), images)
    val = DataLoader(materialize(CocoDetection(ROOT / "data" / "val" / "annotations.json"), progress=False),
                     batch_size=50, collate_fn=collate_detection)
    ort = OrtDetector(ort_session(export_qdq(det, tmp_path / "qat8.onnx"), threads=1), TinyDetector())
    cpu = torch.device("cpu")
    m_int, m_ort, m_fq = (evaluate(m, val, cpu)["map"] for m in (det, ort, qat8.eval()))
    assert abs(m_int - m_ort) <= 0.001
    assert abs(m_int - m_fq) <= 0.003


def test_integer_detector_refuses_what_it_cannot_run(calib):
    with pytest.raises(TypeError, match="TinyDetector"):
        integer_detector(torch.nn.Conv2d(3, 3, 1), calib)
    with pytest.raises(ValueError, match="no quantized layers"):
        integer_detector(TinyDetector(width=0.5), calib)
    weights_only = quantize_model(TinyDetector(width=0.5).eval(), act_bits=None)
    with pytest.raises(ValueError, match="act_bits=8"):
        integer_detector(weights_only, calib)
    with pytest.raises(ValueError, match="never calibrated"):
        integer_detector(quantize_model(TinyDetector(width=0.5).eval()), calib)
    with pytest.raises(ValueError, match="are float"):
        integer_detector(quantize_model(TinyDetector(width=0.5).eval(), skip=["cls_out"]), calib)
    with pytest.raises(TypeError, match="IntegerDetector"):
        export_qdq(TinyDetector(), "x.onnx")


def test_fake_quantize_and_integer_input_quantize_agree(ptq_model, calib):
    det = integer_detector(ptq_model, calib)
    q = det.quantize_input(calib[:2])
    fq = fake_quantize(calib[:2] - 0.5, det.input_scale, det.input_zero_point, 0, 255)
    assert torch.allclose((q.float() - det.input_zero_point) * det.input_scale, fq, atol=1e-6)


@needs_vnni
@pytest.mark.parametrize("width, depth, size", [(0.5, 2, (120, 100)), (1.0, 0, (97, 61)), (0.5, 1, (64, 64))])
def test_other_shapes_and_image_sizes_fuse_and_match_onnx_runtime(width, depth, size, tmp_path):
    calib = torch.stack([img for img, _ in materialize(SyntheticShapes(8, seed=9), progress=False)])
    torch.manual_seed(1)
    model = calibrate(quantize_model(TinyDetector(width=width, depth=depth).eval()), [calib], lambda m, b: m.forward_raw(b))
    det = integer_detector(model, calib)
    path = export_qdq(det, tmp_path / "net.onnx")
    assert optimized_op_types(path)["QLinearConv"] == len(det.layers)
    x = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(2))
    ort = OrtDetector(ort_session(path, threads=1), TinyDetector(width=width, depth=depth)).network(x)
    mine = det.network(x)
    for a, b in zip(ort, mine):
        assert a.shape == b.shape and float((a == b).float().mean()) > 0.9


@needs_vnni
def test_int8_activations_fuse_with_the_session_option_and_give_the_same_numbers(ptq_model, calib, tmp_path):
    det = integer_detector(ptq_model, calib)
    u8, s8 = export_qdq(det, tmp_path / "u8.onnx"), export_qdq(det, tmp_path / "s8.onnx", activations="int8")
    allowed = {"session.qdqisint8allowed": "1"}
    ops = optimized_op_types(s8, config=allowed)
    assert ops["QLinearConv"] == len(det.layers) and ops["Conv"] == 0 and ops["QLinearAdd"] == 1, ops
    assert optimized_op_types(s8)["Conv"] > 0  # without the option, part of the graph stays float
    a = OrtDetector(ort_session(u8, threads=1), TinyDetector(width=0.5)).network(calib[:2])
    b = OrtDetector(ort_session(s8, threads=1, config=allowed), TinyDetector(width=0.5)).network(calib[:2])
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    with pytest.raises(ValueError, match="activations"):
        export_qdq(det, tmp_path / "x.onnx", activations="int4")


def test_fused_head_runs_one_conv_on_one_coarser_grid(ptq_model, calib, tmp_path):
    det = integer_detector(ptq_model, calib)
    path = export_qdq(det, tmp_path / "fh.onnx", fuse_head=True)
    assert optimized_op_types(path)["QLinearConv"] == len(det.layers) - 1
    logits, deltas = OrtDetector(ort_session(path, threads=1), TinyDetector(width=0.5)).network(calib[:2])
    ref_logits, ref_deltas = det.network(calib[:2])
    assert logits.shape == ref_logits.shape and deltas.shape == ref_deltas.shape
    # on the union of both ranges the narrow box deltas keep far fewer levels than on their own grid
    assert len(deltas.unique()) < len(ref_deltas.unique()) / 2


def test_integer_detector_refuses_loose_batch_norm_and_low_bit_activations(calib):
    unfolded = calibrate(quantize_model(TinyDetector(width=0.5).eval(), fold_batch_norm=False), [calib], lambda m, b: m.forward_raw(b))
    with pytest.raises(ValueError, match="fold_batch_norm=True"):
        integer_detector(unfolded, calib)
    four = calibrate(quantize_model(TinyDetector(width=0.5).eval(), act_bits=4), [calib], lambda m, b: m.forward_raw(b))
    with pytest.raises(ValueError, match="act_bits=8"):
        integer_detector(four, calib)


def test_float_stem_runs_the_first_conv_in_float_and_the_rest_in_integers(ptq_model, calib, tmp_path):
    det = integer_detector(ptq_model, calib)
    path = export_qdq(det, tmp_path / "fs.onnx", float_stem=True)
    ops = optimized_op_types(path)
    assert ops["QLinearConv"] == len(det.layers) - 1 and ops["Conv"] + ops["FusedConv"] == 1, ops
    logits, _ = OrtDetector(ort_session(path, threads=1), TinyDetector(width=0.5)).network(calib[:2])
    ref, _ = det.network(calib[:2])
    step = det.layers["cls_out"].y_scale
    assert float(((logits - ref).abs() <= 4 * step).float().mean()) > 0.9  # only the stem's input rounding is gone



def test_pairwise_int16_sums_saturate_only_with_full_8_bit_weights():
    from course_utils.quant import pairwise_int16_sums

    x = torch.tensor([[255, 255, 10, 20, 255, 0]], dtype=torch.uint8)
    w = torch.tensor([[127, 127, -3, 4, -128, -128]], dtype=torch.int8)
    p, sat = pairwise_int16_sums(x, w)
    assert p.tolist() == [[32767, 50, -32640]] and sat.tolist() == [[True, False, False]]  # 64,770 clamps to 32,767
    g = torch.Generator().manual_seed(0)
    xs = torch.randint(0, 256, (4096, 64), generator=g, dtype=torch.int64).to(torch.uint8)
    w7 = torch.randint(-64, 64, (4096, 64), generator=g, dtype=torch.int64).to(torch.int8)  # reduce_range: 7-bit weights
    p7, sat7 = pairwise_int16_sums(xs, w7)
    assert not sat7.any() and torch.equal(p7.long(), (xs.long() * w7.long()).view(4096, 32, 2).sum(-1))
    full = torch.full((1, 2), 255, dtype=torch.uint8)
    assert not pairwise_int16_sums(full, torch.full((1, 2), -64, dtype=torch.int8))[1].any()  # -32,640 fits
    assert pairwise_int16_sums(full, torch.full((1, 2), 65, dtype=torch.int8))[1].all()  # 33,150 does not
    with pytest.raises(ValueError, match="K even"):
        pairwise_int16_sums(torch.zeros(3, dtype=torch.uint8), torch.zeros(3, dtype=torch.int8))
    with pytest.raises(ValueError, match="uint8 values"):
        pairwise_int16_sums(torch.full((2,), 300, dtype=torch.int32), torch.zeros(2, dtype=torch.int32))
