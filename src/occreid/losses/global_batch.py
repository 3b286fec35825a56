"""Triplet mining over the global batch: under DDP each process mines its anchors against the
features of every process (gathered with gradients), so N processes train like one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from occreid.cross_rank import all_gather_with_grad
from occreid.losses.precision import upcast
from occreid.losses.triplet import batch_hard_triplet, euclidean_dist


def global_batch_triplet(
    features: torch.Tensor, pids: torch.Tensor, margin: float | None = 0.3, normalize: bool = False
) -> torch.Tensor:
    """Batch-hard triplet of the local anchors [b, D] against the gathered batch [B, D]."""
    if normalize:
        features = F.normalize(upcast(features), dim=1)
    all_feats = all_gather_with_grad(features)
    all_pids = all_gather_with_grad(pids) if all_feats is not features else pids
    return batch_hard_triplet(euclidean_dist(features, all_feats), pids, margin, pids_other=all_pids)


def gathered_distance_triplet(
    pair_distance, features: torch.Tensor, pids: torch.Tensor, margin: float | None = 0.3, **extra
) -> torch.Tensor:
    """Batch-hard triplet with a method's own pair distance `pair_distance(a, b, **extra)` -> [b, B],
    where `features` (and every tensor in `extra`) are gathered from all processes for the columns."""
    all_feats = all_gather_with_grad(features)
    gathered = all_feats is not features
    all_pids = all_gather_with_grad(pids) if gathered else pids
    cols = {k: (all_gather_with_grad(v) if gathered else v) for k, v in extra.items()}
    rows = {k: v for k, v in extra.items()}
    dist = pair_distance(features, all_feats, rows=rows, cols=cols)
    return batch_hard_triplet(dist, pids, margin, pids_other=all_pids)
