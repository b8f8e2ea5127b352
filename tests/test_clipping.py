"""course_utils.clipping against torch.nn.utils and against the AGC formula."""

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from course_utils import clipping as C
from course_utils.data import SyntheticShapes, collate_detection
from course_utils.models import TinyDetector
from course_utils.train import Hook, fit
from helpers import clone


def make_params(seed: int, with_none: bool = True, scale: float = 1.0) -> list[nn.Parameter]:
    """A random parameter set: conv kernel, matrix, bias, scalar; one without grad."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(8, 3, 3, 3), (5, 7), (5,), ()]
    params = []
    for shape in shapes:
        p = nn.Parameter(torch.randn(shape, generator=g))
        p.grad = torch.randn(shape, generator=g) * scale * (1 + 10 * torch.rand((), generator=g))
        params.append(p)
    if with_none:
        params.append(nn.Parameter(torch.randn(4, generator=g)))  # .grad is None
    return params


def assert_same_grads(a, b):
    for p, q in zip(a, b):
        if p.grad is None:
            assert q.grad is None
        else:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf])
@pytest.mark.parametrize("max_norm", [0.1, 1.0, 5.0, 1e6])
@pytest.mark.parametrize("seed", range(5))
def test_clip_grad_norm_equals_torch(norm_type, max_norm, seed):
    ours, ref = make_params(seed), None
    ref = clone(ours)
    total_ours = C.clip_grad_norm_(ours, max_norm, norm_type)
    total_ref = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type)
    torch.testing.assert_close(total_ours, total_ref, rtol=1e-6, atol=1e-6)
    assert_same_grads(ours, ref)
    if max_norm < 1e6:  # the clip really bit: afterwards the norm is at most max_norm
        assert C.grad_norm(ours, norm_type) <= max_norm * (1 + 1e-5)


@pytest.mark.parametrize("clip_value", [0.0, 0.05, 0.5, 3.0])
@pytest.mark.parametrize("seed", range(5))
def test_clip_grad_value_equals_torch(clip_value, seed):
    ours = make_params(seed)
    ref = clone(ours)
    C.clip_grad_value_(ours, clip_value)
    torch.nn.utils.clip_grad_value_(ref, clip_value)
    assert_same_grads(ours, ref)


def test_single_tensor_and_no_grads():
    p = nn.Parameter(torch.ones(3))
    p.grad = torch.full((3,), 4.0)
    q = clone([p])[0]
    torch.testing.assert_close(C.clip_grad_norm_(p, 1.0), torch.nn.utils.clip_grad_norm_(q, 1.0))
    torch.testing.assert_close(p.grad, q.grad)
    no_grad = [nn.Parameter(torch.ones(2))]
    assert C.clip_grad_norm_(no_grad, 1.0).item() == torch.nn.utils.clip_grad_norm_(clone(no_grad), 1.0).item() == 0.0


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_like_torch(bad):
    ours = make_params(0)
    ours[1].grad[0, 0] = bad
    ref = clone(ours)
    with pytest.raises(RuntimeError, match="non-finite"):
        C.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_(clone(ours), 1.0, error_if_nonfinite=True)
    total_ours = C.clip_grad_norm_(ours, 1.0)
    total_ref = torch.nn.utils.clip_grad_norm_(ref, 1.0)
    torch.testing.assert_close(total_ours, total_ref, equal_nan=True)
    assert_same_grads(ours, ref)  # gradients scaled by the non-finite factor, as torch does


def test_per_param_equals_torch_on_each_parameter():
    ours = make_params(3)
    ref = clone(ours)
    norms = C.clip_grad_norm_per_param_(ours, 0.5)
    expected = [torch.nn.utils.clip_grad_norm_([p], 0.5) for p in ref if p.grad is not None]
    torch.testing.assert_close(norms, torch.stack(expected))
    assert_same_grads(ours, ref)


def agc_reference(param: nn.Parameter, clip_factor: float, eps: float) -> torch.Tensor:
    """AGC written unit by unit, straight from the formula in the paper."""
    W, G = param.detach(), param.grad.clone()
    units = [(W, G)] if W.ndim <= 1 else [(W[i], G[i]) for i in range(W.shape[0])]
    out = []
    for w, g in units:
        w_norm = max(w.norm().item(), eps)
        g_norm = g.norm().item()
        out.append(g * (clip_factor * w_norm / g_norm) if g_norm / w_norm > clip_factor else g)
    return out[0] if W.ndim <= 1 else torch.stack(out)


@pytest.mark.parametrize("clip_factor", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("seed", range(4))
def test_agc_equals_formula(clip_factor, seed):
    params = make_params(seed, scale=0.05)
    params[0].data[0] = 0  # a dead unit: eps decides its allowed norm
    expected = [None if p.grad is None else agc_reference(p, clip_factor, 1e-3) for p in params]
    fraction = C.adaptive_clip_grad_(params, clip_factor, eps=1e-3)
    for p, e in zip(params, expected):
        if e is not None:
            torch.testing.assert_close(p.grad, e, rtol=1e-5, atol=1e-7)
    assert 0.0 <= fraction.item() <= 1.0


def test_agc_units():
    assert C.unitwise_norm(torch.ones(4, 3, 2, 2)).shape == (4, 1, 1, 1)
    assert C.unitwise_norm(torch.ones(4, 3)).shape == (4, 1)
    assert C.unitwise_norm(torch.ones(4)).shape == ()
    torch.testing.assert_close(C.unitwise_norm(torch.full((2, 9), 1.0)), torch.full((2, 1), 3.0))


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="choose one of"):
        C.GradientClipping("sometimes", 1.0)
    with pytest.raises(ValueError, match="> 0"):
        C.GradientClipping("norm", 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        C.clip_grad_value_(make_params(0), -1.0)


class _RecordAfter(Hook):
    """Runs after the clipping hook: records the norm the optimizer will actually use."""

    def __init__(self):
        self.norms = []

    def after_backward(self, state):
        self.norms.append(C.grad_norm([p for p in state.model.parameters() if p.grad is not None]).item())


def _tiny_run(hooks):
    torch.manual_seed(0)
    model = TinyDetector(width=0.25, depth=0)
    data = [SyntheticShapes(8, seed=0)[i] for i in range(8)]
    loader = DataLoader(data, batch_size=4, collate_fn=collate_detection)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    return fit(model, loader, optimizer, epochs=2, device=torch.device("cpu"), hooks=hooks, progress=False)


def test_hooks_clip_before_the_step_and_record():
    monitor, after = C.GradNormMonitor(per_layer=True), _RecordAfter()
    history = _tiny_run([monitor, C.GradientClipping("norm", 1e-3), after])
    assert len(history["grad_norm"]) == len(history["clip_active"]) == 4
    assert all(n > 1e-3 for n in history["grad_norm"])  # raw norms, seen before clipping
    assert history["clip_active"] == [1.0] * 4
    assert all(n <= 1e-3 * (1 + 1e-4) for n in after.norms)  # what the optimizer got
    assert "stem.0.weight" in monitor.layer_norms and len(monitor.layer_norms["stem.0.weight"]) == 4


def test_huge_threshold_never_active():
    history = _tiny_run([C.GradientClipping("norm", 1e9)])
    assert history["clip_active"] == [0.0] * 4
