"""`occreid compare`: two report folders of one test set side by side; fixed / broken queries and group
tables against a recomputation here; refusals name the folders."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occreid.cli.main import main
from occreid.data.records import Record
from occreid.errors import ConfigError
from occreid.evaluation import rank_metrics, write_report
from occreid.evaluation.by_group import occlusion_group
from occreid.evaluation.comparison import compare_runs, find_report
from occreid.evaluation.query_breakdown import query_breakdown


def _records(tmp_path, nq=30, ng=40):
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir(exist_ok=True)
    for k in range(max(nq, ng)):
        Image.new("RGB", (20, 40)).save(tmp_path / "img" / f"{k}.jpg")
    q = [Record(str(tmp_path / "img" / f"{i}.jpg"), int(p), 0) for i, p in enumerate(rng.integers(0, 10, nq))]
    g = [Record(str(tmp_path / "img" / f"{j}.jpg"), j % 10, 1 + j % 2) for j in range(ng)]
    return q, g


def _run(folder, query, gallery, seed, method, dataset="occluded_duke", visibility=None):
    """A report folder as `occreid eval` writes it, from a random distance matrix."""
    rng = np.random.default_rng(seed)
    qp, gp = np.array([r.pid for r in query]), np.array([r.pid for r in gallery])
    qc, gc = np.array([r.camid for r in query]), np.array([r.camid for r in gallery])
    d = rng.random((len(query), len(gallery))) + 0.5 * (qp[:, None] != gp[None, :])
    m = rank_metrics(d, qp, gp, qc, gc)
    bd = query_breakdown(d, query, gallery, {"visibility": visibility} if visibility is not None else {})
    summary = {"dataset": dataset, "method": method, "num_query": len(query), "num_gallery": len(gallery),
               "rank1": float(m["cmc"][0]), "rank5": float(m["cmc"][4]), "rank10": float(m["cmc"][9]),
               "mAP": m["mAP"], "mINP": m["mINP"]}
    write_report(folder, summary, {"path": [r.path for r in query], "ap": m["ap"], "first_hit": m["first_hit"],
                                   **bd.csv_columns(gallery)}, m["cmc"], groups=bd.groups(m["ap"], m["first_hit"]))
    return m, bd


def test_compare_fixed_broken_and_groups(tmp_path):
    query, gallery = _records(tmp_path)
    ma, bda = _run(tmp_path / "a" / "eval" / "occluded_duke", query, gallery, 1, "bot")
    mb, _ = _run(tmp_path / "b", query, gallery, 2, "pabreid",
                 visibility=np.random.default_rng(3).random((len(query), 6)))
    c = compare_runs(tmp_path / "a", tmp_path / "b")
    fa, fb = ma["first_hit"], mb["first_hit"]
    assert sorted(r["query_index"] for r in c["fixed_by_b"]) == [i for i in range(30) if fa[i] > 0 and fb[i] == 0]
    assert sorted(r["query_index"] for r in c["broken_by_b"]) == [i for i in range(30) if fa[i] == 0 and fb[i] > 0]
    assert c["num_both_hit"] == int(np.sum((fa == 0) & (fb == 0)))
    assert c["headline"]["mAP"] == {"a": pytest.approx(ma["mAP"]), "b": pytest.approx(mb["mAP"])}
    # neither has part labels: both runs grouped by RUN_A's (aspect-ratio) visible fractions
    occ = c["by_occlusion"]
    assert occ["grouped_by"] == "RUN_A" and occ["source"] == "aspect_ratio"
    grp = occlusion_group(bda.visible.values)
    for k, row in enumerate(occ["groups"]):
        members = [i for i in range(30) if grp[i] == k and fb[i] >= 0]
        assert row["num_query"] == int(np.sum(grp == k))
        if members:
            assert row["mAP_b"] == pytest.approx(np.mean(mb["ap"][members]), abs=1e-6)
            assert row["rank1_a"] == pytest.approx(np.mean(fa[members] == 0))
    assert {p["group"] for p in c["by_camera_pair"]} <= {"0->1", "0->2"}


def test_compare_cli_writes_markdown_json_html(tmp_path, capsys):
    query, gallery = _records(tmp_path)
    _run(tmp_path / "a", query, gallery, 1, "bot")
    _run(tmp_path / "b", query, gallery, 2, "pcb")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# Comparison") and "## By occlusion level" in out and "| mAP |" in out
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "cmp")]) == 0
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert saved["method_a"] == "bot" and saved["method_b"] == "pcb"
    assert (tmp_path / "cmp" / "compare.md").read_text().startswith("# Comparison")
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert page.count("<table>") >= 3 and "<script" not in page


def test_compare_refuses_different_test_sets(tmp_path, capsys):
    query, gallery = _records(tmp_path)
    _run(tmp_path / "a", query, gallery, 1, "bot")
    _run(tmp_path / "b", query, gallery, 2, "bot", dataset="market1501")
    with pytest.raises(ConfigError, match="different test sets"):
        compare_runs(tmp_path / "a", tmp_path / "b")
    _run(tmp_path / "c", query[::-1], gallery, 2, "bot")
    with pytest.raises(ConfigError, match="order"):
        compare_runs(tmp_path / "a", tmp_path / "c")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "nowhere")]) == 2
    assert "run `occreid eval` first" in capsys.readouterr().err


def test_find_report_in_a_run_folder(tmp_path):
    query, gallery = _records(tmp_path, nq=5, ng=12)
    _run(tmp_path / "run" / "eval" / "occluded_duke", query, gallery, 1, "bot")
    _run(tmp_path / "run" / "eval" / "occluded_duke-rerank", query, gallery, 1, "bot")
    with pytest.raises(ConfigError, match="--dataset"):
        find_report(tmp_path / "run")
    assert find_report(tmp_path / "run", "occluded_duke") == tmp_path / "run" / "eval" / "occluded_duke"


def test_a_report_without_camera_pairs_shows_unknown_counts(tmp_path):
    """A report written before camera pairs existed: its counts are unknown ("-", None), not 0, and the
    markdown says which folder to re-evaluate."""
    from occreid.evaluation.comparison import comparison_markdown

    query, gallery = _records(tmp_path)
    _run(tmp_path / "a", query, gallery, 1, "bot")
    _run(tmp_path / "b", query, gallery, 2, "pcb")
    metrics = json.loads((tmp_path / "b" / "metrics.json").read_text())
    del metrics["by_camera_pair"]
    (tmp_path / "b" / "metrics.json").write_text(json.dumps(metrics))
    c = compare_runs(tmp_path / "a", tmp_path / "b")
    assert c["without_camera_pairs"] == [str(tmp_path / "b")]
    assert c["by_camera_pair"] and all(p["num_query_b"] is None and p["num_query_a"] > 0 for p in c["by_camera_pair"])
    md = comparison_markdown(c)
    assert f"`{tmp_path / 'b'}` was written before reports had camera pairs" in md
    assert all(line.split("|")[3].strip() == "-" for line in md.splitlines() if line.startswith("| 0->"))


def _drop_query_pid(per_query: Path) -> None:
    """Rewrite a per_query.csv as reports older than its query_pid column were."""
    rows = list(csv.DictReader(per_query.open(newline="")))
    with per_query.open("w", newline="") as fh:
        w = csv.DictWriter(fh, [k for k in rows[0] if k != "query_pid"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def test_compare_bootstraps_the_difference_by_query_identity(tmp_path):
    """The interval is centred on the headline B - A and resamples the reports' query_pid column (the
    queries are the same, so one report listing it is enough); with neither listing it (older reports)
    it falls back to single queries and says so."""
    from occreid.evaluation.comparison import comparison_markdown
    from occreid.evaluation.paired_bootstrap import paired_bootstrap

    query, gallery = _records(tmp_path)
    ma, _ = _run(tmp_path / "a", query, gallery, 1, "bot")
    mb, _ = _run(tmp_path / "b", query, gallery, 2, "pcb")
    c = compare_runs(tmp_path / "a", tmp_path / "b")
    boot = c["paired_bootstrap"]
    assert boot["resampled"] == "query identities"
    assert boot["num_units"] == len({r.pid for r in query})
    assert boot["mAP"]["delta"] == pytest.approx(mb["mAP"] - ma["mAP"], abs=1e-6)
    assert boot["rank1"]["delta"] == pytest.approx(mb["cmc"][0] - ma["cmc"][0], abs=1e-9)
    pids = [r.pid for r in query]
    expect = paired_bootstrap(ma["ap"], mb["ap"], ma["first_hit"] == 0, mb["first_hit"] == 0, pids)
    assert boot["mAP"]["low"] == pytest.approx(expect["mAP"]["low"], abs=1e-6)
    assert "| mAP | " in comparison_markdown(c) and "resampling query identities" in comparison_markdown(c)
    # an older report: no query_pid column
    _drop_query_pid(tmp_path / "b" / "per_query.csv")
    one = compare_runs(tmp_path / "a", tmp_path / "b")["paired_bootstrap"]
    assert one["resampled"] == "query identities" and one["mAP"] == boot["mAP"]
    assert compare_runs(tmp_path / "b", tmp_path / "a")["paired_bootstrap"]["resampled"] == "query identities"
    _drop_query_pid(tmp_path / "a" / "per_query.csv")
    old = compare_runs(tmp_path / "a", tmp_path / "b")["paired_bootstrap"]
    assert old["resampled"] == "queries" and old["num_units"] == old["num_queries"]
