"""The classic CUHK03 single-gallery-shot protocol, seeded and vectorised over queries.

For each query and repeat, one gallery image per identity is sampled among the images from another
camera than the query's; CMC and AP are computed on that sampled gallery and averaged over repeats,
then over valid queries (those whose identity is among the sampled identities). Unlike torchreid's
`eval_cuhk03`, the same-camera images of other identities are excluded too, and AP is taken over the
sampled gallery (with a single positive, AP = 1 / rank of the positive).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from occreid.errors import DatasetError
from occreid.evaluation.ranking import as_numpy


def cuhk03_single_gallery_shot(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    repeats: int = 10,
    seed: int = 0,
    chunk: int = 256,
) -> dict[str, Any]:
    """`cmc` (length min(max_rank, gallery size)), `mAP`, per-query `ap` (NaN if invalid) and counts."""
    d = as_numpy(distmat).astype(np.float64, copy=False)
    qp, gp = as_numpy(q_pids, np.int64).reshape(-1), as_numpy(g_pids, np.int64).reshape(-1)
    qc, gc = as_numpy(q_camids, np.int64).reshape(-1), as_numpy(g_camids, np.int64).reshape(-1)
    nq, ng = d.shape
    rng = np.random.default_rng(seed)
    g_order = np.argsort(gp, kind="stable")  # group gallery by pid for per-identity sampling
    _, group_starts = np.unique(gp[g_order], return_index=True)
    length = min(int(max_rank), ng)
    cmc_sum = np.zeros((nq, length))
    ap_sum = np.zeros(nq)
    cols = np.arange(ng)
    valid = np.zeros(nq, dtype=bool)
    for _ in range(repeats):
        for s in range(0, nq, chunk):
            e = min(s + chunk, nq)
            u = rng.random((e - s, ng))
            u[gc[None, :] == qc[s:e, None]] = np.inf  # only other-camera images may be sampled
            us = u[:, g_order]
            group_min = np.minimum.reduceat(us, group_starts, axis=1)
            sizes = np.diff(np.append(group_starts, ng))
            picked_sorted = (us == np.repeat(group_min, sizes, axis=1)) & np.isfinite(us)
            picked = np.empty_like(picked_sorted)
            picked[:, g_order] = picked_sorted
            pos = picked & (gp[None, :] == qp[s:e, None])
            has = pos.any(1)
            j = pos.argmax(1)
            v = d[np.arange(s, e), j][:, None]
            dq = d[s:e]
            rank = np.count_nonzero(picked & ((dq < v) | ((dq == v) & (cols < j[:, None]))), axis=1)
            cmc_sum[s:e] += has[:, None] & (rank[:, None] <= np.arange(length))
            ap_sum[s:e] += np.where(has, 1.0 / (rank + 1.0), 0.0)
            valid[s:e] |= has
    if not valid.any():
        raise DatasetError("no query identity appears in the gallery under another camera: "
                           "check pids and camera ids")
    ap = np.where(valid, ap_sum / repeats, np.nan)
    cmc = (cmc_sum[valid] / repeats).mean(0)
    return {"cmc": cmc, "mAP": float(np.nanmean(ap)), "ap": ap, "valid": valid,
            "num_valid_queries": int(valid.sum()), "num_skipped_queries": int(nq - valid.sum())}
