"""rank_metrics and the CUHK03 protocol against straightforward per-query loops written here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from occreid.errors import DatasetError
from occreid.evaluation import cuhk03_single_gallery_shot, rank_metrics
from occreid.evaluation.ranking import positive_ranks, same_pid_pairs, stable_ranks


def loop_reference(d, qp, gp, qc, gc, max_rank=50):
    """Market rule, one query at a time (torchreid eval_market1501 + fast-reid mINP, stable ties)."""
    nq, ng = d.shape
    length = min(max_rank, ng)
    cmcs, aps, inps, first = [], [], [], []
    for i in range(nq):
        order = sorted(range(ng), key=lambda j: (d[i, j], j))
        kept = [j for j in order if not (gp[j] == qp[i] and gc[j] == qc[i])]
        hits = [1 if gp[j] == qp[i] else 0 for j in kept]
        if sum(hits) == 0:
            aps.append(float("nan"))
            first.append(-1)
            continue
        precisions, found = [], 0
        for r, h in enumerate(hits):
            if h:
                found += 1
                precisions.append(found / (r + 1))
        aps.append(sum(precisions) / len(precisions))
        last = max(r for r, h in enumerate(hits) if h)
        inps.append(sum(hits) / (last + 1))
        f = hits.index(1)
        first.append(f)
        cmcs.append([1.0 if k >= f else 0.0 for k in range(length)])
    return {
        "cmc": np.mean(cmcs, axis=0) if cmcs else None,
        "mAP": float(np.nanmean(aps)) if cmcs else None,
        "mINP": float(np.mean(inps)) if cmcs else None,
        "ap": np.array(aps),
        "first_hit": np.array(first),
        "num_valid": len(cmcs),
    }


def assert_same(ours, ref):
    np.testing.assert_allclose(ours["cmc"], ref["cmc"], rtol=0, atol=1e-6)
    assert ours["mAP"] == pytest.approx(ref["mAP"], abs=1e-12)
    assert ours["mINP"] == pytest.approx(ref["mINP"], abs=1e-12)
    np.testing.assert_allclose(ours["ap"], ref["ap"], atol=1e-12)
    np.testing.assert_array_equal(ours["first_hit"], ref["first_hit"])
    assert ours["num_valid_queries"] == ref["num_valid"]
    assert ours["num_skipped_queries"] == len(ref["ap"]) - ref["num_valid"]
    np.testing.assert_array_equal(ours["valid"], ~np.isnan(ref["ap"]))


def random_problem(seed, nq, ng, ids, cams, integer=False):
    rng = np.random.default_rng(seed)
    d = rng.integers(0, 5, (nq, ng)).astype(np.float64) if integer else rng.random((nq, ng))
    return d, rng.integers(0, ids, nq), rng.integers(0, ids, ng), rng.integers(0, cams, nq), \
        rng.integers(0, cams, ng)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("integer", [False, True])
def test_matches_loop_on_random_and_tied_inputs(seed, integer):
    d, qp, gp, qc, gc = random_problem(seed, 23, 71, 9, 3, integer)
    ours = rank_metrics(d, qp, gp, qc, gc, max_rank=20, chunk=5)
    assert_same(ours, loop_reference(d, qp, gp, qc, gc, max_rank=20))


@pytest.mark.parametrize("threads", [1, 2])
def test_chunks_and_threads_agree_with_loop(threads):
    d, qp, gp, qc, gc = random_problem(7, 17, 40, 4, 2, integer=True)
    r = positive_ranks(d, qp, gp, qc, gc, chunk=6, threads=threads)
    ref = loop_reference(d, qp, gp, qc, gc)
    first = np.where(r["valid"], r["first"], -1)
    np.testing.assert_array_equal(first, ref["first_hit"])
    ap = np.where(r["valid"], r["ap_sum"] / np.maximum(r["num_pos"], 1), np.nan)
    np.testing.assert_allclose(ap, ref["ap"], atol=1e-12)


def test_hand_worked_single_query():
    # sorted gallery: pos, neg, junk (same pid + camera), pos, neg, pos -> after junk: P N P N P
    d = np.array([[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    gp = np.array([1, 2, 1, 1, 3, 1])
    gc = np.array([2, 2, 1, 3, 1, 2])
    r = rank_metrics(d, np.array([1]), gp, np.array([1]), gc, max_rank=50)
    assert r["ap"][0] == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3)  # = 34/45
    assert r["mAP"] == pytest.approx(34 / 45)
    assert r["mINP"] == pytest.approx(3 / 5)  # 3 positives, hardest at rank 5
    assert r["first_hit"][0] == 0
    assert len(r["cmc"]) == 6 and np.all(r["cmc"] == 1.0)


def test_first_hit_after_junk_and_cmc_shape():
    # junk in front of the only positive: the positive moves from rank 3 to rank 2 (0-based 1)
    d = np.array([[0.1, 0.2, 0.3]])
    r = rank_metrics(d, [5], [5, 6, 5], [0], [0, 1, 1], max_rank=50)
    assert r["first_hit"][0] == 1
    np.testing.assert_array_equal(r["cmc"], [0.0, 1.0, 1.0])
    assert r["ap"][0] == pytest.approx(0.5)
    assert r["mINP"] == pytest.approx(0.5)


def test_skipped_queries_are_counted_and_nan():
    d = np.array([[0.3, 0.1], [0.2, 0.4], [0.5, 0.6]])
    # query 1: only same-camera positive (all its matches junk); query 2: identity absent
    r = rank_metrics(d, [1, 2, 9], [1, 2], [0, 0, 0], [1, 0])
    assert r["num_valid_queries"] == 1 and r["num_skipped_queries"] == 2
    assert np.isnan(r["ap"][1]) and np.isnan(r["ap"][2])
    np.testing.assert_array_equal(r["first_hit"], [1, -1, -1])
    np.testing.assert_array_equal(r["valid"], [True, False, False])
    np.testing.assert_array_equal(r["cmc"], [0.0, 1.0])


def test_single_gallery_item():
    r = rank_metrics(np.array([[0.7], [0.2]]), [3, 4], [3], [0, 0], [1])
    assert r["num_valid_queries"] == 1
    np.testing.assert_array_equal(r["cmc"], [1.0])
    assert r["mAP"] == 1.0 and r["mINP"] == 1.0


def test_gallery_smaller_than_max_rank_and_torch_inputs():
    d, qp, gp, qc, gc = random_problem(3, 9, 12, 3, 2)
    ours = rank_metrics(torch.from_numpy(d), *(torch.from_numpy(x) for x in (qp, gp, qc, gc)))
    assert len(ours["cmc"]) == 12
    assert_same(ours, loop_reference(d, qp, gp, qc, gc))


def test_no_valid_query_raises_clear_error():
    with pytest.raises(DatasetError, match="camera ids"):
        rank_metrics(np.array([[0.1, 0.2]]), [1], [1, 2], [0], [0, 1])


def test_real_pids_and_camids_from_mini_duke():
    root = os.environ.get("OCCREID_DATA")
    folder = Path(root or "") / "mini" / "Occluded_Duke"
    if not root or not folder.is_dir():
        pytest.skip("OCCREID_DATA unset or mini/Occluded_Duke missing")

    def parse(split):
        names = sorted(p.name for p in (folder / split).glob("*.jpg"))
        return (np.array([int(n.split("_")[0]) for n in names]),
                np.array([int(n.split("_")[1][1:]) for n in names]))

    qp, qc = parse("query")
    gp, gc = parse("bounding_box_test")
    d = np.random.default_rng(0).random((qp.size, gp.size))
    ours = rank_metrics(d, qp, gp, qc, gc)
    assert ours["num_valid_queries"] == qp.size  # the mini set promises cross-camera matches
    assert_same(ours, loop_reference(d, qp, gp, qc, gc))


def test_cuhk03_deterministic_rank_with_sampling():
    # query pid 0 cam 0; every other identity has two cam-1 images both nearer (ids 1, 2) or both
    # farther (ids 3, 4) than both positives, so the sampled rank is always 2 whatever is drawn
    gp = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5])
    gc = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    d = np.array([[0.5, 0.55, 0.1, 0.2, 0.3, 0.35, 0.8, 0.9, 0.85, 0.95, 0.01]])  # id 5 same camera
    r = cuhk03_single_gallery_shot(d, [0], gp, [0], gc, max_rank=5, repeats=4, seed=3)
    np.testing.assert_allclose(r["cmc"], [0, 0, 1, 1, 1])
    assert r["mAP"] == pytest.approx(1 / 3)


def test_cuhk03_seeded_and_averaged():
    d, qp, gp, qc, gc = random_problem(11, 15, 60, 6, 2)
    a = cuhk03_single_gallery_shot(d, qp, gp, qc, gc, repeats=3, seed=5)
    b = cuhk03_single_gallery_shot(d, qp, gp, qc, gc, repeats=3, seed=5)
    np.testing.assert_array_equal(a["cmc"], b["cmc"])
    # with one cross-camera image per identity the sampling is fixed: rank = nearer identities
    keep = np.zeros(60, dtype=bool)
    for pid in range(6):
        for cam in range(2):
            idx = np.flatnonzero((gp == pid) & (gc == cam))
            keep[idx[:1]] = True
    d2, gp2, gc2 = d[:, keep], gp[keep], gc[keep]
    r = cuhk03_single_gallery_shot(d2, qp, gp2, qc, gc2, repeats=2, seed=0)
    for i in range(len(qp)):
        other = gc2 != qc[i]
        pos = np.flatnonzero(other & (gp2 == qp[i]))
        if pos.size == 0:
            assert np.isnan(r["ap"][i])
            continue
        rank = sum(1 for j in np.flatnonzero(other) if d2[i, j] < d2[i, pos[0]])
        assert r["ap"][i] == pytest.approx(1 / (rank + 1))


def brute_force(d, qp, gp, qc, gc):
    """Per query, the 1-based rank of every true match counted directly (no sort): valid entries
    (not same pid and camera) strictly nearer, plus tied valid entries of smaller gallery index."""
    out = []
    for i in range(d.shape[0]):
        valid = ~((gp == qp[i]) & (gc == qc[i]))
        matches = [j for j in range(d.shape[1]) if valid[j] and gp[j] == qp[i]]
        ranks = sorted(1 + sum(1 for k in range(d.shape[1]) if valid[k] and (
            d[i, k] < d[i, j] or (d[i, k] == d[i, j] and k < j))) for j in matches)
        out.append(ranks)
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("values", [3, 1000])
def test_positive_ranks_match_brute_force_with_ties_junk_and_no_match(seed, values):
    rng = np.random.default_rng(seed)
    nq, ng = 13, 57
    d = rng.integers(0, values, (nq, ng)).astype(np.float32)  # 3 values: ties everywhere
    d[:, 5] = d[:, 9]  # duplicate gallery images: exact ties across identities
    qp, gp = rng.integers(0, 6, nq), rng.integers(0, 6, ng)
    qc, gc = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    qp[0] = 99  # no true match at all
    gp[gp == qp[1]] = qp[1]
    gc[gp == qp[1]] = qc[1]  # only junk for query 1
    r = positive_ranks(d, qp, gp, qc, gc, chunk=4, threads=2)
    for i, ranks in enumerate(brute_force(d, qp, gp, qc, gc)):
        assert r["num_pos"][i] == len(ranks)
        if not ranks:
            assert not r["valid"][i] and r["first"][i] == -1
            continue
        assert (r["first"][i] + 1, r["last"][i] + 1) == (ranks[0], ranks[-1])
        assert r["ap_sum"][i] == pytest.approx(sum((k + 1) / rank for k, rank in enumerate(ranks)), abs=1e-12)
    assert not r["valid"][0] and not r["valid"][1]


def test_stable_ranks_are_positions_in_a_stable_sort():
    rng = np.random.default_rng(5)
    d = rng.integers(0, 4, (6, 30)).astype(np.float64)
    d[2, 7] = d[2, 3] = np.nan  # NaN sorts last, ties among NaNs by index
    rows, gidx = np.nonzero(rng.random((6, 30)) < 0.3)
    r, ranks, g = stable_ranks(d, rows, gidx)
    position = np.argsort(np.argsort(d, axis=1, kind="stable"), axis=1, kind="stable")
    np.testing.assert_array_equal(ranks, position[r, g])
    assert all(np.all(np.diff(ranks[r == i]) > 0) for i in range(6))


def test_same_pid_pairs_match_the_mask():
    rng = np.random.default_rng(2)
    qp, gp = rng.integers(0, 7, 11), rng.integers(0, 9, 40)
    rows, gidx = same_pid_pairs(qp, gp)
    want_rows, want_gidx = np.nonzero(qp[:, None] == gp[None, :])
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_array_equal(gidx, want_gidx)
