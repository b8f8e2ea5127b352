"""course_utils.quant against torch's own fake-quant ops, observers, and the papers' formulas."""

from __future__ import annotations

import itertools
import math
import warnings

import pytest
import torch
from torch import nn

from course_utils import TinyDetector
from course_utils.quant import (
    FakeQuantize,
    LSQQuantizer,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PercentileObserver,
    QuantConv2d,
    QuantLinear,
    calc_qparams,
    calibrate,
    dequantize,
    fake_quantize,
    fake_quantize_per_channel,
    fold_bn,
    fuse_conv_bn,
    lsq_fake_quantize,
    lsq_init_step,
    make_observer,
    qrange,
    quant_mse,
    quantize,
    quantize_model,
    sqnr_db,
)

BITS_SIGNED = list(itertools.product(range(2, 9), [True, False]))


def _probe_values(scale: float, zp: int, q_min: int, q_max: int, seed: int) -> torch.Tensor:
    """Every grid level, every halfway point between levels, random values and far-out values."""
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(q_min - 4, q_max + 5, dtype=torch.float32)
    on_grid = (k - zp) * scale
    halfway = (k + 0.5 - zp) * scale
    spread = torch.randn(2000, generator=g) * scale * (q_max - q_min)
    far = torch.tensor([1e3, -1e3, 1e6, -1e6, 1e12, -1e12]) * scale * (q_max - q_min)
    return torch.cat([on_grid, halfway, spread, far])


def _both(fn_ours, fn_torch, x: torch.Tensor, seed: int = 0):
    g = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = fn_ours(a), fn_torch(b)
    ya.backward(g)
    yb.backward(g)
    return ya.detach(), yb.detach(), a.grad, b.grad


# ----------------------------------------------------------------- per tensor
@pytest.mark.parametrize("num_bits,signed", BITS_SIGNED)
@pytest.mark.parametrize("scale", [0.25, 2.0**-7, 0.1, 0.0371, 3.0])  # powers of two make halfway values exact
def test_fake_quantize_equals_torch_bit_exactly(num_bits: int, signed: bool, scale: float) -> None:
    q_min, q_max = qrange(num_bits, signed)
    for i, zp in enumerate([q_min, q_min + 1, (q_min + q_max) // 2, q_max]):
        x = _probe_values(scale, zp, q_min, q_max, seed=i)
        ours, ref, g_ours, g_ref = _both(lambda t: fake_quantize(t, scale, zp, q_min, q_max),
                                         lambda t: torch.fake_quantize_per_tensor_affine(t, scale, zp, q_min, q_max), x, i)
        assert torch.equal(ours, ref), f"forward differs at {x[ours != ref][:5]}"
        assert torch.equal(g_ours, g_ref), "backward (STE mask) differs"
        # the tensor-qparams overload, as QAT modules call it
        ref_t = torch.fake_quantize_per_tensor_affine(x, torch.tensor(scale), torch.tensor(zp, dtype=torch.int32), q_min, q_max)
        assert torch.equal(ours, ref_t)


def test_halfway_values_round_to_even() -> None:
    q_min, q_max = qrange(8, True)
    x = torch.tensor([0.5, 1.5, 2.5, -0.5, -1.5, -2.5])  # scale 1: exactly halfway
    assert fake_quantize(x, 1.0, 0, q_min, q_max).tolist() == [0.0, 2.0, 2.0, -0.0, -2.0, -2.0]


def test_far_out_and_infinite_values_saturate() -> None:
    q_min, q_max = qrange(4, True)
    x = torch.tensor([3e38, -3e38, math.inf, -math.inf, 1e20, -1e20])
    y = fake_quantize(x, 0.5, 0, q_min, q_max)
    assert y.tolist() == [3.5, -4.0, 3.5, -4.0, 3.5, -4.0]
    y = fake_quantize_per_channel(x.reshape(6, 1), torch.full((6,), 0.5), torch.zeros(6, dtype=torch.int32), 0, q_min, q_max)
    assert y.flatten().tolist() == [3.5, -4.0, 3.5, -4.0, 3.5, -4.0]


def test_ste_gradient_is_one_inside_zero_outside() -> None:
    q_min, q_max = qrange(3, False)  # 0..7
    x = torch.tensor([-0.6, -0.4, 0.0, 3.2, 7.0, 7.4, 7.6, 20.0], requires_grad=True)
    fake_quantize(x, 1.0, 0, q_min, q_max).sum().backward()
    # inside means round(x/S) + Z in [q_min, q_max]: -0.4 rounds to 0 (inside), 7.4 to 7 (inside)
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]


# ----------------------------------------------------------------- per channel
@pytest.mark.parametrize("num_bits,signed", BITS_SIGNED)
@pytest.mark.parametrize("axis", [0, 1])
def test_fake_quantize_per_channel_equals_torch(num_bits: int, signed: bool, axis: int) -> None:
    q_min, q_max = qrange(num_bits, signed)
    g = torch.Generator().manual_seed(num_bits * 10 + axis)
    x = torch.randn(8, 6, 3, 3, generator=g) * 3
    c = x.shape[axis]
    scale = torch.rand(c, generator=g) * 0.5 + 0.01
    scale[0] = 0.25
    zp = torch.randint(q_min, q_max + 1, (c,), generator=g, dtype=torch.int32)
    zp[0] = (q_min + q_max) // 2
    first = x.select(axis, 0)  # channel 0: exact halfway values and far-out values
    levels = torch.randint(q_min - 3, q_max + 3, first.shape, generator=g).float()
    first.copy_((levels + 0.5 - zp[0]) * 0.25)
    first[0, 0, :] = torch.tensor([1e6, -1e6, 1e12])
    first[1, 0, 0] = -1e12
    ours, ref, g_ours, g_ref = _both(lambda t: fake_quantize_per_channel(t, scale, zp, axis, q_min, q_max),
                                     lambda t: torch.fake_quantize_per_channel_affine(t, scale, zp, axis, q_min, q_max), x)
    assert torch.equal(ours, ref)
    assert torch.equal(g_ours, g_ref)


def test_per_channel_needs_one_scale_per_channel() -> None:
    with pytest.raises(ValueError, match="one scale and zero point per channel"):
        fake_quantize_per_channel(torch.zeros(4, 3), torch.ones(3), torch.zeros(3, dtype=torch.int32), 0, 0, 255)


# ----------------------------------------------------------------- qparams
def _ranges(seed: int) -> list[tuple[float, float]]:
    g = torch.Generator().manual_seed(seed)
    out = [(0.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (-1e-9, 1e-9), (-3.0, 1e-6), (2.0, 5.0), (-7.0, -2.0), (-0.3, 1.0)]
    for _ in range(40):
        a, b = (torch.randn(2, generator=g) * 10 ** torch.randint(-4, 4, (1,), generator=g)).tolist()
        out.append((min(a, b), max(a, b)))
    return out


@pytest.mark.parametrize("num_bits,signed", BITS_SIGNED)
@pytest.mark.parametrize("symmetric", [False, True])
def test_calc_qparams_zero_exact_and_range_covered(num_bits: int, signed: bool, symmetric: bool) -> None:
    q_min, q_max = qrange(num_bits, signed)
    for lo, hi in _ranges(num_bits):
        scale, zp = calc_qparams(lo, hi, num_bits, symmetric, signed)
        assert scale > 0 and zp.dtype == torch.int32 and q_min <= int(zp) <= q_max
        zero = torch.zeros(1)
        assert fake_quantize(zero, scale, zp, q_min, q_max).item() == 0.0, "0 must be exactly representable"
        assert dequantize(quantize(zero, scale, zp, q_min, q_max), scale, zp).item() == 0.0
        # the grid's ends cover [min(lo, 0), max(hi, 0)]
        assert scale * (q_min - zp) <= min(lo, 0.0), (lo, hi, scale, zp)
        assert scale * (q_max - zp) >= max(hi, 0.0), (lo, hi, scale, zp)
        # ... and no value in the range is off by more than half a step
        x = torch.linspace(min(lo, 0.0), max(hi, 0.0), 101)
        err = (fake_quantize(x, scale, zp, q_min, q_max) - x).abs().max()
        assert err <= scale * 0.5001 + 1e-6 * max(abs(lo), abs(hi))  # a float32 ulp of slack


@pytest.mark.parametrize("dtype,signed", [(torch.quint8, False), (torch.qint8, True)])
def test_calc_qparams_matches_torch_observer_up_to_coverage(dtype: torch.dtype, signed: bool) -> None:
    """torch's MinMaxObserver uses the same formulas but lets one end clip by up to S/2 (asymmetric: Z's
    rounding; symmetric: S = max|x| / 127.5). Ours covers both ends, so its scale differs by at most a
    factor (1 ± 1/127)."""
    from torch.ao.quantization.observer import MinMaxObserver as TorchMinMax

    for seed, symmetric in itertools.product(range(10), [False, True]):
        x = torch.randn(500, generator=torch.Generator().manual_seed(seed)) * (seed + 1) + seed / 3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs = TorchMinMax(dtype=dtype, qscheme=torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine)
            obs(x)
            ref_scale, ref_zp = obs.calculate_qparams()
        scale, zp = calc_qparams(x.min(), x.max(), 8, symmetric, signed)
        assert float(ref_scale) * (1 - 1 / 255 - 1e-6) <= float(scale) <= float(ref_scale) * (1 + 1 / 127 + 1e-6)
        if not symmetric:
            assert float(scale) >= float(ref_scale) * (1 - 1e-6)  # widening only
        assert abs(int(zp) - int(ref_zp)) <= 1


def test_calc_qparams_per_channel_and_bad_input() -> None:
    lo, hi = torch.tensor([-1.0, 0.0, -5.0]), torch.tensor([1.0, 2.0, 0.5])
    scale, zp = calc_qparams(lo, hi, 8, symmetric=True, signed=True)
    assert scale.shape == (3,) and zp.tolist() == [0, 0, 0]
    assert torch.allclose(scale, torch.tensor([1 / 127, 2 / 127, 5 / 128]))
    with pytest.raises(ValueError, match="NaN"):
        calc_qparams(float("nan"), 1.0)
    with pytest.raises(ValueError, match="2..16"):
        qrange(1, True)


def test_quantize_dequantize_round_trip() -> None:
    x = torch.randn(1000, generator=torch.Generator().manual_seed(0))
    scale, zp = calc_qparams(x.min(), x.max(), 8)
    q = quantize(x, scale, zp, 0, 255)
    assert q.dtype == torch.int32 and int(q.min()) >= 0 and int(q.max()) <= 255
    assert torch.equal(dequantize(q, scale, zp), fake_quantize(x, scale, zp, 0, 255))
    assert (dequantize(q, scale, zp) - x).abs().max() <= scale / 2 + 1e-7


# ----------------------------------------------------------------- observers
def test_minmax_observer_per_tensor_and_per_channel() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 3, 5, generator=g), torch.randn(4, 3, 5, generator=g) * 2
    obs = MinMaxObserver()
    obs(a), obs(b)
    both = torch.cat([a, b])
    assert obs.min_val.item() == both.min().item() and obs.max_val.item() == both.max().item()
    for axis in (0, 1):
        obs = MinMaxObserver(ch_axis=axis)
        obs(a)
        assert torch.equal(obs.min_val, a.movedim(axis, 0).flatten(1).min(1).values)
        scale, zp = obs.calculate_qparams()
        assert scale.shape == (a.shape[axis],)


def test_moving_average_observer_formula() -> None:
    batches = [torch.randn(100, generator=torch.Generator().manual_seed(i)) * (i + 1) for i in range(5)]
    obs = MovingAverageMinMaxObserver(averaging_constant=0.1)
    lo, hi = batches[0].min(), batches[0].max()
    for i, x in enumerate(batches):
        obs(x)
        if i:
            lo, hi = lo + 0.1 * (x.min() - lo), hi + 0.1 * (x.max() - hi)
    assert torch.allclose(obs.min_val, lo.reshape(1)) and torch.allclose(obs.max_val, hi.reshape(1))


def test_percentile_observer_equals_torch_quantile_and_clips_outliers() -> None:
    x = torch.randn(3, 4001, generator=torch.Generator().manual_seed(2))
    x[0, 0] = 100.0  # an outlier
    obs = PercentileObserver(percentile=99.0, ch_axis=0)
    obs(x)
    assert torch.equal(obs.max_val, torch.quantile(x, 0.99, dim=1, interpolation="higher"))
    assert torch.allclose(obs.min_val, torch.quantile(x, 0.01, dim=1, interpolation="higher"))
    assert obs.max_val[0] < 5.0  # the outlier no longer sets the range


def test_mse_observer_never_worse_than_minmax() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.distributions.Laplace(0.0, 1.0).sample((20000,))
    x[:3] = torch.tensor([40.0, -35.0, 30.0])  # heavy tails: min-max wastes the grid on them
    errs = {}
    for name in ("minmax", "percentile", "mse"):
        obs = make_observer(name, num_bits=4, symmetric=True)
        obs(x)
        s, z = obs.calculate_qparams()
        errs[name] = quant_mse(x, fake_quantize(x, s, z, -8, 7))
    assert errs["mse"] < errs["minmax"] / 5
    assert errs["mse"] <= errs["percentile"] * (1 + 1e-6)
    del g


def test_observers_reject_nan_and_empty() -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        MinMaxObserver()(torch.tensor([1.0, float("nan")]))
    with pytest.raises(RuntimeError, match="observed nothing"):
        MinMaxObserver().calculate_qparams()
    with pytest.raises(ValueError, match="unknown observer"):
        make_observer("histogramm")


# ----------------------------------------------------------------- LSQ
def test_lsq_step_gradient_matches_formula() -> None:
    g = torch.Generator().manual_seed(4)
    q_n, q_p = 8, 7
    v = (torch.randn(500, generator=g) * 2).requires_grad_()
    step = torch.tensor(0.3, requires_grad=True)
    upstream = torch.randn(500, generator=g)
    lsq_fake_quantize(v, step, q_n, q_p).backward(upstream)
    r = v.detach() / 0.3
    d_step = torch.where(r <= -q_n, torch.tensor(-float(q_n)), torch.where(r >= q_p, torch.tensor(float(q_p)), -r + r.round()))
    expected = (upstream * d_step).sum() / math.sqrt(v.numel() * q_p)
    assert torch.allclose(step.grad, expected, rtol=1e-5, atol=1e-7)
    inside = ((r > -q_n) & (r < q_p)).float()
    assert torch.allclose(v.grad, upstream * inside)


def test_lsq_equals_torch_learnable_fake_quant() -> None:
    """torch's ``_fake_quantize_learnable_per_tensor_affine`` implements LSQ, except in the half-step bands
    just outside the range (round(v/s) still lands on the end there, so torch calls it "inside"); away from
    those bands the two agree."""
    g = torch.Generator().manual_seed(5)
    v = torch.randn(300, generator=g) * 2
    r = v / 0.25
    v = v[~(((r > 7) & (r < 7.5)) | ((r < -8) & (r > -8.5)))][:250]
    a, b = v.clone().requires_grad_(), v.clone().requires_grad_()
    s1, s2 = torch.tensor(0.25, requires_grad=True), torch.tensor([0.25], requires_grad=True)
    factor = 1 / math.sqrt(250 * 7)
    y1 = lsq_fake_quantize(a, s1, 8, 7)
    y2 = torch._fake_quantize_learnable_per_tensor_affine(b, s2, torch.tensor([0.0]), -8, 7, factor)
    up = torch.randn(250, generator=g)
    y1.backward(up), y2.backward(up)
    assert torch.equal(y1.detach(), y2.detach())
    assert torch.allclose(a.grad, b.grad)
    assert torch.allclose(s1.grad, s2.grad[0], rtol=1e-5)


def test_lsq_init_and_module() -> None:
    v = torch.randn(1000, generator=torch.Generator().manual_seed(6))
    assert torch.isclose(lsq_init_step(v, 7), 2 * v.abs().mean() / math.sqrt(7))
    q = LSQQuantizer(num_bits=4)
    out = q(v)
    assert bool(q.initialized) and torch.isclose(q.step.detach(), lsq_init_step(v, 7))
    assert len(torch.unique(out)) <= 16
    out.sum().backward()
    assert q.step.grad is not None and torch.isfinite(q.step.grad)


# ----------------------------------------------------------------- error measures
def test_sqnr_and_six_db_per_bit() -> None:
    x = torch.rand(100_000, generator=torch.Generator().manual_seed(7)) * 2 - 1
    assert sqnr_db(x, x) == math.inf
    assert math.isclose(sqnr_db(x, 0.5 * x), 10 * math.log10(4), rel_tol=1e-9)  # noise = x/2: power ratio 4
    sq, predicted = [], []
    for bits in range(3, 9):
        s, z = calc_qparams(x.min(), x.max(), bits, symmetric=True, signed=True)
        q_min, q_max = qrange(bits, True)
        sq.append(sqnr_db(x, fake_quantize(x, s, z, q_min, q_max)))
        # uniform data, uniform rounding noise of power S²/12: SQNR = 10·log10(E[x²] / (S²/12))
        predicted.append(10 * math.log10(x.pow(2).mean().item() / (float(s) ** 2 / 12)))
    assert all(abs(a - b) < 0.15 for a, b in zip(sq, predicted)), (sq, predicted)
    gains = [b - a for a, b in zip(sq, sq[1:])]
    assert abs(gains[-1] - 20 * math.log10(2)) < 0.1, gains  # -> 6.02 dB per bit as the grid gets fine


# ----------------------------------------------------------------- BN folding and whole models
def test_fold_bn_equals_conv_then_bn_and_torch_fusion() -> None:
    torch.manual_seed(8)
    for bias in (False, True):
        conv, bn = nn.Conv2d(3, 6, 3, padding=1, bias=bias), nn.BatchNorm2d(6)
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.2, 3), bn.weight.data.uniform_(0.5, 2), bn.bias.data.uniform_(-1, 1)
        conv.eval(), bn.eval()
        x = torch.randn(2, 3, 8, 8)
        fused = fold_bn(conv, bn)
        assert torch.allclose(fused(x), bn(conv(x)), atol=1e-5)
        ref = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
        assert torch.allclose(fused.weight, ref.weight, atol=1e-6) and torch.allclose(fused.bias, ref.bias, atol=1e-6)


def _trained_like_detector(seed: int = 0) -> TinyDetector:
    torch.manual_seed(seed)
    model = TinyDetector()
    for m in model.modules():  # non-trivial BN statistics, as after training
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def test_fuse_conv_bn_preserves_detector_outputs() -> None:
    model = _trained_like_detector()
    fused = fuse_conv_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    x = torch.rand(2, 3, 128, 128)
    a, b = model.forward_raw(x), fused.forward_raw(x)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-5) and torch.allclose(a["deltas"], b["deltas"], atol=1e-5)


def test_quant_wrappers_equal_reference_fake_quant() -> None:
    torch.manual_seed(9)
    conv, lin = nn.Conv2d(4, 6, 3, padding=1), nn.Linear(5, 3)
    for layer, wrapper, x in [(conv, QuantConv2d, torch.randn(2, 4, 8, 8)), (lin, QuantLinear, torch.randn(7, 5))]:
        wq = FakeQuantize(MinMaxObserver(num_bits=8, symmetric=True, signed=True, ch_axis=0))
        aq = FakeQuantize(MinMaxObserver(num_bits=8))
        q = wrapper(layer, wq, aq)
        y = q(x)
        s_w, z_w = wq.observer.calculate_qparams()
        s_a, z_a = aq.observer.calculate_qparams()
        w_ref = torch.fake_quantize_per_channel_affine(layer.weight, s_w, z_w, 0, -128, 127)
        x_ref = torch.fake_quantize_per_tensor_affine(x, s_a, z_a, 0, 255)
        ref = nn.functional.conv2d(x_ref, w_ref, layer.bias, padding=1) if wrapper is QuantConv2d else nn.functional.linear(x_ref, w_ref, layer.bias)
        assert torch.equal(y, ref)


@pytest.mark.parametrize("bits,tol", [(8, 0.05), (4, 1.0)])
def test_quantize_model_on_detector(bits: int, tol: float) -> None:
    model = _trained_like_detector()
    qmodel = quantize_model(model, weight_bits=bits, act_bits=bits)
    n_wrapped = sum(isinstance(m, QuantConv2d) for m in qmodel.modules())
    assert n_wrapped == sum(isinstance(m, nn.Conv2d) for m in model.modules())
    x = [torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    calibrate(qmodel, x, forward=lambda m, b: m.forward_raw(b))
    assert all(not m.observing for m in qmodel.modules() if isinstance(m, FakeQuantize))
    ref, out = model.forward_raw(x[0])["logits"], qmodel.forward_raw(x[0])["logits"]
    err = (ref - out).abs().max().item()
    assert 0 < err < tol * ref.abs().max().item()
    # skip keeps a layer in float
    keep = quantize_model(model, skip=["stem.0", "cls_out"])
    assert isinstance(keep.stem[0], nn.Conv2d) and isinstance(keep.cls_out, nn.Conv2d)
    assert isinstance(keep.box_out, QuantConv2d)


def test_calibrate_and_fake_quantize_errors() -> None:
    with pytest.raises(ValueError, match="no batches"):
        calibrate(quantize_model(nn.Sequential(nn.Linear(2, 2))), [])
    fq = FakeQuantize(MinMaxObserver())
    fq.observing = False
    with pytest.raises(RuntimeError, match="calibrate"):
        fq(torch.ones(3))


# ----------------------------------------------------------------- QAT
from course_utils.quant import (  # noqa: E402
    QATSchedule,
    QuantConvBn2d,
    freeze_bn_stats,
    prepare_qat,
    to_float_folded,
)


def _set_fq(model: nn.Module, enabled: bool) -> None:
    for m in model.modules():
        if isinstance(m, FakeQuantize):
            m.enabled = enabled


def _images(n: int, seed: int, size: int = 128) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_prepare_qat_folds_bn_exactly_when_fake_quant_is_off() -> None:
    model = _trained_like_detector()
    qat = prepare_qat(model)
    assert sum(isinstance(m, QuantConvBn2d) for m in qat.modules()) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    calibrate(qat, [_images(2, 0)], forward=lambda m, b: m.forward_raw(b))
    _set_fq(qat, False)
    x = _images(2, 1)
    a, b = model.forward_raw(x), qat.forward_raw(x)
    assert torch.allclose(a["logits"], b["logits"], atol=1e-5) and torch.allclose(a["deltas"], b["deltas"], atol=1e-5)
    assert torch.allclose(to_float_folded(qat).forward_raw(x)["logits"], a["logits"], atol=1e-5)


def test_qat_eval_equals_ptq_with_same_observers() -> None:
    """In eval mode a QAT model computes exactly the folded, fake-quantized network of PTQ.

    In float64: in float32 the two compute BN folding in a different order, and on some CPUs' kernels
    (e.g. ATEN_CPU_CAPABILITY=avx2) a last-bit difference moves one activation across a rounding boundary,
    which changes the logits by about 1e-3 -- a difference of float arithmetic, not of the network."""
    model = _trained_like_detector().double()
    calib = [_images(2, 2).double()]
    fwd = lambda m, b: m.forward_raw(b)  # noqa: E731
    qat = calibrate(prepare_qat(model, act_observer="minmax"), calib, fwd)
    ptq = calibrate(quantize_model(model, act_observer="minmax"), calib, fwd)
    x = _images(2, 3).double()
    with torch.no_grad():
        a, b = qat.forward_raw(x), ptq.forward_raw(x)
    assert a["logits"].dtype == torch.float64
    assert torch.allclose(a["logits"], b["logits"], rtol=0, atol=1e-9) and torch.allclose(a["deltas"], b["deltas"], rtol=0, atol=1e-9)


def test_qat_trains_forward_and_backward_on_detector() -> None:
    model = _trained_like_detector()
    qat = calibrate(prepare_qat(model, weight_bits=4, act_bits=4), [_images(2, 4)], lambda m, b: m.forward_raw(b))
    qat.train()
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([1])}] * 2
    losses = qat(list(_images(2, 5)), targets)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    stem = qat.stem[0]
    assert isinstance(stem, QuantConvBn2d)
    for p in (stem.conv.weight, stem.bn.weight, stem.bn.bias):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_freeze_bn_stats_stops_updates_and_matches_eval() -> None:
    model = _trained_like_detector()
    qat = calibrate(prepare_qat(model), [_images(2, 6)], lambda m, b: m.forward_raw(b))
    block = qat.stage2[0][0]
    before = block.bn.running_mean.clone()
    qat.train()
    qat.forward_raw(_images(2, 7))
    assert not torch.equal(block.bn.running_mean, before), "BN statistics should update before freezing"
    freeze_bn_stats(qat)
    frozen = block.bn.running_mean.clone()
    x = _images(2, 8)
    train_out = qat.forward_raw(x)["logits"]
    assert torch.equal(block.bn.running_mean, frozen)
    _set_observing = [m for m in qat.modules() if isinstance(m, FakeQuantize)]
    for m in _set_observing:
        m.observing = False
    qat.eval()
    assert torch.allclose(qat.forward_raw(x)["logits"], train_out, atol=1e-5)


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_prepare_qat_on_torchvision_backbones() -> None:
    """Faster R-CNN's backbone (Sequential Conv-BN-ReLU blocks) and a ResNet (conv1/bn1 attributes)."""
    import torchvision

    from course_utils import build_torchvision_detector

    torch.manual_seed(10)
    backbones = [build_torchvision_detector().backbone, torchvision.models.resnet18(num_classes=5)]
    for net in backbones:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0), m.running_mean.uniform_(-0.2, 0.2)
        net.eval()
        qat = prepare_qat(net, weight_bits=8, act_bits=8)
        n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        assert sum(isinstance(m, QuantConvBn2d) for m in qat.modules()) == n_bn
        x = _images(2, 11, size=64)
        calibrate(qat, [x])
        _set_fq(qat, False)  # eval, no fake quant: the BN folding inside QuantConvBn2d is exact
        assert torch.allclose(qat(x), net(x), atol=1e-4)
        _set_fq(qat, True)
        qat.train()
        out = qat(x)
        out.float().pow(2).mean().backward()
        assert all(p.grad is not None for p in qat.parameters() if p.requires_grad)


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_qat_schedule_hook_in_the_training_loop() -> None:
    from course_utils.train import fit

    model = _trained_like_detector()
    qat = calibrate(prepare_qat(model), [_images(2, 12)], lambda m, b: m.forward_raw(b))
    target = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 60.0]]), "labels": torch.tensor([2])}
    loader = [([img for img in _images(2, 13 + i)], [target, target]) for i in range(2)]
    optimizer = torch.optim.SGD(qat.parameters(), lr=1e-3)
    hook = QATSchedule(freeze_bn_epoch=1, freeze_observer_epoch=2)
    history = fit(qat, loader, optimizer, epochs=2, device=torch.device("cpu"), hooks=[hook], progress=False)
    assert len(history["loss"]) == 4 and all(math.isfinite(v) for v in history["loss"])
    assert all(m.bn_frozen for m in qat.modules() if isinstance(m, QuantConvBn2d))
    assert not any(m.input_fq.observing for m in qat.modules() if isinstance(m, QuantConvBn2d))


def test_quantize_tensor_and_range_tradeoff() -> None:
    from course_utils.quant import quantize_tensor, range_tradeoff

    w = torch.randn(8, 4, 3, 3, generator=torch.Generator().manual_seed(20))
    wq, s, z = quantize_tensor(w, 4, ch_axis=0)
    assert s.shape == (8,) and torch.equal(wq, torch.fake_quantize_per_channel_affine(w, s, z, 0, -8, 7))
    wq, s, z = quantize_tensor(w, 8, symmetric=False)
    assert s.shape == () and torch.equal(wq, torch.fake_quantize_per_tensor_affine(w, s, z, 0, 255))
    x = torch.rand(5000, generator=torch.Generator().manual_seed(21)) ** 3 * 10
    tops = [0.5, 2.0, 10.0]
    rounding, clamping = range_tradeoff(x, 4, tops)
    for c, r, k in zip(tops, rounding, clamping):
        s, z = calc_qparams(0.0, c, 4)
        assert math.isclose(r + k, quant_mse(x, fake_quantize(x, s, z, 0, 15)), rel_tol=1e-5)
    assert clamping[0] > clamping[1] > clamping[2] == 0.0  # a wider range clamps less
    assert rounding[0] < rounding[2]  # ... and rounds more coarsely


def test_qat_checkpoint_round_trip(tmp_path) -> None:
    from course_utils.train import load_checkpoint, save_checkpoint

    model = _trained_like_detector()
    qat = calibrate(prepare_qat(model, weight_bits=4, act_bits=4), [_images(2, 30)], lambda m, b: m.forward_raw(b))
    save_checkpoint(tmp_path / "qat.pt", qat, bits=4)
    fresh = prepare_qat(TinyDetector(), weight_bits=4, act_bits=4)  # never observed: empty buffers
    load_checkpoint(tmp_path / "qat.pt", fresh)
    fresh.eval()
    x = _images(2, 31)
    assert torch.equal(fresh.forward_raw(x)["logits"], qat.forward_raw(x)["logits"])


def test_layer_sensitivity_quantizes_one_layer_at_a_time() -> None:
    from course_utils.quant import layer_sensitivity

    torch.manual_seed(40)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.Flatten(), nn.Linear(2 * 6 * 6, 3)).eval()
    x = torch.randn(4, 3, 8, 8)

    def n_quantized(m: nn.Module) -> float:
        return float(sum(isinstance(c, (QuantConv2d, QuantLinear)) for c in m.modules()))

    assert layer_sensitivity(model, n_quantized, [x], weight_bits=4, act_bits=4) == {"0": 1.0, "2": 1.0, "4": 1.0}
    with torch.no_grad():
        ref = model(x)
    err = layer_sensitivity(model, lambda m: float((m(x) - ref).abs().max().detach()), [x], weight_bits=2, act_bits=2)
    assert all(v > 0 for v in err.values())


# ------------------------------------------------------------------ the package layout (issue 15)
NAMES_BEFORE_THE_SPLIT = """qrange calc_qparams quantize dequantize fake_quantize fake_quantize_per_channel Observer MinMaxObserver
MovingAverageMinMaxObserver PercentileObserver MSEObserver OBSERVERS make_observer lsq_init_step lsq_fake_quantize LSQQuantizer
quant_mse sqnr_db quantize_tensor range_tradeoff fold_bn fuse_conv_bn FakeQuantize QuantConv2d QuantLinear QuantConvBn2d
conv_bn_pairs quantize_model prepare_qat freeze_bn_stats set_observing_activations to_float_folded QATSchedule calibrate
set_observing post_training_quantize layer_sensitivity capture_activations""".split()


def test_every_name_of_the_old_quant_module_still_imports_from_course_utils_quant():
    import course_utils.quant as q

    missing = [n for n in NAMES_BEFORE_THE_SPLIT if not hasattr(q, n)]
    assert not missing
    assert set(NAMES_BEFORE_THE_SPLIT) <= set(q.__all__)


def test_each_quant_name_lives_in_the_module_of_its_concept():
    import importlib

    import course_utils.quant as q

    for name in q.__all__:
        obj = getattr(q, name)
        home = getattr(obj, "__module__", None)
        if home is None:  # a constant such as OBSERVERS: find the module that defines it
            home = next(f"course_utils.quant.{m}" for m in ("observers", "integer", "convert", "adaround")
                        if name in vars(importlib.import_module(f"course_utils.quant.{m}")))
        assert home.startswith("course_utils.quant."), (name, home)
        assert name in importlib.import_module(home).__all__, f"{name} is re-exported but not in {home}.__all__"
