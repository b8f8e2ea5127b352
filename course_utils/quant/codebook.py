"""K-means (codebook) weight quantization: each weight is one of ``2^b`` shared, trained centroids.

Taught in: 09_integer_inference (a non-uniform grid fitted to the weights instead of the uniform one of
04_quantization_math); ``benchmarks/codebook_sweep.py`` measures it on the course detector.

Han et al. 2016 ("Deep Compression", §3) cluster each layer's weights with 1-D k-means, store per
weight only its ``b``-bit cluster index plus a small table of ``2^b`` float centroids, and fine-tune
the centroids: the gradient of a centroid is the sum of the gradients of the weights that share it.

    W[i] = C[I[i]]        weights W, centroids C (2^b,), indices I (same shape as W), I[i] in 0..2^b−1

Linear (affine) quantization puts ``2^b`` levels on a uniform grid; the codebook puts them where the
weights are. Storage is counted honestly by :func:`codebook_bytes`, :func:`linear_bytes` and
:func:`float_bytes`, always for the network as deployed (BatchNorm folded into the convs).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .folding import fuse_conv_bn
from .modules import _check_skip, _skip_set

__all__ = ["kmeans_codebook", "CodebookLayer", "codebook_quantize", "codebook_bytes", "linear_bytes", "float_bytes"]


def _check_bits(bits: object) -> int:
    """``bits`` as an int in 1..8, else ValueError naming the value and the fix."""
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8 (a codebook of 2^bits centroids, e.g. bits=4 for 16), "
                         f"got {bits!r}")
    return int(bits)


def _check_weight(weight: object) -> Tensor:
    """``weight`` as a non-empty, finite floating-point tensor, else TypeError / ValueError."""
    if not isinstance(weight, Tensor):
        raise TypeError(f"weight must be a torch.Tensor (e.g. conv.weight), got {type(weight).__name__}")
    if weight.numel() == 0:
        raise ValueError(f"weight is empty (shape {tuple(weight.shape)}): there is nothing to cluster; "
                         "skip this layer (skip=[name])")
    if not weight.is_floating_point():
        raise TypeError(f"weight must be floating point, got dtype {weight.dtype}; pass weight.float()")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError("weight holds NaN or inf values: k-means needs finite weights; check the checkpoint")
    return weight


def _assign(w: Tensor, centroids: Tensor) -> Tensor:
    """Index of the nearest centroid for each weight, ``argmin_k |w − c_k|`` (ties: the lower centroid).

    ``centroids`` sorted ascending, so the nearest one is found from the midpoints between
    neighbours (``bucketize``) instead of an (n, 2^b) distance matrix. Shapes: w (n,) -> (n,) int64."""
    return torch.bucketize(w, (centroids[1:] + centroids[:-1]) / 2)


def kmeans_codebook(weight: Tensor, bits: int, iters: int = 100) -> tuple[Tensor, Tensor]:
    """1-D k-means (Lloyd's algorithm) of ``weight`` into ``k = 2^bits`` clusters.

    Start: ``k`` centroids spaced linearly from ``min(W)`` to ``max(W)`` (Han et al. 2016 found
    linear initialisation best: it keeps centroids for the few large weights). Then repeat::

        assignment   I[i] = argmin_k |W[i] − c_k|
        update       c_k  = mean{ W[i] : I[i] = k }      (an empty cluster keeps its c_k)

    until no assignment changes or after ``iters`` updates. At convergence both hold at once: each
    weight's centroid is its nearest, and each centroid is the mean of its members. Computed on the
    CPU in float64 (deterministic: the same weights always give the same codebook).

    Shapes: weight any shape (n elements) -> centroids (2^bits,) sorted ascending, in weight's dtype
    and device; indices int64, weight's shape, with ``centroids[indices]`` the quantized weight.
    """
    bits = _check_bits(bits)
    weight = _check_weight(weight)
    if isinstance(iters, bool) or not isinstance(iters, numbers.Integral) or iters < 1:
        raise ValueError(f"iters must be a positive integer (Lloyd updates), got {iters!r}")
    w = weight.detach().reshape(-1).to("cpu", torch.float64)
    centroids = torch.linspace(float(w.min()), float(w.max()), 2**bits, dtype=torch.float64)
    indices = _assign(w, centroids)
    for _ in range(int(iters)):
        sums = torch.zeros_like(centroids).index_add_(0, indices, w)
        counts = torch.bincount(indices, minlength=centroids.numel())
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids).sort().values
        new = _assign(w, centroids)
        if torch.equal(new, indices):
            break
        indices = new
    indices = new
    return centroids.to(weight.device, weight.dtype), indices.reshape(weight.shape).to(weight.device)


class CodebookLayer(nn.Module):
    """A Conv2d or Linear whose weight is ``centroids[indices]``: ``2^bits`` trainable centroids
    (``nn.Parameter``, shape (2^bits,)), fixed int64 ``indices`` (a buffer, the layer's weight shape).

    Gradient: the weight is gathered by indexing, so autograd scatters it back,

        ∂L/∂c_k = Σ_{i : I[i] = k} ∂L/∂W[i]

    -- each centroid's gradient is the SUM of the gradients of the weights that share it (Han et al.
    2016, Fig. 3). Training moves the centroids; the indices (which weight uses which centroid) stay.
    The bias, if any, stays a float parameter. ``weight`` is recomputed on every access.
    """

    def __init__(self, layer: nn.Conv2d | nn.Linear, bits: int, iters: int = 100) -> None:
        super().__init__()
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"CodebookLayer wraps an nn.Conv2d or nn.Linear, got {type(layer).__name__}")
        if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
            raise ValueError(f"CodebookLayer supports padding_mode='zeros' only, got {layer.padding_mode!r}")
        self.bits = _check_bits(bits)
        centroids, indices = kmeans_codebook(layer.weight, self.bits, iters)
        self.centroids = nn.Parameter(centroids)
        self.register_buffer("indices", indices)
        bias = layer.bias.detach().clone() if layer.bias is not None else None
        self.register_parameter("bias", nn.Parameter(bias) if bias is not None else None)
        self.conv = isinstance(layer, nn.Conv2d)
        if self.conv:
            self.stride, self.padding, self.dilation, self.groups = layer.stride, layer.padding, layer.dilation, layer.groups
        self.train(layer.training)

    @property
    def weight(self) -> Tensor:
        """``W = C[I]``, shape of the wrapped layer's weight (differentiable in the centroids)."""
        return self.centroids[self.indices]

    def forward(self, x: Tensor) -> Tensor:
        """The wrapped layer's operation with ``W = C[I]``: conv2d (N, C_in, H, W) or linear (..., in)."""
        if self.conv:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, weight_shape={tuple(self.indices.shape)}, conv={self.conv}"


def codebook_quantize(model: nn.Module, bits: int, skip: Iterable[str] = (), iters: int = 100) -> nn.Module:
    """A copy of ``model`` (eval mode) with BatchNorm folded and every Conv2d/Linear not in ``skip``
    replaced by a :class:`CodebookLayer` of ``2^bits`` centroids (its own k-means per layer).

    BN is folded first (``fuse_conv_bn``), so the codebook quantizes the weights the deployed network
    multiplies with, and no BN parameters remain to be stored; biases stay fp32. Fine-tuning the copy
    trains the centroids and biases only (no BN left). Checked: ``bits`` in 1..8, ``skip`` names layers
    of the model, the model has at least one layer to quantize.
    """
    bits = _check_bits(bits)
    skip = _skip_set(skip)
    _check_skip(model, skip)
    model = fuse_conv_bn(model)
    count = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if full not in skip and isinstance(child, (nn.Conv2d, nn.Linear)):
                setattr(module, child_name, CodebookLayer(child, bits, iters))
                count += 1
    if count == 0:
        raise ValueError("codebook_quantize found no Conv2d/Linear layer to quantize (all skipped, or none in "
                         "the model); pass a model with such layers or a shorter skip list")
    return model


def _index_bytes(numel: int, bits: int) -> int:
    """``ceil(numel · bits / 8)``: one layer's weights at ``bits`` bits each, packed, rounded up to bytes."""
    return math.ceil(numel * bits / 8)


def _other_float_bytes(model: nn.Module, exclude: set[int]) -> int:
    """4 bytes for every floating-point parameter and buffer element not in ``exclude`` (by id)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return 4 * sum(t.numel() for t in tensors if id(t) not in exclude and t.is_floating_point())


def codebook_bytes(model: nn.Module) -> int:
    """Bytes to store a :func:`codebook_quantize` model.

    Per :class:`CodebookLayer`: ``ceil(n · b / 8)`` for its n indices at b bits, plus ``2^b · 4`` for
    its fp32 codebook. Every other floating-point parameter and buffer (biases, layers left float,
    any BN not folded) at 4 bytes per element. The int64 index buffers are not counted as int64:
    b bits is what they hold."""
    layers = [m for m in model.modules() if isinstance(m, CodebookLayer)]
    if not layers:
        raise ValueError("codebook_bytes: the model has no CodebookLayer; call codebook_quantize(model, bits) first "
                         "(float_bytes counts a float model)")
    total = sum(_index_bytes(m.indices.numel(), m.bits) + 4 * m.centroids.numel() for m in layers)
    exclude = {id(m.centroids) for m in layers} | {id(m.indices) for m in layers}
    return total + _other_float_bytes(model, exclude)


def linear_bytes(model: nn.Module, bits: int, skip: Iterable[str] = ()) -> int:
    """Bytes to store ``model`` with linear per-channel symmetric ``bits``-bit weights, BN folded first.

    Per Conv2d/Linear not in ``skip``: ``ceil(n · b / 8)`` for its n weights, plus one fp32 scale per
    output channel (``4 · C_out``; symmetric, so no zero point). Every other floating-point
    parameter and buffer (biases, skipped layers) at 4 bytes per element."""
    bits = _check_bits(bits)
    skip = _skip_set(skip)
    _check_skip(model, skip)
    folded = fuse_conv_bn(model)
    layers = [m for n, m in folded.named_modules() if n not in skip and isinstance(m, (nn.Conv2d, nn.Linear))]
    total = sum(_index_bytes(m.weight.numel(), bits) + 4 * m.weight.shape[0] for m in layers)
    return total + _other_float_bytes(folded, {id(m.weight) for m in layers})


def float_bytes(model: nn.Module) -> int:
    """Bytes to store ``model`` in fp32 as deployed: BN folded first, then 4 bytes per floating-point
    parameter and buffer element."""
    return _other_float_bytes(fuse_conv_bn(model), set())
