"""How sure a difference between two evaluations of the same queries is: a paired bootstrap of the
mAP and rank-1 differences, resampling query identities (all of an identity's queries together, since
they share one gallery and one appearance) or, when identities are unknown, single queries."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Bootstrap draws unless told otherwise (percentile limits move by < 0.1 point beyond ~2,000).
DRAWS = 2000
#: Draws resampled at once: bounds the weight matrix at CHUNK x clusters.
CHUNK = 256


def paired_bootstrap(ap_a: Any, ap_b: Any, hit_a: Any, hit_b: Any, clusters: Any = None, draws: int = DRAWS,
                     level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """B - A for mAP and rank-1 with a percentile interval (metrics in [0, 1]).

    ap_*: per-query AP (NaN for a query without a true match: left out, as mAP leaves it out); hit_*:
    rank-1 hit per query; clusters: the resampled unit per query (the query identity) or None for
    single queries. Each draw resamples the clusters with replacement and recomputes both means over
    the queries it holds, so the interval reflects which people happen to be in the test set, not
    training noise (seeds).
    """
    ap_a, ap_b = np.asarray(ap_a, dtype=np.float64), np.asarray(ap_b, dtype=np.float64)
    hit_a, hit_b = np.asarray(hit_a, dtype=np.float64), np.asarray(hit_b, dtype=np.float64)
    n = ap_a.size
    if not (ap_b.size == hit_a.size == hit_b.size == n):
        raise ValueError(f"paired_bootstrap: {ap_a.size}, {ap_b.size}, {hit_a.size} and {hit_b.size} queries; "
                         "both runs must score the same queries")
    if not 0 < level < 1:
        raise ValueError(f"paired_bootstrap: level={level}; expected 0 < level < 1")
    valid = ~(np.isnan(ap_a) | np.isnan(ap_b))
    unit = np.arange(n) if clusters is None else np.asarray(clusters)
    if unit.size != n:
        raise ValueError(f"paired_bootstrap: {unit.size} cluster ids for {n} queries")
    _, idx = np.unique(unit[valid], return_inverse=True)
    k = int(idx.max()) + 1 if idx.size else 0
    out: dict[str, Any] = {"draws": int(draws), "level": level, "seed": seed,
                           "resampled": "queries" if clusters is None else "query identities",
                           "num_units": k, "num_queries": int(valid.sum())}
    if k == 0:
        return {**out, "mAP": None, "rank1": None}
    count = np.bincount(idx, minlength=k).astype(np.float64)
    sums = {"mAP": np.bincount(idx, weights=(ap_b - ap_a)[valid], minlength=k),
            "rank1": np.bincount(idx, weights=(hit_b - hit_a)[valid], minlength=k)}
    rng = np.random.default_rng(seed)
    samples = {m: np.empty(draws) for m in sums}
    for start in range(0, draws, CHUNK):
        w = rng.multinomial(k, np.full(k, 1.0 / k), size=min(CHUNK, draws - start)).astype(np.float64)
        queries = w @ count  # > 0: every draw holds k identities, each with >= 1 valid query
        for m, s in sums.items():
            samples[m][start:start + w.shape[0]] = (w @ s) / queries
    tail = 100 * (1 - level) / 2
    for m, s in sums.items():
        low, high = np.percentile(samples[m], [tail, 100 - tail])
        out[m] = {"delta": float(s.sum() / count.sum()), "low": float(low), "high": float(high),
                  "sure": bool(low > 0 or high < 0)}
    return out


def interval_text(row: dict[str, Any] | None) -> str:
    """'+1.2 [-0.3, +2.7]' in points, or '-' when there is nothing to compare."""
    if row is None:
        return "-"
    return f"{100 * row['delta']:+.1f} [{100 * row['low']:+.1f}, {100 * row['high']:+.1f}]"
