"""Solutions for notebook 07_pruning."""

import torch


def magnitude_mask(weight, sparsity):
    """Exercise 1: keep-mask (True = keep) zeroing the round(s·n) smallest |w|."""
    n_prune = round(sparsity * weight.numel())
    mask = torch.ones(weight.numel(), dtype=torch.bool)
    if n_prune > 0:
        smallest = torch.topk(weight.abs().flatten(), n_prune, largest=False).indices
        mask[smallest] = False
    return mask.view_as(weight)


def conv_macs(c_in, c_out, k, h_out, w_out, groups):
    """Exercise 2: one multiply-accumulate per weight per output position: C_out·H_out·W_out·(C_in/groups)·k²."""
    return c_out * h_out * w_out * (c_in // groups) * k * k
