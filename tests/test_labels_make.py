"""make_labels (sources, resumability, parallel workers, coverage report), pictures and IoU."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from occreid.errors import LabelError, OccreidError
from occreid.labels import make as make_module
from occreid.labels.format import ATOMIC_PARTS, label_path_for, read_label
from occreid.labels.make import CoverageReport, make_labels
from occreid.labels.quality import confusion, part_iou
from occreid.labels.show import PALETTE, overlay, show_labels

H, W = 64, 32
SPLIT = "bounding_box_train"
# OpenPose-18 rows (y, x) of a small standing person facing the camera
Y = [8, 16, 17, 28, 38, 17, 28, 38, 34, 46, 58, 34, 46, 58, 6, 6, 7, 7]
X = [16, 16, 10, 8, 7, 22, 24, 25, 13, 13, 13, 19, 19, 19, 14, 18, 12, 20]


def _images(tmp_path, names):
    folder = tmp_path / "data" / SPLIT
    folder.mkdir(parents=True)
    paths = []
    for n in names:
        p = folder / f"{n}.jpg"
        Image.fromarray(np.full((H, W, 3), 128, np.uint8)).save(p)
        paths.append(p)
    return paths


def _csv(tmp_path, rows: dict[str, tuple[list, list]]):
    f = tmp_path / "kp.csv"
    lines = ["name:keypoints_y:keypoints_x"] + [f"{n}.jpg: {y}: {x}" for n, (y, x) in rows.items()]
    f.write_text("\n".join(lines) + "\n")
    return f


def _counts_from_files(paths):
    """Per-part number of label files containing the part, by explicit loops."""
    counts = dict.fromkeys(ATOMIC_PARTS, 0)
    for p in paths:
        present = set(np.unique(read_label(p)).tolist())
        for k, name in enumerate(ATOMIC_PARTS, start=1):
            counts[name] += k in present
    return counts


def test_keypoint_csv_coverage_and_resume(tmp_path):
    images = _images(tmp_path, ["0001_c1s1_000001_01", "0002_c1s1_000001_01", "0003_c1s1_000001_01",
                                "0004_c1s1_000001_01"])  # fmt: skip
    upper_only = ([y if k < 8 or k >= 14 else -1 for k, y in enumerate(Y)], X)
    csv = _csv(
        tmp_path,
        {
            "0001_c1s1_000001_01": (Y, X),
            "0002_c1s1_000001_01": upper_only,
            "0003_c1s1_000001_01": ([-1] * 18, [-1] * 18),  # listed, but no joint: nothing to draw
        },  # 0004 is not in the file
    )
    out = tmp_path / "labels"
    report = make_labels({SPLIT: images}, "keypoints", out, keypoints_file=csv, workers=1, progress=False)
    written = [label_path_for(out, SPLIT, p) for p in images]
    assert [p.is_file() for p in written] == [True, True, False, False]
    assert (report.images, report.labelled, report.empty, report.no_source, report.reused) == (4, 2, 1, 1, 0)
    expected = _counts_from_files(written[:2])
    assert report.part_visible == expected
    assert expected["left_leg"] == 1 and expected["head"] == 2  # the upper-body-only person has no legs
    assert report.part_fraction["head"] == pytest.approx(2 / 4)
    saved = json.loads((out / "coverage.json").read_text())
    assert saved["labelled"] == 2 and saved["part_visible"] == expected

    mtime = written[0].stat().st_mtime_ns
    again = make_labels({SPLIT: images}, "keypoints", out, keypoints_file=csv, workers=1, progress=False)
    assert (again.labelled, again.reused) == (2, 2) and again.part_visible == expected
    assert written[0].stat().st_mtime_ns == mtime  # kept, not rewritten


def test_parallel_workers_match_sequential(tmp_path, monkeypatch):
    names = [f"{k:04d}_c1s1_000001_01" for k in range(1, 4)]
    images = _images(tmp_path, names)
    csv = _csv(tmp_path, {n: (Y, [x + k for x in X]) for k, n in enumerate(names)})
    monkeypatch.setattr(make_module, "_CHUNK", 1)
    seq = make_labels({SPLIT: images}, "keypoints", tmp_path / "a", keypoints_file=csv, workers=1, progress=False)
    par = make_labels({SPLIT: images}, "keypoints", tmp_path / "b", keypoints_file=csv, workers=2, progress=False)
    assert seq.to_dict()["part_visible"] == par.to_dict()["part_visible"] and par.labelled == 3
    for p in images:
        np.testing.assert_array_equal(
            read_label(label_path_for(tmp_path / "a", SPLIT, p)), read_label(label_path_for(tmp_path / "b", SPLIT, p))
        )


def test_per_image_coco_prompt_folder_uses_target(tmp_path):
    (image,) = _images(tmp_path, ["0001_c1s1_000001_01"])
    coco = [(X[0], Y[0])] + [(0, 0)] * 4 + [(X[5], Y[5]), (X[2], Y[2]), (X[6], Y[6]), (X[3], Y[3])]
    coco += [(X[7], Y[7]), (X[4], Y[4]), (X[11], Y[11]), (X[8], Y[8]), (X[12], Y[12]), (X[9], Y[9])]
    coco += [(X[13], Y[13]), (X[10], Y[10])]
    target = [[x, y, 0.0 if (x, y) == (0, 0) else 1.0] for x, y in coco]
    bystander = [[x + 40, y, 1.0] for x, y, _ in target]  # outside the crop: must not be drawn
    kdir = tmp_path / "kp" / SPLIT
    kdir.mkdir(parents=True)
    (kdir / "0001_c1s1_000001_01.json").write_text(
        json.dumps([{"keypoints": bystander, "is_target": False}, {"keypoints": target, "is_target": True}])
    )
    report = make_labels({SPLIT: [image]}, "keypoints", tmp_path / "o", keypoints_file=tmp_path / "kp",
                         workers=1, progress=False)  # fmt: skip
    assert report.labelled == 1
    label = read_label(label_path_for(tmp_path / "o", SPLIT, image))
    assert label[Y[9], X[9]] == 6  # right knee lies in the right leg (atomic 6)


def test_pifpaf_and_lip_sources(tmp_path):
    (image,) = _images(tmp_path, ["0001_c1s1_000001_01"])
    pdir = tmp_path / "masks" / "pifpaf" / SPLIT
    pdir.mkdir(parents=True)
    fields = np.zeros((36, 8, 4), np.float32)
    fields[0, :2] = 0.9  # nose field -> head on the top quarter
    np.save(pdir / "0001_c1s1_000001_01.jpg.confidence_fields.npy", fields)
    rep = make_labels({SPLIT: [image]}, "pifpaf", tmp_path / "p", masks_dir=tmp_path / "masks" / "pifpaf",
                      workers=1, progress=False)  # fmt: skip
    assert rep.labelled == 1 and rep.part_visible["head"] == 1 and rep.part_visible["torso"] == 0
    label = read_label(label_path_for(tmp_path / "p", SPLIT, image))
    assert label.shape == (H, W) and (label[:8] == 1).all() and (label[-8:] == 0).all()

    ldir = tmp_path / "masks" / "lip" / SPLIT
    ldir.mkdir(parents=True)
    cls = np.zeros((H, W), np.uint8)
    cls[10:30, 8:24] = 5  # upper clothes -> torso
    Image.fromarray(cls, mode="L").save(ldir / "0001_c1s1_000001_01.png")
    rep = make_labels({SPLIT: [image]}, "lip", tmp_path / "l", masks_dir=tmp_path / "masks" / "lip",
                      workers=1, progress=False)  # fmt: skip
    label = read_label(label_path_for(tmp_path / "l", SPLIT, image))
    assert rep.part_visible["torso"] == 1 and (label == 2).sum() == 20 * 16


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(LabelError, match="unknown label source"):
        make_labels({}, "openpifpaf", tmp_path)
    with pytest.raises(LabelError, match="keypoints_file"):
        make_labels({}, "keypoints", tmp_path)
    with pytest.raises(LabelError, match="does not exist"):
        make_labels({SPLIT: []}, "keypoints", tmp_path, keypoints_file=tmp_path / "nope.csv")
    with pytest.raises(LabelError, match="masks"):
        make_labels({SPLIT: []}, "pifpaf", tmp_path, masks_dir=tmp_path / "nope")


def test_mediapipe_missing_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "mediapipe", None)  # an import of it now fails, installed or not
    with pytest.raises(OccreidError, match=r"occreid\[pose\]"):
        make_labels({SPLIT: []}, "mediapipe", tmp_path)


def test_report_text_and_dict():
    rep = CoverageReport(source="keypoints", images=4, labelled=3, reused=1, no_source=1, seconds=2.0)
    rep.part_visible["head"] = 3
    d = rep.to_dict()
    assert d["labelled_fraction"] == 0.75 and d["part_fraction"]["head"] == 0.75 and d["part_fraction"]["torso"] == 0
    text = rep.to_text()
    assert "3 / 4 images labelled (75.0 %)" in text and "head" in text


def test_part_iou_hand_worked():
    pred = np.array([[1, 1, 2], [0, 2, 2]])
    target = np.array([[1, 0, 2], [2, 2, 0]])
    iou = part_iou(confusion(pred, target))
    # head: pred {(0,0),(0,1)}, target {(0,0)} -> 1/2; torso: pred {(0,2),(1,1),(1,2)}, target {(0,2),(1,0),(1,1)}
    assert iou["head"] == pytest.approx(1 / 2)
    assert iou["torso"] == pytest.approx(2 / 4)
    assert np.isnan(iou["left_arm"])


def test_overlay_colours_body_only_and_adds_legend():
    image = np.full((20, 10, 3), 100, np.uint8)
    label = np.zeros((20, 10), np.uint8)
    label[5:10, 2:8] = 2
    pic = overlay(image, label, alpha=0.5)
    assert pic.width >= 10 and pic.height > 20  # legend below
    arr = np.asarray(pic)
    assert arr[0, 0].tolist() == [100, 100, 100]
    assert arr[6, 3].tolist() == [round(50 + 0.5 * c) for c in PALETTE[2]]


def test_show_labels_grid(tmp_path):
    images = _images(tmp_path, ["a", "b", "c"])
    lab = tmp_path / "a.png"
    Image.fromarray(np.ones((H, W), np.uint8), mode="L").save(lab)
    out = show_labels(images, [lab, None, lab], tmp_path / "grid.png", ncols=2, height=32)
    grid = Image.open(out)
    assert grid.width == max(2 * 16, 96) and grid.height > 2 * 32
    arr = np.asarray(grid.convert("RGB")).astype(int)
    plain, head = np.array([128, 128, 128]), np.rint(0.5 * 128 + 0.5 * PALETTE[1])
    assert np.abs(arr[10, 20] - plain).max() <= 2  # first row, second cell: image b has no label
    assert np.abs(arr[10, 5] - head).max() <= 2 and np.abs(arr[40, 5] - head).max() <= 2  # a and c


def test_sample_labels_a_seeded_subset_and_reports_it(tmp_path):
    names = [f"{k:04d}_c1s1_000001_01" for k in range(1, 7)]
    images = _images(tmp_path, names)
    csv = _csv(tmp_path, {n: (Y, X) for n in names})
    out = tmp_path / "labels"
    report = make_labels({SPLIT: images}, "keypoints", out, keypoints_file=csv, workers=1, progress=False,
                         sample=2, seed=3)
    done = [p for p in images if label_path_for(out, SPLIT, p).is_file()]
    assert len(done) == 2 and (report.images, report.labelled, report.sampled_from) == (2, 2, 6)
    assert "a random sample of 6" in report.to_text()
    again = make_labels({SPLIT: images}, "keypoints", tmp_path / "again", keypoints_file=csv, workers=1,
                        progress=False, sample=2, seed=3)
    assert [p for p in images if label_path_for(tmp_path / "again", SPLIT, p).is_file()] == done
    assert again.images == 2
    with pytest.raises(LabelError, match="--sample 0"):
        make_labels({SPLIT: images}, "keypoints", out, keypoints_file=csv, workers=1, progress=False, sample=0)
