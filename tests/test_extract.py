"""`occreid extract`: feature folders (format, fp16, merge), skipped images, resume, CLI."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import occreid.api as reid
from occreid.api import ReidModel
from occreid.errors import DatasetError
from occreid.inference.extract_folder import extract_folder, list_images
from occreid.inference.features_file import FeatureSet, merge_feature_folders, read_features, write_features
from tests.test_api import write_checkpoint


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> ReidModel:
    return reid.load(write_checkpoint(tmp_path_factory.mktemp("ckpt") / "pcb.pt", "pcb"))


@pytest.fixture
def folder(tiny_market, tmp_path) -> Path:
    """12 gallery images in two sub-folders, a corrupt one and a text file."""
    src = sorted((tiny_market / "Market-1501" / "bounding_box_test").glob("*.jpg"))[:12]
    for i, p in enumerate(src):
        dest = tmp_path / "imgs" / ("a" if i < 6 else "b") / p.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, dest)
    (tmp_path / "imgs" / "b" / "zz_broken.jpg").write_bytes(b"garbage")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    return tmp_path / "imgs"


def run_cli(argv: list[str]) -> int:
    from occreid.cli import use_cmds

    parser = argparse.ArgumentParser()
    use_cmds.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.handler(args)


def test_feature_folder_roundtrip_fp16_and_merge(tmp_path):
    rng = np.random.default_rng(0)
    ident = {"method": "x", "config_hash": "abc"}
    a = FeatureSet({"g": rng.normal(size=(3, 4)).astype(np.float32), "visibility": rng.uniform(size=(3, 2))},
                   ["p0", "p1", "p2"], ident, [("bad.jpg", "unreadable")])
    b = FeatureSet({"g": rng.normal(size=(2, 4)).astype(np.float32), "visibility": rng.uniform(size=(2, 2))},
                   ["p3", "p4"], ident)
    write_features(a, tmp_path / "a.feats")
    write_features(b, tmp_path / "b.feats", dtype="float16")
    ra = read_features(tmp_path / "a.feats")
    assert isinstance(ra.arrays["g"], np.memmap) and ra.paths == a.paths and ra.identity == ident
    np.testing.assert_array_equal(ra.arrays["g"], a.arrays["g"])
    assert ra.skipped == [("bad.jpg", "unreadable")]
    rb = read_features(tmp_path / "b.feats")
    assert rb.arrays["g"].dtype == np.float16 and rb.arrays["visibility"].dtype == np.float32
    np.testing.assert_allclose(rb.arrays["g"], b.arrays["g"], atol=2e-3)
    write_features(b, tmp_path / "b32.feats")
    merged = read_features(merge_feature_folders([tmp_path / "a.feats", tmp_path / "b32.feats"],
                                                 tmp_path / "m"))
    assert merged.paths == ["p0", "p1", "p2", "p3", "p4"] and len(merged.skipped) == 1
    np.testing.assert_array_equal(merged.arrays["g"], np.concatenate([a.arrays["g"], b.arrays["g"]]))
    manifest = json.loads((tmp_path / "a.feats" / "manifest.json").read_text())
    assert manifest["arrays"]["g"] == {"shape": [3, 4], "dtype": "float32"} and manifest["count"] == 3
    with pytest.raises(DatasetError, match="not an occreid feature folder"):
        read_features(tmp_path)


def test_extract_matches_embed_and_lists_unreadable(model, folder, tmp_path):
    fs = extract_folder(model, folder, tmp_path / "g.feats", batch_size=5, workers=0, shard_size=4,
                        progress=False)
    paths = list_images(folder)
    assert len(paths) == 13 and not any(p.endswith(".txt") for p in paths)
    readable = [p for p in paths if "broken" not in p]
    assert fs.paths == readable
    assert [s[0] for s in fs.skipped] == [str(folder / "b" / "zz_broken.jpg")]
    ref = model.embed(readable)
    for k in ("stripes", "pooled", "parts"):
        np.testing.assert_allclose(fs.arrays[k], ref.arrays[k], atol=1e-5)
    assert fs.identity["method"] == "pcb" and fs.identity["config_hash"] == model.config_hash
    assert len(fs.identity["checkpoint_sha256"]) == 16 and fs.identity["config"]["model"]["name"] == "pcb"
    assert not (tmp_path / "g.feats.parts").exists()


def test_resume_skips_finished_shards_and_gives_the_same_result(model, folder, tmp_path, monkeypatch):
    full = extract_folder(model, folder, tmp_path / "full.feats", batch_size=2, workers=0, shard_size=4,
                          progress=False)
    calls = {"n": 0}
    original = ReidModel.embed_tensor

    def dying(self, x):
        calls["n"] += 1
        if calls["n"] == 5:  # the 3rd shard's first batch: shards 0 and 1 are on disk
            raise KeyboardInterrupt
        return original(self, x)

    monkeypatch.setattr(ReidModel, "embed_tensor", dying)
    with pytest.raises(KeyboardInterrupt):
        extract_folder(model, folder, tmp_path / "r.feats", batch_size=2, workers=0, shard_size=4,
                       progress=False)
    done = sorted(p.name for p in (tmp_path / "r.feats.parts").glob("shard_*"))
    assert done == ["shard_00000", "shard_00001"]
    with pytest.raises(DatasetError, match="--resume"):
        extract_folder(model, folder, tmp_path / "r.feats", workers=0, shard_size=4, progress=False)
    calls["n"] = -1000
    resumed = extract_folder(model, folder, tmp_path / "r.feats", batch_size=2, workers=0, shard_size=4,
                             resume=True, progress=False)
    # 13 images in shards of 4: shard 2 = two batches of 2; shard 3 = the unreadable image only (no forward)
    assert calls["n"] == -1000 + 2
    assert resumed.paths == full.paths and resumed.skipped == full.skipped
    np.testing.assert_array_equal(resumed.arrays["parts"], full.arrays["parts"])
    with pytest.raises(DatasetError, match="shard_size"):
        monkeypatch.setattr(ReidModel, "embed_tensor", dying)
        calls["n"] = 0
        with pytest.raises(KeyboardInterrupt):
            extract_folder(model, folder, tmp_path / "s.feats", batch_size=2, workers=0, shard_size=4,
                           progress=False)
        extract_folder(model, folder, tmp_path / "s.feats", workers=0, shard_size=8, resume=True,
                       progress=False)


def test_empty_and_all_unreadable_folders_fail_clearly(model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        extract_folder(model, tmp_path / "empty", tmp_path / "e.feats", workers=0, progress=False)
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.jpg").write_bytes(b"nope")
    with pytest.raises(DatasetError, match="none of the 3 images"):
        extract_folder(model, tmp_path / "bad", tmp_path / "b.feats", workers=0, progress=False)
    assert not (tmp_path / "b.feats").exists()


def test_cli_extract_with_worker_processes(folder, tmp_path, capsys):
    ckpt = write_checkpoint(tmp_path / "bot.pt", "bot")
    rc = run_cli(["extract", "--checkpoint", str(ckpt), "--images", str(folder), "--out", str(tmp_path / "o"),
                  "--workers", "2", "--batch-size", "4", "--dtype", "float16", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "12 images" in out and "zz_broken.jpg" in out
    fs = read_features(tmp_path / "o")
    assert fs.arrays["bnneck"].dtype == np.float16 and len(fs) == 12
