"""LIP 20-class human-parsing maps -> canonical atomic part map. Read only (no LIP model offline).

Mapping (decisions, documented in docs/labels.md):
- hat, hair, sunglasses, face -> head; upper-clothes, coat, scarf -> torso (sleeves stay torso: LIP
  has no sleeve class); left / right arm -> left / right arm; left / right leg -> left / right leg;
  left / right shoe -> left / right foot.
- glove -> the arm on its side; socks -> the foot on its side; pants, skirt -> the leg on its side.
- dress, jumpsuit -> torso above the hip line, legs (by side) below it. The hip line is the top row of
  pants / skirt when present, else 45 % of the way down the garment.
Side of an unsided pixel: the side of the body midline (centroid column of all person pixels) on which
the person's left classes lie; their centroids (legs and shoes, else arms) tell whether the person
faces the camera. With no sided class at all, the person is taken to face the camera (their left on
the image right).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from occreid.errors import LabelError
from occreid.labels.format import ATOMIC_INDEX

LIP_CLASSES = (
    "background", "hat", "hair", "glove", "sunglasses", "upper_clothes", "dress", "coat", "socks",
    "pants", "jumpsuits", "scarf", "skirt", "face", "left_arm", "right_arm", "left_leg", "right_leg",
    "left_shoe", "right_shoe",
)  # fmt: skip
_C = {name: i for i, name in enumerate(LIP_CLASSES)}

_DIRECT = {
    "hat": "head", "hair": "head", "sunglasses": "head", "face": "head",
    "upper_clothes": "torso", "coat": "torso", "scarf": "torso",
    "left_arm": "left_arm", "right_arm": "right_arm", "left_leg": "left_leg", "right_leg": "right_leg",
    "left_shoe": "left_foot", "right_shoe": "right_foot",
}  # fmt: skip


def _direct_lut() -> np.ndarray:
    """LIP class -> atomic index for the classes whose part does not depend on the side or height."""
    lut = np.zeros(len(LIP_CLASSES), dtype=np.uint8)
    for lip, atom in _DIRECT.items():
        lut[_C[lip]] = ATOMIC_INDEX[atom]
    return lut


DIRECT_LUT = _direct_lut()


def _centroid_x(mask: np.ndarray) -> float | None:
    cols = np.nonzero(mask)[1]
    return float(cols.mean()) if cols.size else None


def _left_is_image_right(cls: np.ndarray) -> bool:
    """Whether the person's left side lies on the image right (they face the camera)."""
    refs = ((("left_leg", "left_shoe"), ("right_leg", "right_shoe")), (("left_arm",), ("right_arm",)))
    for left, right in refs:
        lx = _centroid_x(np.isin(cls, [_C[n] for n in left]))
        rx = _centroid_x(np.isin(cls, [_C[n] for n in right]))
        if lx is not None and rx is not None and lx != rx:
            return lx > rx
    return True


def lip_to_label(class_map: np.ndarray) -> np.ndarray:
    """LIP class map (uint8 [H, W], values 0..19) -> atomic index map [H, W]."""
    cls = np.asarray(class_map)
    if cls.ndim != 2 or cls.max(initial=0) >= len(LIP_CLASSES):
        raise LabelError(f"a LIP parsing map is H x W with classes 0..19, got shape {cls.shape}")
    out = DIRECT_LUT[cls]
    sided = np.isin(cls, [_C[n] for n in ("glove", "socks", "pants", "skirt", "dress", "jumpsuits")])
    if not sided.any():
        return out
    cols = np.arange(cls.shape[1])[None, :]
    mid = _centroid_x(cls > 0)
    on_left = (cols > mid) == _left_is_image_right(cls)
    rows = np.arange(cls.shape[0])[:, None]

    lower = np.isin(cls, [_C["pants"], _C["skirt"]])
    onepiece = np.isin(cls, [_C["dress"], _C["jumpsuits"]])
    if onepiece.any():
        prow = np.nonzero(onepiece)[0]
        hip = prow.min() + 0.45 * (prow.max() - prow.min())
        if lower.any():
            hip = np.nonzero(lower)[0].min()
        out = np.where(onepiece & (rows < hip), np.uint8(ATOMIC_INDEX["torso"]), out)
        lower = lower | (onepiece & (rows >= hip))
    left_right = {
        "arm": np.isin(cls, [_C["glove"]]),
        "foot": np.isin(cls, [_C["socks"]]),
        "leg": lower,
    }
    for part, mask in left_right.items():
        value = np.where(on_left, ATOMIC_INDEX[f"left_{part}"], ATOMIC_INDEX[f"right_{part}"])
        out = np.where(mask, value.astype(np.uint8), out)
    return out


def read_lip_label(path: str | Path) -> np.ndarray:
    """Read a LIP parsing PNG (palette or grey values 0..19) and convert it."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            cls = np.asarray(im)
    except (OSError, ValueError) as e:
        raise LabelError(f"{path}: unreadable LIP parsing map ({e})") from None
    if cls.ndim != 2 or cls.max(initial=0) >= len(LIP_CLASSES):
        raise LabelError(f"{path}: expected a single-channel map of LIP classes 0..19, got shape {cls.shape}")
    return lip_to_label(cls)
