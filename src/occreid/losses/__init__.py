"""Losses shared by all methods: label-smoothed CE, batch-hard triplet, centre loss, pixel losses."""

from occreid.losses.center import CenterLoss
from occreid.losses.classification import cross_entropy_ls
from occreid.losses.maps import downsample_label, pixel_bce, pixel_cross_entropy, soft_downsample
from occreid.losses.triplet import batch_hard_triplet, euclidean_dist, hardest_pairs, triplet_loss

__all__ = [
    "CenterLoss",
    "batch_hard_triplet",
    "cross_entropy_ls",
    "downsample_label",
    "euclidean_dist",
    "hardest_pairs",
    "pixel_bce",
    "pixel_cross_entropy",
    "soft_downsample",
    "triplet_loss",
]
