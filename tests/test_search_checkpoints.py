"""Search never mixes models and works from any folder: queries of another checkpoint are refused
unless --allow-other-checkpoint; feature folders and indexes record absolute paths."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from occreid.cli.main import main
from occreid.engine.checkpoint import load_checkpoint, save_atomic
from occreid.errors import ConfigError
from occreid.inference.features_file import FeatureSet, read_features, write_features
from occreid.inference.index import GalleryIndex
from tests.test_api import write_checkpoint
from tests.test_search import bot_identity, clustered

pytest.importorskip("faiss", reason="search needs the optional faiss-cpu package (occreid[search])")


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """best.pt and last.pt of one run: the same config, other weights (as after more training)."""
    run = tmp_path_factory.mktemp("run")
    last = write_checkpoint(run / "last.pt", "bot")
    ckpt = load_checkpoint(last)
    first = next(k for k, v in ckpt["model"].items() if k.endswith("weight") and v.ndim == 4)
    ckpt["model"][first] = ckpt["model"][first] * 1.1
    save_atomic(ckpt, run / "best.pt")
    return run / "best.pt", last


def _extract(ckpt: Path | str, images: Path | str, out: Path | str) -> None:
    assert main(["extract", "--checkpoint", str(ckpt), "--images", str(images), "--out", str(out),
                 "--workers", "0", "--no-progress"]) == 0


def test_queries_of_another_checkpoint_are_refused_unless_allowed(two_checkpoints, tiny_market, tmp_path,
                                                                   capsys):
    best, last = two_checkpoints
    m = tiny_market / "Market-1501"
    _extract(last, m / "bounding_box_test", tmp_path / "g.feats")
    _extract(best, m / "query", tmp_path / "q.feats")
    g, q = read_features(tmp_path / "g.feats"), read_features(tmp_path / "q.feats")
    assert g.identity["config_hash"] == q.identity["config_hash"]  # only the checkpoint differs
    assert g.identity["checkpoint_sha256"] != q.identity["checkpoint_sha256"]
    assert main(["index", "build", "--features", str(tmp_path / "g.feats"), "--out", str(tmp_path / "ix")]) == 0
    index_meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    assert index_meta["identity"]["checkpoint_sha256"] == g.identity["checkpoint_sha256"]
    capsys.readouterr()

    search = ["search", "--index", str(tmp_path / "ix"), "--query", str(tmp_path / "q.feats"),
              "--json", str(tmp_path / "r.json")]
    assert main(search) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    for text in (str(best), str(last), "--allow-other-checkpoint", str(tmp_path / "q.feats")):
        assert text in err, text
    assert not (tmp_path / "r.json").exists()
    assert main([*search, "--allow-other-checkpoint"]) == 0
    assert len(json.loads((tmp_path / "r.json").read_text())["queries"]) == 4
    # --images with another --checkpoint than the gallery's: refused the same way
    assert main(["search", "--index", str(tmp_path / "ix"), "--images", str(m / "query"),
                 "--checkpoint", str(best)]) == 2
    assert "--allow-other-checkpoint" in capsys.readouterr().err


def test_api_refuses_other_checkpoint_and_always_other_method(tmp_path):
    gallery = clustered(6, 4, 8, cams=2, seed=0)
    gallery.identity.update(checkpoint="/runs/a/last.pt", checkpoint_sha256="aaaa")
    write_features(gallery, tmp_path / "g.feats")
    idx = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "ix")
    other = dict(gallery.identity, checkpoint="/runs/a/best.pt", checkpoint_sha256="bbbb")
    queries = FeatureSet(gallery.arrays, gallery.paths, other)
    with pytest.raises(ConfigError, match="best.pt.*bbbb.*last.pt.*aaaa.*--allow-other-checkpoint"):
        idx.search(queries)
    assert idx.search(queries, topk=3, allow_other_checkpoint=True).indices.shape == (24, 3)
    pcb = dict(other, method="pcb")
    with pytest.raises(ConfigError, match="method 'pcb'"):
        idx.search(FeatureSet(gallery.arrays, gallery.paths, pcb), allow_other_checkpoint=True)
    narrow = {k: v[:, :4] for k, v in gallery.arrays.items()}
    with pytest.raises(ConfigError, match="arrays"):
        idx.search(FeatureSet(narrow, gallery.paths, bot_identity()), allow_other_checkpoint=True)


def test_paths_are_absolute_and_search_works_from_another_folder(two_checkpoints, tiny_market, tmp_path,
                                                                monkeypatch, capsys):
    _, last = two_checkpoints
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    (work / "ckpt").mkdir(parents=True)
    elsewhere.mkdir()
    (work / "ckpt" / "bot.pt").write_bytes(last.read_bytes())
    (work / "imgs").symlink_to(tiny_market / "Market-1501")
    monkeypatch.chdir(work)
    _extract("ckpt/bot.pt", "imgs/bounding_box_test", "g.feats")  # every path relative to `work`
    assert main(["index", "build", "--features", "g.feats", "--out", "g.index"]) == 0
    feats = read_features(work / "g.feats")
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in feats.paths)
    assert feats.identity["checkpoint"] == str((work / "ckpt" / "bot.pt").resolve())
    assert json.loads((work / "g.index" / "index.json").read_text())["features"] == str(work / "g.feats")

    monkeypatch.chdir(elsewhere)
    picture = elsewhere / "ranks.png"
    # --images without --checkpoint: the index's (absolute) checkpoint is found from here
    assert main(["search", "--index", str(work / "g.index"), "--images", str(tiny_market / "Market-1501" / "query"),
                 "--topk", "3", "--picture", str(picture), "--json", "r.json"]) == 0
    assert picture.is_file()
    assert all(Path(h["path"]).is_absolute() for q in json.loads(Path("r.json").read_text())["queries"]
               for h in q["results"])


def test_old_relative_feature_folder_gives_a_clear_picture_error(tiny_market, tmp_path, monkeypatch, capsys):
    """A feature folder written with relative paths (older occreid) searched from elsewhere: one line
    naming the missing image and the fix, not a FileNotFoundError traceback."""
    gallery = clustered(4, 3, 8, cams=2, seed=1, prefix="imgs/")
    write_features(gallery, tmp_path / "g.feats")
    GalleryIndex.build(tmp_path / "g.feats", tmp_path / "ix")
    write_features(gallery.take([0, 1]), tmp_path / "q.feats")
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--index", "ix", "--query", "q.feats", "--picture", "p.png",
                 "--same-camera-filter", "off"]) == 2
    err = capsys.readouterr().err
    assert "imgs/0001_c1" in err and "extract again" in err and "Traceback" not in err


def test_written_identity_keeps_sha_and_config_hash(tmp_path):
    fs = FeatureSet({"bnneck": np.ones((1, 2), np.float32)}, ["/a.jpg"],
                    dict(bot_identity(), checkpoint_sha256="ab12"))
    write_features(fs, tmp_path / "f")
    manifest = json.loads((tmp_path / "f" / "manifest.json").read_text())
    assert manifest["identity"]["checkpoint_sha256"] == "ab12" and manifest["identity"]["config_hash"]
    assert torch.is_tensor(read_features(tmp_path / "f").tensors()["bnneck"])


def test_same_checkpoint_other_settings_accepted_unless_they_change_features(tmp_path):
    """One checkpoint file, queries extracted later: a key added to the schema since, other workers or
    paths do not matter; another input size does, and the message names it (not the checkpoint twice)."""
    from tests.test_search import bot_identity

    gallery = clustered(6, 4, 8, cams=2, seed=0)
    gallery.identity.update(bot_identity(), checkpoint="/runs/a/last.pt", checkpoint_sha256="aaaa")
    old_config = gallery.identity["config"]
    del old_config["data"]["decode_cache"], old_config["method"]["center_lr"]  # saved before these keys
    gallery.identity["config_hash"] = "old0hash0000"  # as the hash of the time recorded it
    write_features(gallery, tmp_path / "g.feats")
    idx = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "ix")

    now = dict(bot_identity(**{"data.workers": 0, "data.root": "/elsewhere"}),
               checkpoint="/runs/a/last.pt", checkpoint_sha256="aaaa")
    assert now["config_hash"] != gallery.identity["config_hash"]
    assert idx.search(FeatureSet(gallery.arrays, gallery.paths, now), topk=3).indices.shape == (24, 3)

    resized = dict(bot_identity(**{"data.height": 192}), checkpoint="/runs/a/last.pt", checkpoint_sha256="aaaa")
    with pytest.raises(ConfigError) as err:
        idx.search(FeatureSet(gallery.arrays, gallery.paths, resized))
    msg = str(err.value)
    assert "same checkpoint" in msg and "data.height: 192 vs 256" in msg and "last.pt" in msg
    # another checkpoint file with the very same settings is still refused
    other = dict(now, checkpoint_sha256="bbbb")
    with pytest.raises(ConfigError, match="--allow-other-checkpoint"):
        idx.search(FeatureSet(gallery.arrays, gallery.paths, other))
