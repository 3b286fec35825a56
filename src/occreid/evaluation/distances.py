"""Query x gallery distances: global features, part features with visibility, a method's matched
embeddings (whole-image features plus visible parts), flip averaging.

Default metric: Euclidean distance between L2-normalised features (SPEC 3); cosine distance = 1 - cos.
All matrices are computed in gallery chunks with the ||a||^2 + ||b||^2 - 2ab expansion, so memory stays
bounded by [Nq, chunk, P] and [Nq, Ng, P, D] is never materialised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from occreid.evaluation.ranking import as_tensor

Metric = Literal["euclidean", "cosine"]

#: Distance given to a pair with no part visible in both images when features are unit vectors (the
#: default, and always for cosine): 2.0 is the largest Euclidean / cosine distance between unit vectors,
#: so such pairs rank after (or tie with) every comparable pair, independently of the rest of the gallery,
#: and no search threshold below the maximum accepts them.
NO_COMMON_PART_DISTANCE = 2.0


def _check_metric(metric: str) -> None:
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be 'euclidean' or 'cosine', got {metric!r}")


def flip_average(feats: Any, flipped_feats: Any) -> torch.Tensor:
    """Average the features of an image and of its mirror, then L2-normalise once (last dim).

    fast-reid normalises before and after averaging; one normalisation of the sum is the intended one.
    """
    a, b = as_tensor(feats).float(), as_tensor(flipped_feats).float()
    if a.shape != b.shape:
        raise ValueError(f"feature shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return F.normalize((a + b) / 2, dim=-1)


def _pair_distance(q: torch.Tensor, g: torch.Tensor, q_sq: torch.Tensor, g_sq: torch.Tensor,
                   metric: str) -> torch.Tensor:
    """Batched distances [..., Nq, Ng] from features [..., N, D] and their squared norms [..., N]."""
    dot = q @ g.transpose(-1, -2)
    if metric == "cosine":
        denom = (q_sq.unsqueeze(-1) * g_sq.unsqueeze(-2)).sqrt().clamp_min(1e-12)
        return 1.0 - dot / denom
    return (q_sq.unsqueeze(-1) + g_sq.unsqueeze(-2) - 2.0 * dot).clamp_min(0.0).sqrt()


def global_distance(q: Any, g: Any, metric: Metric = "euclidean", normalize: bool = True,
                    chunk: int = 4096) -> torch.Tensor:
    """Distance matrix [Nq, Ng] (float32) between q [Nq, D] and g [Ng, D], computed in gallery chunks."""
    _check_metric(metric)
    qt, gt = as_tensor(q).float(), as_tensor(g).float()
    if normalize:
        qt, gt = F.normalize(qt, dim=-1), F.normalize(gt, dim=-1)
    q_sq = (qt * qt).sum(-1)
    out = torch.empty(qt.shape[0], gt.shape[0])
    for s in range(0, gt.shape[0], chunk):
        gc = gt[s:s + chunk]
        out[:, s:s + chunk] = _pair_distance(qt, gc, q_sq, (gc * gc).sum(-1), metric)
    return out


def _visibility(vis: Any, n: int, p: int, mode: str) -> torch.Tensor:
    """Part weights [N, P]: 0/1 for binary (floats visible when > 0.5), sqrt(v) for continuous."""
    if vis is None:
        return torch.ones(n, p)
    v = as_tensor(vis)
    if tuple(v.shape) != (n, p):
        raise ValueError(f"visibility must have shape {(n, p)}, got {tuple(v.shape)}")
    if mode == "binary":
        return (v > 0.5).float() if torch.is_floating_point(v) else (v != 0).float()
    return v.float().clamp(0.0, 1.0).sqrt()


def part_distance(
    q: Any,
    g: Any,
    q_vis: Any = None,
    g_vis: Any = None,
    mode: Literal["binary", "continuous"] = "binary",
    metric: Metric = "euclidean",
    normalize: bool = True,
    chunk: int = 1024,
) -> torch.Tensor:
    """Visibility-aware part distance [Nq, Ng] (float32) between q [Nq, P, D] and g [Ng, P, D].

    Per part p, d_p(i, j) is the metric between the part features (each L2-normalised when
    `normalize`). Binary: mean of d_p over parts visible in both images (bool visibility; float
    visibility is visible when > 0.5). Continuous: mean of d_p weighted by sqrt(v_q,p * v_g,p).
    A pair with no common visible part (zero total weight) gets NO_COMMON_PART_DISTANCE (2.0) for unit
    vectors or cosine; with unnormalised Euclidean features it gets the largest finite distance of the
    matrix + 1. Visibility None = all parts visible.
    """
    _check_metric(metric)
    if mode not in ("binary", "continuous"):
        raise ValueError(f"mode must be 'binary' or 'continuous', got {mode!r}")
    qt, gt = as_tensor(q).float(), as_tensor(g).float()
    if qt.dim() != 3 or gt.dim() != 3 or qt.shape[1:] != gt.shape[1:]:
        raise ValueError(f"part features must be [N, P, D] with equal P, D; got {tuple(qt.shape)}, "
                         f"{tuple(gt.shape)}")
    nq, p, _ = qt.shape
    ng = gt.shape[0]
    if normalize:
        qt, gt = F.normalize(qt, dim=-1), F.normalize(gt, dim=-1)
    wq = _visibility(q_vis, nq, p, mode).t()  # [P, Nq]
    wg = _visibility(g_vis, ng, p, mode).t()  # [P, Ng]
    qp = qt.transpose(0, 1)  # [P, Nq, D]
    q_sq = (qp * qp).sum(-1)
    out = torch.empty(nq, ng)
    no_common = torch.zeros(nq, ng, dtype=torch.bool)
    for s in range(0, ng, chunk):
        gp = gt[s:s + chunk].transpose(0, 1)  # [P, C, D]
        dist = _pair_distance(qp, gp, q_sq, (gp * gp).sum(-1), metric)  # [P, Nq, C]
        wgc = wg[:, s:s + chunk]
        num = torch.einsum("pq,pqc,pc->qc", wq, dist, wgc)
        den = wq.t() @ wgc
        empty = den <= 0
        out[:, s:s + chunk] = num / den.masked_fill(empty, 1.0)
        no_common[:, s:s + chunk] = empty
    if no_common.any():
        if normalize or metric == "cosine":
            fill = NO_COMMON_PART_DISTANCE
        else:
            finite = out[~no_common]
            fill = float(finite.max()) + 1.0 if finite.numel() else 1.0
        out[no_common] = fill
    return out


def matched_embeddings(
    feats: dict, names: Sequence[str], matching: str, threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The named test embeddings stacked for `part_distance`: [N, E, D] and their weights [N, E].

    Whole-image embeddings (`feats[name]` [N, D]) always count; "parts" ([N, K, D]) count by their
    visibility scores, thresholded (score > threshold) in binary matching (AMD-Net's gamma, PAB-ReID
    Eq. 5's mu) or as they are in continuous matching. Without "visibility" every part counts.
    """
    vecs, vis = [], []
    for name in names:
        if name == "parts":
            parts = feats["parts"]
            scores = feats.get("visibility")
            scores = torch.ones(parts.shape[:2]) if scores is None else scores.float()
            if matching == "binary":
                scores = (scores > threshold).float()
            vecs.append(parts)
            vis.append(scores)
        else:
            vecs.append(feats[name].unsqueeze(1))
            vis.append(torch.ones(len(feats[name]), 1))
    return torch.cat(vecs, dim=1), torch.cat(vis, dim=1)


def matched_part_distance(
    qf: dict,
    gf: dict,
    names: Sequence[str],
    matching: Literal["binary", "continuous"],
    threshold: float,
    metric: Metric = "euclidean",
) -> torch.Tensor:
    """`part_distance` over the `matched_embeddings` of query and gallery features [Nq, Ng]: the mean
    distance over embeddings counted in both images (binary) or weighted by sqrt(v_q v_g) (continuous)."""
    q, qv = matched_embeddings(qf, names, matching, threshold)
    g, gv = matched_embeddings(gf, names, matching, threshold)
    return part_distance(q, g, qv, gv, mode=matching, metric=metric)
