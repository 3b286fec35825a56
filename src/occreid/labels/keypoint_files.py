"""Readers of keypoint files into `Keypoints`: OpenPose-18 CSV / JSON, AlphaPose / OpenPose people
JSON, COCO-17 JSON (incl. the multi-person prompt format with `is_target`) and MediaPipe-33 landmarks.

Index files (one file for a whole split) are read into {image stem: Keypoints}; per-image files into a
list of people plus the index of the marked target (None when no person is marked).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from occreid.errors import LabelError
from occreid.labels.keypoints import JOINTS, Keypoints

# Row order of each source's joint array; None = a joint the canonical set does not use.
OPENPOSE18 = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
COCO17 = JOINTS[:17]
BODY25 = OPENPOSE18[:8] + (None,) + OPENPOSE18[8:] + (
    "left_toe", None, "left_heel", "right_toe", None, "right_heel",
)  # fmt: skip
MEDIAPIPE33 = (
    "nose", None, "left_eye", None, None, "right_eye", None, "left_ear", "right_ear", None, None,
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    None, None, None, None, None, None,
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_toe", "right_toe",
)  # fmt: skip
LAYOUTS_BY_COUNT = {17: COCO17, 18: OPENPOSE18, 25: BODY25, 33: MEDIAPIPE33}


def keypoints_from_array(values: np.ndarray | Sequence, source: str) -> Keypoints:
    """A flat list or an [N, 2|3] array of one person's joints; the layout is picked by N (17 COCO,
    18 OpenPose, 25 BODY_25, 33 MediaPipe). `source` names the file in error messages."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1:
        if arr.size % 3:
            raise LabelError(f"{source}: a flat keypoint list holds (x, y, score) triples, got {arr.size}")
        arr = arr.reshape(-1, 3)
    if arr.ndim != 2 or arr.shape[0] not in LAYOUTS_BY_COUNT:
        raise LabelError(
            f"{source}: expected 17 (COCO), 18 (OpenPose), 25 (BODY_25) or 33 (MediaPipe) joints, "
            f"got an array of shape {arr.shape}"
        )
    return Keypoints.from_layout(arr, LAYOUTS_BY_COUNT[arr.shape[0]])


def read_openpose18_csv(path: str | Path) -> dict[str, Keypoints]:
    """Market-1501 pose-GAN style CSV: `name: [y...]: [x...]` per line (18 OpenPose joints, -1 =
    missing, a header line first). Present joints get confidence 1."""
    out: dict[str, Keypoints] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.strip()
            if not line or line.startswith("name:"):
                continue
            parts = line.split(":")
            try:
                name, ys, xs = parts
                y = np.array(json.loads(ys), dtype=np.float64)
                x = np.array(json.loads(xs), dtype=np.float64)
            except ValueError as e:
                raise LabelError(f"{path}:{lineno}: expected `name: [y...]: [x...]` ({e})") from None
            if x.shape != (18,) or y.shape != (18,):
                raise LabelError(f"{path}:{lineno}: expected 18 y and 18 x values, got {y.size} and {x.size}")
            present = (x >= 0) & (y >= 0)
            arr = np.stack([x, y, present.astype(np.float64)], axis=1)
            out[Path(name.strip()).stem] = Keypoints.from_layout(arr, OPENPOSE18)
    return out


def read_openpose18_json(path: str | Path) -> dict[str, Keypoints]:
    """DukeMTMC-Pose style JSON: {stem: 18 OpenPose joint slots, each a list of [x, y, score, id]
    candidates}; the best-scoring candidate of a slot is used, an empty slot is missing."""
    data = _load_json(path)
    if not isinstance(data, dict):
        raise LabelError(f"{path}: expected {{image stem: [18 joint slots]}}, got a {type(data).__name__}")
    out: dict[str, Keypoints] = {}
    for stem, slots in data.items():
        if not isinstance(slots, list) or len(slots) != 18:
            raise LabelError(f"{path}: entry {stem!r} must hold 18 joint slots")
        arr = np.zeros((18, 3))
        for j, cands in enumerate(slots):
            if cands:
                best = max(cands, key=lambda c: c[2])
                arr[j] = (best[0], best[1], max(float(best[2]), 1e-6))
        out[Path(stem).stem] = Keypoints.from_layout(arr, OPENPOSE18)
    return out


def read_people_json(path: str | Path) -> tuple[list[Keypoints], int | None]:
    """One image's people: AlphaPose / OpenPose `{"people": [{"pose_keypoints_2d": [...]}]}`, a COCO
    list `[{"keypoints": [[x, y, c]] * 17, "is_target": bool}]` (the KPR prompt format) or
    `{"annotations": [...]}`, or MediaPipe landmarks `[{"x", "y", "visibility"}] * 33` in pixels.
    Returns the people and the index of the one marked `is_target` (None if none is marked)."""
    data = _load_json(path)
    if isinstance(data, dict):
        data = data.get("people", data.get("annotations", data.get("persons")))
    if not isinstance(data, list):
        raise LabelError(f"{path}: expected a list of people or a `people` / `annotations` list")
    if len(data) == 33 and all(isinstance(d, dict) and "x" in d for d in data):
        rows = [[d["x"], d["y"], d.get("visibility", 1.0)] for d in data]
        return [keypoints_from_array(rows, str(path))], None
    people, target = [], None
    for k, person in enumerate(data):
        if not isinstance(person, dict):
            raise LabelError(f"{path}: person {k} is not an object")
        values = person.get("pose_keypoints_2d", person.get("keypoints"))
        if values is None:
            raise LabelError(f"{path}: person {k} has no `pose_keypoints_2d` or `keypoints`")
        people.append(keypoints_from_array(values, str(path)))
        if person.get("is_target") and target is None:
            target = k
    return people, target


def keypoints_from_mediapipe(landmarks: np.ndarray, image_size: tuple[int, int], normalized: bool = True) -> Keypoints:
    """MediaPipe Pose landmarks [33, 2..5] (x, y[, z[, visibility[, presence]]]); normalised
    coordinates are scaled by image_size = (height, width). Visibility is the confidence."""
    arr = np.asarray(landmarks, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != 33 or arr.shape[1] < 2:
        raise LabelError(f"MediaPipe landmarks must be [33, 2..5], got shape {arr.shape}")
    h, w = image_size
    xy = arr[:, :2] * np.array([w, h]) - 0.5 if normalized else arr[:, :2]
    conf = arr[:, 3] if arr.shape[1] >= 4 else np.ones(33)
    return Keypoints.from_layout(np.column_stack([xy, conf]), MEDIAPIPE33)


def _load_json(path: str | Path) -> object:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise LabelError(f"{path}: cannot read keypoint file ({e})") from None
    except json.JSONDecodeError as e:
        raise LabelError(f"{path}: not valid JSON ({e})") from None
