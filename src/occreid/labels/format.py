"""The canonical part-label format and the named groupings of its atomic parts.

Canonical label: a per-pixel index map (uint8, H x W, image resolution) over eight atomic body parts,
0 = background. Every method's parts are unions of atomic parts, so one file serves all groupings;
PifPaf confidence fields, keypoints, MediaPipe and LIP maps are all converted to it. Stored as a
lossless PNG (a few KB per image) at `<labels_root>/<split folder>/<image stem>.png`.

`left` / `right` are the person's own sides (the COCO / PifPaf convention), not sides of the image.

Background is always index 0 of a grouped map: pixels that belong to no atomic part. A grouping that
leaves out an atomic part sends its pixels to background too (none of ours does).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from occreid.errors import LabelError

ATOMIC_PARTS = (
    "head",
    "torso",
    "left_arm",
    "right_arm",
    "left_leg",
    "right_leg",
    "left_foot",
    "right_foot",
)
ATOMIC_INDEX = {name: i + 1 for i, name in enumerate(ATOMIC_PARTS)}

# grouping -> ordered (part name, atomic parts); part 1 is always the head.
GROUPINGS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "amdnet5": (
        ("head", ("head",)),
        ("arms", ("left_arm", "right_arm")),
        ("trunk", ("torso",)),
        ("legs", ("left_leg", "right_leg")),
        ("feet", ("left_foot", "right_foot")),
    ),
    "pabreid6": (
        ("head", ("head",)),
        ("left_arm", ("left_arm",)),
        ("right_arm", ("right_arm",)),
        ("torso", ("torso",)),
        ("left_leg", ("left_leg", "left_foot")),
        ("right_leg", ("right_leg", "right_foot")),
    ),
    "sgsfa4": (
        ("head", ("head",)),
        ("upper_body", ("torso", "left_arm", "right_arm")),
        ("lower_body", ("left_leg", "right_leg")),
        ("shoes", ("left_foot", "right_foot")),
    ),
    # BPBReID's `five` (CombinePifPafIntoFiveBodyMasks): head, arms, torso, legs, feet.
    "five": (
        ("head", ("head",)),
        ("arms", ("left_arm", "right_arm")),
        ("torso", ("torso",)),
        ("legs", ("left_leg", "right_leg")),
        ("feet", ("left_foot", "right_foot")),
    ),
    # BPBReID's `eight` (CombinePifPafIntoEightBodyMasks), in its channel order.
    "eight": (
        ("head", ("head",)),
        ("left_arm", ("left_arm",)),
        ("right_arm", ("right_arm",)),
        ("torso", ("torso",)),
        ("left_leg", ("left_leg",)),
        ("right_leg", ("right_leg",)),
        ("left_foot", ("left_foot",)),
        ("right_foot", ("right_foot",)),
    ),
    # BPBReID's `five_v` (CombinePifPafIntoFiveVerticalParts): head, upper and lower torso-and-arms bands,
    # legs, feet. The bands are cut at a row (SPLIT_BANDS), so `lower_torso` gets no atomic part here.
    "five_v": (
        ("head", ("head",)),
        ("upper_torso", ("torso", "left_arm", "right_arm")),
        ("lower_torso", ()),
        ("legs", ("left_leg", "right_leg")),
        ("feet", ("left_foot", "right_foot")),
    ),
    "whole_body": (("body", ATOMIC_PARTS),),
}

# grouping -> (upper part, lower part): pixels of the upper part below the middle row of that part's
# extent move to the lower part. For `five_v` the middle of shoulders-to-hips sits near the elbows, where
# BPBReID's upper band (shoulders, upper arms) meets its lower one (forearms, hips).
SPLIT_BANDS: dict[str, tuple[int, int]] = {"five_v": (2, 3)}


def grouping_lut(grouping: str) -> np.ndarray:
    """Look-up table atomic index (0..8) -> grouped index (0..K), background stays 0."""
    if grouping not in GROUPINGS:
        raise LabelError(f"unknown part grouping {grouping!r}; expected one of {sorted(GROUPINGS)}")
    lut = np.zeros(len(ATOMIC_PARTS) + 1, dtype=np.uint8)
    for k, (_, atoms) in enumerate(GROUPINGS[grouping], start=1):
        for a in atoms:
            lut[ATOMIC_INDEX[a]] = k
    return lut


def group_label(index_map: np.ndarray, grouping: str) -> np.ndarray:
    """Map atomic index maps [..., H, W] to the K parts of `grouping` (+ background 0)."""
    grouped = grouping_lut(grouping)[index_map]
    return split_bands(grouped, grouping)


def split_bands(grouped: np.ndarray, grouping: str) -> np.ndarray:
    """Apply the grouping's row split (SPLIT_BANDS) to grouped maps [..., H, W]; others pass through.

    Per map, rows holding the upper part span [top, bottom]; its pixels in rows > (top + bottom) / 2
    become the lower part."""
    if grouping not in SPLIT_BANDS:
        return grouped
    upper, lower = SPLIT_BANDS[grouping]
    part = grouped == upper
    rows = part.any(axis=-1)  # [..., H]
    h = rows.shape[-1]
    top = rows.argmax(axis=-1)
    bottom = h - 1 - rows[..., ::-1].argmax(axis=-1)
    mid = (top + bottom) / 2.0
    below = np.arange(h) > mid[..., None]  # [..., H]
    out = grouped.copy()
    out[part & below[..., None]] = lower
    return out


def part_names(grouping: str) -> list[str]:
    """Names of the K parts of a grouping, in channel order 1..K."""
    grouping_lut(grouping)
    return [name for name, _ in GROUPINGS[grouping]]


def write_label(path: str | Path, index_map: np.ndarray) -> None:
    """Write an atomic index map as a PNG (atomically: temp file then rename)."""
    from PIL import Image

    arr = np.asarray(index_map)
    if arr.ndim != 2 or arr.max(initial=0) > len(ATOMIC_PARTS):
        raise LabelError(f"{path}: a label must be an H x W map of values 0..{len(ATOMIC_PARTS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(arr.astype(np.uint8), mode="L").save(tmp, format="PNG")
    tmp.replace(path)


def read_label(path: str | Path) -> np.ndarray:
    """Read an atomic index map written by `write_label`."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except (OSError, ValueError) as e:
        raise LabelError(f"{path}: unreadable part-label file ({e}); re-create it with `occreid labels make`") from None
    if arr.ndim != 2 or arr.max(initial=0) > len(ATOMIC_PARTS):
        raise LabelError(f"{path}: expected an H x W map of values 0..{len(ATOMIC_PARTS)}, got shape {arr.shape}")
    return arr


def label_path_for(labels_root: str | Path, split_folder: str, image_path: str | Path) -> Path:
    """Where the canonical label of an image lives under a labels root."""
    return Path(labels_root) / split_folder / (Path(image_path).stem + ".png")
