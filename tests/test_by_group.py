"""Accuracy by occlusion level and camera pair, top-k and first true match: vectorised code against
per-query brute-force loops written here; visible-fraction sources; the new report columns."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from occreid.data.records import Record
from occreid.evaluation import rank_metrics, write_report
from occreid.evaluation.by_group import (
    OCCLUSION_LABELS,
    by_camera_pair,
    by_occlusion,
    group_metrics,
    groups_markdown,
    occlusion_group,
)
from occreid.evaluation.query_breakdown import CSV_COLUMNS, query_breakdown
from occreid.evaluation.top_matches import first_true_match, match_marks, stable_top_k
from occreid.evaluation.visible_fraction import (
    from_aspect_ratio,
    from_method_visibility,
    from_part_labels,
    query_visible_fraction,
)
from occreid.labels.format import ATOMIC_INDEX, write_label


def _problem(seed: int, nq: int = 37, ng: int = 90, ties: bool = True):
    rng = np.random.default_rng(seed)
    d = rng.random((nq, ng)).astype(np.float32)
    if ties:
        d = np.round(d * 8) / 8  # many exact ties: the index tie-break matters
    q_pids, g_pids = rng.integers(0, 12, nq), rng.integers(0, 12, ng)
    q_cams, g_cams = rng.integers(0, 3, nq), rng.integers(0, 3, ng)
    return d, q_pids, g_pids, q_cams, g_cams


def _brute(d, qp, gp, qc, gc):
    """Per query: stable order, junk removed; (first true match index, its rank, AP) or (-1, -1, nan)."""
    out = []
    for i in range(d.shape[0]):
        order = [j for j in np.argsort(d[i], kind="stable") if not (gp[j] == qp[i] and gc[j] == qc[i])]
        hits = [r for r, j in enumerate(order) if gp[j] == qp[i]]
        if not hits:
            out.append((-1, -1, np.nan))
            continue
        ap = np.mean([(k + 1) / (r + 1) for k, r in enumerate(hits)])
        out.append((order[hits[0]], hits[0], ap))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_first_true_match_and_top_k_match_brute_force(seed):
    d, qp, gp, qc, gc = _problem(seed)
    brute = _brute(d, qp, gp, qc, gc)
    match = first_true_match(d, qp, gp, qc, gc, chunk=5)
    assert match.tolist() == [b[0] for b in brute]
    top, top_d = stable_top_k(d, 10, chunk=7)
    ref = np.argsort(d, axis=1, kind="stable")[:, :10]
    assert np.array_equal(top, ref) and np.array_equal(top_d, np.take_along_axis(d, ref, 1))
    marks = match_marks(top, qp, gp, qc, gc)
    for i in range(d.shape[0]):
        for r, j in enumerate(top[i]):
            want = ("j" if gc[j] == qc[i] else "c") if gp[j] == qp[i] else "w"
            assert marks[i, r] == want
    # the first-match rank agrees with rank_metrics' first_hit
    m = rank_metrics(d, qp, gp, qc, gc)
    assert m["first_hit"].tolist() == [b[1] for b in brute]


def test_top_k_larger_than_gallery_and_nan_rows():
    d = np.array([[0.3, np.nan, 0.1], [0.2, 0.2, 0.2]])
    top, _ = stable_top_k(d, 5)
    assert top.shape == (2, 3) and top[1].tolist() == [0, 1, 2] and top[0].tolist()[:2] == [2, 0]


def test_first_true_match_with_infinite_distances():
    d = np.array([[np.inf, np.inf, np.inf]])
    assert first_true_match(d, [1], [2, 1, 1], [0], [1, 1, 1]).tolist() == [1]
    assert first_true_match(d, [1], [2, 1, 1], [0], [1, 0, 0]).tolist() == [-1]


def test_occlusion_group_edges():
    v = [0.0, 0.25, 0.2501, 0.5, 0.6, 0.75, 0.8, 0.999, 1.0]
    assert occlusion_group(v).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert occlusion_group([np.nan, 1.0, np.nan]).tolist() == [5, 4, 5]
    assert OCCLUSION_LABELS[5] == "no label"


def test_queries_without_label_form_their_own_group(tmp_path):
    """Some queries without a label file (the pose model found nobody): part labels stay the source when
    at least half have one; the others get NaN and the "no label" group, never the 100 % group."""
    full = np.zeros((40, 20), np.uint8)
    full[0:8], full[8:20] = ATOMIC_INDEX["head"], ATOMIC_INDEX["torso"]
    full[20:24, 0:3], full[24:34] = ATOMIC_INDEX["left_arm"], ATOMIC_INDEX["left_leg"]
    full[34:40] = ATOMIC_INDEX["left_foot"]
    write_label(tmp_path / "full.png", full)
    Image.new("RGB", (20, 40)).save(tmp_path / "q.jpg")
    q = str(tmp_path / "q.jpg")
    query = [Record(q, 1, 0, str(tmp_path / "full.png")), Record(q, 2, 0, str(tmp_path / "none.png")),
             Record(q, 3, 0, None)]
    vis = query_visible_fraction(query[:2] + query[:1])
    assert vis.source == "part_labels" and vis.values[0] == 1.0 and np.isnan(vis.values[1])
    assert query_visible_fraction(query[1:], {}).source == "aspect_ratio"  # none of the two is labelled
    occ = by_occlusion([0.5, 0.25, 1.0], [0, 3, 0], vis.values, vis.source)
    assert [g["num_query"] for g in occ["groups"]] == [0, 0, 0, 0, 2, 1]
    assert occ["groups"][5] == {"group": "no label", "num_query": 1, "num_valid": 1, "rank1": 0.0, "mAP": 0.25}
    md = groups_markdown({"by_occlusion": occ})
    assert "| no label | 1 |" in md
    assert "no label" not in groups_markdown({"by_occlusion": by_occlusion([0.5], [0], [1.0], "method")})


@pytest.mark.parametrize("seed", [0, 3])
def test_group_tables_match_brute_force(seed):
    d, qp, gp, qc, gc = _problem(seed, nq=60)
    m = rank_metrics(d, qp, gp, qc, gc)
    vis = np.random.default_rng(seed).choice([0.1, 0.3, 0.5, 0.7, 0.9, 1.0], size=60)
    occ = by_occlusion(m["ap"], m["first_hit"], vis, "method")
    assert occ["source"] == "method" and [g["group"] for g in occ["groups"]] == list(OCCLUSION_LABELS)
    grp = occlusion_group(vis)
    for k, g in enumerate(occ["groups"]):
        members = [i for i in range(60) if grp[i] == k]
        scored = [i for i in members if m["first_hit"][i] >= 0]
        assert g["num_query"] == len(members) and g["num_valid"] == len(scored)
        if scored:
            assert g["rank1"] == pytest.approx(np.mean([m["first_hit"][i] == 0 for i in scored]))
            assert g["mAP"] == pytest.approx(np.mean([m["ap"][i] for i in scored]))
        else:
            assert g["rank1"] is None and g["mAP"] is None
    # camera pairs: brute force with a dictionary
    match = first_true_match(d, qp, gp, qc, gc)
    pairs = by_camera_pair(m["ap"], m["first_hit"], qc, np.where(match >= 0, gc[np.maximum(match, 0)], -1))
    ref: dict[tuple[int, int], list[int]] = {}
    for i in range(60):
        if match[i] >= 0:
            ref.setdefault((int(qc[i]), int(gc[match[i]])), []).append(i)
    assert [(p["query_camid"], p["match_camid"]) for p in pairs] == sorted(ref)
    for p in pairs:
        idx = ref[(p["query_camid"], p["match_camid"])]
        assert p["group"] == f"{p['query_camid']}->{p['match_camid']}" and p["num_query"] == len(idx)
        assert p["rank1"] == pytest.approx(np.mean([m["first_hit"][i] == 0 for i in idx]))
        assert p["mAP"] == pytest.approx(np.mean([m["ap"][i] for i in idx]))
    # the camera of the first true match agrees with the brute-force ranking
    assert all(gc[match[i]] != qc[i] and gp[match[i]] == qp[i] for i in range(60) if match[i] >= 0)


def test_group_metrics_rejects_ragged_input_and_camera_pairs_handle_no_match():
    with pytest.raises(ValueError):
        group_metrics([0.5], [0, 1], [0], ["a"])
    assert by_camera_pair([np.nan], [-1], [0], [-1]) == []


def test_visible_fraction_sources(tmp_path):
    lab = np.zeros((40, 20), np.uint8)
    lab[0:8] = ATOMIC_INDEX["head"]
    lab[8:20] = ATOMIC_INDEX["torso"]
    lab[20:24, 0:3] = ATOMIC_INDEX["left_arm"]  # arms count once (five grouping)
    lab[20:24, 17:20] = ATOMIC_INDEX["right_arm"]
    full = lab.copy()
    full[24:34] = ATOMIC_INDEX["left_leg"]
    full[34:40] = ATOMIC_INDEX["right_foot"]
    write_label(tmp_path / "upper.png", lab)
    write_label(tmp_path / "full.png", full)
    assert from_part_labels([str(tmp_path / "upper.png"), str(tmp_path / "full.png")]).tolist() == [0.6, 1.0]
    assert from_method_visibility(np.array([[0.9, 0.1, 0.5, 0.2]])).tolist() == [0.5]
    for name, size in (("tall.jpg", (50, 100)), ("squat.jpg", (50, 50))):
        Image.new("RGB", size).save(tmp_path / name)
    assert from_aspect_ratio([str(tmp_path / "tall.jpg"), str(tmp_path / "squat.jpg")]).tolist() == [1.0, 0.5]
    labelled = [Record(str(tmp_path / "tall.jpg"), 1, 0, str(tmp_path / "full.png"))]
    assert query_visible_fraction(labelled).source == "part_labels"
    bare = [Record(str(tmp_path / "squat.jpg"), 1, 0, str(tmp_path / "missing.png"))]
    assert query_visible_fraction(bare, {"visibility": np.ones((1, 3))}).source == "method"
    proxy = query_visible_fraction(bare, {})
    assert proxy.source == "aspect_ratio" and proxy.values.tolist() == [0.5]


def test_write_report_carries_groups_and_breakdown_columns(tmp_path):
    d, qp, gp, qc, gc = _problem(5, nq=8, ng=20)
    for k in range(20):
        Image.new("RGB", (20, 40)).save(tmp_path / f"g{k}.jpg")
    query = [Record(str(tmp_path / f"g{i}.jpg"), int(qp[i]), int(qc[i])) for i in range(8)]
    gallery = [Record(str(tmp_path / f"g{j}.jpg"), int(gp[j]), int(gc[j])) for j in range(20)]
    m = rank_metrics(d, qp, gp, qc, gc)
    bd = query_breakdown(d, query, gallery, {"visibility": np.full((8, 4), 0.9)}, topk=5)
    groups = bd.groups(m["ap"], m["first_hit"])
    files = write_report(tmp_path / "rep", {"dataset": "x"}, {"path": [r.path for r in query], "ap": m["ap"],
                         "first_hit": m["first_hit"], **bd.csv_columns(gallery)}, m["cmc"], groups=groups)
    metrics = json.loads(files["metrics"].read_text())
    assert metrics["by_occlusion"]["source"] == "method" and metrics["by_occlusion"]["groups"][4]["num_query"] == 8
    assert metrics["by_camera_pair"] == json.loads(json.dumps(groups["by_camera_pair"]))
    rows = list(csv.DictReader(files["per_query"].open()))
    assert list(rows[0]) == ["query_index", "path", "ap", "first_hit", *CSV_COLUMNS]
    for i, r in enumerate(rows):
        assert r["occlusion_group"] == "100%" and r["visible_fraction"] == "1.000"
        j = bd.match_index[i]
        assert r["first_match_path"] == (gallery[j].path if j >= 0 else "")
        assert int(r["first_match_camid"]) == (gallery[j].camid if j >= 0 else -1)
    md = files["report"].read_text()
    assert "## Accuracy by occlusion level" in md and "## Accuracy by camera pair" in md
    assert groups_markdown({}) == ""
