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


# Exercise 3 (discussion): one plan that beats the uniform 60 % cut. Spare what the sensitivity scan
# (§5) shows is sensitive and holds many multiply-adds (the head: smooth, tower; stage3.1), cut hard
# what is not (stage4: half the weights, little of the accuracy). 24.8 M multiply-adds against uniform
# 60 %'s 26.9 M; after one epoch of fine-tuning (§6's finetune) its val mAP was about 5 points above the
# uniform cut's for each of seeds 0, 1, 2 on a 2-core x86 CPU (tests/test_exercises.py checks it on seed 0).
PLAN_BEATS_UNIFORM = {"stem": 0.75, "stage2.0": 0.5, "stage2.1": 0.5, "stage3.0": 0.5, "stage3.1": 0.75,
                      "stage4.0": 0.25, "stage4.1": 0.25, "neck": 0.75, "smooth": 0.75, "tower.0": 0.5, "tower.1": 0.75}
