"""Exact ranking metrics (CMC, mAP, mINP) under the Market rule, vectorised over chunks of queries.

Semantics follow torchreid's `eval_market1501` (same-pid same-camera gallery entries are junk and removed;
queries left without a positive are skipped and counted; AP is non-interpolated) plus fast-reid's mINP.
Ties are broken by gallery index (the position in a stable sort), so results do not depend on the sort
algorithm; NaN sorts last. Only the same-pid entries are ranked, from one sort of each row.
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


def _index_ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of the index ranges [start, start + count), without a Python loop."""
    offsets = np.cumsum(counts) - counts
    return np.repeat(starts - offsets, counts) + np.arange(int(counts.sum()))


def same_pid_pairs(q_pids: np.ndarray, g_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query row, gallery index) of every same-pid pair, by row then gallery index, without a
    query x gallery mask: the gallery is grouped by pid once."""
    order = np.argsort(g_pids, kind="stable")
    sorted_pids = g_pids[order]
    lo = np.searchsorted(sorted_pids, q_pids, side="left")
    counts = np.searchsorted(sorted_pids, q_pids, side="right") - lo
    return np.repeat(np.arange(q_pids.size), counts), order[_index_ranges(lo, counts)]


def _sorts_before(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """x < v in numpy's sort order, where NaN is the largest value."""
    return (x < v) | (np.isnan(v) & ~np.isnan(x))


def sorted_row_bounds(ordered: np.ndarray, rows: np.ndarray, vals: np.ndarray) -> np.ndarray:
    """np.searchsorted(ordered[r], v, side="left") for every (r, v) pair at once: a vectorised binary
    search (about log2(width) steps over the pairs, no per-row Python call)."""
    width = ordered.shape[1]
    flat, base = ordered.reshape(-1), rows * width
    lo = np.zeros(rows.size, dtype=np.int64)
    hi = np.full(rows.size, width, dtype=np.int64)
    for _ in range(int(width).bit_length()):
        mid = (lo + hi) >> 1
        go_right = _sorts_before(flat[base + np.minimum(mid, width - 1)], vals) & (lo < hi)
        lo = np.where(go_right, mid + 1, lo)
        hi = np.where(go_right, hi, mid)
    return lo


def stable_ranks(d: np.ndarray, rows: np.ndarray, gidx: np.ndarray) -> tuple[np.ndarray, ...]:
    """(row, rank, gallery index) of the given entries of `d`, by row then rank: rank of (i, j) =
    #{k: d_ik < d_ij} + #{k < j: d_ik == d_ij}, i.e. its position in a stable ascending sort of row i.

    One SIMD sort of the rows and a vectorised binary search per entry; the tie term costs nothing
    unless an entry ties with an entry outside the given ones (then its row prefix is compared once).
    """
    vals = d[rows, gidx]
    order = np.lexsort((gidx, vals, rows))
    rows, gidx, vals = rows[order], gidx[order], vals[order]
    if rows.size == 0:
        return rows, np.empty(0, dtype=np.int64), gidx
    ordered = np.sort(d, axis=1)
    ranks = sorted_row_bounds(ordered, rows, vals)
    new_run = np.ones(rows.size, dtype=bool)
    same_value = (vals[1:] == vals[:-1]) | (np.isnan(vals[1:]) & np.isnan(vals[:-1]))
    new_run[1:] = (rows[1:] != rows[:-1]) | ~same_value
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(rows.size), 0))
    run_ends = np.append(np.flatnonzero(new_run)[1:], rows.size)
    run_len = (run_ends - np.flatnonzero(new_run))[np.cumsum(new_run) - 1]
    # run_len equal values from `ranks` on are the run itself; one more equal value is another entry's
    after = np.minimum(ranks + run_len, d.shape[1] - 1)
    next_value = ordered.reshape(-1)[rows * d.shape[1] + after]
    same_next = (next_value == vals) | (np.isnan(next_value) & np.isnan(vals))
    outside_tie = (ranks + run_len < d.shape[1]) & same_next
    del ordered
    ranks += np.arange(rows.size) - run_start
    for t in np.flatnonzero(outside_tie):  # a tie with another identity's entry: count it exactly
        row, v = d[rows[t], :gidx[t]], vals[t]
        tied = np.count_nonzero(np.isnan(row) if np.isnan(v) else row == v)
        ranks[t] = ranks[t] - (t - run_start[t]) + tied
    return rows, ranks, gidx


def _chunk_ranks(
    distmat: np.ndarray, rows: np.ndarray, gidx: np.ndarray, s: int, e: int,
    q_camids: np.ndarray, g_camids: np.ndarray, out: dict[str, np.ndarray],
) -> None:
    """positive_ranks for queries [s, e), written into `out` (rows/gidx: that chunk's same-pid pairs)."""
    d = np.ascontiguousarray(distmat[s:e])
    rows, ranks, gidx = stable_ranks(d, rows - s, gidx)
    junk = g_camids[gidx] == q_camids[s + rows]
    junk_before = segment_exclusive_cumsum(junk.astype(np.int64), rows, e - s)
    keep = ~junk
    rows, kept_rank = rows[keep], (ranks - junk_before)[keep]
    if rows.size == 0:
        return
    hits_so_far = segment_exclusive_cumsum(np.ones_like(rows), rows, e - s) + 1
    counts = np.bincount(rows, minlength=e - s)
    has = counts > 0
    ends = np.cumsum(counts)
    out["num_pos"][s:e] = counts
    out["ap_sum"][s:e] = np.bincount(rows, weights=hits_so_far / (kept_rank + 1.0), minlength=e - s)
    out["first"][s:e][has] = kept_rank[(ends - counts)[has]]
    out["last"][s:e][has] = kept_rank[ends[has] - 1]


def positive_ranks(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    chunk: int,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Per query: number of positives, summed precision at positives, first / last positive rank.

    Ranks are taken after removing junk (same pid and camera); only the same-pid entries are ranked
    (`stable_ranks`), `chunk` query rows at a time, chunks spread over `threads` threads (numpy
    releases the GIL while sorting; default: torch's thread count). No per-query Python loop.
    """
    from concurrent.futures import ThreadPoolExecutor

    nq = distmat.shape[0]
    out = {"num_pos": np.zeros(nq, dtype=np.int64), "ap_sum": np.zeros(nq, dtype=np.float64),
           "first": np.full(nq, -1, dtype=np.int64), "last": np.full(nq, -1, dtype=np.int64)}
    rows, gidx = same_pid_pairs(q_pids, g_pids)
    bounds = [(s, min(s + chunk, nq)) for s in range(0, nq, chunk)]
    cuts = np.searchsorted(rows, [b[0] for b in bounds] + [nq])

    def work(k: int) -> None:
        a, b = cuts[k], cuts[k + 1]
        _chunk_ranks(distmat, rows[a:b], gidx[a:b], *bounds[k], q_camids, g_camids, out)

    threads = max(1, min(threads or torch.get_num_threads(), len(bounds)))
    if threads == 1:
        for k in range(len(bounds)):
            work(k)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(len(bounds))))
    return {**out, "valid": out["num_pos"] > 0}


def rank_metrics(
    distmat: ArrayLike,
    q_pids: ArrayLike,
    g_pids: ArrayLike,
    q_camids: ArrayLike,
    g_camids: ArrayLike,
    max_rank: int = 50,
    chunk: int = 128,
) -> dict[str, Any]:
    """CMC, mAP and mINP of a query x gallery distance matrix (smaller = more similar).

    Returns a dict: `cmc` (float32 numpy, length min(max_rank, gallery size), averaged over valid
    queries), `mAP`, `mINP` (floats), `num_valid_queries`, `num_skipped_queries`, and per query `ap`
    (NaN when skipped), `first_hit` (0-based rank of the first positive after junk removal, -1 when
    skipped), `num_positives` and `valid`. mINP is fast-reid's: positives / (1-based rank of the hardest
    positive). Memory: a sorted copy of `chunk` rows per thread (`positive_ranks`). Raises `DatasetError` when no
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
