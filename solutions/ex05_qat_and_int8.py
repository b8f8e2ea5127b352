"""Solutions for notebook 05_qat_and_int8."""

import torch

from course_utils.quant import freeze_bn_stats
from course_utils.train import Hook


def fold_bn(weight, bias, gamma, beta, mean, var, eps):
    """Exercise 1: W' = W·γ/√(σ²+ε) per output channel; b' = (b − μ)·γ/√(σ²+ε) + β."""
    factor = gamma / torch.sqrt(var + eps)
    bias = torch.zeros_like(mean) if bias is None else bias
    return weight * factor.reshape(-1, 1, 1, 1), (bias - mean) * factor + beta


class FreezeBNAfter(Hook):
    """Exercise 2: freeze BN statistics once ``freeze_step`` optimizer steps are done."""

    def __init__(self, freeze_step: int) -> None:
        self.freeze_step = freeze_step

    def after_step(self, state) -> None:
        if state.step + 1 >= self.freeze_step:
            freeze_bn_stats(state.model)
