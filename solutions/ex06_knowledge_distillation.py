"""Solutions for notebook 06_knowledge_distillation."""

import torch
import torch.nn.functional as F


def kd_loss(student_logits, teacher_logits, temperature):
    """Exercise 1: T² · KL(softmax(t/T) ‖ softmax(s/T)), summed over classes, averaged over the batch."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    p_t = F.softmax(teacher_logits / temperature, dim=-1)
    kl = (p_t * (torch.log(p_t) - log_p_s)).sum(-1)
    return temperature**2 * kl.mean()


def feature_imitation(student_features, teacher_features, mask):
    """Exercise 2: Σ over masked locations of ‖f_s − f_t‖² / (2 · N_mask · C); the teacher is a fixed target."""
    sq = (student_features - teacher_features.detach()).pow(2).sum(1)  # (B, h, w)
    n = mask.sum().clamp(min=1)
    return sq[mask].sum() / (2 * n * student_features.shape[1])
