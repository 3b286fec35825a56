"""Gallery index + two-stage search: exactness against brute force, camera filter, index kinds,
thresholds, persistence, CLI with JSON and picture."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occreid.config import load_config
from occreid.errors import ConfigError
from occreid.inference.features_file import FeatureSet, write_features
from occreid.inference.identity import model_identity
from occreid.inference.index import GalleryIndex, IndexOptions, exact_search, parse_names

faiss = pytest.importorskip("faiss", reason="search needs the optional faiss-cpu package (occreid[search])")


def bot_identity(**over) -> dict:
    cfg = load_config(None, ["model.name=bot", *[f"{k}={v}" for k, v in over.items()]])
    return model_identity(cfg, None, "")


def clustered(n_ids: int, per_id: int, dim: int, cams: int, seed: int, prefix: str = "") -> FeatureSet:
    """Market-named features: identity centres plus noise, cameras cycling."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(n_ids + 1, dim))
    rows, names = [], []
    for pid in range(1, n_ids + 1):
        for k in range(per_id):
            rows.append(centres[pid] + 0.6 * rng.normal(size=dim))
            names.append(f"{prefix}{pid:04d}_c{k % cams + 1}s1_{k:06d}_00.jpg")
    x = np.asarray(rows, np.float32)
    return FeatureSet({"bnneck": x, "global": x * 2}, names, bot_identity())


def brute_force(q: np.ndarray, g: np.ndarray, qn: list[str], gn: list[str], topk: int, filt: bool):
    """Loop reference: Euclidean distance of unit vectors, same camera / same name removed."""
    out = []
    for i in range(len(q)):
        u = q[i] / np.linalg.norm(q[i])
        scored = []
        for j in range(len(g)):
            qc, gc = qn[i].split("_")[1][:2], gn[j].split("_")[1][:2]
            if filt and (qc == gc or Path(qn[i]).name == Path(gn[j]).name):
                continue
            v = g[j] / np.linalg.norm(g[j])
            scored.append((float(np.sqrt(((u - v) ** 2).sum())), j))
        out.append([j for _, j in sorted(scored)[:topk]])
    return np.array(out)


def test_parse_market_names():
    pids, cams = parse_names(["/x/0012_c3s1_000001_00.jpg", "-1_c1s2_0.jpg", "frame_0001.png"])
    np.testing.assert_array_equal(pids, [12, -1, -2])
    np.testing.assert_array_equal(cams, [2, 0, -1])


@pytest.mark.parametrize("filt", [True, False])
def test_two_stage_equals_exact_and_brute_force(tmp_path, filt):
    gallery = clustered(15, 4, 16, cams=3, seed=0)
    queries = clustered(15, 1, 16, cams=2, seed=1, prefix="q/")
    write_features(gallery, tmp_path / "g.feats")
    idx = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "g.index", IndexOptions(kind="flat"))
    assert idx.key == "bnneck" and idx.meta["kind"] == "flat"
    res = idx.search(queries, topk=5, rerank=20, same_camera_filter=filt)
    ei, ed = exact_search(idx.cfg, queries, idx.gallery, topk=5, same_camera_filter=filt)
    ref = brute_force(queries.arrays["bnneck"], gallery.arrays["bnneck"], queries.paths, gallery.paths, 5,
                      filt)
    np.testing.assert_array_equal(ei, ref)
    np.testing.assert_array_equal(res.indices, ref)  # clustered data: the 20 candidates hold the top 5
    np.testing.assert_allclose(res.distances, ed, atol=1e-6)


def test_filter_removes_same_camera_and_the_query_file_itself(tmp_path):
    e = np.eye(4, dtype=np.float32)
    names = ["0001_c1s1_000001_00.jpg", "0001_c1s1_000002_00.jpg", "0001_c2s1_000003_00.jpg", "frame.jpg"]
    vecs = np.stack([e[0], e[0] + 0.1 * e[1], e[0] + 0.2 * e[2], e[0] + 0.3 * e[3]])
    write_features(FeatureSet({"bnneck": vecs, "global": vecs}, names, bot_identity()), tmp_path / "g.feats")
    idx = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "i")
    q = FeatureSet({"bnneck": vecs[:1], "global": vecs[:1]}, ["query/0001_c1s1_000001_00.jpg"],
                   bot_identity())
    on = idx.search(q, topk=4, rerank=4)
    assert on.indices[0].tolist() == [2, 3, -1, -1] and np.isinf(on.distances[0, 2:]).all()
    off = idx.search(q, topk=4, rerank=4, same_camera_filter=False)
    assert off.indices[0].tolist() == [0, 1, 2, 3]
    # hand-worked: |e0 - unit(e0 + 0.1 e1)| = sqrt(2 - 2 / sqrt(1.01))
    assert off.distances[0, 1] == pytest.approx(np.sqrt(2 - 2 / np.sqrt(1.01)), abs=1e-5)
    # an unnamed query keeps everything but files with its own name
    q2 = FeatureSet({"bnneck": vecs[:1], "global": vecs[:1]}, ["x/frame.jpg"], bot_identity())
    assert idx.search(q2, topk=4, rerank=4).indices[0].tolist() == [0, 1, 2, -1]


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_kinds_find_the_exact_top_k(tmp_path, kind):
    gallery = clustered(40, 5, 24, cams=3, seed=2)
    queries = clustered(40, 1, 24, cams=2, seed=3, prefix="q/")
    write_features(gallery, tmp_path / "g.feats")
    opts = IndexOptions(kind=kind, nlist=8, nprobe=8, ef_search=256)  # all lists probed: exact candidates
    idx = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "g.index", opts)
    assert idx.meta["kind"] == kind
    res = idx.search(queries, topk=5, rerank=30)
    ei, _ = exact_search(idx.cfg, queries, idx.gallery, topk=5)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(res.indices.tolist(), ei.tolist())])
    assert recall >= 0.95


def test_auto_kind_switches_to_ivf_above_flat_max(tmp_path):
    write_features(clustered(20, 5, 8, cams=2, seed=4), tmp_path / "g.feats")
    small = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "a", IndexOptions(flat_max=100))
    large = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "b", IndexOptions(flat_max=50))
    assert small.meta["kind"] == "flat" and large.meta["kind"] == "ivf"


def test_threshold_from_labelled_gallery_and_match_flags(tmp_path):
    gallery = clustered(20, 6, 16, cams=3, seed=5)
    write_features(gallery, tmp_path / "g.feats")
    idx = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "g.index", IndexOptions(far=1e-2))
    t = idx.meta["threshold"]
    assert t["chosen_far"] == 1e-2 and t["value"] == t["threshold"][2]
    assert all(a <= f for a, f in zip(t["achieved_far"], t["far"]))
    assert t["tar"] == sorted(t["tar"]) and 0 < t["num_genuine"] and t["images_sampled"] == 120
    queries = clustered(20, 1, 16, cams=2, seed=6, prefix="q/")
    res = idx.search(queries, topk=3, rerank=10)
    np.testing.assert_array_equal(res.accepted, res.distances <= t["value"])
    hits = res.to_json()["queries"][0]["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["match"] == bool(res.accepted[0, 0])
    unnamed = FeatureSet(gallery.arrays, [f"frame{i}.jpg" for i in range(len(gallery))], gallery.identity)
    write_features(unnamed, tmp_path / "u.feats")
    assert GalleryIndex.build(tmp_path / "u.feats", tmp_path / "u.index").meta["threshold"] is None


def test_reopened_index_gives_the_same_results_and_refuses_other_models(tmp_path):
    gallery = clustered(10, 4, 8, cams=2, seed=7)
    queries = clustered(10, 1, 8, cams=2, seed=8, prefix="q/")
    write_features(gallery, tmp_path / "g.feats")
    built = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "g.index").search(queries, topk=4)
    again = GalleryIndex.open(tmp_path / "g.index").search(queries, topk=4)
    np.testing.assert_array_equal(built.indices, again.indices)
    other = FeatureSet(queries.arrays, queries.paths, bot_identity(**{"method.test_feature": "global"}))
    with pytest.raises(ConfigError, match="do not match"):
        GalleryIndex.open(tmp_path / "g.index").search(other)


def test_part_visibility_method_reranks_with_its_own_distance(tmp_path):
    from occreid.methods import get_method

    try:
        get_method("pabreid")
    except ConfigError:
        pytest.skip("pabreid is not implemented in this checkout")
    cfg = load_config(None, ["model.name=pabreid"])
    rng = np.random.default_rng(9)
    n, p, d = 30, 6, 8
    names = [f"{i // 3 + 1:04d}_c{i % 3 + 1}s1_{i:06d}_00.jpg" for i in range(n)]
    arrays = {"global": rng.normal(size=(n, d)), "foreground": rng.normal(size=(n, d)),
              "parts": rng.normal(size=(n, p, d)), "visibility": rng.uniform(size=(n, p))}
    fs = FeatureSet({k: v.astype(np.float32) for k, v in arrays.items()}, names,
                    model_identity(cfg, None, ""))
    write_features(fs, tmp_path / "g.feats")
    idx = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "g.index")
    assert idx.key == "foreground"
    q = fs.take(np.arange(0, n, 5))
    res = idx.search(q, topk=5, rerank=n)
    ei, ed = exact_search(idx.cfg, q, idx.gallery, topk=5)
    np.testing.assert_array_equal(res.indices, ei)
    np.testing.assert_allclose(res.distances, ed, atol=1e-6)


def test_cli_extract_index_search_json_and_picture(tiny_market, tmp_path):
    from tests.test_api import write_checkpoint
    from tests.test_extract import run_cli

    ckpt = write_checkpoint(tmp_path / "bot.pt", "bot")
    m = tiny_market / "Market-1501"
    assert run_cli(["extract", "--checkpoint", str(ckpt), "--images", str(m / "bounding_box_test"),
                    "--out", str(tmp_path / "g.feats"), "--workers", "0", "--no-progress"]) == 0
    assert run_cli(["index", "build", "--features", str(tmp_path / "g.feats"),
                    "--out", str(tmp_path / "ix")]) == 0
    out = tmp_path / "res.json"
    assert run_cli(["search", "--index", str(tmp_path / "ix"), "--images", str(m / "query"), "--topk", "3",
                    "--json", str(out), "--picture", str(tmp_path / "ranks.png")]) == 0
    res = json.loads(out.read_text())
    assert len(res["queries"]) == 4 and res["same_camera_filter"] is True
    for q in res["queries"]:
        assert len(q["results"]) == 3
        assert all("_c1" not in Path(h["path"]).name for h in q["results"])  # queries are camera 1
        assert [h["distance"] for h in q["results"]] == sorted(h["distance"] for h in q["results"])
    with Image.open(tmp_path / "ranks.png") as im:
        assert im.height > 4 * 128 and im.width > 4 * 64
