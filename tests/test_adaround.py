"""AdaRound (course_utils.quant.adaround): the rectified sigmoid, its start at the float weight, the
regulariser, floor-or-ceil integers, a lower layer-output error than round-to-nearest, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_utils.quant import (
    QuantConv2d, QuantLinear, adaround, adaround_beta, adaround_init, adaround_layer, calibrate, quantize_model,
    rectified_sigmoid, rounding_regularizer, soft_quantized_weight,
)
from course_utils.quant.affine import _reciprocal


def _toy_linear(seed: int = 0, bits: int = 4) -> tuple[QuantLinear, torch.Tensor]:
    """A calibrated 4-bit QuantLinear (32 -> 8) and strongly correlated inputs (rank 4 plus a little noise)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(32, 8))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(8, 32, generator=g) * 0.3)
    x = torch.randn(2048, 4, generator=g) @ torch.randn(4, 32, generator=g) + 0.05 * torch.randn(2048, 32, generator=g)
    q = calibrate(quantize_model(model, weight_bits=bits, act_bits=None), [x[:64]])
    return q[0], x


def _ratio(layer: QuantLinear | QuantConv2d, weight: torch.Tensor) -> torch.Tensor:
    s = layer.weight_fq.scale.reshape(-1, *[1] * (weight.ndim - 1))
    return weight * _reciprocal(s)


def _integers(layer: QuantLinear | QuantConv2d, weight: torch.Tensor) -> torch.Tensor:
    """``q`` of a weight written as ``S · q``: W/S is an integer up to float32 error."""
    ratio = _ratio(layer, weight)
    torch.testing.assert_close(ratio, ratio.round(), atol=1e-4, rtol=0)
    return ratio.round()


def test_rectified_sigmoid_stays_in_0_1_and_reaches_both_ends():
    h = rectified_sigmoid(torch.linspace(-20, 20, 2001))
    assert h.min() == 0 and h.max() == 1
    assert torch.all(h[1:] >= h[:-1])  # monotone
    assert rectified_sigmoid(torch.zeros(1)).item() == pytest.approx(0.5)


def test_init_starts_at_the_float_weight():
    layer, _ = _toy_linear()
    w, scale = layer.linear.weight.detach(), layer.weight_fq.scale
    v = adaround_init(w, scale)
    assert torch.isfinite(v).all()
    w_s = _ratio(layer, w)
    torch.testing.assert_close(rectified_sigmoid(v), w_s - w_s.floor(), atol=1e-5, rtol=0)
    q_min, q_max = layer.weight_fq.observer.q_min, layer.weight_fq.observer.q_max
    torch.testing.assert_close(soft_quantized_weight(w, scale, v, q_min, q_max), w, atol=1e-6, rtol=1e-5)


def test_regulariser_is_zero_exactly_at_0_and_1_and_one_per_weight_at_half():
    v = torch.tensor([-10.0, 10.0, -30.0, 30.0])
    assert set(rectified_sigmoid(v).tolist()) == {0.0, 1.0}
    for beta in (20.0, 2.0):
        assert rounding_regularizer(v, beta).item() == 0.0
        assert rounding_regularizer(torch.zeros(5), beta).item() == pytest.approx(5.0)


def test_beta_schedule_warm_start_then_cosine_from_20_to_2():
    assert adaround_beta(0, 100) is None and adaround_beta(19, 100) is None
    assert adaround_beta(20, 100) == pytest.approx(20.0)
    assert adaround_beta(100, 100) == pytest.approx(2.0)
    assert 2.0 < adaround_beta(60, 100) < 20.0


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_adaround_layer_rounds_to_floor_or_ceil_and_beats_nearest():
    layer, x = _toy_linear(seed=0)
    w0 = layer.linear.weight.detach().clone()
    scale0 = layer.weight_fq.scale.clone()
    stats = adaround_layer(layer, x, iterations=400, batch_size=256, num_samples=2048, seed=0)
    r0 = _ratio(layer, w0)
    q = _integers(layer, layer.linear.weight.detach())  # the weight is S · q
    assert torch.all((q == r0.floor()) | (q == r0.ceil()))  # never further than the next grid point
    assert torch.equal(layer.weight_fq.scale, scale0)
    torch.testing.assert_close(layer.weight_fq(layer.linear.weight), layer.linear.weight)  # fq reproduces S · q
    # the layer's output error, computed here independently of adaround_layer
    s = scale0.reshape(-1, 1)
    nearest = s * torch.clamp(torch.round(r0), -8, 7)
    ref = x @ w0.T
    mse = lambda w: ((x @ w.T - ref) ** 2).sum(1).mean().item()  # noqa: E731
    assert mse(layer.linear.weight.detach()) < 0.9 * mse(nearest)  # strictly better on correlated inputs
    assert stats["mse_adaround"] < stats["mse_nearest"] and stats["changed_fraction"] > 0
    assert stats["soft_fraction"] < 0.1  # from 100 % at the start: the annealed regulariser pushed most h to 0 or 1


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_adaround_layer_never_worse_than_nearest(seed):
    layer, x = _toy_linear(seed=seed)
    stats = adaround_layer(layer, x, iterations=300, batch_size=256, num_samples=2048, seed=seed)
    assert stats["mse_adaround"] <= stats["mse_nearest"]


def _tiny_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
def test_adaround_model_rounds_every_layer_and_keeps_the_weight_scales():
    model = _tiny_convnet()
    batches = list(torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(0)).split(16))
    reference = calibrate(quantize_model(model, weight_bits=4), batches)
    got = adaround(model, batches, iterations=50, batch_size=128, num_samples=1024, weight_bits=4)
    ref_layers = [m for m in reference.modules() if isinstance(m, QuantConv2d)]
    layers = [m for m in got.modules() if isinstance(m, QuantConv2d)]
    assert len(layers) == 3 and not got.training
    for ref, layer in zip(ref_layers, layers):
        assert torch.equal(ref.weight_fq.scale, layer.weight_fq.scale)
        r0, q = _ratio(ref, ref.conv.weight.detach()), _integers(layer, layer.conv.weight.detach())
        assert torch.all((q == r0.floor()) | (q == r0.ceil()))
        assert layer.input_fq.scale.numel() == 1 and not layer.input_fq.observing
    out = got(batches[0])
    assert out.shape == (16, 4, 8, 8) and torch.isfinite(out).all()


def test_bad_inputs_raise_clear_errors():
    layer, x = _toy_linear()
    with pytest.raises(TypeError, match="QuantConv2d or QuantLinear"):
        adaround_layer(nn.Linear(32, 8), x)
    uncalibrated = quantize_model(nn.Sequential(nn.Linear(32, 8)), act_bits=None)[0]
    with pytest.raises(RuntimeError, match="no scale yet"):
        adaround_layer(uncalibrated, x)
    with pytest.raises(ValueError, match="iterations must be a positive integer"):
        adaround_layer(layer, x, iterations=0)
    with pytest.raises(ValueError, match="lam must be"):
        adaround_layer(layer, x, lam=-1.0)
    with pytest.raises(ValueError, match="same images"):
        adaround_layer(layer, x, x[:10])
    with pytest.raises(ValueError, match="NaN"):
        adaround_layer(layer, torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match="beta must be"):
        rounding_regularizer(torch.zeros(3), 0)
    model = _tiny_convnet()
    with pytest.raises(TypeError, match="iterable of batches"):
        adaround(model, torch.randn(4, 3, 16, 16))
    with pytest.raises(ValueError, match="no calibration batches"):
        adaround(model, [])
    with pytest.raises(ValueError, match="symmetric weights"):
        adaround(model, [torch.randn(4, 3, 16, 16)], symmetric_weights=False)
    conv_layer = calibrate(quantize_model(model), [torch.randn(4, 3, 16, 16)])[0]
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        adaround_layer(conv_layer, torch.randn(4, 27))
