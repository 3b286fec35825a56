"""Keypoint, PifPaf and LIP readers on small files written by the tests; groupings against BPBReID."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from occreid.errors import LabelError
from occreid.labels.format import GROUPINGS, group_label, grouping_lut, part_names
from occreid.labels.keypoint_files import (
    keypoints_from_mediapipe,
    read_openpose18_csv,
    read_openpose18_json,
    read_people_json,
)
from occreid.labels.keypoints import JOINT_INDEX, Keypoints, select_person
from occreid.labels.lip import read_lip_label
from occreid.labels.pifpaf import pifpaf_path, pifpaf_to_label, read_pifpaf_fields

# atomic indices written out by hand (format.py): 1 head 2 torso 3 l_arm 4 r_arm 5 l_leg 6 r_leg 7 l_foot 8 r_foot
HEAD, TORSO, L_ARM, R_ARM, L_LEG, R_LEG, L_FOOT, R_FOOT = range(1, 9)
OPENPOSE18_NAMES = [
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow",
    "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
]  # fmt: skip


def _joint(kp: Keypoints, name: str) -> tuple[float, float, float]:
    i = JOINT_INDEX[name]
    return float(kp.xy[i, 0]), float(kp.xy[i, 1]), float(kp.conf[i])


def test_openpose18_csv_y_then_x_and_missing(tmp_path):
    ys = [8, 23, 23, 43, 60, 23, 43, 60, 64, 92, 118, 65, 89, 108, 5, 6, 7, -1]
    xs = [39, 37, 20, 12, 8, 53, 59, 53, 22, 24, 24, 43, 43, 45, 36, 42, 31, -1]
    f = tmp_path / "kp.csv"
    f.write_text(f"name:keypoints_y:keypoints_x\n0224_c6s1_055726_02.jpg: {ys}: {xs}\n")
    kp = read_openpose18_csv(f)["0224_c6s1_055726_02"]
    for k, name in enumerate(OPENPOSE18_NAMES):
        x, y, c = _joint(kp, name)
        if ys[k] < 0:
            assert c == 0.0
        else:
            assert (x, y, c) == (xs[k], ys[k], 1.0)
    assert _joint(kp, "left_heel")[2] == 0.0  # joints OpenPose-18 lacks stay missing


def test_openpose18_csv_bad_line_names_file_and_line(tmp_path):
    f = tmp_path / "kp.csv"
    f.write_text("name:keypoints_y:keypoints_x\nbroken line without brackets\n")
    with pytest.raises(LabelError, match=r"kp.csv:2"):
        read_openpose18_csv(f)


def test_openpose18_json_takes_best_candidate(tmp_path):
    slots = [[] for _ in range(18)]
    slots[0] = [[10, 20, 0.3, 0], [11, 21, 0.9, 5]]
    slots[5] = [[40, 50, 0.5, 1]]
    f = tmp_path / "pose.json"
    f.write_text(json.dumps({"0005_c2_f0046985": slots}))
    kp = read_openpose18_json(f)["0005_c2_f0046985"]
    assert _joint(kp, "nose") == (11.0, 21.0, 0.9)
    assert _joint(kp, "left_shoulder") == (40.0, 50.0, 0.5)
    assert kp.present().sum() == 2


def test_alphapose_people_json_openpose_order(tmp_path):
    flat = np.zeros((18, 3))
    flat[2] = (67.0, 59.0, 0.7)  # right shoulder in OpenPose order
    flat[5] = (33.0, 53.0, 0.6)  # left shoulder
    flat[16] = (73.0, 30.0, 0.8)  # right ear
    f = tmp_path / "a.json"
    f.write_text(json.dumps({"version": "AlphaPose v0.2", "people": [{"pose_keypoints_2d": flat.ravel().tolist()}]}))
    people, target = read_people_json(f)
    assert target is None and len(people) == 1
    assert _joint(people[0], "right_shoulder") == (67.0, 59.0, 0.7)
    assert _joint(people[0], "left_shoulder") == (33.0, 53.0, 0.6)
    assert _joint(people[0], "right_ear") == (73.0, 30.0, 0.8)


def test_coco17_prompt_format_is_target_picks_the_marked_person(tmp_path):
    def person(x: float, target: bool) -> dict:
        kps = [[x + j, 10.0 + 5 * j, 1.0] for j in range(17)]
        return {"keypoints": kps, "is_target": target}

    f = tmp_path / "p.json"
    # the target is the off-centre person; the centred one must not be chosen
    f.write_text(json.dumps([person(50.0, False), person(5.0, True), person(90.0, False)]))
    people, target = read_people_json(f)
    assert target == 1
    chosen = people[target]
    assert _joint(chosen, "nose") == (5.0, 10.0, 1.0)
    assert _joint(chosen, "right_ankle") == (5.0 + 16, 10.0 + 5 * 16, 1.0)  # COCO index 16


def test_select_person_nearest_centre_without_target():
    a = Keypoints.from_named({"nose": (5.0, 50.0, 1.0), "neck": (5.0, 60.0, 1.0)})
    b = Keypoints.from_named({"nose": (30.0, 50.0, 1.0), "neck": (32.0, 60.0, 1.0)})
    assert select_person([a, b], (100, 64)) is b
    assert select_person([], (100, 64)) is None


def test_mediapipe_33_normalised_landmarks():
    lm = np.zeros((33, 4))
    lm[11] = (0.75, 0.25, 0.0, 0.9)  # left shoulder
    lm[24] = (0.25, 0.5, 0.0, 0.8)  # right hip
    lm[31] = (0.5, 1.0, 0.0, 0.7)  # left foot index -> left toe
    kp = keypoints_from_mediapipe(lm, (200, 100))
    # normalised x * width - 0.5 (pixel-centre convention)
    assert _joint(kp, "left_shoulder") == pytest.approx((74.5, 49.5, 0.9))
    assert _joint(kp, "right_hip") == pytest.approx((24.5, 99.5, 0.8))
    assert _joint(kp, "left_toe") == pytest.approx((49.5, 199.5, 0.7))
    assert kp.present().sum() == 3


def test_pifpaf_both_file_names(tmp_path):
    folder = tmp_path / "masks" / "pifpaf" / "bounding_box_train"
    folder.mkdir(parents=True)
    np.save(folder / "0001_c1_f1.npy", np.zeros((36, 4, 2), np.float32))
    np.save(folder / "0002_c1_f2.jpg.confidence_fields.npy", np.ones((36, 4, 2), np.float32))
    root = tmp_path / "masks" / "pifpaf"
    p1 = pifpaf_path(root, "bounding_box_train", "/data/bounding_box_train/0001_c1_f1.jpg")
    p2 = pifpaf_path(root, "bounding_box_train", "/data/bounding_box_train/0002_c1_f2.jpg")
    assert p1.name == "0001_c1_f1.npy" and p2.name == "0002_c1_f2.jpg.confidence_fields.npy"
    assert pifpaf_path(root, "bounding_box_train", "0003_c1_f3.jpg") is None
    assert read_pifpaf_fields(p2).shape == (36, 4, 2)
    np.save(folder / "bad.npy", np.zeros((17, 4, 2)))
    with pytest.raises(LabelError, match="36"):
        read_pifpaf_fields(folder / "bad.npy")


def test_pifpaf_argmax_and_threshold_hand_worked():
    # 1 x 3 field map; PifPaf order: 0 nose, 6 right_shoulder, 15 left_ankle; 17+5 = left_shoulder_to_left_hip
    fields = np.zeros((36, 1, 3), np.float32)
    fields[0, 0] = (0.9, 0.1, 0.0)  # nose -> head
    fields[6, 0] = (0.5, 0.8, 0.0)  # right_shoulder -> right arm
    fields[22, 0] = (0.2, 0.2, 0.25)  # left_shoulder_to_left_hip -> torso
    fields[15, 0] = (0.0, 0.0, 0.29)  # left_ankle -> left foot, but below 0.3 like everything at x=2
    label = pifpaf_to_label(fields, 1, 3, threshold=0.3)
    assert label.tolist() == [[HEAD, R_ARM, 0]]
    assert pifpaf_to_label(fields, 1, 3, threshold=0.2).tolist() == [[HEAD, R_ARM, L_FOOT]]


def test_pifpaf_hip_to_hip_limb_is_torso_only():
    fields = np.zeros((36, 2, 2), np.float32)
    fields[17 + 4] = 1.0  # left_hip_to_right_hip
    assert (pifpaf_to_label(fields, 2, 2) == TORSO).all()


def test_pifpaf_resizes_to_image():
    fields = np.zeros((36, 2, 2), np.float32)
    fields[0, 0, :] = 1.0  # nose field on the top row
    label = pifpaf_to_label(fields, 8, 4)
    assert label.shape == (8, 4)
    assert (label[:2] == HEAD).all() and (label[-2:] == 0).all()


def test_lip_png_mapping(tmp_path):
    # LIP classes: 2 hair, 13 face, 5 upper-clothes, 14 left-arm, 15 right-arm, 3 glove, 9 pants,
    # 16 left-leg, 17 right-leg, 18 left-shoe, 19 right-shoe
    # the person faces the camera: their left leg / shoe is on the image right
    cls = np.array(
        [
            [0, 2, 2, 0],
            [0, 13, 13, 0],
            [15, 5, 5, 14],
            [3, 5, 5, 0],
            [0, 9, 9, 0],
            [0, 17, 16, 0],
            [0, 19, 18, 0],
        ],
        dtype=np.uint8,
    )
    f = tmp_path / "lip.png"
    Image.fromarray(cls, mode="L").save(f)
    label = read_lip_label(f)
    expected = np.array(
        [
            [0, HEAD, HEAD, 0],
            [0, HEAD, HEAD, 0],
            [R_ARM, TORSO, TORSO, L_ARM],
            [R_ARM, TORSO, TORSO, 0],  # glove on the image left = the right hand of a facing person
            [0, R_LEG, L_LEG, 0],  # pants split by side
            [0, R_LEG, L_LEG, 0],
            [0, R_FOOT, L_FOOT, 0],
        ]
    )
    np.testing.assert_array_equal(label, expected)
    mirrored = read_lip_label_from_array(tmp_path, cls[:, ::-1].copy())
    # seen from behind (left classes on the image left) the pants split follows the leg classes
    assert mirrored[4].tolist() == [0, L_LEG, R_LEG, 0]


def read_lip_label_from_array(tmp_path, cls: np.ndarray) -> np.ndarray:
    f = tmp_path / "lip2.png"
    Image.fromarray(cls, mode="L").save(f)
    return read_lip_label(f)


def test_lip_dress_splits_at_hip_line(tmp_path):
    cls = np.full((10, 2), 6, dtype=np.uint8)  # a dress from row 0 to row 9
    cls[:, 0], cls[:, 1] = 6, 6
    cls[9] = (19, 18)  # shoes: facing the camera
    label = read_lip_label_from_array(tmp_path, cls)
    # garment rows 0..8, hip line at 0 + 0.45 * 8 = 3.6: rows 0-3 torso, rows 4-8 legs
    assert (label[:4] == TORSO).all()
    assert label[4:9, 0].tolist() == [R_LEG] * 5 and label[4:9, 1].tolist() == [L_LEG] * 5


def test_lip_rejects_out_of_range(tmp_path):
    with pytest.raises(LabelError, match="0..19"):
        read_lip_label_from_array(tmp_path, np.full((2, 2), 25, np.uint8))


def test_groupings_match_bpbreid_and_head_first():
    # BPBReID `eight`: head, left_arm, right_arm, torso, left_leg, right_leg, left_feet, right_feet
    assert part_names("eight") == [
        "head", "left_arm", "right_arm", "torso", "left_leg", "right_leg", "left_foot", "right_foot",
    ]  # fmt: skip
    atomic = np.arange(9, dtype=np.uint8)[None]
    assert group_label(atomic, "eight").tolist() == [[0, 1, 4, 2, 3, 5, 6, 7, 8]]
    # BPBReID `five`: head, arms, torso, legs, feet
    assert group_label(atomic, "five").tolist() == [[0, 1, 3, 2, 2, 4, 4, 5, 5]]
    with pytest.raises(LabelError, match="unknown part grouping"):
        grouping_lut("six_v")
    for name in GROUPINGS:
        assert grouping_lut(name)[HEAD] == 1


def test_five_v_cuts_torso_and_arms_at_the_middle_row_of_their_extent():
    # BPBReID `five_v`: head, upper torso (+ upper arms), lower torso (+ forearms), legs, feet
    assert part_names("five_v") == ["head", "upper_torso", "lower_torso", "legs", "feet"]
    a = {n: i + 1 for i, n in enumerate(
        ["head", "torso", "left_arm", "right_arm", "left_leg", "right_leg", "left_foot", "right_foot"])}
    m = np.zeros((12, 3), np.uint8)
    m[0:2, 1] = a["head"]
    m[2:8, 1] = a["torso"]
    m[2:7, 0] = a["left_arm"]
    m[3:9, 2] = a["right_arm"]  # the band spans rows 2..8, so its middle is row 5
    m[9:11, 1] = a["left_leg"]
    m[11, 1] = a["right_foot"]
    want = np.zeros_like(m)
    for r in range(12):
        for c in range(3):
            v = m[r, c]
            if v == a["head"]:
                want[r, c] = 1
            elif v in (a["torso"], a["left_arm"], a["right_arm"]):
                want[r, c] = 2 if r <= 5 else 3
            elif v == a["left_leg"]:
                want[r, c] = 4
            elif v == a["right_foot"]:
                want[r, c] = 5
    got = group_label(m, "five_v")
    assert got.tolist() == want.tolist()
    # batched maps are split per map: a second map whose band is rows 0..1 splits at row 0.5
    m2 = np.zeros_like(m)
    m2[0:2, :] = a["torso"]
    both = group_label(np.stack([m, m2]), "five_v")
    assert both[0].tolist() == want.tolist()
    assert both[1, 0].tolist() == [2, 2, 2] and both[1, 1].tolist() == [3, 3, 3] and not both[1, 2:].any()
    # no torso or arms at all: nothing to split, nothing breaks
    assert group_label(np.zeros((4, 2), np.uint8), "five_v").tolist() == [[0, 0]] * 4
