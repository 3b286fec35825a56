"""report.html: its data, and the page itself in headless Chromium (rows, sorting, filtering, jumping, no
console errors, a screenshot) through the page's `#selftest` mode and --dump-dom."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occreid.data.records import Record
from occreid.errors import ConfigError
from occreid.evaluation import rank_metrics
from occreid.evaluation.html_report import html_report, report_data
from occreid.evaluation.query_breakdown import query_breakdown

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=10000")


def _chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless Chromium on PATH (tried chromium, chromium-browser, google-chrome): "
                "`apt-get install -y chromium` (.ci/run does this) to run the report.html browser tests")


def _browser(page: Path, tmp_path: Path, *args: str) -> str:
    """Run Chromium on `page` (a fresh profile under tmp_path) and return its stdout."""
    exe = _chromium()
    profile = tmp_path / f"chromium-profile-{len(list(tmp_path.glob('chromium-profile-*')))}"
    res = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args, page.as_uri() + "#selftest"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def _selftest(page: Path, tmp_path: Path) -> dict:
    dom = _browser(page, tmp_path, "--dump-dom")
    found = re.search(r'<pre id="selftest-result">(.*?)</pre>', dom, re.S)
    assert found, "the page wrote no #selftest result:\n" + dom[:2000]
    return json.loads(html.unescape(found.group(1)))


def _synthetic(tmp_path: Path, nq: int = 97, ng: int = 60, seed: int = 0):
    """Query / gallery records over small generated images, a noisy distance matrix with failures."""
    rng = np.random.default_rng(seed)
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    def record(name: str, pid: int, cam: int) -> Record:
        colour = tuple(int(c) for c in np.random.default_rng(pid).integers(0, 255, 3))
        Image.new("RGB", (32, 64), colour).save(img_dir / name)
        return Record(str(img_dir / name), pid, cam)
    q_pids, g_pids = rng.integers(0, 20, nq), np.arange(ng) % 20
    query = [record(f"q{i:03d}_id{q_pids[i]}.jpg", int(q_pids[i]), 0) for i in range(nq)]
    gallery = [record(f"g{j:03d}.jpg", int(g_pids[j]), int(1 + j % 2)) for j in range(ng)]
    d = rng.random((nq, ng)) + 0.6 * (q_pids[:, None] != g_pids[None, :])
    return query, gallery, d.astype(np.float32)


def _write(tmp_path: Path, query, gallery, d, **options) -> tuple[Path, dict]:
    qp, qc = np.array([r.pid for r in query]), np.array([r.camid for r in query])
    gp, gc = np.array([r.pid for r in gallery]), np.array([r.camid for r in gallery])
    m = rank_metrics(d, qp, gp, qc, gc)
    vis_q = np.random.default_rng(1).random((len(query), 6))
    bd = query_breakdown(d, query, gallery, {"visibility": vis_q})
    summary = {"dataset": "synthetic", "method": "pabreid", "rank1": float(m["cmc"][0]), "mAP": m["mAP"]}
    page = html_report(tmp_path / "report" / "report.html", summary, m["cmc"], m["ap"], m["first_hit"], query,
                       gallery, bd, bd.groups(m["ap"], m["first_hit"]), query_visibility=vis_q,
                       gallery_visibility=np.random.default_rng(2).random((len(gallery), 6)),
                       part_names=["head", "l_arm", "r_arm", "torso", "l_leg", "r_leg"], **options)
    return page, m


def _page_data(page: Path) -> dict:
    text = page.read_text()
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def test_report_data_columns_and_deduplicated_gallery(tmp_path):
    query, gallery, d = _synthetic(tmp_path, nq=12, ng=30)
    page, m = _write(tmp_path, query, gallery, d)
    data = _page_data(page)
    q, g = data["q"], data["g"]
    assert len(q["name"]) == 12 and data["k"] == 10 and len(q["pv"][0]) == 6 and data["parts"][0] == "head"
    assert len(g["name"]) == len(set(g["name"])) and len(data["img"]) == 12 + len(g["name"])
    assert all(u.startswith("data:image/jpeg;base64,") for u in data["img"])
    for i in range(12):  # the page's top-k is the stable ranking
        ranked = [gallery[j].path for j in np.argsort(d[i], kind="stable")[:10]]
        assert [g["name"][t] for t in q["top"][i]] == ranked
        assert q["first"][i] == m["first_hit"][i] + 1
    assert "<!--SLOT:" not in page.read_text()


def test_link_mode_names_and_script_escaping(tmp_path):
    query, gallery, d = _synthetic(tmp_path, nq=3, ng=12)
    page, _ = _write(tmp_path, query, gallery, d, images="link")
    data = _page_data(page)
    assert data["img"][0] == "../images/" + Path(query[0].path).name
    assert (page.parent / data["img"][0]).is_file()
    # a name holding "</script>" cannot close the data block early (link mode reads no image)
    evil = Record(str(tmp_path / "images" / "x</script><b>.jpg"), query[0].pid, 0)
    (tmp_path / "b").mkdir()
    page2, _ = _write(tmp_path / "b", [evil, *query[1:]], gallery, d, images="link")
    assert _page_data(page2)["q"]["name"][0] == evil.path
    with pytest.raises(ConfigError):
        report_data({}, [1.0], [0], query[:1], gallery, query_breakdown(d[:1], query[:1], gallery),
                    tmp_path, images="thumbnails")


def test_queries_without_label_render_as_unknown(tmp_path):
    """Part labels for some queries only: the others have no visible fraction (NaN); the page data holds
    null and the "no label" group, and the page renders without errors and sorts them last."""
    from occreid.evaluation.visible_fraction import VisibleFraction

    query, gallery, d = _synthetic(tmp_path, nq=6, ng=20)
    qp, qc = np.array([r.pid for r in query]), np.array([r.camid for r in query])
    m = rank_metrics(d, qp, np.array([r.pid for r in gallery]), qc, np.array([r.camid for r in gallery]))
    bd = query_breakdown(d, query, gallery)
    bd.visible = VisibleFraction(np.array([np.nan, 0.4, 1.0, np.nan, 0.2, 0.8]), "part_labels")
    page = html_report(tmp_path / "r" / "report.html", {"dataset": "synthetic"}, m["cmc"], m["ap"],
                       m["first_hit"], query, gallery, bd, bd.groups(m["ap"], m["first_hit"]))
    data = _page_data(page)
    assert data["q"]["vis"] == [None, 0.4, 1.0, None, 0.2, 0.8]
    assert data["q"]["grp"] == [5, 1, 4, 5, 0, 3] and data["groups"][5] == "no label"
    result = _selftest(page, tmp_path)
    assert result["errors"] == [] and result["total"] == 6
    assert result["vis_asc_order"][:4] == [4, 1, 5, 2] and sorted(result["vis_asc_order"][4:]) == [0, 3]


def test_report_page_sorts_filters_and_jumps_in_chromium(tmp_path):
    query, gallery, d = _synthetic(tmp_path)
    page, m = _write(tmp_path, query, gallery, d)
    result = _selftest(page, tmp_path)
    assert result["errors"] == []
    n, first, ap = len(query), m["first_hit"], m["ap"]
    assert result["total"] == n and result["rows_first_page"] == min(n, result["page_size"]) == 40
    assert result["images_on_page"] == 40 * 11
    assert result["failures_r1"] == int(np.sum(first != 0)) > 0
    assert result["failures_r1_rows_ok"] is True
    assert result["failures_topk"] == int(np.sum((first < 0) | (first >= 10)))
    shown_ap = [np.inf if np.isnan(a) else round(float(a), 4) for a in ap]
    assert result["ap_ascending"] is True
    assert result["ap_asc_order"] == sorted(range(n), key=lambda i: (shown_ap[i], i))
    worst = [1e9 if f < 0 else f + 1 for f in first]
    assert result["first_desc_first"] == min(range(n), key=lambda i: (-worst[i], i))
    assert result["jump_found"] == result["jump_target"] == n - 1 and result["jump_row_shown"] is True
    shot = tmp_path / "report.png"
    _browser(page, tmp_path, "--window-size=1400,1000", f"--screenshot={shot}")
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
        assert im.size == (1400, 1000) and len(np.unique(pixels, axis=0)) > 50  # not a blank page


def test_occreid_eval_writes_a_report_that_renders(tiny_market, tmp_path):
    from occreid.cli.main import main
    from tests.test_api import write_checkpoint

    ckpt = write_checkpoint(tmp_path / "run" / "last.pt", "pabreid", **{
        "data.dataset": "market1501", "data.root": str(tiny_market), "data.workers": 0, "run.progress": "false"})
    assert main(["eval", "--checkpoint", str(ckpt), "--out", str(tmp_path / "ev")]) == 0
    folder = tmp_path / "ev" / "market1501"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["by_occlusion"]["source"] == "method" and metrics["by_camera_pair"]
    data = _page_data(folder / "report.html")
    assert len(data["q"]["name"]) == metrics["num_query"] and data["q"]["pv"] and data["g"]["pv"]
    assert len(data["parts"]) == len(data["q"]["pv"][0])
    result = _selftest(folder / "report.html", tmp_path)
    assert result["errors"] == [] and result["total"] == result["rows_first_page"] == metrics["num_query"]


def test_group_tables_show_the_busiest_camera_pairs_and_fold_the_rest():
    from occreid.evaluation.by_group import by_occlusion
    from occreid.evaluation.html_report import CAMERA_PAIRS_SHOWN, groups_html

    pairs = [{"group": f"{a}->{a + 1}", "num_query": n, "num_valid": n, "rank1": 0.5, "mAP": 0.25}
             for a, n in enumerate([3, 40, 1, 7, 22, 9, 15, 2, 8, 30, 11, 4, 6, 5, 12])]
    occ = by_occlusion([0.5, 1.0], [0, 0], [1.0, 0.3], "part_labels")
    page = groups_html({"by_occlusion": occ, "by_camera_pair": pairs})
    top, fold = page.split("<details>")
    top = top.split("By camera pair")[1]
    shown = re.findall(r"<tr><td>(\d+-&gt;\d+)</td><td>(\d+)</td>", top)
    assert len(shown) == CAMERA_PAIRS_SHOWN == 10
    assert [int(n) for _, n in shown] == sorted((p["num_query"] for p in pairs), reverse=True)[:10]
    assert len(re.findall(r"<tr><td>\d+-&gt;\d+</td>", fold)) == 15 and "all 15 pairs" in fold
    assert "no label" not in page  # an empty unknown group is not listed
    occ_nan = by_occlusion([0.5, 1.0], [0, 0], [np.nan, 0.3], "part_labels")
    assert "<tr><td>no label</td><td>1</td>" in groups_html({"by_occlusion": occ_nan, "by_camera_pair": pairs[:3]})
    assert "<details>" not in groups_html({"by_occlusion": occ, "by_camera_pair": pairs[:3]})
