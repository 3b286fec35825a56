"""Identity classification loss: cross-entropy with label smoothing (Szegedy et al.; AMD Eq. 2, PAB Eq. 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from occreid.losses.precision import upcast


def cross_entropy_ls(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """Mean over the batch of CE against the target (1 - eps) * one_hot + eps / C.

    C is the number of classes (the papers' "N is the batch size" is a typo for the class count).
    `logits` [B, C], `targets` [B] long. epsilon = 0 gives plain cross-entropy.
    """
    return cross_entropy_ls_rows(logits, targets, epsilon).mean()


def cross_entropy_ls_rows(logits: torch.Tensor, targets: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    """`cross_entropy_ls` of every row [B], before the mean: a loss over a data-dependent subset of rows
    can weight them instead of selecting them (selecting by a mask makes the host wait for the GPU)."""
    if not 0.0 <= epsilon < 1.0:
        raise ValueError(f"label smoothing epsilon must be in [0, 1), got {epsilon}")
    log_probs = F.log_softmax(upcast(logits), dim=1)
    nll = -log_probs.gather(1, targets.long().unsqueeze(1)).squeeze(1)
    uniform = -log_probs.mean(dim=1)
    return (1.0 - epsilon) * nll + epsilon * uniform
