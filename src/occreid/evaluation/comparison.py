"""Two evaluations of the same test set side by side: headline metrics, accuracy per occlusion group and
camera pair, the queries one run fixes (rank-1 miss -> hit) or breaks (hit -> miss), and a paired
bootstrap interval on the mAP and rank-1 differences."""

from __future__ import annotations

import csv
import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from occreid.errors import ConfigError
from occreid.evaluation.by_group import OCCLUSION_LABELS, group_metrics
from occreid.evaluation.paired_bootstrap import interval_text, paired_bootstrap

HEADLINE = ("rank1", "rank5", "rank10", "mAP", "mINP")
#: Queries listed per direction (fixed / broken) in the Markdown; the JSON lists them all.
LIST_LIMIT = 25


def find_report(folder: str | Path, dataset: str | None = None) -> Path:
    """The report folder (holding metrics.json and per_query.csv) for an eval folder or a run folder."""
    p = Path(folder)
    if (p / "metrics.json").is_file():
        return p
    found = sorted(m.parent for m in [*p.glob("*/metrics.json"), *p.glob("eval/*/metrics.json")])
    if dataset:
        found = [f for f in found if f.name == dataset]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(f"{p}: no metrics.json here nor in a report folder below it; run `occreid eval` first "
                          "or give the report folder (e.g. runs/x/eval/occluded_duke)")
    raise ConfigError(f"{p}: several reports ({', '.join(f.name for f in found)}); pick one with --dataset "
                      "or give the report folder itself")


def load_run(folder: Path) -> dict[str, Any]:
    """metrics.json and the per_query.csv columns of one report folder."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        with (folder / "per_query.csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, ValueError) as e:
        raise ConfigError(f"{folder}: unreadable report ({e}); re-run `occreid eval` to rewrite it") from None
    cols = {k: [r.get(k, "") for r in rows] for k in (rows[0].keys() if rows else ())}
    return {"folder": str(folder), "metrics": metrics, "columns": cols,
            "ap": np.array([float(a) if a else np.nan for a in cols.get("ap", [])]),
            "first_hit": np.array([int(f) for f in cols.get("first_hit", [])], dtype=np.int64)}


def _check_same_test_set(a: dict, b: dict) -> None:
    ma, mb = a["metrics"], b["metrics"]
    for key in ("dataset", "num_query", "num_gallery"):
        if ma.get(key) != mb.get(key):
            raise ConfigError(f"{a['folder']} and {b['folder']} evaluate different test sets ({key}: "
                              f"{ma.get(key)} vs {mb.get(key)}); compare two evaluations of the same dataset")
    pa, pb = a["columns"].get("path"), b["columns"].get("path")
    if a["ap"].size != b["ap"].size or (pa and pb and all(pa) and all(pb) and pa != pb):
        raise ConfigError(f"{a['folder']} and {b['folder']}: the queries differ in number or order; "
                          "re-run `occreid eval` on the same data root for both")


def _common_groups(a: dict, b: dict) -> tuple[np.ndarray | None, str | None, str]:
    """One occlusion grouping for both runs: part labels when either has them, else RUN_A's."""
    sa = a["metrics"].get("by_occlusion", {}).get("source")
    sb = b["metrics"].get("by_occlusion", {}).get("source")
    pick, src = (b, sb) if sb == "part_labels" and sa != "part_labels" else (a, sa)
    labels = pick["columns"].get("occlusion_group")
    if not labels or not all(labels):
        return None, None, "none"
    index = {g: i for i, g in enumerate(OCCLUSION_LABELS)}
    return np.array([index[g] for g in labels]), src, "RUN_B" if pick is b else "RUN_A"


def _query_identities(a: dict, b: dict) -> list[str] | None:
    """The identities of the queries both reports share, from whichever lists them (reports older than the
    query_pid column do not); None, so single queries are resampled, when neither does or they disagree."""
    listed = [p for p in (a["columns"].get("query_pid"), b["columns"].get("query_pid")) if p and all(p)]
    return listed[0] if listed and all(p == listed[0] for p in listed) else None


def _bootstrap(a: dict, b: dict) -> dict[str, Any]:
    """B - A of two loaded reports of the same queries, resampling query identities."""
    valid = (a["first_hit"] >= 0) & (b["first_hit"] >= 0)
    clusters = _query_identities(a, b)
    return paired_bootstrap(np.where(valid, a["ap"], np.nan), np.where(valid, b["ap"], np.nan),
                            a["first_hit"] == 0, b["first_hit"] == 0, clusters)


def paired_difference(folder_a: str | Path, folder_b: str | Path, dataset: str | None = None) -> dict[str, Any]:
    """Only the comparison's paired bootstrap of B - A (mAP and rank-1), for tables of many runs."""
    a, b = load_run(find_report(folder_a, dataset)), load_run(find_report(folder_b, dataset))
    _check_same_test_set(a, b)
    return _bootstrap(a, b)


def compare_runs(folder_a: str | Path, folder_b: str | Path, dataset: str | None = None) -> dict[str, Any]:
    """The comparison as a JSON-ready dict (metrics in [0, 1])."""
    a, b = load_run(find_report(folder_a, dataset)), load_run(find_report(folder_b, dataset))
    _check_same_test_set(a, b)
    names = a["columns"].get("path") or [str(i) for i in range(a["ap"].size)]
    headline = {k: {"a": a["metrics"].get(k), "b": b["metrics"].get(k)} for k in HEADLINE}
    g, source, owner = _common_groups(a, b)
    occlusion = []
    if g is not None:
        ga = group_metrics(a["ap"], a["first_hit"], g, list(OCCLUSION_LABELS))
        gb = group_metrics(b["ap"], b["first_hit"], g, list(OCCLUSION_LABELS))
        occlusion = [{"group": x["group"], "num_query": x["num_query"], "rank1_a": x["rank1"],
                      "rank1_b": y["rank1"], "mAP_a": x["mAP"], "mAP_b": y["mAP"]} for x, y in zip(ga, gb)]
    pairs_a = {p["group"]: p for p in a["metrics"].get("by_camera_pair", [])}
    pairs_b = {p["group"]: p for p in b["metrics"].get("by_camera_pair", [])}
    # a report written before camera pairs existed has none: its counts are unknown (None), not 0
    count_a = 0 if "by_camera_pair" in a["metrics"] else None
    count_b = 0 if "by_camera_pair" in b["metrics"] else None
    cameras = [{"group": k, "num_query_a": pairs_a.get(k, {}).get("num_query", count_a),
                "num_query_b": pairs_b.get(k, {}).get("num_query", count_b),
                "rank1_a": pairs_a.get(k, {}).get("rank1"), "rank1_b": pairs_b.get(k, {}).get("rank1"),
                "mAP_a": pairs_a.get(k, {}).get("mAP"), "mAP_b": pairs_b.get(k, {}).get("mAP")}
               for k in sorted({*pairs_a, *pairs_b})]
    hit_a, hit_b = a["first_hit"] == 0, b["first_hit"] == 0
    valid = (a["first_hit"] >= 0) & (b["first_hit"] >= 0)

    def listing(mask: np.ndarray) -> list[dict[str, Any]]:
        idx = np.flatnonzero(mask)
        gain = np.nan_to_num(b["ap"][idx] - a["ap"][idx])
        idx = idx[np.argsort(-np.abs(gain), kind="stable")]
        return [{"query_index": int(i), "path": names[i], "first_hit_a": int(a["first_hit"][i]),
                 "first_hit_b": int(b["first_hit"][i]), "ap_a": _num(a["ap"][i]), "ap_b": _num(b["ap"][i])}
                for i in idx]

    return {
        "run_a": a["folder"], "run_b": b["folder"], "dataset": a["metrics"].get("dataset"),
        "method_a": a["metrics"].get("method"), "method_b": b["metrics"].get("method"),
        "headline": headline,
        "paired_bootstrap": _bootstrap(a, b),
        "by_occlusion": {"source": source, "grouped_by": owner, "groups": occlusion},
        "by_camera_pair": cameras,
        "without_camera_pairs": [r["folder"] for r in (a, b) if "by_camera_pair" not in r["metrics"]],
        "fixed_by_b": listing(valid & ~hit_a & hit_b),
        "broken_by_b": listing(valid & hit_a & ~hit_b),
        "num_both_hit": int((valid & hit_a & hit_b).sum()),
        "num_both_miss": int((valid & ~hit_a & ~hit_b).sum()),
    }


def _num(x: float) -> float | None:
    return None if math.isnan(x) else round(float(x), 6)


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _count(n: int | None) -> str:
    return "-" if n is None else str(n)


def _delta(a: Any, b: Any) -> str:
    return "-" if a is None or b is None else f"{100 * (b - a):+.1f}"


def comparison_markdown(c: dict[str, Any]) -> str:
    """A readable comparison: headline, groups, fixed / broken queries (metrics in %)."""
    lines = ["# Comparison", "", f"- RUN_A: `{c['run_a']}` ({c['method_a']})",
             f"- RUN_B: `{c['run_b']}` ({c['method_b']})", f"- dataset: {c['dataset']}", "",
             "| metric | RUN_A | RUN_B | B - A |", "|---|---|---|---|"]
    lines += [f"| {k} | {_pct(v['a'])} | {_pct(v['b'])} | {_delta(v['a'], v['b'])} |" for k, v in c["headline"].items()]
    boot = c.get("paired_bootstrap")
    if boot:
        lines += ["", f"Paired bootstrap of B - A ({boot['draws']} draws resampling {boot['resampled']}, "
                  f"{boot['num_units']} of them; {boot['num_queries']} queries with a true match in both): "
                  f"the interval covers test-set sampling (which {boot['resampled']} happen to be in it), "
                  "not training noise: compare seeds for that.", "",
                  f"| metric | B - A [{100 * boot['level']:.0f} % interval] | interval excludes 0 |",
                  "|---|---|---|"]
        sure = {None: "-", True: "yes", False: "no"}
        lines += [f"| {m} | {interval_text(boot[m])} | {sure[boot[m] and boot[m]['sure']]} |" for m in ("mAP", "rank1")]
    occ = c["by_occlusion"]
    if occ["groups"]:
        lines += ["", "## By occlusion level", "",
                  f"Both runs grouped by {occ['grouped_by']}'s visible fractions (from {occ['source']}).", "",
                  "| visible | queries | R1 A | R1 B | R1 B - A | mAP A | mAP B | mAP B - A |",
                  "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {g['group']} | {g['num_query']} | {_pct(g['rank1_a'])} | {_pct(g['rank1_b'])} | "
                  f"{_delta(g['rank1_a'], g['rank1_b'])} | {_pct(g['mAP_a'])} | {_pct(g['mAP_b'])} | "
                  f"{_delta(g['mAP_a'], g['mAP_b'])} |" for g in occ["groups"]]
    if c["by_camera_pair"]:
        lines += ["", "## By camera pair", "", "Query camera -> camera of each run's own first true match."]
        lines += [f"`{f}` was written before reports had camera pairs: its columns show `-`; re-run "
                  "`occreid eval` on it to fill them." for f in c.get("without_camera_pairs", [])]
        lines += ["",
                  "| cameras | queries A | queries B | R1 A | R1 B | mAP A | mAP B |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {g['group']} | {_count(g['num_query_a'])} | {_count(g['num_query_b'])} | {_pct(g['rank1_a'])} | "
                  f"{_pct(g['rank1_b'])} | {_pct(g['mAP_a'])} | {_pct(g['mAP_b'])} |" for g in c["by_camera_pair"]]
    lines += ["", "## Per query (rank-1)", "",
              f"RUN_B fixes {len(c['fixed_by_b'])} queries and breaks {len(c['broken_by_b'])}; both hit "
              f"{c['num_both_hit']}, both miss {c['num_both_miss']}. Largest AP changes first."]
    for title, key in (("Fixed by RUN_B", "fixed_by_b"), ("Broken by RUN_B", "broken_by_b")):
        rows = c[key]
        if not rows:
            continue
        lines += ["", f"### {title}", "", "| query | first hit A | first hit B | AP A | AP B |",
                  "|---|---|---|---|---|"]
        lines += [f"| {Path(r['path']).name} | {r['first_hit_a'] + 1} | {r['first_hit_b'] + 1} | {_pct(r['ap_a'])} | "
                  f"{_pct(r['ap_b'])} |" for r in rows[:LIST_LIMIT]]
        if len(rows) > LIST_LIMIT:
            lines.append(f"\n... and {len(rows) - LIST_LIMIT} more in compare.json.")
    return "\n".join(lines) + "\n"


def comparison_html(markdown_text: str) -> str:
    """A plain HTML page of the Markdown tables (no Markdown library: tables, headings and lines only)."""
    out, table = [], []

    def flush() -> None:
        if table:
            rows = [r for r in table if not set(r.replace("|", "").strip()) <= {"-"}]
            cells = [[html.escape(x.strip()) for x in r.strip().strip("|").split("|")] for r in rows]
            head = "".join(f"<th>{x}</th>" for x in cells[0])
            body = "".join("<tr>" + "".join(f"<td>{x}</td>" for x in r) + "</tr>" for r in cells[1:])
            out.append(f"<table><tr>{head}</tr>{body}</table>")
            table.clear()

    for line in markdown_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        level = len(line) - len(line.lstrip("#"))
        if level:
            out.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{html.escape(line.strip())}</p>")
    flush()
    style = ("body{font:13px system-ui,sans-serif;margin:16px}table{border-collapse:collapse;margin:6px 0}"
             "td,th{border:1px solid #ddd;padding:2px 8px}th{background:#f4f4f4}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>occreid comparison</title>'
            f"<style>{style}</style></head><body>{''.join(out)}</body></html>\n")


def write_comparison(c: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """compare.json, compare.md and compare.html in out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = comparison_markdown(c)
    files = {"json": out / "compare.json", "markdown": out / "compare.md", "html": out / "compare.html"}
    files["json"].write_text(json.dumps(c, indent=2) + "\n")
    files["markdown"].write_text(md)
    files["html"].write_text(comparison_html(md))
    return files
