"""Solutions for notebook 04_quantization_math."""

import torch


def qparams(x_min: float, x_max: float, num_bits: int) -> tuple[float, int]:
    """Exercise 1: asymmetric unsigned qparams. Widen to include 0, S = range / (2^b − 1), Z = −round(x_min / S)."""
    x_min, x_max = min(x_min, 0.0), max(x_max, 0.0)
    q_max = 2**num_bits - 1
    scale = max((x_max - x_min) / q_max, 1e-12)
    zero_point = int(min(max(-round(x_min / scale), 0), q_max))
    return scale, zero_point


def fake_quantize(x: torch.Tensor, scale: float, zero_point: int, q_min: int, q_max: int) -> torch.Tensor:
    """Exercise 2: quantize-dequantize forward, straight-through gradient inside the range."""
    q = torch.round(x / scale) + zero_point
    inside = ((q >= q_min) & (q <= q_max)).float()
    y = (torch.clamp(q, q_min, q_max) - zero_point) * scale
    # forward value y; gradient: 1 where inside, 0 outside
    return x * inside + (y - x * inside).detach()
