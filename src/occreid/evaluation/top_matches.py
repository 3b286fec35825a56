"""Per-query gallery picks behind the reports: the stable top-k and the first true match, chunked numpy.

Both follow `rank_metrics`: ties are broken by gallery index, a true match is a same-identity image from
another camera (same identity and camera is junk).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from occreid.evaluation.ranking import as_numpy


def _first_k_per_row(rows: np.ndarray, cols: np.ndarray, n: int, k: int) -> np.ndarray | None:
    """cols[] grouped by sorted rows -> [n, k] keeping each row's first k; None when a row has fewer."""
    counts = np.bincount(rows, minlength=n)
    if counts.min(initial=k) < k:
        return None
    starts = np.cumsum(counts) - counts
    keep = (np.arange(rows.size) - starts[rows]) < k
    return cols[keep].reshape(n, k)


def stable_top_k(distmat: Any, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Gallery indices [nq, k'] and distances of each query's k' = min(k, gallery) nearest, ties by index.

    One `np.partition` per chunk finds the k-th distance; only entries at or below it are sorted, so
    this costs far less than a full argsort of Occluded-Duke's 2,210 x 17,661 matrix."""
    d = as_numpy(distmat)
    nq, ng = d.shape
    k = max(0, min(int(k), ng))
    idx = np.zeros((nq, k), dtype=np.int64)
    if k == 0:
        return idx, np.zeros((nq, 0), dtype=d.dtype)
    for s in range(0, nq, chunk):
        blk = d[s : s + chunk]
        n = blk.shape[0]
        kth = np.partition(blk, k - 1, axis=1)[:, k - 1]
        rows, cols = np.nonzero(blk <= kth[:, None])
        order = np.lexsort((cols, blk[rows, cols], rows))
        top = _first_k_per_row(rows[order], cols[order], n, k)
        if top is None:  # NaN distances: fall back to a full stable sort of this chunk
            top = np.argsort(blk, axis=1, kind="stable")[:, :k]
        idx[s : s + n] = top
    return idx, np.take_along_axis(d, idx, axis=1)


def match_marks(top: np.ndarray, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any) -> np.ndarray:
    """[nq, k] marks of the top-k: 'c' correct (true match), 'w' wrong identity, 'j' junk (same camera)."""
    qp, gp, qc, gc = (as_numpy(x).reshape(-1) for x in (q_pids, g_pids, q_camids, g_camids))
    same = gp[top] == qp[:, None]
    junk = same & (gc[top] == qc[:, None])
    return np.where(junk, "j", np.where(same, "c", "w"))


def first_true_match(distmat: Any, q_pids: Any, g_pids: Any, q_camids: Any, g_camids: Any,
                     chunk: int = 256) -> np.ndarray:
    """Gallery index of each query's best-ranked true match (-1 when it has none), ties by index."""
    d = as_numpy(distmat)
    qp, gp, qc, gc = (as_numpy(x).reshape(-1) for x in (q_pids, g_pids, q_camids, g_camids))
    out = np.full(d.shape[0], -1, dtype=np.int64)
    for s in range(0, d.shape[0], chunk):
        blk = d[s : s + chunk]
        pos = (gp[None, :] == qp[s : s + chunk, None]) & (gc[None, :] != qc[s : s + chunk, None])
        best = np.argmin(np.where(pos, blk, np.inf), axis=1)
        rows = np.arange(blk.shape[0])
        missed = ~pos[rows, best]  # every positive is at +inf: argmin landed on another +inf entry
        if missed.any():
            best[missed] = np.argmax(pos[missed] & (blk[missed] == np.inf), axis=1)
        best[~pos.any(axis=1)] = -1
        out[s : s + blk.shape[0]] = best
    return out
