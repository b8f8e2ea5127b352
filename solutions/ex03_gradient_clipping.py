"""Solutions for notebook 03_gradient_clipping."""

import torch


def clip_grad_norm(parameters, max_norm: float) -> torch.Tensor:
    """Exercise 1: scale all gradients by min(1, max_norm / (total_norm + 1e-6)); return total_norm."""
    grads = [p.grad for p in parameters if p.grad is not None]
    total_norm = torch.sqrt(sum((g**2).sum() for g in grads))
    scale = min(1.0, max_norm / (total_norm.item() + 1e-6))
    for g in grads:
        g.mul_(scale)
    return total_norm


def agc(param, clip_factor: float, eps: float) -> None:
    """Exercise 2: unit-wise AGC for one parameter, in place."""
    W, G = param.detach(), param.grad
    if W.ndim <= 1:
        w_norm, g_norm = W.norm(), G.norm()
    else:
        dims = tuple(range(1, W.ndim))
        w_norm = torch.linalg.vector_norm(W, dim=dims, keepdim=True)
        g_norm = torch.linalg.vector_norm(G, dim=dims, keepdim=True)
    max_norm = clip_factor * w_norm.clamp(min=eps)
    scale = torch.where(g_norm > max_norm, max_norm / g_norm.clamp(min=1e-6), torch.ones_like(g_norm))
    G.mul_(scale)
