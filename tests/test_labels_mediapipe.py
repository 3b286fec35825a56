"""MediaPipePose logic with a stand-in for the mediapipe solution (the real one is an optional extra)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from occreid.labels.keypoints import JOINT_INDEX
from occreid.labels.mediapipe_pose import MediaPipePose


class _FakeSolution:
    """Returns one person whose landmarks all sit at normalised (x, 0.5) of the image it is given."""

    def __init__(self, xs: list[float]) -> None:
        self.xs = list(xs)
        self.shapes: list[tuple[int, ...]] = []

    def process(self, image: np.ndarray) -> SimpleNamespace:
        self.shapes.append(image.shape)
        x = self.xs.pop(0)
        marks = [SimpleNamespace(x=x, y=0.5, z=0.0, visibility=0.9) for _ in range(33)]
        seg = np.zeros(image.shape[:2], np.float32)
        seg[:, : image.shape[1] // 2] = 1.0
        return SimpleNamespace(pose_landmarks=SimpleNamespace(landmark=marks), segmentation_mask=seg)

    def close(self) -> None:
        pass


def _estimator(xs: list[float]) -> MediaPipePose:
    est = MediaPipePose.__new__(MediaPipePose)  # skip the mediapipe import
    est.mode, est.target_height, est.mask_threshold, est.recentre_beyond, est.window = (
        "detector", 256, 0.5, 0.2, (0.15, 0.85))
    est._pose = _FakeSolution(xs)
    return est


class _FakeRoiGraph:
    """Stands in for the landmark-by-ROI graph: no person for the first `misses` ROIs, then landmarks at
    normalised (0.25, 0.75) and a half-resolution soft mask covering the top half."""

    def __init__(self, misses: int) -> None:
        self.misses = misses
        self.rois: list = []

    def process(self, inputs: dict) -> SimpleNamespace:
        self.rois.append(inputs["roi"])
        if len(self.rois) <= self.misses:
            return SimpleNamespace(landmarks=None, mask=None)
        h, w = inputs["image"].shape[:2]
        marks = [SimpleNamespace(x=0.25, y=0.75, z=0.0, visibility=0.8) for _ in range(33)]
        seg = np.zeros((h // 2, w // 2), np.float32)
        seg[: h // 4] = 0.9
        return SimpleNamespace(landmarks=SimpleNamespace(landmark=marks), mask=seg)

    def close(self) -> None:
        pass


def _crop_estimator(misses: int, scales=(1.5, 1.25, 1.75)) -> MediaPipePose:
    est = MediaPipePose.__new__(MediaPipePose)
    est.mode, est.roi_scales, est.mask_threshold = "crop", tuple(scales), 0.5
    est._pose, est._rect = _FakeRoiGraph(misses), dict
    return est


def test_crop_mode_uses_the_crop_as_a_square_centred_roi_and_maps_back():
    est = _crop_estimator(misses=0)
    kp, mask = est.estimate(np.zeros((128, 64, 3), np.uint8))
    roi = est._pose.rois[0]
    # square in pixels: 1.5 x 128 = 192 px = 192 / 64 = 3 crop widths, 1.5 crop heights
    assert roi == {"x_center": 0.5, "y_center": 0.5, "width": 3.0, "height": 1.5, "rotation": 0.0}
    assert kp.xy[JOINT_INDEX["right_knee"]].tolist() == pytest.approx([0.25 * 64 - 0.5, 0.75 * 128 - 0.5])
    assert kp.conf[JOINT_INDEX["right_knee"]] == pytest.approx(0.8)
    assert mask.shape == (128, 64) and mask[:60].all() and not mask[68:].any()


def test_crop_mode_tries_the_next_scale_when_nobody_is_found():
    est = _crop_estimator(misses=2)
    kp, _ = est.estimate(np.zeros((100, 50, 3), np.uint8))
    assert [r["height"] for r in est._pose.rois] == [1.5, 1.25, 1.75] and kp is not None
    est = _crop_estimator(misses=3)
    assert est.estimate(np.zeros((100, 50, 3), np.uint8)) == (None, None)


def test_unknown_mode_is_a_clear_error():
    from occreid.errors import LabelError

    with pytest.raises(LabelError, match="'crop' or 'detector'"):
        MediaPipePose(mode="pifpaf")


def test_upscales_and_maps_back_to_crop_pixels():
    est = _estimator([0.5])
    kp, mask = est.estimate(np.zeros((64, 32, 3), np.uint8))
    assert est._pose.shapes == [(256, 128, 3)]  # upscaled to 256 px high, aspect kept
    assert kp.xy[JOINT_INDEX["left_shoulder"]].tolist() == pytest.approx([0.5 * 32 - 0.5, 0.5 * 64 - 0.5])
    assert mask.shape == (64, 32) and mask[:, :16].all() and not mask[:, 16:].any()


def test_off_centre_person_is_replaced_by_the_central_one():
    # full crop: person at x = 0.05 (far left); central window [15 %, 85 %] of a 100 px crop: person at
    # its middle, i.e. crop x = 15 + 0.5 * 70 - 0.5
    est = _estimator([0.05, 0.5])
    kp, mask = est.estimate(np.zeros((200, 100, 3), np.uint8))
    assert len(est._pose.shapes) == 2 and est._pose.shapes[1][1] == round(70 * 256 / 200)
    assert kp.xy[JOINT_INDEX["nose"], 0] == pytest.approx(15 + (0.5 * 70 - 0.5))
    assert not mask[:, :15].any() and mask[:, 15:50].all() and not mask[:, 50:].any()


def test_centred_person_needs_one_pass():
    est = _estimator([0.52])
    kp, _ = est.estimate(np.zeros((256, 128, 3), np.uint8))
    assert len(est._pose.shapes) == 1 and kp is not None


@pytest.mark.parametrize("mode", ["crop", "detector"])
def test_real_mediapipe_labels_synthetic_people(tmp_path, mode):
    """The real estimator (extra `pose`, installed by `make test`) on rendered people, in both modes: it
    must find most of them and its body mask must overlap the exact one."""
    pytest.importorskip("mediapipe", reason="the `pose` extra (mediapipe) is not installed")
    from occreid.data.synth import generate
    from occreid.labels.format import read_label
    from occreid.labels.make import make_labels

    data = tmp_path / "syn"
    generate(data, ids=4, cams=2, images_per_id_cam=2, queries_per_id=1, seed=3, workers=1, progress=False)
    images = sorted((data / "bounding_box_train").glob("*.jpg"))[:6]
    report = make_labels({"bounding_box_train": images}, "mediapipe", tmp_path / "labels", workers=1,
                         progress=False, mediapipe_options={"mode": mode})
    assert report.images == 6 and report.failed == 0
    assert report.labelled >= 4, report.to_text()
    ious = []
    for img in images:
        made = tmp_path / "labels" / "bounding_box_train" / (img.stem + ".png")
        if not made.is_file():
            continue
        truth = read_label(data / "occreid_labels" / "bounding_box_train" / (img.stem + ".png")) > 0
        pred = read_label(made) > 0
        assert pred.shape == truth.shape
        ious.append((pred & truth).sum() / max((pred | truth).sum(), 1))
    assert sum(ious) / len(ious) > 0.4
