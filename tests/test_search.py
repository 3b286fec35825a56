"""Gallery index + two-stage search: exactness against brute force, camera filter, index kinds,
thresholds, persistence, CLI with JSON and picture."""

from __future__ import annotations

import json
import mmap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occreid.config import load_config
from occreid.errors import ConfigError
from occreid.inference.features_file import FeatureSet, write_features
from occreid.inference.identity import model_identity
from occreid.inference.index import (
    GalleryIndex,
    IndexOptions,
    drop_mapped_pages,
    exact_search,
    parse_names,
    recall_at_k,
)

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


def test_default_nprobe_is_a_fraction_of_nlist(tmp_path):
    write_features(clustered(40, 5, 8, cams=2, seed=4), tmp_path / "g.feats")
    idx = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "a", IndexOptions(kind="ivf", nlist=5,
                                                                                nprobe_fraction=0.5))
    assert idx.meta["nlist"] == 5 and idx.meta["nprobe"] == 3  # ceil(0.5 * 5)
    assert GalleryIndex.open(tmp_path / "a").search_params() == {"nprobe": 3}
    fixed = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "b", IndexOptions(kind="ivf", nlist=5, nprobe=9))
    assert fixed.meta["nprobe"] == 5  # capped at nlist
    with pytest.raises(ConfigError, match="nprobe"):
        GalleryIndex.build(tmp_path / "g.feats", tmp_path / "c", IndexOptions(kind="ivf", nprobe_fraction=0))


def test_query_time_nprobe_override_without_rebuild(tmp_path):
    gallery = clustered(60, 5, 16, cams=3, seed=10)
    queries = clustered(60, 1, 16, cams=2, seed=11, prefix="q/")
    write_features(gallery, tmp_path / "g.feats")
    flat = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "flat", IndexOptions(kind="flat"))
    ivf = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "ivf", IndexOptions(kind="ivf", nlist=6, nprobe=1))
    ivf_faiss = faiss.extract_index_ivf(ivf.index)
    low = ivf.search(queries, topk=5, rerank=10)
    assert ivf_faiss.nprobe == 1 and low.meta["nprobe"] == 1
    full = ivf.search(queries, topk=5, rerank=10, nprobe=6)
    assert ivf_faiss.nprobe == 6 and full.meta["nprobe"] == 6 and ivf.meta["nprobe"] == 1
    # every list probed: the same candidates, hence the same re-ranked result, as the flat index
    ref = flat.search(queries, topk=5, rerank=10)
    np.testing.assert_array_equal(full.indices, ref.indices)
    np.testing.assert_array_equal(full.distances, ref.distances)
    np.testing.assert_array_equal(ivf.candidates(queries, 10, nprobe=6), flat.candidates(queries, 10))
    np.testing.assert_array_equal(ivf.candidates(queries, 10, exact=True), flat.candidates(queries, 10))
    assert ivf.search(queries, topk=5, rerank=10).meta["nprobe"] == 1  # the override lasts one call
    assert ivf_faiss.nprobe == 1
    with pytest.raises(ConfigError, match="nprobe 0"):
        ivf.search(queries, nprobe=0)
    # one probed list of six misses candidates that the flat search finds on this gallery
    assert not np.array_equal(ivf.candidates(queries, 10, nprobe=1), flat.candidates(queries, 10))


def test_hnsw_ef_search_override_and_exact_candidates(tmp_path):
    write_features(clustered(30, 4, 8, cams=2, seed=12), tmp_path / "g.feats")
    queries = clustered(30, 1, 8, cams=2, seed=13, prefix="q/")
    idx = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "h", IndexOptions(kind="hnsw", ef_search=16))
    assert idx.search(queries, topk=3, rerank=5, ef_search=77).meta["ef_search"] == 77
    assert idx.index.hnsw.efSearch == 77
    flat = GalleryIndex.build(tmp_path / "g.feats", tmp_path / "f", IndexOptions(kind="flat"))
    np.testing.assert_array_equal(idx.candidates(queries, 8, exact=True), flat.candidates(queries, 8))


def test_recall_at_k_hand_worked():
    found = np.array([[3, 1, 7], [5, -1, -1], [2, 4, 6], [9, 8, -1]])
    ref = np.array([[1, 2, 3], [5, 6, -1], [-1, -1, -1], [0, 1, -1]])
    # row 0: {1, 3} of {1, 2, 3} = 2/3; row 1: {5} of {5, 6} = 1/2; row 2: empty reference, left out;
    # row 3: none of {0, 1} = 0; mean of (2/3, 1/2, 0)
    assert recall_at_k(found, ref) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    # a gallery index found for another query does not count; -1 never matches -1
    assert recall_at_k(np.array([[4, -1], [0, 1]]), np.array([[0, -1], [4, -1]])) == 0.0
    assert np.isnan(recall_at_k(found[:1], np.full((1, 3), -1)))


def test_recall_at_k_matches_a_set_loop():
    rng = np.random.default_rng(14)
    found = np.stack([rng.permutation(50)[:10] for _ in range(20)])
    ref = np.stack([rng.permutation(50)[:5] for _ in range(20)])
    found[::3, -4:] = -1
    expected = np.mean([len(set(f[f >= 0].tolist()) & set(r.tolist())) / len(r) for f, r in zip(found, ref)])
    assert recall_at_k(found, ref) == pytest.approx(expected)


def resident_pages(arr: np.ndarray) -> int:
    """Pages of a memory-mapped array's map that this process has resident (Rss in /proc/self/smaps)."""
    base = np.frombuffer(arr._mmap, np.uint8).ctypes.data
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        first = line.split(" ", 1)[0]
        if "-" in first and int(first.split("-")[0], 16) == base:
            rss = next(t for t in lines[i + 1:] if t.startswith("Rss:"))
            return int(rss.split()[1]) * 1024 // mmap.PAGESIZE
    raise AssertionError("mapping not found in /proc/self/smaps")


@pytest.mark.skipif(not (hasattr(mmap, "MADV_DONTNEED") and Path("/proc/self/smaps").is_file()),
                    reason="needs madvise and /proc/self/smaps (Linux)")
def test_exact_search_over_memory_mapped_gallery_releases_pages(tmp_path):
    from occreid.config import from_dict_config
    from occreid.inference.features_file import read_features

    gallery = clustered(50, 4, 512, cams=3, seed=15)  # 200 x 512 float32: 100 pages of 4 KiB per array
    write_features(gallery, tmp_path / "g.feats")
    mapped = read_features(tmp_path / "g.feats")
    arr = mapped.arrays["bnneck"]
    float(np.asarray(arr).sum())  # fault every page in
    before = resident_pages(arr)
    drop_mapped_pages([arr[10:]])  # a view releases its whole map too
    assert before * mmap.PAGESIZE >= arr.nbytes and resident_pages(arr) < before / 2
    drop_mapped_pages([np.ones(3)])  # in-memory arrays: nothing to do
    # the chunked pass with releases gives the in-memory result, and leaves the map (nearly) unmapped
    cfg = from_dict_config(gallery.identity["config"])
    queries = clustered(50, 1, 512, cams=2, seed=16, prefix="q/")
    ei, ed = exact_search(cfg, queries, mapped, 5, gallery_chunk=64)
    assert resident_pages(arr) < before / 2
    ri, rd = exact_search(cfg, queries, read_features(tmp_path / "g.feats", mmap=False), 5)
    np.testing.assert_array_equal(ei, ri)
    np.testing.assert_allclose(ed, rd, atol=1e-6)


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

    # an IVF index: nprobe defaults to a quarter of the lists, and a search may override it
    assert run_cli(["index", "build", "--features", str(tmp_path / "g.feats"), "--out", str(tmp_path / "ivf"),
                    "--kind", "ivf", "--nlist", "4", "--no-threshold"]) == 0
    for extra, want in (([], 1), (["--nprobe", "3"], 3)):
        assert run_cli(["search", "--index", str(tmp_path / "ivf"), "--query", str(tmp_path / "g.feats"),
                        "--json", str(out), *extra]) == 0
        assert json.loads(out.read_text())["nprobe"] == want
