"""course_utils.quant.codebook: k-means against a plain numpy Lloyd, the scatter-add gradient, storage by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.quant import (
    CodebookLayer, codebook_bytes, codebook_quantize, float_bytes, kmeans_codebook, linear_bytes,
)


def numpy_lloyd(w: np.ndarray, k: int, iters: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Reference: Lloyd's k-means with a full (n, k) distance matrix, linear init, empty clusters kept."""
    c = np.linspace(w.min(), w.max(), k)
    idx = np.argmin(np.abs(w[:, None] - c[None, :]), axis=1)
    for _ in range(iters):
        for j in range(k):
            if (idx == j).any():
                c[j] = w[idx == j].mean()
        c = np.sort(c)
        new = np.argmin(np.abs(w[:, None] - c[None, :]), axis=1)
        if (new == idx).all():
            break
        idx = new
    return c, new


def _laplace(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    u = torch.rand(shape, generator=g) - 0.5
    return -0.05 * torch.sign(u) * torch.log1p(-2 * u.abs())


@pytest.mark.parametrize("bits", [1, 2, 3, 5])
@pytest.mark.parametrize("seed", [0, 1])
def test_kmeans_matches_numpy_lloyd(bits, seed):
    w = _laplace((16, 8, 3, 3), torch.Generator().manual_seed(seed)).double()
    centroids, indices = kmeans_codebook(w, bits, iters=200)
    ref_c, ref_idx = numpy_lloyd(w.reshape(-1).numpy(), 2**bits, iters=200)
    assert centroids.shape == (2**bits,) and indices.shape == w.shape and indices.dtype == torch.int64
    np.testing.assert_allclose(centroids.numpy(), ref_c, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(indices.reshape(-1).numpy(), ref_idx)


@pytest.mark.parametrize("bits", [2, 4])
def test_kmeans_fixed_point_nearest_and_mean(bits):
    w = _laplace((2000,), torch.Generator().manual_seed(3))
    c, idx = kmeans_codebook(w, bits, iters=500)
    dist = (w[:, None] - c[None, :]).abs()
    assert torch.all(dist.gather(1, idx[:, None]).squeeze(1) <= dist.min(dim=1).values + 1e-7)  # nearest centroid
    for k in range(2**bits):
        members = w[idx == k]
        if members.numel():
            assert c[k].item() == pytest.approx(members.double().mean().item(), abs=1e-6)  # mean of its members
    assert torch.all(c[1:] >= c[:-1])


def test_kmeans_is_deterministic_and_handles_constant_and_empty_clusters():
    w = _laplace((500,), torch.Generator().manual_seed(4))
    a, b = kmeans_codebook(w, 3), kmeans_codebook(w.clone(), 3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c, idx = kmeans_codebook(torch.full((10,), 0.5), 2)  # one value: every cluster but one stays empty
    assert torch.all(c == 0.5) and torch.all(c[idx] == 0.5)
    w = torch.tensor([0.0, 0.0, 0.0, 1.0])  # linear init puts centroids at 1/3 and 2/3 with no members
    c, idx = kmeans_codebook(w, 2)
    assert torch.isfinite(c).all() and torch.equal(c[idx], w)


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_quantized_model_has_at_most_two_to_the_b_values_per_layer(bits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 5))
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model.eval()
    q = codebook_quantize(model, bits)
    layers = [m for m in q.modules() if isinstance(m, CodebookLayer)]
    assert len(layers) == 2
    for m in layers:
        assert m.weight.unique().numel() <= 2**bits
    x = torch.randn(4, 3, 8, 8)
    err = (q(x) - model(x)).pow(2).mean() / model(x).pow(2).mean()
    assert err < {1: 1.0, 2: 0.3, 3: 0.1, 4: 0.03}[bits]  # more bits, closer to the float network


@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_centroid_gradient_is_scatter_add_of_weight_gradient(kind):
    torch.manual_seed(1)
    layer = nn.Conv2d(4, 6, 3, padding=1, stride=2) if kind == "conv" else nn.Linear(10, 7)
    x = torch.randn(3, 4, 9, 9) if kind == "conv" else torch.randn(5, 10)
    cb = CodebookLayer(layer, bits=3)
    target = torch.randn_like(cb(x))
    (cb(x) - target).pow(2).sum().backward()

    w = cb.weight.detach().requires_grad_(True)  # the same weights as a plain tensor: its own gradient
    out = F.conv2d(x, w, cb.bias, cb.stride, cb.padding) if kind == "conv" else F.linear(x, w, cb.bias)
    (out - target).pow(2).sum().backward()
    expected = torch.zeros(8).index_add_(0, cb.indices.reshape(-1), w.grad.reshape(-1))
    torch.testing.assert_close(cb.centroids.grad, expected, rtol=1e-5, atol=1e-6)
    assert cb.centroids.grad.abs().sum() > 0


def test_finetuning_centroids_lowers_the_loss_and_stays_on_the_codebook():
    torch.manual_seed(2)
    teacher = nn.Linear(16, 4)
    x = torch.randn(256, 16)
    y = teacher(x).detach()
    student = CodebookLayer(nn.Linear(16, 4), bits=2)  # another start: far from the teacher
    indices = student.indices.clone()
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        loss = F.mse_loss(student(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert torch.equal(student.indices, indices)  # training moves the centroids, not the assignment
    assert student.weight.unique().numel() <= 4
    assert torch.equal(student.weight, student.centroids[student.indices])


def test_storage_counts_by_hand():
    conv = nn.Conv2d(2, 3, 3, bias=False)  # 54 weights; the BN folds into a bias of 3
    model = nn.Sequential(conv, nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 5))  # 20 weights, 5 biases
    model.eval()
    # fp32, BN folded: (54 + 3 + 20 + 5) · 4
    assert float_bytes(model) == 328
    # codebook, 3 bits: ceil(54·3/8)=21 + 8·4 + 3·4 bias  +  ceil(20·3/8)=8 + 8·4 + 5·4 bias
    assert codebook_bytes(codebook_quantize(model, 3)) == 21 + 32 + 12 + 8 + 32 + 20
    # linear, 3 bits: 21 + 3 scales·4 + 12  +  8 + 5 scales·4 + 20
    assert linear_bytes(model, 3) == 21 + 12 + 12 + 8 + 20 + 20
    # the Linear left float: 20 · 4 bytes for its weights instead
    assert codebook_bytes(codebook_quantize(model, 1, skip=["4"])) == math.ceil(54 / 8) + 8 + 12 + 80 + 20
    assert linear_bytes(model, 1, skip=["4"]) == 7 + 12 + 12 + 80 + 20


def test_a_codebook_model_round_trips_through_its_state_dict():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 1))
    q = codebook_quantize(model, 2)
    fresh = codebook_quantize(nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Conv2d(3, 2, 1)), 2)
    fresh.load_state_dict(q.state_dict())
    x = torch.randn(2, 2, 5, 5)
    torch.testing.assert_close(fresh(x), q(x))


@pytest.mark.parametrize("bits", [0, 9, 2.0, True, "4", None])
def test_bad_bits_are_refused_with_the_fix(bits):
    with pytest.raises(ValueError, match=r"bits must be an integer in 1\.\.8"):
        kmeans_codebook(torch.randn(10), bits)
    with pytest.raises(ValueError, match=r"bits must be an integer in 1\.\.8"):
        codebook_quantize(nn.Linear(3, 2), bits)


def test_bad_inputs_name_the_value_and_the_fix():
    with pytest.raises(TypeError, match="must be a torch.Tensor.*got list"):
        kmeans_codebook([0.1, 0.2], 2)
    with pytest.raises(ValueError, match=r"weight is empty \(shape \(0, 3\)\)"):
        kmeans_codebook(torch.empty(0, 3), 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        kmeans_codebook(torch.tensor([0.0, float("nan")]), 2)
    with pytest.raises(TypeError, match="floating point.*torch.int64"):
        kmeans_codebook(torch.arange(4), 2)
    with pytest.raises(KeyError, match=r"\['head'\] are not layers"):
        codebook_quantize(nn.Sequential(nn.Linear(3, 2)), 2, skip=["head"])
    with pytest.raises(ValueError, match="skip must be a list"):
        codebook_quantize(nn.Sequential(nn.Linear(3, 2)), 2, skip="0")
    with pytest.raises(ValueError, match="no Conv2d/Linear layer"):
        codebook_quantize(nn.Sequential(nn.Linear(3, 2)), 2, skip=["0"])
    with pytest.raises(ValueError, match="no CodebookLayer"):
        codebook_bytes(nn.Linear(3, 2))
    with pytest.raises(TypeError, match="wraps an nn.Conv2d or nn.Linear"):
        CodebookLayer(nn.ReLU(), 2)
