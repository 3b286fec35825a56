"""Synthetic occluded-pedestrian generator: determinism, Market layout, exact labels, occlusion truth."""

from __future__ import annotations

import csv
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occreid.data.synth import (
    ImageSpec,
    SynthConfig,
    generate,
    image_specs,
    occluded_fractions,
    read_synth_config,
    read_synth_meta,
    render_person,
)
from occreid.errors import ConfigError, DatasetError
from occreid.labels.format import read_label

SMALL = {"ids": 12, "cams": 2, "images_per_id_cam": 2, "queries_per_id": 2, "seed": 3}
FOLDERS = {"bounding_box_train": "train", "query": "query", "bounding_box_test": "gallery"}
MARKET_NAME = re.compile(r"^(\d{4})_c(\d)s(\d)_(\d{6})_(\d{2})\.jpg$")
PARTS = ("head", "torso", "left_arm", "right_arm", "left_leg", "right_leg", "left_foot", "right_foot")


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, SynthConfig, dict]:
    out = tmp_path_factory.mktemp("synth") / "a"
    summary = generate(out, **SMALL, workers=1, progress=False)
    return out, SynthConfig(**SMALL), summary


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _parse(root: Path) -> list[tuple[str, str, int, int]]:
    """(folder, file name, pid, cam) of every image, parsed with the Market-1501 naming rule."""
    out = []
    for folder in FOLDERS:
        for p in sorted((root / folder).iterdir()):
            m = MARKET_NAME.match(p.name)
            assert m, f"not a Market name: {folder}/{p.name}"
            out.append((folder, p.name, int(m.group(1)), int(m.group(2))))
    return out


def _specs_by_file(cfg: SynthConfig) -> dict[str, ImageSpec]:
    specs = {s.image_relpath: s for s in image_specs(cfg)}
    assert len(specs) == len(image_specs(cfg))
    return specs


def test_same_seed_is_byte_identical_whatever_the_workers_and_another_seed_differs(small, tmp_path):
    root, _, _ = small
    again = tmp_path / "b"
    generate(again, **SMALL, workers=2, progress=False)
    first, second = _files(root), _files(again)
    assert sorted(first) == sorted(second)
    assert all(first[k] == second[k] for k in first)

    other = tmp_path / "c"
    generate(other, **{**SMALL, "seed": 4}, workers=1, progress=False)
    third = _files(other)
    jpgs = [k for k in first if k.endswith(".jpg")]
    assert sorted(third) == sorted(first)  # same plan, other pixels
    assert sum(first[k] != third[k] for k in jpgs) == len(jpgs)


def test_market_layout_identity_split_and_cameras(small):
    root, cfg, summary = small
    images = _parse(root)
    by_folder: dict[str, list[tuple[int, int]]] = {f: [] for f in FOLDERS}
    for folder, _, pid, cam in images:
        by_folder[folder].append((pid, cam))
        assert 1 <= cam <= SMALL["cams"]
    train_ids = {pid for pid, _ in by_folder["bounding_box_train"]}
    test_ids = {pid for pid, _ in by_folder["bounding_box_test"]}
    assert train_ids.isdisjoint(test_ids)
    assert train_ids | test_ids == set(range(1, SMALL["ids"] + 1))
    assert len(train_ids) == len(test_ids) == SMALL["ids"] // 2
    assert {pid for pid, _ in by_folder["query"]} == test_ids
    per_id = SMALL["cams"] * SMALL["images_per_id_cam"]
    for pid in train_ids:
        assert sum(p == pid for p, _ in by_folder["bounding_box_train"]) == per_id
    for pid, qcam in by_folder["query"]:
        gallery_cams = [c for p, c in by_folder["bounding_box_test"] if p == pid]
        assert any(c != qcam for c in gallery_cams) and any(c == qcam for c in gallery_cams)
    assert len(by_folder["query"]) == SMALL["queries_per_id"] * len(test_ids)
    names = [name for _, name, _, _ in images]
    assert len(names) == len(set(names))
    assert summary["images"] == {
        "train": len(by_folder["bounding_box_train"]),
        "query": len(by_folder["query"]),
        "gallery": len(by_folder["bounding_box_test"]),
    }
    assert summary["seconds"] >= 0
    assert json.loads((root / "synth.json").read_text())["ids"] == SMALL["ids"]
    assert read_synth_config(root) == cfg


def test_labels_have_the_image_shape_and_are_exactly_the_rendered_labels(small):
    root, cfg, _ = small
    specs = _specs_by_file(cfg)
    for folder, name, _, _ in _parse(root):
        label_file = root / "occreid_labels" / folder / name.replace(".jpg", ".png")
        label = read_label(label_file)
        with Image.open(root / folder / name) as im:
            assert im.mode == "RGB"
            image = np.asarray(im, np.float64)
        assert label.shape == image.shape[:2] == (cfg.height, cfg.width)
        assert label.dtype == np.uint8 and label.max() <= 8
        spec = specs[f"{folder}/{name}"]
        rendered = render_person(cfg, spec)
        assert np.array_equal(label, rendered.label)
        assert np.abs(image - rendered.image).mean() < 8  # the JPEG is the rendered image
        if not spec.occluded:
            assert np.array_equal(label, rendered.unoccluded_label)
            for k in (1, 2):  # head and torso are always in view
                assert np.count_nonzero(label == k) > 20


def test_every_query_hides_over_half_of_some_part_and_meta_records_it(small):
    root, cfg, _ = small
    meta = {row["file"]: row for row in read_synth_meta(root)}
    specs = _specs_by_file(cfg)
    assert len(meta) == len(_parse(root))
    queries = [r for r in meta.values() if r["split"] == "query"]
    assert queries and all(r["file"].startswith("query/") for r in queries)
    for row in meta.values():
        spec = specs[row["file"]]
        assert (row["split"], int(row["pid"]), int(row["cam"])) == (spec.split, spec.pid, spec.cam)
        label = read_label(root / row["label"])
        full = render_person(cfg, spec, with_occluders=False).label
        assert np.all((label == 0) | (label == full))  # occluded pixels become background, nothing else
        visible = []
        for k, part in enumerate(PARTS, start=1):
            n_full, n_seen = int(np.sum(full == k)), int(np.sum(label == k))
            recorded = float(row[f"occluded_{part}"])
            if n_full == 0:
                assert math.isnan(recorded)
                continue
            assert recorded == pytest.approx(1 - n_seen / n_full, abs=1e-4)
            if n_full >= 4:
                visible.append(n_seen / n_full)
        body = 1 - np.count_nonzero(label) / np.count_nonzero(full)
        assert float(row["occluded_body"]) == pytest.approx(body, abs=1e-4)
        if row["split"] == "query":
            assert spec.occluded and row["occluders"] != "none"
            assert min(visible) < 0.5
            assert body <= 0.75  # a quarter of the person stays visible
        if row["occluders"] == "none":
            assert body == 0


def test_occluded_fractions_hand_worked():
    unoccluded = np.array([[1, 1, 2, 2], [1, 1, 2, 0]], np.uint8)
    label = np.array([[1, 0, 2, 2], [0, 0, 0, 0]], np.uint8)
    got = occluded_fractions(label, unoccluded)
    assert got.shape == (8,)
    assert got[0] == pytest.approx(3 / 4)  # head: 4 pixels, 1 still visible
    assert got[1] == pytest.approx(1 / 3)  # torso: 3 pixels, 2 still visible
    assert np.all(np.isnan(got[2:]))  # parts not in the unoccluded render


def _mean_pairwise(groups: dict[int, list[np.ndarray]]) -> tuple[float, float]:
    """Mean distance between items of the same group and between items of different groups."""
    items = [(g, v) for g, vs in groups.items() for v in vs]
    within, across = [], []
    for (g1, v1), (g2, v2) in itertools.combinations(items, 2):
        (within if g1 == g2 else across).append(float(np.sqrt(np.sum((v1 - v2) ** 2))))
    return float(np.mean(within)), float(np.mean(across))


def test_identities_differ_in_torso_colour_and_cameras_in_background(small):
    root, _, _ = small
    torso: dict[int, list[np.ndarray]] = {}
    background: dict[int, list[np.ndarray]] = {}
    for row in read_synth_meta(root):
        if row["occluders"] != "none":
            continue
        with Image.open(root / row["file"]) as im:
            image = np.asarray(im, np.float64)
        label = read_label(root / row["label"])
        torso.setdefault(int(row["pid"]), []).append(image[label == 2].mean(axis=0))
        background.setdefault(int(row["cam"]), []).append(image[label == 0].mean(axis=0))
    within, across = _mean_pairwise(torso)
    assert across > 2 * within
    within, across = _mean_pairwise(background)
    assert across > 2 * within


def test_left_and_right_follow_the_facing_direction():
    cfg = SynthConfig(ids=8, cams=4, images_per_id_cam=3, seed=1)
    seen = {"front": 0, "back": 0}
    for spec in image_specs(cfg):
        r = render_person(cfg, spec, with_occluders=False)
        if abs(r.facing_deg) > 30 and abs(r.facing_deg) < 150:
            continue
        cols = np.arange(cfg.width)[None, :].repeat(cfg.height, axis=0)
        left = cols[np.isin(r.label, (3, 5, 7))].mean()
        right = cols[np.isin(r.label, (4, 6, 8))].mean()
        if abs(r.facing_deg) <= 30:  # facing the camera: the person's left is on the image right
            assert left > right
            seen["front"] += 1
        else:
            assert left < right
            seen["back"] += 1
    assert seen["front"] > 0 and seen["back"] > 0


def test_bad_settings_and_occupied_folders_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="ids"):
        SynthConfig(ids=1)
    with pytest.raises(ConfigError, match="cams"):
        SynthConfig(cams=10)
    with pytest.raises(ConfigError, match="gallery_occluded_fraction"):
        SynthConfig(gallery_occluded_fraction=1.5)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="synth.json"):
        generate(foreign, ids=2, cams=2, images_per_id_cam=1, queries_per_id=1, workers=1, progress=False)
    out = tmp_path / "tiny"
    tiny = {"ids": 2, "cams": 2, "images_per_id_cam": 1, "queries_per_id": 1, "workers": 1, "progress": False}
    generate(out, **tiny)
    with pytest.raises(DatasetError, match="overwrite"):
        generate(out, **tiny)
    summary = generate(out, **tiny, seed=9, overwrite=True)
    assert read_synth_config(out).seed == 9
    with open(out / "synth_meta.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == sum(summary["images"].values())
