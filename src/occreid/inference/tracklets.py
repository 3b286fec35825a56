"""Tracklet aggregation for trackers: one embedding per track, combined part by part, weighted by
visibility, so an occluded frame does not dilute the parts seen clearly in other frames.

For track t, part p and frames i of t, with unit part vectors n(f_ip) and visibility v_ip:
    f_tp = sum_i v_ip n(f_ip) / sum_i v_ip          (plain mean of n(f_ip) when sum_i v_ip = 0)
    v_tp = max_i v_ip                                (a part is as visible as in its best frame)
Whole-image embeddings [N, D] are averaged as unit vectors: f_t = mean_i n(f_i).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def aggregate_arrays(
    arrays: dict[str, np.ndarray], visibility: np.ndarray | None, track_ids: Any
) -> tuple[dict[str, np.ndarray], np.ndarray | None, np.ndarray]:
    """Aggregate per-frame features into per-track ones (see the module docstring).

    Returns (arrays with one row per track, visibility [T, P] or None, the sorted track ids)."""
    ids = np.asarray(track_ids).reshape(-1)
    n = next(iter(arrays.values())).shape[0] if arrays else 0
    if ids.size != n:
        raise ValueError(f"{ids.size} track ids for {n} embeddings")
    tracks, inv = np.unique(ids, return_inverse=True)
    t = tracks.size
    counts = np.bincount(inv, minlength=t).astype(np.float64)
    out: dict[str, np.ndarray] = {}
    vis = None if visibility is None else np.asarray(visibility, dtype=np.float64)
    for name, arr in arrays.items():
        unit = _unit(np.asarray(arr, dtype=np.float64))
        if unit.ndim == 3 and vis is not None:
            weighted = np.zeros((t, *unit.shape[1:]))
            np.add.at(weighted, inv, unit * vis[:, :, None])
            mass = np.zeros((t, unit.shape[1]))
            np.add.at(mass, inv, vis)
            plain = np.zeros_like(weighted)
            np.add.at(plain, inv, unit)
            plain /= counts[:, None, None]
            seen = mass > 0
            agg = np.where(seen[:, :, None], weighted / np.where(seen, mass, 1.0)[:, :, None], plain)
        else:
            agg = np.zeros((t, *unit.shape[1:]))
            np.add.at(agg, inv, unit)
            agg /= counts.reshape(-1, *([1] * (unit.ndim - 1)))
        out[name] = agg.astype(np.float32)
    track_vis = None
    if vis is not None:
        track_vis = np.full((t, vis.shape[1]), -np.inf)
        np.maximum.at(track_vis, inv, vis)
        track_vis = track_vis.astype(np.float32)
    return out, track_vis, tracks
