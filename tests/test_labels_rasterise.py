"""Keypoints -> atomic part map: geometry, missing joints, hand-worked distances, flip consistency."""

from __future__ import annotations

import math

import numpy as np
import pytest

from occreid.data.transforms import RandomHorizontalFlip
from occreid.labels import rasterise as rasterise_module
from occreid.labels.keypoints import JOINT_INDEX, Keypoints
from occreid.labels.rasterise import BodyProportions, rasterise_keypoints

HEAD, TORSO, L_ARM, R_ARM, L_LEG, R_LEG, L_FOOT, R_FOOT = range(1, 9)
H, W = 128, 64

# A person facing the camera: their left side is on the image right.
FRONT = {
    "nose": (32, 14), "left_eye": (34, 12), "right_eye": (30, 12), "left_ear": (37, 13), "right_ear": (27, 13),
    "neck": (32, 24), "left_shoulder": (42, 26), "right_shoulder": (22, 26), "left_elbow": (46, 44),
    "right_elbow": (18, 44), "left_wrist": (48, 60), "right_wrist": (16, 60), "left_hip": (38, 64),
    "right_hip": (26, 64), "left_knee": (39, 88), "right_knee": (25, 88), "left_ankle": (40, 112),
    "right_ankle": (24, 112),
}  # fmt: skip


def _kp(joints: dict, drop: tuple[str, ...] = (), conf: float = 1.0) -> Keypoints:
    return Keypoints.from_named({n: (x, y, conf) for n, (x, y) in joints.items() if n not in drop})


def _mean_row(label: np.ndarray, part: int) -> float:
    return float(np.nonzero(label == part)[0].mean())


def _mean_col(label: np.ndarray, part: int) -> float:
    return float(np.nonzero(label == part)[1].mean())


def test_vertical_order_and_sides():
    label = rasterise_keypoints(_kp(FRONT), H, W)
    assert set(np.unique(label)) == set(range(9))
    assert _mean_row(label, HEAD) < _mean_row(label, TORSO) < _mean_row(label, L_LEG) < _mean_row(label, L_FOOT)
    assert _mean_row(label, TORSO) < _mean_row(label, R_LEG) < _mean_row(label, R_FOOT)
    torso_x = _mean_col(label, TORSO)
    # facing the camera: the person's left arm / leg / foot lie on the image right of the torso
    assert _mean_col(label, L_ARM) > torso_x > _mean_col(label, R_ARM)
    assert _mean_col(label, L_LEG) > torso_x > _mean_col(label, R_LEG)
    assert _mean_col(label, L_FOOT) > torso_x > _mean_col(label, R_FOOT)


def test_parts_cover_the_segments_between_joints():
    label = rasterise_keypoints(_kp(FRONT), H, W)
    for a, b, part in (
        ("left_shoulder", "left_elbow", L_ARM),
        ("right_elbow", "right_wrist", R_ARM),
        ("left_hip", "left_knee", L_LEG),
        ("right_knee", "right_ankle", R_LEG),
    ):
        (ax, ay), (bx, by) = FRONT[a], FRONT[b]
        for t in (0.3, 0.5, 0.7):  # interior points of the limb, away from both joints
            x, y = ax + t * (bx - ax), ay + t * (by - ay)
            assert label[round(y), round(x)] == part, (a, b, t)
        # and the limb has width: the pixel one column beside the middle is the same part
        x, y = (ax + bx) / 2, (ay + by) / 2
        assert label[round(y), round(x) + 1] == part and label[round(y), round(x) - 1] == part
    # the torso fills the shoulder-hip quadrilateral, not just its corners
    assert label[45, 32] == TORSO and label[60, 32] == TORSO and label[30, 30] == TORSO


def test_missing_joints_make_parts_absent():
    face = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
    label = rasterise_keypoints(_kp(FRONT, drop=face), H, W)
    assert HEAD not in label and TORSO in label
    label = rasterise_keypoints(_kp(FRONT, drop=("left_hip", "left_knee", "left_ankle")), H, W)
    assert L_LEG not in label and L_FOOT not in label and R_LEG in label
    label = rasterise_keypoints(_kp(FRONT, drop=("left_hip", "right_hip")), H, W)
    assert TORSO not in label
    # a shoulder alone is not an arm
    label = rasterise_keypoints(_kp(FRONT, drop=("right_elbow", "right_wrist")), H, W)
    assert R_ARM not in label and L_ARM in label
    assert not rasterise_keypoints(Keypoints.from_named({}), H, W).any()


def test_low_confidence_joints_count_as_missing():
    kp = _kp(FRONT, conf=0.05)
    assert not rasterise_keypoints(kp, H, W, min_conf=0.1).any()
    assert rasterise_keypoints(kp, H, W, min_conf=0.01).any()


def test_hand_worked_single_limb():
    # Only the left shoulder (10, 10) and elbow (10, 22): the limb length 12 is 0.6 T, so T = 20 px
    # and the arm is a capsule of radius 0.13 * 20 = 2.6 px around the segment.
    kp = Keypoints.from_named({"left_shoulder": (10.0, 10.0, 1.0), "left_elbow": (10.0, 22.0, 1.0)})
    label = rasterise_keypoints(kp, 30, 24, props=BodyProportions(arm_radius=0.13))
    expected = np.zeros((30, 24), dtype=np.uint8)
    for y in range(30):
        for x in range(24):
            t = min(max((y - 10.0) / 12.0, 0.0), 1.0)
            if math.hypot(x - 10.0, y - (10.0 + 12.0 * t)) <= 2.6:
                expected[y, x] = L_ARM
    np.testing.assert_array_equal(label, expected)
    assert label[16, 12] == L_ARM and label[16, 13] == 0  # 2 px and 3 px from the segment
    assert label[24, 10] == L_ARM and label[25, 10] == 0  # 2 px and 3 px past the elbow


def test_person_mask_bounds_the_label():
    mask = np.zeros((H, W), dtype=bool)
    mask[:, :32] = True
    full = rasterise_keypoints(_kp(FRONT), H, W)
    cut = rasterise_keypoints(_kp(FRONT), H, W, person_mask=mask)
    assert not cut[:, 32:].any()
    np.testing.assert_array_equal(cut[:, :32], full[:, :32])


def test_row_chunking_does_not_change_the_result(monkeypatch):
    full = rasterise_keypoints(_kp(FRONT), H, W)
    monkeypatch.setattr(rasterise_module, "_CHUNK_ELEMENTS", 1000)
    np.testing.assert_array_equal(rasterise_keypoints(_kp(FRONT), H, W), full)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flip_consistency_with_transforms(seed):
    """Flipping image + label with the training transform equals rasterising the mirrored keypoints."""
    rng = np.random.default_rng(seed)
    # an asymmetric pose: jitter every joint by up to 4 px, on a quarter-pixel grid so mirroring is exact
    joints = {n: (x + rng.integers(-16, 17) / 4, y + rng.integers(-16, 17) / 4) for n, (x, y) in FRONT.items()}
    kp = _kp(joints)
    label = rasterise_keypoints(kp, H, W)
    image = np.zeros((H, W, 3), dtype=np.uint8)
    _, flipped = RandomHorizontalFlip(p=1.0)(image, label, np.random.default_rng(0))
    mirrored = rasterise_keypoints(kp.mirrored(W), H, W)
    np.testing.assert_array_equal(flipped, mirrored)
    # the mirrored person still faces the camera: its left arm is the reflection of the original right arm
    assert np.nonzero(mirrored == L_ARM)[1].mean() == pytest.approx(W - 1 - np.nonzero(label == R_ARM)[1].mean())
    assert np.nonzero(mirrored == L_ARM)[1].mean() > W / 2


def test_mirrored_keypoints_swap_sides_and_reflect_x():
    kp = _kp({"left_wrist": (10.25, 5.0), "nose": (30.0, 7.0)})
    m = kp.mirrored(64)
    assert tuple(m.xy[JOINT_INDEX["right_wrist"]]) == (63 - 10.25, 5.0)
    assert m.conf[JOINT_INDEX["left_wrist"]] == 0.0
    assert tuple(m.xy[JOINT_INDEX["nose"]]) == (33.0, 7.0)
