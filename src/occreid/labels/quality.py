"""Agreement of two atomic part maps: per-part intersection over union, accumulated over many images."""

from __future__ import annotations

import numpy as np

from occreid.labels.format import ATOMIC_PARTS

_N = len(ATOMIC_PARTS) + 1


def confusion(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Pixel counts [9, 9]: row = predicted atomic index, column = target atomic index."""
    pred, target = np.asarray(pred, dtype=np.int64), np.asarray(target, dtype=np.int64)
    if pred.shape != target.shape:
        raise ValueError(f"label shapes differ: {pred.shape} vs {target.shape}")
    return np.bincount((pred * _N + target).ravel(), minlength=_N * _N).reshape(_N, _N)


def part_iou(conf: np.ndarray) -> dict[str, float]:
    """IoU of each atomic part from a (summed) confusion matrix; NaN for a part absent from both."""
    inter = np.diag(conf)[1:].astype(np.float64)
    union = conf.sum(axis=0)[1:] + conf.sum(axis=1)[1:] - np.diag(conf)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    return {name: float(v) for name, v in zip(ATOMIC_PARTS, iou)}
