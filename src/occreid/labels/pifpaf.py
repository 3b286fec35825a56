"""PifPaf confidence-field mask files ([36, h, w]: 17 keypoint + 19 limb fields, as BPBReID shares
them) -> canonical atomic part map. Read only.

Each atomic part takes the maximum over its fields (the grouping of BPBReID's `eight`, with the
hip-to-hip limb given to the torso only: BPBReID also adds it to the left leg, which would make the
left leg win the pelvis); the grouped fields are resized bilinearly to the image, and every pixel goes
to the part with the largest value, or to background where all are below `threshold` (default 0.3,
the `mask_filtering_threshold` of BPBReID's thresholded background).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from occreid.errors import LabelError
from occreid.labels.format import ATOMIC_INDEX, ATOMIC_PARTS

PIFPAF_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
    "right_knee", "left_ankle", "right_ankle",
)  # fmt: skip
PIFPAF_LIMBS = (
    "left_ankle_to_left_knee", "left_knee_to_left_hip", "right_ankle_to_right_knee",
    "right_knee_to_right_hip", "left_hip_to_right_hip", "left_shoulder_to_left_hip",
    "right_shoulder_to_right_hip", "left_shoulder_to_right_shoulder", "left_shoulder_to_left_elbow",
    "right_shoulder_to_right_elbow", "left_elbow_to_left_wrist", "right_elbow_to_right_wrist",
    "left_eye_to_right_eye", "nose_to_left_eye", "nose_to_right_eye", "left_eye_to_left_ear",
    "right_eye_to_right_ear", "left_ear_to_left_shoulder", "right_ear_to_right_shoulder",
)  # fmt: skip
PIFPAF_FIELDS = PIFPAF_KEYPOINTS + PIFPAF_LIMBS

# field name -> atomic part; every field belongs to exactly one part.
FIELD_TO_PART = {
    **{f: "head" for f in ("nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_eye_to_right_eye",
                           "nose_to_left_eye", "nose_to_right_eye", "left_eye_to_left_ear",
                           "right_eye_to_right_ear", "left_ear_to_left_shoulder",
                           "right_ear_to_right_shoulder")},
    **{f: "torso" for f in ("left_hip", "right_hip", "left_hip_to_right_hip", "left_shoulder_to_left_hip",
                            "right_shoulder_to_right_hip", "left_shoulder_to_right_shoulder")},
    **{f"{s}_{j}": f"{s}_arm" for s in ("left", "right") for j in ("shoulder", "elbow", "wrist")},
    **{f"{s}_shoulder_to_{s}_elbow": f"{s}_arm" for s in ("left", "right")},
    **{f"{s}_elbow_to_{s}_wrist": f"{s}_arm" for s in ("left", "right")},
    **{f"{s}_knee": f"{s}_leg" for s in ("left", "right")},
    **{f"{s}_ankle_to_{s}_knee": f"{s}_leg" for s in ("left", "right")},
    **{f"{s}_knee_to_{s}_hip": f"{s}_leg" for s in ("left", "right")},
    **{f"{s}_ankle": f"{s}_foot" for s in ("left", "right")},
}  # fmt: skip


def _field_order() -> tuple[np.ndarray, np.ndarray]:
    """Field indices sorted by atomic part, and the start of each part's run (for maximum.reduceat)."""
    part_of = np.array([ATOMIC_INDEX[FIELD_TO_PART[f]] for f in PIFPAF_FIELDS])
    order = np.argsort(part_of, kind="stable")
    starts = np.searchsorted(part_of[order], np.arange(1, len(ATOMIC_PARTS) + 1))
    return order, starts


def pifpaf_path(masks_dir: str | Path, split_folder: str, image_path: str | Path) -> Path | None:
    """The mask file of an image under `<dataset>/masks/<name>` (= masks_dir): `<split>/<stem>.npy` or
    `<split>/<file name>.confidence_fields.npy`; None when neither exists."""
    folder = Path(masks_dir) / split_folder
    name = Path(image_path).name
    for cand in (
        folder / f"{Path(name).stem}.npy",
        folder / f"{name}.confidence_fields.npy",
        folder / f"{Path(name).stem}.jpg.confidence_fields.npy",
    ):
        if cand.is_file():
            return cand
    return None


def read_pifpaf_fields(path: str | Path) -> np.ndarray:
    """Load a [36, h, w] float confidence-field file."""
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise LabelError(f"{path}: unreadable PifPaf mask file ({e})") from None
    if arr.ndim != 3 or arr.shape[0] != len(PIFPAF_FIELDS):
        raise LabelError(f"{path}: expected PifPaf fields of shape [36, h, w], got {arr.shape}")
    return arr.astype(np.float32, copy=False)


def pifpaf_to_label(fields: np.ndarray, height: int, width: int, threshold: float = 0.3) -> np.ndarray:
    """[36, h, w] confidence fields -> atomic index map [height, width] (see the module docstring)."""
    fields = np.asarray(fields, dtype=np.float32)
    if fields.ndim != 3 or fields.shape[0] != len(PIFPAF_FIELDS):
        raise LabelError(f"expected PifPaf fields of shape [36, h, w], got {fields.shape}")
    order, starts = _field_order()
    grouped = np.maximum.reduceat(fields[order], starts, axis=0)
    if grouped.shape[1:] != (height, width):
        t = torch.from_numpy(np.ascontiguousarray(grouped))[None]
        grouped = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[0].numpy()
    best = grouped.argmax(axis=0)
    return np.where(grouped.max(axis=0) >= threshold, best + 1, 0).astype(np.uint8)
