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
    "whole_body": (("body", ATOMIC_PARTS),),
}

# Groupings of other toolkits that atomic labels cannot express, with the reason and the alternative.
UNSUPPORTED_GROUPINGS = {
    "five_v": (
        "BPBReID's `five_v` (CombinePifPafIntoFiveVerticalParts) cuts the torso and arms into an upper "
        "(shoulders, upper arms) and a lower (forearms, hips) band, which atomic part labels cannot "
        "express; use 'five' (head, arms, torso, legs, feet) instead"
    ),
}


def grouping_lut(grouping: str) -> np.ndarray:
    """Look-up table atomic index (0..8) -> grouped index (0..K), background stays 0."""
    if grouping in UNSUPPORTED_GROUPINGS:
        raise LabelError(f"part grouping {grouping!r} is not available: {UNSUPPORTED_GROUPINGS[grouping]}")
    if grouping not in GROUPINGS:
        raise LabelError(f"unknown part grouping {grouping!r}; expected one of {sorted(GROUPINGS)}")
    lut = np.zeros(len(ATOMIC_PARTS) + 1, dtype=np.uint8)
    for k, (_, atoms) in enumerate(GROUPINGS[grouping], start=1):
        for a in atoms:
            lut[ATOMIC_INDEX[a]] = k
    return lut


def group_label(index_map: np.ndarray, grouping: str) -> np.ndarray:
    """Map an atomic index map to the K parts of `grouping` (+ background 0)."""
    return grouping_lut(grouping)[index_map]


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
