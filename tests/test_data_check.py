"""`data check` on generated trees: corrupt and truncated images, duplicates, missing matches."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occreid.data.check import check_dataset, cross_camera_matches
from occreid.data.records import Record


def jpeg_bytes(seed: int = 0, size: tuple[int, int] = (32, 64)) -> bytes:
    noise = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def market_tree(base: Path, files: dict[str, bytes]) -> Path:
    folder = base / "Market-1501"
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    return folder


def healthy_files() -> dict[str, bytes]:
    good = jpeg_bytes()
    return {
        "bounding_box_train/0001_c1s1_000001_01.jpg": good,
        "bounding_box_train/0001_c2s1_000002_01.jpg": good,
        "query/0003_c1s1_000003_01.jpg": good,
        "query/0004_c2s1_000004_01.jpg": good,
        "bounding_box_test/0003_c2s1_000005_01.jpg": good,
        "bounding_box_test/0004_c1s1_000006_01.jpg": good,
    }


def test_healthy_dataset_is_ok(tmp_path):
    market_tree(tmp_path, healthy_files())
    report = check_dataset("market1501", tmp_path, progress=False)
    assert report.ok and report.errors == [] and report.warnings == []
    assert report.info["images_verified"] == 6 and report.info["unreadable"] == []
    assert report.info["stats"]["query"] == {"images": 2, "ids": 2, "cams": 2}
    as_dict = json.loads(json.dumps(report.to_dict()))
    assert as_dict["ok"] is True and as_dict["dataset"] == "market1501"
    assert "result: OK" in report.to_text()


def test_corrupt_and_truncated_images_are_errors(tmp_path):
    files = healthy_files()
    full = jpeg_bytes(seed=1, size=(64, 128))
    files["bounding_box_train/0001_c3s1_000007_01.jpg"] = full[: len(full) // 2]  # truncated
    files["bounding_box_test/0003_c3s1_000008_01.jpg"] = b"this is not an image at all"
    market_tree(tmp_path, files)
    report = check_dataset("market1501", tmp_path, progress=False, workers=2)
    assert not report.ok
    bad = {Path(p).name for p in report.info["unreadable"]}
    assert bad == {"0001_c3s1_000007_01.jpg", "0003_c3s1_000008_01.jpg"}
    assert len(report.errors) == 1
    assert "2 images are unreadable" in report.errors[0] and "0003_c3s1_000008_01.jpg" in report.errors[0]
    assert "FAILED" in report.to_text()
    skipped = check_dataset("market1501", tmp_path, verify_images=False)
    assert skipped.ok and "unreadable" not in skipped.info


def test_duplicated_query_files_are_counted(tmp_path):
    files = healthy_files()
    for name in ("0003_c1s1_000003_01.jpg", "0004_c2s1_000004_01.jpg"):
        files[f"bounding_box_test/{name}"] = files[f"query/{name}"]
    market_tree(tmp_path, files)
    report = check_dataset("market1501", tmp_path, verify_images=False)
    assert report.ok
    assert report.info["duplicated_query_files"] == 2
    assert any(w.startswith("2 query files also sit in the gallery") for w in report.warnings)


def test_same_name_with_other_id_is_not_a_duplicate(tmp_path):
    good = jpeg_bytes()
    folder = tmp_path / "Partial_iLIDS"
    for sub in ("Probe", "Gallery"):
        (folder / sub).mkdir(parents=True)
        for i in (1, 2):
            (folder / sub / f"{i}.jpg").write_bytes(good)
    report = check_dataset("partial_ilids", tmp_path, verify_images=False)
    assert report.ok and report.info["duplicated_query_files"] == 0 and report.warnings == []


def test_query_ids_absent_from_gallery_warn_with_count(tmp_path):
    files = healthy_files()
    files["query/0009_c1s1_000010_01.jpg"] = files["query/0003_c1s1_000003_01.jpg"]
    files["query/0009_c2s1_000011_01.jpg"] = files["query/0003_c1s1_000003_01.jpg"]
    market_tree(tmp_path, files)
    report = check_dataset("market1501", tmp_path, verify_images=False)
    assert report.ok
    assert any(w.startswith("1 query ids (2 query images) have no image in the gallery") for w in report.warnings)
    assert report.info["queries_with_match"] == 2


def test_no_cross_camera_match_is_an_error_with_camera_hint(tmp_path):
    good = jpeg_bytes()
    files = {
        "query/0003_c1s1_000003_01.jpg": good,
        "bounding_box_test/0003_c1s1_000005_01.jpg": good,  # same id, same camera only
        "bounding_box_test/0007_c2s1_000006_01.jpg": good,
    }
    market_tree(tmp_path, files)
    report = check_dataset("market1501", tmp_path, verify_images=False)
    assert not report.ok
    assert any("no query has a match" in e and "camera ids" in e for e in report.errors)


def test_empty_query_is_an_error_and_bad_names_warn(tmp_path):
    good = jpeg_bytes()
    folder = market_tree(tmp_path, {"bounding_box_test/0003_c1s1_000005_01.jpg": good, "query/oops.jpg": good})
    (folder / "bounding_box_train").mkdir()
    report = check_dataset("market1501", tmp_path, verify_images=False)
    assert "the query split is empty" in report.errors
    assert any("query/: 1 entries whose names do not parse" in w and "oops.jpg" in w for w in report.warnings)
    assert "the train split is empty" in report.warnings


def test_missing_dataset_is_one_error(tmp_path):
    report = check_dataset("occluded_duke", tmp_path)
    assert not report.ok and len(report.errors) == 1
    assert "Occluded_Duke" in report.errors[0] and "bounding_box_test/" in report.errors[0]
    assert report.to_dict()["ok"] is False


def test_absent_splits_warn(tmp_path):
    market_tree(tmp_path, {"bounding_box_train/0001_c1s1_000001_01.jpg": jpeg_bytes()})
    report = check_dataset("market1501", tmp_path, verify_images=False)
    assert report.ok
    assert sum(w.startswith("no query split") or w.startswith("no gallery split") for w in report.warnings) == 2


def expected_matches(query: list[tuple[int, int]], gallery: list[tuple[int, int]]) -> list[int]:
    """Distinct gallery cameras holding the query's id, other than the query's own camera."""
    out = []
    for qp, qc in query:
        cams = set()
        for gp, gc in gallery:
            if gp == qp and gc != qc:
                cams.add(gc)
        out.append(len(cams))
    return out


def records(pairs: list[tuple[int, int]]) -> list[Record]:
    return [Record(f"{i}.jpg", p, c) for i, (p, c) in enumerate(pairs)]


def test_cross_camera_matches_hand_worked():
    query = [(1, 0), (2, 1), (3, 0)]
    gallery = [(1, 0), (1, 1), (1, 2), (1, 2), (2, 1), (4, 0)]
    # id 1: cameras {0, 1, 2}, own camera 0 excluded -> 2; id 2 only under its own camera -> 0; id 3 absent
    assert cross_camera_matches(records(query), records(gallery)).tolist() == [2, 0, 0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cross_camera_matches_against_loops(seed):
    rng = np.random.default_rng(seed)
    query = [(int(p), int(c)) for p, c in zip(rng.integers(-1, 8, 30), rng.integers(0, 4, 30))]
    gallery = [(int(p), int(c)) for p, c in zip(rng.integers(0, 10, 60), rng.integers(0, 5, 60))]
    got = cross_camera_matches(records(query), records(gallery))
    assert got.tolist() == expected_matches(query, gallery)


def test_part_labels_are_checked_against_their_images(tmp_path):
    """Images are 64x32 (HxW): a 64x32 label is fine, 32x16 is rescaled (warning), 64x64 would be
    stretched (error), a corrupt PNG is unreadable (error)."""
    from occreid.labels.format import write_label

    market_tree(tmp_path, healthy_files())
    labels = tmp_path / "Market-1501" / "occreid_labels"
    write_label(labels / "query" / "0003_c1s1_000003_01.png", np.zeros((64, 32), np.uint8))
    write_label(labels / "query" / "0004_c2s1_000004_01.png", np.zeros((32, 16), np.uint8))
    write_label(labels / "bounding_box_test" / "0003_c2s1_000005_01.png", np.zeros((64, 64), np.uint8))
    (labels / "bounding_box_train").mkdir(parents=True)
    (labels / "bounding_box_train" / "0001_c1s1_000001_01.png").write_bytes(b"not a png")
    report = check_dataset("market1501", tmp_path, progress=False, workers=1)
    assert report.info["labels_checked"] == 4 and not report.ok
    stretched = [e for e in report.errors if "another aspect ratio" in e]
    assert len(stretched) == 1 and "0003_c2s1_000005_01.png" in stretched[0] and "64x64" in stretched[0]
    assert any("unreadable" in e and "0001_c1s1_000001_01.png" in e for e in report.errors)
    (rescaled,) = [w for w in report.warnings if "another resolution" in w]
    assert "0004_c2s1_000004_01.png" in rescaled and "0003_c1s1" not in rescaled
    no_open = check_dataset("market1501", tmp_path, progress=False, verify_images=False)
    assert "labels_checked" not in no_open.info
