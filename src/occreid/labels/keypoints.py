"""The one keypoint representation every keypoint reader produces: named joints with x, y, confidence.

Joints are the COCO-17 set plus `neck` and four optional foot points (heels and toes, from MediaPipe or
OpenPose BODY_25). Coordinates are image pixels with pixel centres at integers (x = 0 is the centre of
the first column), so mirroring an image of width W maps x to W - 1 - x. A missing joint has
confidence 0 (its x, y are meaningless). `left` / `right` are the person's own sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from occreid.errors import LabelError

JOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "neck",
    "left_heel",
    "right_heel",
    "left_toe",
    "right_toe",
)
JOINT_INDEX = {name: i for i, name in enumerate(JOINTS)}


def _mirror_permutation() -> np.ndarray:
    """Joint index -> index of the same joint on the other side (centre joints map to themselves)."""
    perm = np.arange(len(JOINTS))
    for name, i in JOINT_INDEX.items():
        if name.startswith("left_"):
            j = JOINT_INDEX["right_" + name[len("left_") :]]
            perm[i], perm[j] = j, i
    return perm


MIRROR_PERMUTATION = _mirror_permutation()


@dataclass(frozen=True)
class Keypoints:
    """One person's joints: `xy` [J, 2] float pixels (x, y) and `conf` [J] in [0, 1], J = len(JOINTS)."""

    xy: np.ndarray
    conf: np.ndarray

    def __post_init__(self) -> None:
        xy = np.asarray(self.xy, dtype=np.float64)
        conf = np.asarray(self.conf, dtype=np.float64)
        if xy.shape != (len(JOINTS), 2) or conf.shape != (len(JOINTS),):
            raise LabelError(
                f"keypoints must be [{len(JOINTS)}, 2] coordinates and [{len(JOINTS)}] confidences, "
                f"got {xy.shape} and {conf.shape}"
            )
        conf = np.where(np.isfinite(conf) & np.isfinite(xy).all(axis=1), conf, 0.0)
        object.__setattr__(self, "xy", np.nan_to_num(xy))
        object.__setattr__(self, "conf", conf)

    @classmethod
    def from_named(cls, joints: dict[str, tuple[float, float, float]]) -> Keypoints:
        """Build from {joint name: (x, y, confidence)}; joints not named are missing."""
        xy = np.zeros((len(JOINTS), 2))
        conf = np.zeros(len(JOINTS))
        for name, (x, y, c) in joints.items():
            if name not in JOINT_INDEX:
                raise LabelError(f"unknown joint {name!r}; expected one of {JOINTS}")
            xy[JOINT_INDEX[name]] = (x, y)
            conf[JOINT_INDEX[name]] = c
        return cls(xy, conf)

    @classmethod
    def from_layout(cls, values: np.ndarray, layout: Sequence[str | None]) -> Keypoints:
        """Build from an array [N, >=2] (x, y[, confidence]) whose row i is joint `layout[i]`
        (None = a joint we do not use). Without a confidence column every joint counts as present."""
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] != len(layout) or arr.shape[1] < 2:
            raise LabelError(f"expected {len(layout)} joints of (x, y[, confidence]), got shape {arr.shape}")
        rows = np.array([i for i, n in enumerate(layout) if n is not None])
        idx = np.array([JOINT_INDEX[n] for n in layout if n is not None])
        xy = np.zeros((len(JOINTS), 2))
        conf = np.zeros(len(JOINTS))
        xy[idx] = arr[rows, :2]
        conf[idx] = arr[rows, 2] if arr.shape[1] > 2 else 1.0
        return cls(xy, conf)

    def present(self, min_conf: float = 0.0) -> np.ndarray:
        """Boolean [J]: joints whose confidence is above `min_conf` (and above 0)."""
        return (self.conf > min_conf) & (self.conf > 0)

    def mirrored(self, width: int) -> Keypoints:
        """The keypoints of the horizontally mirrored image: x -> width - 1 - x, left <-> right."""
        xy = self.xy.copy()
        xy[:, 0] = (width - 1) - xy[:, 0]
        return Keypoints(xy[MIRROR_PERMUTATION], self.conf[MIRROR_PERMUTATION])

    def scaled(self, sx: float, sy: float) -> Keypoints:
        """The keypoints of the image resized by (sx, sy), pixel-centre convention."""
        xy = (self.xy + 0.5) * np.array([sx, sy]) - 0.5
        return Keypoints(xy, self.conf)

    def centre(self, min_conf: float = 0.0) -> np.ndarray | None:
        """Mean position of the present joints, None when none is present."""
        m = self.present(min_conf)
        return self.xy[m].mean(axis=0) if m.any() else None


def select_person(
    people: Sequence[Keypoints], image_size: tuple[int, int] | None, min_conf: float = 0.0
) -> Keypoints | None:
    """The person a crop is about: nearest to the image centre (image_size = (height, width)),
    ties and unknown sizes resolved by the larger total confidence. None when nobody has a joint."""
    scored = []
    for k, p in enumerate(people):
        c = p.centre(min_conf)
        if c is None:
            continue
        total = float(p.conf[p.present(min_conf)].sum())
        if image_size is None:
            dist = 0.0
        else:
            h, w = image_size
            dist = float(np.hypot((c[0] - (w - 1) / 2) / w, (c[1] - (h - 1) / 2) / h))
        scored.append((dist, -total, k))
    if not scored:
        return None
    return people[min(scored)[2]]
