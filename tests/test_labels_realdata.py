"""Part-label readers on the shared real keypoint files (skipped without OCCREID_DATA)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occreid.labels.keypoint_files import read_openpose18_csv, read_openpose18_json, read_people_json
from occreid.labels.make import make_labels
from occreid.labels.rasterise import rasterise_keypoints

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def market_keypoints(data_root):
    path = data_root / "Market-1501" / "keypoints_openpose18_train.csv"
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    return read_openpose18_csv(path)


def test_market_csv_parses_every_training_image(data_root, market_keypoints):
    images = {p.stem for p in (data_root / "Market-1501" / "bounding_box_train").glob("*.jpg")}
    assert len(market_keypoints) == 12936 and set(market_keypoints) == images
    with_joints = sum(bool(k.present().any()) for k in market_keypoints.values())
    assert with_joints >= 0.95 * 12936


def test_market_sample_rasterises_to_plausible_labels(data_root, market_keypoints):
    names = sorted(market_keypoints)
    rng = np.random.default_rng(0)
    sample = [names[i] for i in rng.choice(len(names), size=200, replace=False)]
    non_empty, both, head_above_feet = 0, 0, 0
    for stem in sample:
        with Image.open(data_root / "Market-1501" / "bounding_box_train" / f"{stem}.jpg") as im:
            w, h = im.size
        label = rasterise_keypoints(market_keypoints[stem], h, w)
        assert label.shape == (h, w) and label.max() <= 8
        non_empty += bool(label.any())
        rows_head, rows_feet = np.nonzero(label == 1)[0], np.nonzero(label >= 7)[0]
        if rows_head.size and rows_feet.size:
            both += 1
            head_above_feet += rows_head.mean() < rows_feet.mean()
    assert non_empty >= 0.9 * 200
    assert both >= 100 and head_above_feet >= 0.95 * both


def test_duke_pose_json_and_alphapose_and_prompt_files(data_root):
    duke = read_openpose18_json(data_root / "keypoints" / "dukemtmc_query_openpose18.json")
    assert len(duke) == 2228
    mini = data_root / "mini" / "Occluded_Duke"
    for f in sorted((mini / "keypoints_alphapose_sep-json").glob("*.json")):
        people, target = read_people_json(f)
        assert people and target is None
    demo = data_root / "kpr_prompt_demo"
    files = sorted(demo.glob("*/keypoints/*.json"))
    assert len(files) == 6
    for f in files:
        people, target = read_people_json(f)
        assert target is not None and people[target].present().any()


def test_make_labels_on_mini_occluded_duke_queries(data_root, tmp_path):
    mini = data_root / "mini" / "Occluded_Duke"
    kp_file = mini / "keypoints_openpose18_DukeMTMC-Pose_query_points_subset.json"
    queries = sorted((mini / "query").glob("*.jpg"))
    report = make_labels({"query": queries}, "keypoints", tmp_path, keypoints_file=kp_file, workers=1, progress=False)
    index = read_openpose18_json(kp_file)
    covered = {Path(p).stem for p in queries} & set(index)
    with_joints = sum(bool(index[s].present(0.1).any()) for s in covered)
    assert report.images == len(queries) and report.no_source == len(queries) - len(covered)
    assert report.labelled + report.empty == len(covered) and report.labelled >= 0.9 * with_joints
