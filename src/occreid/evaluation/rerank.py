"""k-reciprocal re-ranking (Zhong et al., CVPR 2017), vectorised and memory-bounded.

Same inputs and output as the reference implementation (torchreid `re_ranking`, from the authors'
code): it squares the distances it is given, so it expects *Euclidean* (not squared) distances.
torchreid's engine feeds it squared Euclidean distances, which get squared twice; pass Euclidean ones.

Steps (paper section 3): original distance d = D^2 normalised by its column maxima (then transposed, as
the reference does); k-reciprocal neighbours R(i, k1) (eq. 6); expansion by the R(c, k1/2) of each
candidate that shares more than 2/3 of its set with R(i, k1) (eq. 8); V_i = exp(-d) weights over the
expanded set (eq. 9-10); local query expansion over the k2 nearest rows (eq. 11); Jaccard distance
1 - sum min(V_i, V_j) / sum max(V_i, V_j) (eq. 12-13, using max = V_i + V_j - min, each row summing
to 1); final d* = (1 - lambda) d_J + lambda d (eq. 14).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from occreid.evaluation.ranking import as_tensor


def _ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenation of the index ranges [start, start + count), without a Python loop."""
    offsets = torch.cumsum(counts, 0) - counts
    return torch.repeat_interleave(starts - offsets, counts) + torch.arange(int(counts.sum()))


def _copy_transposed(dst: np.ndarray, src: np.ndarray, tile: int = 512) -> None:
    """dst[:] = src.T in tiles of `tile` source rows (a transposed copy in one go is several times slower)."""
    for t in range(0, src.shape[0], tile):
        dst[:, t:t + tile] = src[t:t + tile].T


def _transposed_rows(q_g: np.ndarray, q_q: np.ndarray, g_g: np.ndarray, r0: int, r1: int) -> torch.Tensor:
    """Rows [r0, r1) of M^T, M = [[q_q, q_g], [q_g^T, g_g]]; the range may not cross Nq."""
    nq, ng = q_g.shape
    out = np.empty((r1 - r0, nq + ng), dtype=q_g.dtype)
    if r1 <= nq:
        _copy_transposed(out[:, :nq], q_q[:, r0:r1])
        out[:, nq:] = q_g[r0:r1]
    else:
        _copy_transposed(out[:, :nq], q_g[:, r0 - nq:r1 - nq])
        _copy_transposed(out[:, nq:], g_g[:, r0 - nq:r1 - nq])
    return torch.from_numpy(out)


def _entries_of_transpose(q_g: torch.Tensor, q_q: torch.Tensor, g_g: torch.Tensor, rows: torch.Tensor,
                          cols: torch.Tensor) -> torch.Tensor:
    """M^T[rows, cols] = M[cols, rows], gathered from the three blocks (input dtype)."""
    nq = q_g.shape[0]
    out = torch.empty(rows.numel(), dtype=q_g.dtype)
    rq, cq = rows < nq, cols < nq
    for mask, block, r, c in ((rq & cq, q_q, cols, rows), (rq & ~cq, q_g, rows, cols - nq),
                              (~rq & cq, q_g, cols, rows - nq), (~rq & ~cq, g_g, cols - nq, rows - nq)):
        out[mask] = block[r[mask], c[mask]]
    return out


def _original_distance(q_g: torch.Tensor, q_q: torch.Tensor, g_g: torch.Tensor, k: int,
                       chunk: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference's normalised distance orig = (M^2 / column max of M^2)^T, streamed by row chunks
    and never held whole: returns its row maxima [N], the k nearest neighbours [N, k] of every row
    (nearest first) and its query x gallery block [Nq, Ng] (float32, squared in the input precision
    then cast, as the reference does)."""
    nq, ng = q_g.shape
    n = nq + ng
    row_max = torch.empty(n, dtype=torch.float32)
    rank = torch.empty(n, k, dtype=torch.long)
    q_block = torch.empty(nq, ng, dtype=torch.float32)
    starts = [*range(0, nq, chunk), *range(nq, n, chunk)]
    arrays = [x.numpy() for x in (q_g, q_q, g_g)]
    for r0 in starts:
        r1 = min(r0 + chunk, nq if r0 < nq else n)
        rows = _transposed_rows(*arrays, r0, r1).pow_(2).to(torch.float32)
        row_max[r0:r1] = rows.amax(dim=1)
        rows.div_(row_max[r0:r1, None])
        rank[r0:r1] = torch.topk(rows, k, dim=1, largest=False, sorted=True).indices
        if r0 < nq:
            q_block[r0:r1] = rows[:, nq:]
    return row_max, rank, q_block


def _original_entries(q_g: torch.Tensor, q_q: torch.Tensor, g_g: torch.Tensor, row_max: torch.Tensor,
                      rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """orig[rows, cols], computed with the very operations of `_original_distance` (same bits)."""
    return _entries_of_transpose(q_g, q_q, g_g, rows, cols).pow_(2).to(torch.float32).div_(row_max[rows])


def _reciprocal_mask(rank: torch.Tensor, k: int) -> torch.Tensor:
    """mask[i, m]: rank[i, m] is a k-reciprocal neighbour of i (i is among its first k neighbours)."""
    fwd = rank[:, :k]
    n = rank.shape[0]
    return (fwd[fwd] == torch.arange(n)[:, None, None]).any(-1)


def _expanded_sets(rank: torch.Tensor, k1: int, kh: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and columns (unique, sorted by row then column) of the expanded k-reciprocal sets (eq. 8).

    k1 + 1 neighbours define R(i, k1); kh = round(k1 / 2) + 1 define the candidates' R(c, k1 / 2).
    Membership and de-duplication work on each row's few candidates, never on an [N, N] mask.
    """
    n = rank.shape[0]
    recip = _reciprocal_mask(rank, k1 + 1)  # [N, k1+1]
    recip_h = _reciprocal_mask(rank, kh)  # [N, kh]
    out_rows, out_cols = [], []
    for s in range(0, n, chunk):
        e = min(s + chunk, n)
        r_i, m_i = rank[s:e, :k1 + 1], recip[s:e]
        members = torch.where(m_i, r_i, -1)  # R(i, k1), -1 where not reciprocal
        c_set, c_mask = rank[r_i, :kh], recip_h[r_i]  # candidates are the k-reciprocal neighbours themselves
        in_ri = (c_set[..., None] == members[:, None, None, :]).any(-1)  # [C, k1+1, kh]
        shared = (in_ri & c_mask).sum(-1)
        size = c_mask.sum(-1)
        accept = m_i & (shared > 2.0 / 3 * size)  # [C, k1+1]
        cols = torch.cat([r_i, c_set.reshape(e - s, -1)], 1)
        ok = torch.cat([m_i, (accept[..., None] & c_mask).reshape(e - s, -1)], 1)
        cols = torch.where(ok, cols, n).sort(dim=1).values
        keep = cols < n
        keep[:, 1:] &= cols[:, 1:] != cols[:, :-1]
        out_rows.append(torch.arange(s, e)[:, None].expand_as(cols)[keep])
        out_cols.append(cols[keep])
    return torch.cat(out_rows), torch.cat(out_cols)


def _encode(orig_entries: torch.Tensor, rows: torch.Tensor, n: int) -> torch.Tensor:
    """V values: exp(-orig[i, j]) normalised to sum 1 over each row's expanded set (eq. 9-10)."""
    w = torch.exp(-orig_entries)
    total = torch.zeros(n).index_add_(0, rows, w)
    return w / total[rows]


def _query_expand(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, rank: torch.Tensor, k2: int,
                  n: int) -> tuple[torch.Tensor, ...]:
    """V_qe[i] = mean of V over the k2 nearest rows of i (eq. 11), sparse in and out (row-sorted)."""
    counts = torch.bincount(rows, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    nbr = rank[:, :k2].reshape(-1)  # flattened: entry i * k2 + m is the m-th neighbour of i
    pos = _ranges(starts[nbr], counts[nbr])
    new_rows = torch.repeat_interleave(torch.arange(n).repeat_interleave(k2), counts[nbr])
    key = new_rows * n + cols[pos]
    uniq, inverse = torch.unique(key, return_inverse=True)
    summed = torch.zeros(uniq.numel()).index_add_(0, inverse, vals[pos])
    return uniq // n, uniq % n, summed / k2


def _jaccard(rows: torch.Tensor, cols: torch.Tensor, vals: torch.Tensor, num_query: int, n: int,
             max_pairs: int) -> torch.Tensor:
    """Jaccard distance [Nq, N - Nq] between query rows and gallery rows of sparse V (eq. 12-13).

    sum_k min(V_i,k, V_j,k) is accumulated over the pairs of non-zeros sharing a column k (the
    reference's inverted index), in query chunks bounded by `max_pairs` pairs.
    """
    ng = n - num_query
    order = torch.argsort(cols * n + rows)  # column-major (CSC) view of V
    c_rows, c_vals = (rows[order] - num_query).int(), vals[order]  # gallery entries: row - Nq >= 0
    col_counts = torch.bincount(cols, minlength=n)
    col_starts = torch.cumsum(col_counts, 0) - col_counts
    q_entries = rows < num_query  # query rows come first within each column
    q_in_col = torch.bincount(cols[q_entries], minlength=n)
    g_starts, g_counts = col_starts + q_in_col, col_counts - q_in_col
    q_rows, q_cols, q_vals = rows[q_entries], cols[q_entries], vals[q_entries]
    pairs_per_query = torch.zeros(num_query, dtype=torch.long).index_add_(0, q_rows, g_counts[q_cols])
    cum_pairs = torch.cumsum(pairs_per_query, 0)
    entry_ends = torch.cumsum(torch.bincount(q_rows, minlength=num_query), 0)
    out = torch.empty(num_query, ng)
    s = 0
    while s < num_query:
        base = int(cum_pairs[s - 1]) if s > 0 else 0
        e = min(max(int(torch.searchsorted(cum_pairs, base + max_pairs, right=True)), s + 1), num_query)
        lo, hi = (int(entry_ends[s - 1]) if s > 0 else 0), int(entry_ends[e - 1])
        counts = g_counts[q_cols[lo:hi]]
        seg = torch.repeat_interleave(torch.arange(hi - lo), counts)  # pair -> its query entry
        shift = g_starts[q_cols[lo:hi]] - (torch.cumsum(counts, 0) - counts)
        pos = shift[seg] + torch.arange(seg.numel())  # pair -> its gallery entry (CSC position)
        overlap = torch.minimum(q_vals[lo:hi][seg], c_vals[pos])
        flat = ((q_rows[lo:hi] - s) * ng)[seg] + c_rows[pos]
        t = torch.zeros((e - s) * ng).index_add_(0, flat, overlap).view(e - s, ng)
        out[s:e] = 1.0 - t / (2.0 - t)
        s = e
    return out


def k_reciprocal_rerank(
    q_g: Any,
    q_q: Any,
    g_g: Any,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    chunk: int = 256,
    max_pairs: int = 20_000_000,
) -> np.ndarray:
    """Re-ranked query x gallery distance [Nq, Ng] (float32 numpy), as the reference `re_ranking`.

    Inputs are Euclidean (NOT squared) distance matrices q_g [Nq, Ng], q_q [Nq, Nq], g_g [Ng, Ng];
    they are squared inside, like the reference. Memory beyond the inputs: two [Nq, Ng] float32
    matrices, the sparse encodings, and chunks of `chunk` rows of [N, N] / `max_pairs` Jaccard pairs.
    """
    qg, qq, gg = (as_tensor(x) for x in (q_g, q_q, g_g))
    nq, ng = qg.shape
    if qq.shape != (nq, nq) or gg.shape != (ng, ng):
        raise ValueError(f"shapes do not fit: q_g {tuple(qg.shape)}, q_q {tuple(qq.shape)}, "
                         f"g_g {tuple(gg.shape)}")
    n = nq + ng
    # the reference slices a full argsort, so neighbour counts beyond N simply mean "all N"
    kh = min(int(np.around(k1 / 2.0)) + 1, n)
    k1, k2 = min(int(k1), n - 1), min(int(k2), n)
    row_max, rank, q_block = _original_distance(qg, qq, gg, max(k1 + 1, k2), chunk)
    rows, cols = _expanded_sets(rank, k1, kh, chunk)
    vals = _encode(_original_entries(qg, qq, gg, row_max, rows, cols), rows, n)
    if k2 != 1:
        rows, cols, vals = _query_expand(rows, cols, vals, rank, k2, n)
    del rank
    jaccard = _jaccard(rows, cols, vals, nq, n, max_pairs)
    return jaccard.mul_(1 - lambda_value).add_(q_block.mul_(lambda_value)).numpy()
