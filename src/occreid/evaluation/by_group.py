"""Accuracy per group of queries: by occlusion level (visible fraction) and by camera pair (query camera ->
camera of the first true match), vectorised with bincounts over per-query AP and first-hit ranks."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Upper edges (inclusive) of the occlusion groups; then the fully visible queries, then the queries whose
#: visible fraction is unknown (NaN: no part label, e.g. the pose model found no person in the crop).
OCCLUSION_EDGES = (0.25, 0.5, 0.75)
OCCLUSION_LABELS = ("0-25%", "25-50%", "50-75%", "75-99%", "100%", "no label")
UNKNOWN_GROUP = len(OCCLUSION_LABELS) - 1
_FULL = 1.0 - 1e-9


def occlusion_group(visible_fraction: Any) -> np.ndarray:
    """Group index 0..4 of each visible fraction (right-closed bins, 4 = fully visible), 5 for NaN."""
    v = np.asarray(visible_fraction, dtype=np.float64).reshape(-1)
    g = np.searchsorted(np.array([*OCCLUSION_EDGES, _FULL]), v, side="left")
    g[np.isnan(v)] = UNKNOWN_GROUP
    return g


def group_metrics(ap: Any, first_hit: Any, group: Any, labels: list[str]) -> list[dict[str, Any]]:
    """Per group: queries, valid (scored) queries, rank-1 and mAP over the valid ones (None when none)."""
    ap = np.asarray(ap, dtype=np.float64).reshape(-1)
    first = np.asarray(first_hit).reshape(-1)
    g = np.asarray(group, dtype=np.int64).reshape(-1)
    if not ap.size == first.size == g.size:
        raise ValueError(f"ap ({ap.size}), first_hit ({first.size}) and group ({g.size}) must align")
    valid = ~np.isnan(ap) & (first >= 0)
    n = len(labels)
    count = np.bincount(g, minlength=n)
    nv = np.bincount(g[valid], minlength=n)
    r1 = np.bincount(g[valid], weights=(first[valid] == 0).astype(np.float64), minlength=n)
    ap_sum = np.bincount(g[valid], weights=ap[valid], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        r1, m = r1 / nv, ap_sum / nv
    return [
        {"group": labels[i], "num_query": int(count[i]), "num_valid": int(nv[i]),
         "rank1": float(r1[i]) if nv[i] else None, "mAP": float(m[i]) if nv[i] else None}
        for i in range(n)
    ]


def by_occlusion(ap: Any, first_hit: Any, visible_fraction: Any, source: str) -> dict[str, Any]:
    """Rank-1 / mAP per occlusion group, with the source of the visible fractions."""
    groups = group_metrics(ap, first_hit, occlusion_group(visible_fraction), list(OCCLUSION_LABELS))
    return {"source": source, "edges": list(OCCLUSION_EDGES), "groups": groups}


def by_camera_pair(ap: Any, first_hit: Any, q_camids: Any, match_camids: Any) -> list[dict[str, Any]]:
    """Rank-1 / mAP per (query camera -> first true match camera), over queries that have a match."""
    qc = np.asarray(q_camids, dtype=np.int64).reshape(-1)
    mc = np.asarray(match_camids, dtype=np.int64).reshape(-1)
    has = mc >= 0
    pairs, inverse = np.unique(np.stack([qc[has], mc[has]], axis=1), axis=0, return_inverse=True)
    labels = [f"{a}->{b}" for a, b in pairs.tolist()]
    ap_h, first_h = np.asarray(ap, dtype=np.float64).reshape(-1)[has], np.asarray(first_hit).reshape(-1)[has]
    rows = group_metrics(ap_h, first_h, inverse.reshape(-1), labels)
    for row, (a, b) in zip(rows, pairs.tolist()):
        row.update(query_camid=a, match_camid=b)
    return rows


def _cell(v: Any) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def groups_markdown(groups: dict[str, Any]) -> str:
    """The report.md sections for `by_occlusion` and `by_camera_pair` (rank-1 / mAP in %)."""
    lines: list[str] = [""]  # after the report's last paragraph
    occ = groups.get("by_occlusion")
    if occ:
        lines += ["## Accuracy by occlusion level", "",
                  f"Visible fraction from: {occ['source']} (see docs/evaluation.md).", "",
                  "| visible | queries | R1 % | mAP % |", "|---|---|---|---|"]
        lines += [f"| {g['group']} | {g['num_query']} | {_cell(g['rank1'])} | {_cell(g['mAP'])} |"
                  for i, g in enumerate(occ["groups"]) if i != UNKNOWN_GROUP or g["num_query"]]
        lines.append("")
    pairs = groups.get("by_camera_pair")
    if pairs:
        lines += ["## Accuracy by camera pair", "", "Query camera -> camera of the first true match.", "",
                  "| cameras | queries | R1 % | mAP % |", "|---|---|---|---|"]
        lines += [f"| {g['group']} | {g['num_query']} | {_cell(g['rank1'])} | {_cell(g['mAP'])} |" for g in pairs]
        lines.append("")
    return "\n".join(lines) if len(lines) > 1 else ""
