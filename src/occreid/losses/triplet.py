"""Batch-hard triplet loss (Hermans et al. 2017) on a precomputed distance matrix.

Taking the distance matrix rather than features lets part-based pair distances (AMD Eq. 12-13, PAB
Eq. 10-11) and features gathered from other processes (rectangular [B, M] matrices) plug in unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from occreid.losses.precision import upcast


def euclidean_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances [N, M] between rows of x [N, D] and y [M, D].

    Uses ||x||^2 + ||y||^2 - 2 x.y, clamped at 1e-12 before the square root, so the gradient is finite
    (zero) where a distance is 0, e.g. on the diagonal of euclidean_dist(x, x).
    """
    x = upcast(x)
    y = upcast(y)
    sq = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * (x @ y.t())
    return sq.clamp(min=1e-12).sqrt()


def hardest_pairs(
    dist: torch.Tensor, pids: torch.Tensor, pids_other: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per anchor row: hardest positive (max distance, same pid) and hardest negative (min, other pid).

    `dist` [B, M] with anchors as rows; `pids_other` [M] are the column pids (default: `pids`, square).
    An anchor with no negative column gets +inf as its negative distance (its loss term is then 0).
    """
    cols = pids if pids_other is None else pids_other
    if dist.shape != (pids.numel(), cols.numel()):
        raise ValueError(
            f"distance matrix {tuple(dist.shape)} does not match {pids.numel()} x {cols.numel()} pids"
        )
    same = pids.view(-1, 1) == cols.view(1, -1)
    neg_inf = torch.full_like(dist, float("-inf"))
    pos_inf = torch.full_like(dist, float("inf"))
    dist_ap = torch.where(same, dist, neg_inf).max(dim=1).values
    dist_an = torch.where(same, pos_inf, dist).min(dim=1).values
    return dist_ap, dist_an


def batch_hard_triplet(
    dist: torch.Tensor,
    pids: torch.Tensor,
    margin: float | None = 0.3,
    pids_other: torch.Tensor | None = None,
) -> torch.Tensor:
    """Batch-hard triplet loss, mean over anchors.

    margin m: relu(d_ap - d_an + m); margin None: soft margin softplus(d_ap - d_an).
    """
    dist_ap, dist_an = hardest_pairs(dist, pids, pids_other)
    if margin is None:
        return F.softplus(dist_ap - dist_an).mean()
    return F.relu(dist_ap - dist_an + margin).mean()


def triplet_loss(
    features: torch.Tensor, pids: torch.Tensor, margin: float | None = 0.3, normalize: bool = False
) -> torch.Tensor:
    """Batch-hard triplet on Euclidean distances between features [B, D] (optionally L2-normalised)."""
    if normalize:
        features = F.normalize(upcast(features), dim=1)
    return batch_hard_triplet(euclidean_dist(features, features), pids, margin)
