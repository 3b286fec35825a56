"""Exact ranking metrics (CMC, mAP, mINP) under the Market rule, vectorised over chunks of queries.

Semantics follow torchreid's `eval_market1501` (same-pid same-camera gallery entries are junk and removed;
queries left without a positive are skipped and counted; AP is non-interpolated) plus fast-reid's mINP.
Ties are broken by gallery index (stable sort), so results do not depend on the sort algorithm.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from occreid.errors import DatasetError

ArrayLike = np.ndarray | torch.Tensor


def as_tensor(x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A CPU tensor view of a numpy array / tensor / sequence (no copy when possible)."""
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))
    return t.to(dtype) if dtype is not None else t


def as_numpy(x: Any, dtype: Any = None) -> np.ndarray:
    """A numpy view of a tensor / array / sequence (no copy when possible)."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return a.astype(dtype, copy=False) if dtype is not None else a


def segment_exclusive_cumsum(values: np.ndarray, rows: np.ndarray, num_rows: int) -> np.ndarray:
    """Exclusive running sum of `values` within each run of equal `rows` (`rows` sorted ascending)."""
    excl = np.cumsum(values) - values
    counts = np.bincount(rows, minlength=num_rows)
    starts = np.cumsum(counts) - counts
    return excl - excl[starts[rows]]


def _check_inputs(d: np.ndarray, q_pids, g_pids, q_camids, g_camids) -> None:
    if d.ndim != 2:
        raise ValueError(f"distmat must be 2-D [num_query, num_gallery], got shape {d.shape}")
    nq, ng = d.shape
    for name, arr, n in (("q_pids", q_pids, nq), ("q_camids", q_camids, nq),
                         ("g_pids", g_pids, ng), ("g_camids", g_camids, ng)):
        if arr.size != n:
            raise ValueError(f"{name} has {arr.size} entries but distmat has {n} along its axis")
    if ng == 0:
        raise DatasetError("the gallery is empty: nothing to rank against")


def _ranks_by_sorting(d: np.ndarray, same_pid: np.ndarray) -> tuple[np.ndarray, ...]:
    """(row, rank, gallery index) of the same-pid entries, from one stable sort of the rows."""
    order = torch.sort(torch.from_numpy(np.ascontiguousarray(d)), dim=1, stable=True).indices.numpy()
    rows, ranks = np.nonzero(np.take_along_axis(same_pid, order, axis=1))
    return rows, ranks, order[rows, ranks]


def _ranks_by_counting(d: np.ndarray, same_pid: np.ndarray, block: int = 256) -> tuple[np.ndarray, ...]:
    """(row, rank, gallery index) of the same-pid entries by counting smaller distances.

    Stable rank of entry j in row i = #{k: d_ik < d_ij} + #{k < j: d_ik == d_ij}. Cheaper than a sort
    when each query has few same-pid gallery entries (the usual case); blocks bound the memory.
    """
    rows, gidx = np.nonzero(same_pid)
    ranks = np.empty(rows.size, dtype=np.int64)
    cols = np.arange(d.shape[1])
    for s in range(0, rows.size, block):
        sl = slice(s, s + block)
        blk = d[rows[sl]]
        v = d[rows[sl], gidx[sl]][:, None]
        less = np.count_nonzero(blk < v, axis=1)
        equal = blk == v
        tied = np.count_nonzero(equal, axis=1) > 1
        if tied.any():
            less[tied] += np.count_nonzero(equal[tied] & (cols < gidx[sl][tied, None]), axis=1)
        ranks[sl] = less
    order = np.lexsort((ranks, rows))
    return rows[order], ranks[order], gidx[order]


def positive_ranks(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    chunk: int,
    count_limit: int = 48,
) -> dict[str, np.ndarray]:
    """Per query: number of positives, summed precision at positives, first / last positive rank.

    Ranks are taken after removing junk (same pid and camera). Only the same-pid entries of each chunk
    of queries are ranked: by counting smaller distances when there are at most `count_limit` of them
    per query on average, else by one stable sort of the chunk. No per-query Python loop.
    """
    nq = distmat.shape[0]
    num_pos = np.zeros(nq, dtype=np.int64)
    ap_sum = np.zeros(nq, dtype=np.float64)
    first = np.full(nq, -1, dtype=np.int64)
    last = np.full(nq, -1, dtype=np.int64)
    for s in range(0, nq, chunk):
        e = min(s + chunk, nq)
        d = distmat[s:e]
        same_pid = g_pids[None, :] == q_pids[s:e, None]
        if np.count_nonzero(same_pid) <= count_limit * (e - s):
            rows, ranks, gidx = _ranks_by_counting(d, same_pid)
        else:
            rows, ranks, gidx = _ranks_by_sorting(d, same_pid)
        junk = g_camids[gidx] == q_camids[s + rows]
        junk_before = segment_exclusive_cumsum(junk.astype(np.int64), rows, e - s)
        keep = ~junk
        rows, kept_rank = rows[keep], (ranks - junk_before)[keep]
        if rows.size == 0:
            continue
        hits_so_far = segment_exclusive_cumsum(np.ones_like(rows), rows, e - s) + 1
        counts = np.bincount(rows, minlength=e - s)
        has = counts > 0
        ends = np.cumsum(counts)
        num_pos[s:e] = counts
        ap_sum[s:e] = np.bincount(rows, weights=hits_so_far / (kept_rank + 1.0), minlength=e - s)
        first[s:e][has] = kept_rank[(ends - counts)[has]]
        last[s:e][has] = kept_rank[ends[has] - 1]
    return {"num_pos": num_pos, "ap_sum": ap_sum, "first": first, "last": last, "valid": num_pos > 0}


def rank_metrics(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    chunk: int = 256,
) -> dict[str, Any]:
    """CMC, mAP and mINP of a query x gallery distance matrix (smaller = more similar).

    Returns a dict: `cmc` (float32 numpy, length min(max_rank, gallery size), averaged over valid
    queries), `mAP`, `mINP` (floats), `num_valid_queries`, `num_skipped_queries`, and per query `ap`
    (NaN when skipped), `first_hit` (0-based rank of the first positive after junk removal, -1 when
    skipped), `num_positives` and `valid`. mINP is fast-reid's: positives / (1-based rank of the hardest
    positive). Memory is bounded by `chunk` rows of the matrix at a time. Raises `DatasetError` when no
    query has a positive (the usual sign of wrongly parsed pids or camera ids).
    """
    d = as_numpy(distmat)
    if not np.issubdtype(d.dtype, np.floating):
        d = d.astype(np.float64)
    qp, gp = as_numpy(q_pids, np.int64).reshape(-1), as_numpy(g_pids, np.int64).reshape(-1)
    qc, gc = as_numpy(q_camids, np.int64).reshape(-1), as_numpy(g_camids, np.int64).reshape(-1)
    _check_inputs(d, qp, gp, qc, gc)
    nq, ng = d.shape
    r = positive_ranks(d, qp, gp, qc, gc, max(1, int(chunk)))
    valid = r["valid"]
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise DatasetError(
            f"none of the {nq} queries has a positive in the gallery ({ng} images) after removing "
            "same-identity same-camera images: check that query and gallery pids refer to the same "
            "identities and that camera ids are parsed per image (not per folder or index)"
        )
    num_pos = r["num_pos"]
    ap = np.full(nq, np.nan)
    ap[valid] = r["ap_sum"][valid] / num_pos[valid]
    inp = num_pos[valid] / (r["last"][valid] + 1.0)
    first = r["first"]
    length = min(int(max_rank), ng)
    hits = np.bincount(first[valid][first[valid] < length], minlength=length)
    cmc = np.cumsum(hits).astype(np.float32) / np.float32(num_valid)
    return {
        "cmc": cmc,
        "mAP": float(np.mean(ap[valid])),
        "mINP": float(np.mean(inp)),
        "num_valid_queries": num_valid,
        "num_skipped_queries": nq - num_valid,
        "ap": ap,
        "first_hit": first,
        "num_positives": num_pos,
        "valid": valid,
    }
