"""Verification rates for search thresholds: TAR at fixed FAR over query x gallery pairs.

Genuine pair = same pid (fast-reid's ROC has the labels reversed). A pair is accepted when its
distance is <= the threshold; the threshold for a FAR f is the largest one accepting at most
floor(f * #impostors) impostor pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from occreid.evaluation.ranking import as_numpy


def verification_rates(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    fars: Sequence[float] = (1e-4, 1e-3, 1e-2),
    exclude_same_camera: bool = False,
    q_camids: Any = None,
    g_camids: Any = None,
) -> dict[str, Any]:
    """TAR at each FAR, the distance threshold achieving it and the FAR actually achieved.

    `exclude_same_camera` drops every pair taken by the same camera (needs the camera ids), as a
    cross-camera search would. Returns numpy arrays `far`, `tar`, `threshold`, `achieved_far` and the
    counts `num_genuine`, `num_impostor`.
    """
    d = as_numpy(distmat).astype(np.float64, copy=False)
    qp, gp = as_numpy(q_pids).reshape(-1), as_numpy(g_pids).reshape(-1)
    if d.shape != (qp.size, gp.size):
        raise ValueError(f"distmat shape {d.shape} does not match {qp.size} queries x {gp.size} gallery")
    genuine = qp[:, None] == gp[None, :]
    kept = np.ones_like(genuine)
    if exclude_same_camera:
        if q_camids is None or g_camids is None:
            raise ValueError("exclude_same_camera=True needs q_camids and g_camids")
        kept = as_numpy(q_camids).reshape(-1)[:, None] != as_numpy(g_camids).reshape(-1)[None, :]
    gen = np.sort(d[genuine & kept])
    imp = d[~genuine & kept]
    if gen.size == 0 or imp.size == 0:
        raise ValueError(f"need genuine and impostor pairs, got {gen.size} and {imp.size}")
    far_arr = np.asarray(fars, dtype=np.float64)
    allowed = np.floor(far_arr * imp.size).astype(np.int64)  # impostors that may be accepted
    kth = np.unique(np.minimum(allowed, imp.size - 1))
    part = np.partition(imp, kth)
    # threshold just below the first impostor that must be rejected (ties rejected with it)
    below = np.nextafter(part[np.minimum(allowed, imp.size - 1)], -np.inf)
    threshold = np.where(allowed >= imp.size, np.inf, below)
    accepted_impostors = np.array([np.count_nonzero(imp <= t) for t in threshold])  # one pass per FAR
    tar = np.searchsorted(gen, threshold, side="right") / gen.size
    return {
        "far": far_arr,
        "tar": tar,
        "threshold": threshold,
        "achieved_far": accepted_impostors / imp.size,
        "num_genuine": int(gen.size),
        "num_impostor": int(imp.size),
    }
