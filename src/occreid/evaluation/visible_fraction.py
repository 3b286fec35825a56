"""How much of each query person is visible, from the best source at hand (part labels, the method's
own visibility, or the box's aspect ratio), so accuracy can be broken down by occlusion level."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from occreid.data.records import Record

#: Body regions counted from part labels: the `five` grouping (head, arms, torso, legs, feet), so a
#: side view hiding one arm still counts its arms as seen.
LABEL_GROUPING = "five"
#: A region is present when it covers at least this fraction of the label's pixels.
MIN_REGION_FRACTION = 0.002
#: Method visibility scores at or above this count as a visible part (the binary matching threshold).
VISIBLE_SCORE = 0.5
#: Aspect-ratio proxy: an unoccluded pedestrian box is about this many times taller than wide.
FULL_BODY_ASPECT = 2.0

SOURCES = ("part_labels", "method", "aspect_ratio")


@dataclass(frozen=True)
class VisibleFraction:
    """Per query visible fraction in [0, 1] and where it came from (one of SOURCES)."""

    values: np.ndarray
    source: str


#: Part labels are the source when at least this fraction of the queries has a label file; the others
#: (MediaPipe finds no person in some crops) get NaN, their own "no label" group.
MIN_LABELLED_FRACTION = 0.5


def _has_label(path: str | None) -> bool:
    return path is not None and Path(path).is_file()


def from_part_labels(label_paths: Sequence[str | None]) -> np.ndarray:
    """Fraction of the five body regions present in each canonical label map; NaN without a label file."""
    from occreid.labels.format import group_label, read_label

    out = np.full(len(label_paths), np.nan, dtype=np.float64)
    for i, p in enumerate(label_paths):  # one small PNG per query; no vectorised decoder for PNGs
        if not _has_label(p):
            continue
        grouped = group_label(read_label(p), LABEL_GROUPING)
        counts = np.bincount(grouped.reshape(-1), minlength=6)[1:6]
        out[i] = np.mean(counts >= max(1.0, MIN_REGION_FRACTION * grouped.size))
    return out


def from_method_visibility(visibility: Any) -> np.ndarray:
    """Fraction of the method's parts scored visible (>= VISIBLE_SCORE), per row of [N, P] scores."""
    v = np.asarray(visibility.detach().cpu().numpy() if hasattr(visibility, "detach") else visibility)
    v = v.reshape(v.shape[0], -1).astype(np.float64)
    return np.mean(v >= VISIBLE_SCORE, axis=1)


def from_aspect_ratio(image_paths: Sequence[str]) -> np.ndarray:
    """Proxy: height / (FULL_BODY_ASPECT x width), clipped to [0, 1]; partial crops are squat boxes."""
    from PIL import Image

    hw = np.empty((len(image_paths), 2), dtype=np.float64)
    for i, p in enumerate(image_paths):  # reads the header only
        with Image.open(p) as im:
            hw[i] = im.size[1], im.size[0]
    return np.clip(hw[:, 0] / (FULL_BODY_ASPECT * np.maximum(hw[:, 1], 1.0)), 0.0, 1.0)


def query_visible_fraction(query: Sequence[Record], query_features: dict | None = None) -> VisibleFraction:
    """Part labels when at least MIN_LABELLED_FRACTION of the queries have one (the others: NaN), else the
    method's `visibility` feature, else the aspect-ratio proxy."""
    labels = [r.label_path for r in query]
    if query and sum(map(_has_label, labels)) >= MIN_LABELLED_FRACTION * len(labels):
        return VisibleFraction(from_part_labels(labels), "part_labels")
    vis = (query_features or {}).get("visibility")
    if vis is not None and len(vis) == len(query):
        return VisibleFraction(from_method_visibility(vis), "method")
    return VisibleFraction(from_aspect_ratio([r.path for r in query]), "aspect_ratio")


def method_part_names(method: Any, cfg: Any, num_parts: int) -> list[str]:
    """Names of a method's visibility channels: its label grouping's parts when the count fits."""
    from occreid.labels.format import part_names

    grouping = method.label_grouping(cfg) if hasattr(method, "label_grouping") else None
    names = part_names(grouping) if grouping else []
    return names if len(names) == num_parts else [f"part {i + 1}" for i in range(num_parts)]
