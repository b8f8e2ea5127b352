"""Property-based tests of the other public boundaries (issue 14): clipping, quantization, pruning masks,
the training loop and the timing helpers. For random settings -- valid ones and NaN, ±inf, negative, zero,
huge, non-integer and wrongly typed ones -- each function either equals its reference (torch's clipping
and fake quantization, the papers' formulas, the requested counts) or raises a ValueError/TypeError from
course_utils code that names the offending value. Nothing else may escape.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import event, given
from hypothesis import strategies as st
from torch import nn

from course_utils import clipping as C
from course_utils import quant as Q
from course_utils.prune import channel_masks, magnitude_masks
from helpers import clone, run



def names(err: Exception, value: Any) -> bool:
    """The message shows the offending value (as repr or str; NaN may print as nan)."""
    text = str(err)
    return repr(value) in text or str(value) in text


def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``good`` three times in four, ``bad`` otherwise, so the valid path (the comparison with the reference)
    is exercised as often as the refusals. (``one_of`` would pick either about half the time.)"""
    return st.integers(0, 3).flatmap(lambda k: bad if k == 3 else good)


special = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, -1e-12, 1e-300, 1e300, 5e-324])
positive = st.floats(1e-8, 1e8) | st.sampled_from([0.1, 1.0, 5.0, 1e6])
threshold = mostly(positive, special | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-3, 3)
                   | st.sampled_from([True, "1.0", None]))


def is_finite_positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


# ------------------------------------------------------------------ clipping
@st.composite
def gradients(draw: Any) -> list[nn.Parameter]:
    seed = draw(st.integers(0, 2**16))
    scale = 10.0 ** draw(st.integers(-6, 6))
    g = torch.Generator().manual_seed(seed)
    params = []
    for shape in draw(st.lists(st.sampled_from([(4, 3, 3, 3), (5, 7), (5,), ()]), min_size=1, max_size=4)):
        p = nn.Parameter(torch.randn(shape, generator=g))
        p.grad = torch.randn(shape, generator=g) * scale
        params.append(p)
    if draw(st.booleans()):
        params.append(nn.Parameter(torch.randn(3, generator=g)))  # no gradient: skipped
    return params


def grads(params: list[nn.Parameter]) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.clone() for p in params]


def same_grads(a: list[nn.Parameter], b: list[nn.Parameter]) -> None:
    for p, q in zip(a, b):
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-30, equal_nan=True)


norm_types = mostly(st.sampled_from([1, 1.0, 2.0, 3.0, math.inf]), st.sampled_from([0.5, 0, -1.0, -math.inf, math.nan, "inf"]))


@given(gradients(), threshold, norm_types)
def test_clip_grad_norm_equals_torch_or_refuses(params: list[nn.Parameter], max_norm: Any, norm_type: Any) -> None:
    valid = is_finite_positive(max_norm) and isinstance(norm_type, (int, float)) and not math.isnan(norm_type) and norm_type >= 1
    event("valid" if valid else "refused")
    before = grads(params)
    ref = clone(params)
    total, err = run(lambda: C.clip_grad_norm_(params, max_norm, norm_type))
    assert (err is None) == valid, err
    if valid:
        torch.testing.assert_close(total, torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type), rtol=1e-5, atol=0)
        same_grads(params, ref)
    else:
        assert all((a is None and p.grad is None) or torch.equal(a, p.grad) for a, p in zip(before, params)), "touched"
        assert "max_norm" in str(err) or "norm_type" in str(err)


@given(gradients(), threshold, norm_types)
def test_clip_grad_norm_per_param_equals_torch_per_parameter_or_refuses(params: list[nn.Parameter], max_norm: Any,
                                                                        norm_type: Any) -> None:
    valid = is_finite_positive(max_norm) and isinstance(norm_type, (int, float)) and not math.isnan(norm_type) and norm_type >= 1
    ref = clone(params)
    norms, err = run(lambda: C.clip_grad_norm_per_param_(params, max_norm, norm_type))
    assert (err is None) == valid, err
    if valid:
        expected = [torch.nn.utils.clip_grad_norm_([p], max_norm, norm_type) for p in ref if p.grad is not None]
        torch.testing.assert_close(norms, torch.stack(expected), rtol=1e-5, atol=0)
        same_grads(params, ref)


@given(gradients(), threshold)
def test_clip_grad_value_equals_torch_or_refuses(params: list[nn.Parameter], clip_value: Any) -> None:
    valid = isinstance(clip_value, (int, float)) and not isinstance(clip_value, bool) and math.isfinite(clip_value) \
        and clip_value >= 0
    ref = clone(params)
    _, err = run(lambda: C.clip_grad_value_(params, clip_value))
    assert (err is None) == valid, err
    if valid:  # torch raises for a bound beyond float32 (e.g. 1e300); ours caps it there, which clips nothing
        torch.nn.utils.clip_grad_value_(ref, min(clip_value, torch.finfo(torch.float32).max))
        same_grads(params, ref)
    else:
        assert names(err, clip_value)


@given(gradients(), threshold, threshold)
def test_agc_follows_the_formula_or_refuses(params: list[nn.Parameter], clip_factor: Any, eps: Any) -> None:
    valid = is_finite_positive(clip_factor) and is_finite_positive(eps)
    before = clone(params)
    fraction, err = run(lambda: C.adaptive_clip_grad_(params, clip_factor, eps))
    assert (err is None) == valid, err
    if not valid:
        return
    assert 0.0 <= float(fraction) <= 1.0
    for p, old in zip(params, before):
        if p.grad is None:
            continue
        eps32 = min(eps, torch.finfo(torch.float32).max)  # (an eps beyond float32 is capped there)
        allowed = clip_factor * C.unitwise_norm(p.detach()).clamp(min=eps32)  # λ · max(‖W_i‖, ε)
        g_norm, g_old = C.unitwise_norm(p.grad), C.unitwise_norm(old.grad)
        assert bool((g_norm <= allowed * (1 + 1e-5) + 1e-37).all()), "a unit is above its allowed norm"
        assert bool((g_norm <= g_old * (1 + 1e-6)).all()), "AGC made a gradient larger"


@given(st.sampled_from(list(C.CLIP_METHODS) + ["sometimes", "", None]), threshold)
def test_gradient_clipping_hook_checks_in_its_constructor(method: Any, value: Any) -> None:
    valid = method in C.CLIP_METHODS and (method == "none" or is_finite_positive(value))
    hook, err = run(lambda: C.GradientClipping(method, value))
    assert (err is None) == valid, err
    if err is not None:
        assert "method" in str(err) or names(err, value)


# ------------------------------------------------------------------ quantization
bits = mostly(st.integers(2, 16), st.integers(-1, 20) | st.sampled_from([8.0, True, None, "8"]))
ranges = st.floats(-1e30, 1e30) | st.floats(-1, 1) | st.sampled_from([0.0, -0.0, 1e-30, -1e-30, 1e-45, 3.4e38, -3.4e38, 1e38])


def bits_ok(b: Any) -> bool:
    return isinstance(b, int) and not isinstance(b, bool) and 2 <= b <= 16


@given(ranges, ranges, bits, st.booleans(), st.booleans())
def test_calc_qparams_cover_the_range_with_an_exact_zero(a: float, b: float, num_bits: Any, symmetric: bool, signed: bool) -> None:
    x_min, x_max = min(a, b), max(a, b)
    result, err = run(lambda: Q.calc_qparams(x_min, x_max, num_bits, symmetric, signed))
    if not bits_ok(num_bits):
        assert err is not None and "num_bits" in str(err)
        return
    if err is not None:  # only a range at float32's limit may be refused: its end levels would overflow to inf
        assert max(abs(x_min), abs(x_max)) > 1e37 and "too wide" in str(err), err
        return
    scale, zp = result
    q_min, q_max = Q.qrange(num_bits, signed)
    assert math.isfinite(float(scale)) and float(scale) > 0
    assert q_min <= int(zp) <= q_max
    lo, hi = min(x_min, 0.0), max(x_max, 0.0)
    s = float(scale)  # the grid S·(q − Z) covers [lo, hi] (up to float32 rounding of the product)
    lo32, hi32 = (torch.tensor(v, dtype=torch.float32).item() for v in (lo, hi))
    assert s * (q_min - int(zp)) <= lo32 + abs(lo32) * 1e-6
    assert s * (q_max - int(zp)) >= hi32 - abs(hi32) * 1e-6
    assert Q.dequantize(Q.quantize(torch.zeros(1), scale, zp, q_min, q_max), scale, zp).item() == 0.0


@given(st.integers(2, 16), st.booleans(), st.floats(-1e4, 1e4), st.floats(1e-3, 1e4), st.integers(0, 2**16))
def test_round_trip_error_is_at_most_half_a_step_inside_the_range(num_bits: int, signed: bool, low: float, width: float,
                                                                 seed: int) -> None:
    x = torch.rand(300, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * width + low
    x = x.float()
    scale, zp = Q.calc_qparams(x.min(), x.max(), num_bits, symmetric=False, signed=signed)
    q_min, q_max = Q.qrange(num_bits, signed)
    q = Q.quantize(x, scale, zp, q_min, q_max)
    err = (Q.dequantize(q, scale, zp) - x).abs()
    # S/2 plus float32 rounding of x/S and of S·(q − Z) (a few ulps of the largest |value|)
    slack = 4 * torch.finfo(torch.float32).eps * max(x.abs().max().item(), float(scale) * (q_max - q_min))
    assert err.max().item() <= float(scale) / 2 + slack
    assert torch.equal(Q.dequantize(q, scale, zp), Q.fake_quantize(x, scale, zp, q_min, q_max))


@given(st.integers(2, 16), st.booleans(), mostly(st.floats(1e-6, 1e3), special | st.sampled_from([1e-40, 1e-45, 3e38])),
       st.integers(-70000, 70000), st.booleans(), st.integers(0, 2**16),
       mostly(st.sampled_from([None, math.inf, -math.inf]), st.just(math.nan)))
def test_fake_quantize_equals_torch_or_refuses(num_bits: int, signed: bool, scale: float, zp: int, raw_zp: bool, seed: int,
                                              extra: float | None) -> None:
    q_min, q_max = Q.qrange(num_bits, signed)
    zp = zp if raw_zp else q_min + zp % (q_max - q_min + 1)  # inside the range, or anywhere
    s32 = torch.tensor(scale, dtype=torch.float32)
    x = torch.randn(200, generator=torch.Generator().manual_seed(seed)) * max(float(s32), 1e-30) * (q_max - q_min) / 2
    if extra is not None:
        x[0] = extra
    valid = math.isfinite(float(s32)) and float(s32) > 0 and math.isfinite(float(1 / s32)) and q_min <= zp <= q_max \
        and not math.isnan(extra or 0.0)  # 1 / S must be a float32 too: the arithmetic multiplies by it
    event("valid" if valid else "refused")
    out, err = run(lambda: Q.fake_quantize(x, s32, zp, q_min, q_max))
    assert (err is None) == valid, err
    if valid:
        ref = torch.fake_quantize_per_tensor_affine(x, s32, torch.tensor(zp, dtype=torch.int32), q_min, q_max)
        assert torch.equal(out, ref)
    else:
        assert "scale" in str(err) or "zero_point" in str(err) or "NaN" in str(err)


@given(st.integers(2, 16), st.booleans(), st.integers(0, 3), st.integers(0, 2**16), st.booleans())
def test_fake_quantize_per_channel_equals_torch_or_refuses(num_bits: int, signed: bool, axis: int, seed: int, bad: bool) -> None:
    q_min, q_max = Q.qrange(num_bits, signed)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 4, 2, generator=g) * 5
    c = x.shape[axis] if axis < 3 else 1
    scale = torch.rand(c, generator=g) + 1e-3
    zp = torch.randint(q_min, q_max + 1, (c,), generator=g, dtype=torch.int32)
    if bad:
        scale[0] = [-1.0, 0.0, math.nan, math.inf][seed % 4]
    out, err = run(lambda: Q.fake_quantize_per_channel(x, scale, zp, axis, q_min, q_max))
    assert (err is None) == (not bad and axis < 3), err
    if err is None:
        assert torch.equal(out, torch.fake_quantize_per_channel_affine(x, scale, zp, axis, q_min, q_max))


tensors = mostly(st.sampled_from(["randn", "randn", "zeros", "huge", "tiny", "int", "scalar"]),
                 st.sampled_from(["empty", "nan", "inf"]))


def make_tensor(kind: str, seed: int) -> torch.Tensor:
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(seed))
    if kind == "empty":
        return torch.zeros(0, 5)
    if kind in ("nan", "inf"):
        x[seed % 6, seed % 5] = math.nan if kind == "nan" else -math.inf
    return {"zeros": torch.zeros(6, 5), "huge": x * 1e30, "tiny": x * 1e-30, "int": (x * 10).round().long(),
            "scalar": torch.tensor(0.5)}.get(kind, x)


@given(tensors, st.integers(0, 2**16), bits, st.booleans(), mostly(st.sampled_from([None, 0, 1, -1]), st.sampled_from([2, -3, 1.0])),
       mostly(st.sampled_from(["minmax", "percentile", "mse", "moving_average"]), st.just("histogram")))
def test_quantize_tensor_round_trip_or_refuses(kind: str, seed: int, num_bits: Any, symmetric: bool, ch_axis: Any,
                                               observer: str) -> None:
    x = make_tensor(kind, seed)
    axis_ok = ch_axis is None or (isinstance(ch_axis, int) and -x.ndim <= ch_axis < x.ndim)
    valid = kind not in ("empty", "nan", "inf") and bits_ok(num_bits) and axis_ok and observer != "histogram"
    event(f"tensor {kind}: {'valid' if valid else 'refused'}")
    result, err = run(lambda: Q.quantize_tensor(x, num_bits, symmetric, ch_axis=ch_axis, observer=observer))
    assert (err is None) == valid, err
    if not valid:
        return
    x_hat, scale, zp = result
    assert x_hat.shape == x.shape and torch.isfinite(x_hat).all() and bool((scale > 0).all())
    q_min, q_max = Q.qrange(num_bits, symmetric)
    if ch_axis is None:
        assert torch.equal(x_hat, torch.fake_quantize_per_tensor_affine(x.float(), scale, zp, q_min, q_max))
    else:
        assert torch.equal(x_hat, torch.fake_quantize_per_channel_affine(x.float(), scale, zp, ch_axis % x.ndim, q_min, q_max))
    if observer == "minmax":  # min-max covers every value: the error is at most half a step everywhere
        s = scale if ch_axis is None else scale.reshape([-1 if d == ch_axis % x.ndim else 1 for d in range(x.ndim)])
        slack = 4 * torch.finfo(torch.float32).eps * x.float().abs().max()
        assert bool(((x_hat - x.float()).abs() <= s / 2 + slack).all())


@given(st.integers(2, 8), st.booleans(), st.sampled_from([0.0, 1e-30, 1e-3, 1.0, 1e3]), st.integers(0, 2**16))
def test_lsq_quantizer_works_after_any_first_batch(num_bits: int, signed: bool, first_scale: float, seed: int) -> None:
    q = Q.LSQQuantizer(num_bits, signed)
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(50, generator=g) * first_scale
    assert torch.isfinite(q(first)).all()
    v = (torch.randn(200, generator=g) * 2).requires_grad_()
    out = q(v)
    out.pow(2).sum().backward()
    assert float(q.step.detach()) > 0 and torch.isfinite(out).all()
    assert torch.isfinite(q.step.grad) and torch.isfinite(v.grad).all()


# ------------------------------------------------------------------ pruning
sparsities = mostly(st.floats(0, 1, exclude_max=True) | st.sampled_from([0.0, 0.5, 0.9, 0.999]),
                    st.floats(0.99, 1.0) | st.sampled_from([0.999999, 1.0 - 1e-12, 1.0, 1.5, -0.1, math.nan, math.inf, True, "0.5"]))


@given(st.lists(st.integers(1, 12), min_size=2, max_size=4), sparsities, mostly(st.sampled_from(["global", "layer"]), st.just("local")),
       st.integers(0, 2**16))
def test_magnitude_masks_prune_exactly_the_requested_count_or_refuse(widths: list[int], s: Any, scope: str, seed: int) -> None:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(widths[0], widths[1], 3)] + [nn.Linear(a, b) for a, b in zip(widths[1:], widths[2:])]
    model = nn.Sequential(*layers)
    if seed % 5 == 0:  # many exact ties in |w|
        with torch.no_grad():
            for layer in layers:
                layer.weight.copy_(layer.weight.sign() * 0.5)
    sizes = [layer.weight.numel() for layer in layers]
    ratio_ok = isinstance(s, float) and 0 <= s < 1
    counts_ok = ratio_ok and (all(n - round(s * n) >= 1 for n in sizes) if scope == "layer"
                              else sum(sizes) - round(s * sum(sizes)) >= 1)
    valid = ratio_ok and scope in ("global", "layer") and counts_ok
    event("valid" if valid else "refused")
    masks, err = run(lambda: magnitude_masks(model, s, scope))
    assert (err is None) == valid, err
    if valid:
        kept = [int(m.sum()) for m in masks.values()]
        if scope == "layer":
            assert kept == [n - round(s * n) for n in sizes]
        else:
            assert sum(kept) == sum(sizes) - round(s * sum(sizes))
    elif ratio_ok and scope in ("global", "layer"):
        assert "keeps 0 of" in str(err) and "at most" in str(err)


_DETECTORS: dict[tuple[float, int], Any] = {}


def detector(width: float, depth: int) -> Any:
    from course_utils import TinyDetector

    if (width, depth) not in _DETECTORS:
        torch.manual_seed(0)
        _DETECTORS[width, depth] = TinyDetector(width=width, depth=depth)
    return _DETECTORS[width, depth]


@given(st.sampled_from([(0.25, 0), (0.5, 1)]),
       mostly(st.floats(1e-3, 1) | st.sampled_from([1e-9, 1.0]), st.sampled_from([0.0, 1.5, -0.5, math.nan])),
       mostly(st.sampled_from([1, 1, 2, 4, 8]), st.integers(-1, 40) | st.sampled_from([2.5, True, 1000])),
       st.sampled_from(["layer", "global"]),
       st.sampled_from(["l1", "bn", "random"]))
def test_channel_masks_keep_the_requested_counts_or_refuse(shape: tuple[float, int], keep: float, multiple_of: Any,
                                                           scope: str, criterion: str) -> None:
    model = detector(*shape)
    from course_utils.prune import channel_counts

    channels = channel_counts(model)
    m_ok = isinstance(multiple_of, int) and not isinstance(multiple_of, bool) and 1 <= multiple_of <= min(channels.values())
    valid = 0 < keep <= 1 and m_ok
    event("valid" if valid else "refused")
    masks, err = run(lambda: channel_masks(model, keep, criterion, scope, multiple_of))
    assert (err is None) == valid, err
    if not valid:
        assert "keep_ratio" in str(err) or "multiple_of" in str(err)
        return
    for name, mask in masks.items():
        c, k = channels[name], int(mask.sum())
        assert 1 <= k <= c
        if scope == "layer" or criterion == "bn" and name == "neck":
            want = max(1, round(keep * c)) if multiple_of == 1 else min(c, max(multiple_of, round(keep * c / multiple_of) * multiple_of))
            assert k == want, (name, c, k, want)
        elif multiple_of > 1:
            assert k % multiple_of == 0 or k == c


# ------------------------------------------------------------------ TinyDetector.loss
def rarely(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """``bad`` one time in eight (for fields drawn many times per example)."""
    return st.integers(0, 7).flatmap(lambda k: bad if k == 7 else good)


box_value = rarely(st.integers(0, 64).map(float), st.sampled_from([math.nan, math.inf, -math.inf, 1e30]))
box_side = rarely(st.integers(1, 40).map(float), st.integers(-8, 0).map(float))
class_id = rarely(st.integers(1, 3), st.sampled_from([-1, 0, 4, 5]))


@pytest.mark.slow  # seconds to a minute (subprocesses, training or many evaluations): not in `make check`
@given(st.lists(st.tuples(box_value, box_value, box_side, box_side, class_id), max_size=3),
       mostly(st.sampled_from([torch.int64, torch.int32, torch.uint8]), st.just(torch.float32)))
def test_detector_loss_is_finite_or_refuses(objects: list[tuple], label_dtype: torch.dtype) -> None:
    """Labels 1..K (K = 3) and finite boxes with positive width and height train; anything else is refused."""
    model = detector(0.25, 0)
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h, _ in objects], dtype=torch.float32).reshape(-1, 4)
    labels = [c for *_, c in objects]
    if label_dtype == torch.uint8:
        labels = [c % 256 for c in labels]
    target = {"boxes": boxes, "labels": torch.tensor(labels, dtype=label_dtype)}
    wh = boxes[:, 2:] - boxes[:, :2]
    valid = (label_dtype != torch.float32 or not labels) and all(1 <= c <= 3 for c in labels) \
        and bool(torch.isfinite(boxes).all()) and bool((wh > 0).all())
    event("valid" if valid else "refused")
    model.train()
    losses, err = run(lambda: model(torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)), [target]))
    assert (err is None) == valid, err
    if valid:
        assert torch.isfinite(sum(losses.values()))
    else:
        assert "targets[0]" in str(err)


# ------------------------------------------------------------------ training loop and timing
class _Toy(nn.Module):
    """The smallest model fit can train: images are (2,) tensors, one loss term."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(2))

    def forward(self, images: list[torch.Tensor], targets: list[dict]) -> dict[str, torch.Tensor]:
        return {"loss_toy": sum((self.w * img).sum() ** 2 for img in images)}


counts = mostly(st.integers(1, 3), st.integers(-2, 0) | st.sampled_from([1.0, 2.5, True, None, "1"]))


@given(mostly(st.integers(1, 3), st.just(0)), counts, mostly(st.none() | st.integers(1, 5), counts), st.booleans())
def test_fit_trains_or_says_why_not(n_batches: int, epochs: Any, max_steps: Any, as_iterator: bool) -> None:
    from course_utils.train import fit

    model = _Toy()
    batches = [([torch.ones(2)], [{}]) for _ in range(n_batches)]
    loader = iter(batches) if as_iterator else batches
    epochs_ok = isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1
    steps_ok = max_steps is None or (isinstance(max_steps, int) and not isinstance(max_steps, bool) and max_steps >= 1)
    expected = min(n_batches * epochs, max_steps or 10**9) if epochs_ok and steps_ok and n_batches else 0
    # a one-shot iterator is empty after its first epoch: refused unless max_steps stops the run first
    iterator_dies = as_iterator and epochs_ok and steps_ok and epochs > 1 and n_batches and (max_steps is None or max_steps > n_batches)
    valid = epochs_ok and steps_ok and n_batches > 0 and not iterator_dies
    event("trained" if valid else "refused")
    history, err = run(lambda: fit(model, loader, torch.optim.SGD(model.parameters(), lr=1e-3), epochs,
                                   torch.device("cpu"), progress=False, max_steps=max_steps))
    assert (err is None) == valid, err
    if valid:
        assert len(history["loss"]) == expected
    else:
        assert any(word in str(err) for word in ("epochs", "max_steps", "no batch"))


@given(counts, counts, st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, -1.0, 1e-4]))
def test_measure_latency_counts_its_calls_or_refuses(warmup: Any, runs: Any, min_seconds: Any) -> None:
    from course_utils.deploy import measure_latency

    if math.isfinite(min_seconds) and min_seconds > 1e-3:
        min_seconds = 1e-4  # still valid; keeps the test fast (long durations are not what is tested here)
    calls: list[int] = []
    ok = (isinstance(warmup, int) and not isinstance(warmup, bool) and warmup >= 0 and isinstance(runs, int)
          and not isinstance(runs, bool) and runs >= 1 and math.isfinite(min_seconds) and min_seconds >= 0)
    stats, err = run(lambda: measure_latency(lambda: calls.append(1), warmup, runs, min_seconds))
    assert (err is None) == ok, err
    if ok:
        assert stats["runs"] >= runs and len(calls) == warmup + stats["runs"]
        assert stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    else:
        assert not calls, "refused after calling fn"
