"""Exact and fast evaluation: ranking metrics, distances, re-ranking, verification, reports, pictures."""

from occreid.evaluation.cuhk03 import cuhk03_single_gallery_shot
from occreid.evaluation.distances import (
    NO_COMMON_PART_DISTANCE,
    flip_average,
    global_distance,
    part_distance,
)
from occreid.evaluation.pictures import plot_cmc, rank_list_picture, rank_lists
from occreid.evaluation.ranking import rank_metrics
from occreid.evaluation.report import write_report
from occreid.evaluation.rerank import k_reciprocal_rerank
from occreid.evaluation.verification import verification_rates

__all__ = [
    "NO_COMMON_PART_DISTANCE",
    "cuhk03_single_gallery_shot",
    "flip_average",
    "global_distance",
    "k_reciprocal_rerank",
    "part_distance",
    "plot_cmc",
    "rank_list_picture",
    "rank_lists",
    "rank_metrics",
    "verification_rates",
    "write_report",
]
