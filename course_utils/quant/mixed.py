"""Mixed precision under a size budget: 4 or 8 bits per layer, chosen from each layer's measured cost.

Taught in notebook 11 (when int8 goes wrong, deep dive "Mixed precision under a size budget").

HAWQ (Dong et al. 2019) ranks layers by how much the loss would rise if that layer alone lost bits (it
estimates that from the Hessian) and gives fewer bits to the layers where it matters least per byte
saved. Here the cost is *measured*: ``drops[l]`` = score with every layer at 8 bits minus the score with
layer ``l`` at 4 bits (:func:`course_utils.quant.quantize_model` with ``layer_bits``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from torch import nn

__all__ = ["layer_weight_bytes", "model_weight_bytes", "allocate_bits"]


def layer_weight_bytes(model: nn.Module, bits: int) -> dict[str, int]:
    """Bytes each Conv2d/Linear layer takes deployed at ``bits``: ``ceil(numel(W) · bits / 8) + 8 · C_out``
    (the weights, plus an fp32 scale and an int32 bias per output channel), keyed by layer name."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an int in [2, 16], got {bits!r}")
    return {name: math.ceil(m.weight.numel() * bits / 8) + 8 * m.weight.shape[0]
            for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def model_weight_bytes(model: nn.Module, layer_bits: Mapping[str, int], default_bits: int = 8) -> int:
    """Σ over layers of :func:`layer_weight_bytes` at that layer's bits (``layer_bits``, else ``default_bits``)."""
    sizes = {b: layer_weight_bytes(model, b) for b in {default_bits, *layer_bits.values()}}
    unknown = sorted(set(layer_bits) - set(sizes[default_bits]))
    if unknown:
        raise KeyError(f"layer_bits names {unknown} are not Conv2d/Linear layers of the model")
    return sum(sizes[layer_bits.get(name, default_bits)][name] for name in sizes[default_bits])


def allocate_bits(drops: Mapping[str, float], model: nn.Module, budget_bytes: int, high: int = 8,
                  low: int = 4) -> dict[str, int]:
    """Which layers go to ``low`` bits so that the model fits ``budget_bytes`` at the least measured cost.

    Start with every layer at ``high``; move layers to ``low`` in order of ``drops[l] / saved_l`` (score lost
    per byte saved, smallest first; ``saved_l`` = bytes at ``high`` minus bytes at ``low``) until
    :func:`model_weight_bytes` is within the budget. Returns ``{layer: low}`` for the moved layers (the
    ``layer_bits`` of :func:`course_utils.quant.quantize_model`). A ValueError when even every layer at ``low``
    does not fit. Greedy, like HAWQ's ranking: it adds the layers' costs as if they were independent.
    """
    at_high, at_low = layer_weight_bytes(model, high), layer_weight_bytes(model, low)
    missing = sorted(set(at_high) - set(drops))
    if missing:
        raise KeyError(f"drops has no value for layers {missing}: measure every Conv2d/Linear layer")
    if sum(at_low.values()) > budget_bytes:
        raise ValueError(f"budget_bytes={budget_bytes:,} is below the model at {low} bits everywhere "
                         f"({sum(at_low.values()):,} bytes): raise the budget or lower `low`")
    order = sorted(at_high, key=lambda n: drops[n] / max(at_high[n] - at_low[n], 1))
    chosen: dict[str, int] = {}
    size = sum(at_high.values())
    for name in order:
        if size <= budget_bytes:
            break
        chosen[name] = low
        size -= at_high[name] - at_low[name]
    return chosen
