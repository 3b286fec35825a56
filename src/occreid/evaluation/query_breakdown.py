"""Per-query facts beyond AP and rank: visible fraction, first true match, top-k with marks. One pass
over the distance matrix feeds the group tables, the extra per_query.csv columns and report.html."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from occreid.data.records import Record
from occreid.evaluation.by_group import OCCLUSION_LABELS, by_camera_pair, by_occlusion, occlusion_group
from occreid.evaluation.top_matches import first_true_match, match_marks, stable_top_k
from occreid.evaluation.visible_fraction import VisibleFraction, query_visible_fraction

#: Gallery images shown per query in report.html.
TOP_K = 10
#: The columns `QueryBreakdown.csv_columns` adds to per_query.csv, in order.
CSV_COLUMNS = ("query_pid", "visible_fraction", "occlusion_group", "query_camid", "first_match_camid",
               "first_match_path")


@dataclass
class QueryBreakdown:
    """Everything the reports say about each query besides AP / first-hit rank (row i = query i)."""

    visible: VisibleFraction
    q_pids: np.ndarray  # the query identities (the unit `occreid compare` resamples)
    q_camids: np.ndarray
    match_index: np.ndarray  # gallery index of the first true match, -1 when none
    match_camids: np.ndarray  # its camera, -1 when none
    top: np.ndarray  # [nq, k] gallery indices, best first
    top_distance: np.ndarray  # [nq, k]
    marks: np.ndarray  # [nq, k] 'c' / 'w' / 'j'

    def groups(self, ap: Any, first_hit: Any) -> dict[str, Any]:
        """metrics.json's `by_occlusion` and `by_camera_pair` tables."""
        return {
            "by_occlusion": by_occlusion(ap, first_hit, self.visible.values, self.visible.source),
            "by_camera_pair": by_camera_pair(ap, first_hit, self.q_camids, self.match_camids),
        }

    def csv_columns(self, gallery: Sequence[Record]) -> dict[str, list]:
        """Extra per_query.csv columns, in order."""
        labels = np.array(OCCLUSION_LABELS)[occlusion_group(self.visible.values)]
        columns = {
            "query_pid": self.q_pids.tolist(),
            "visible_fraction": ["" if np.isnan(v) else f"{v:.3f}" for v in self.visible.values],  # "": no label
            "occlusion_group": labels.tolist(),
            "query_camid": self.q_camids.tolist(),
            "first_match_camid": self.match_camids.tolist(),
            "first_match_path": [gallery[j].path if j >= 0 else "" for j in self.match_index.tolist()],
        }
        return {c: columns[c] for c in CSV_COLUMNS}


def query_breakdown(distmat: Any, query: Sequence[Record], gallery: Sequence[Record],
                    query_features: dict | None = None, topk: int = TOP_K) -> QueryBreakdown:
    """Compute the breakdown from the distance matrix, the records and the query features."""
    qp = np.array([r.pid for r in query], dtype=np.int64)
    qc = np.array([r.camid for r in query], dtype=np.int64)
    gp = np.array([r.pid for r in gallery], dtype=np.int64)
    gc = np.array([r.camid for r in gallery], dtype=np.int64)
    d = np.asarray(distmat)
    match = first_true_match(d, qp, gp, qc, gc)
    top, top_d = stable_top_k(d, topk)
    return QueryBreakdown(
        visible=query_visible_fraction(query, query_features),
        q_pids=qp,
        q_camids=qc,
        match_index=match,
        match_camids=np.where(match >= 0, gc[np.maximum(match, 0)], -1),
        top=top,
        top_distance=top_d,
        marks=match_marks(top, qp, gp, qc, gc),
    )
