"""report.html: one file that opens from disk and lets a reader browse every query's top-k, sort by AP or
first-match rank, filter to failures and jump to a query; accuracy by occlusion level and camera pair."""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from occreid.data.records import Record
from occreid.errors import ConfigError
from occreid.evaluation.by_group import OCCLUSION_LABELS, UNKNOWN_GROUP, occlusion_group
from occreid.evaluation.html_report_page import PAGE
from occreid.evaluation.pictures import jpeg_thumbnail_uris
from occreid.evaluation.query_breakdown import QueryBreakdown

#: How report.html shows images: embedded JPEG thumbnails (portable) or links relative to the report.
IMAGE_MODES = ("embed", "link")
SUMMARY_KEYS = ("dataset", "protocol", "method", "checkpoint", "config_hash", "rerank", "flip",
                "num_query", "num_gallery", "num_valid_queries")
METRIC_KEYS = (("rank1", "R1"), ("rank5", "R5"), ("rank10", "R10"), ("mAP", "mAP"), ("mINP", "mINP"))


def _percent(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * float(v):.1f}"


def summary_html(summary: dict[str, Any]) -> str:
    """The provenance table and the headline metrics (in %)."""
    rows = [f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(summary.get(k, '-')))}</td></tr>"
            for k in SUMMARY_KEYS]
    rows += [f"<tr><td><b>{label}</b></td><td><b>{_percent(summary.get(k))}</b></td></tr>"
             for k, label in METRIC_KEYS]
    return '<table class="kv">' + "".join(rows) + "</table>"


def cmc_svg(cmc: Any, width: int = 360, height: int = 220) -> str:
    """The CMC curve as inline SVG (rank 1..len on x, matching rate 0..100 % on y)."""
    v = np.asarray(cmc, dtype=np.float64).reshape(-1)
    if v.size == 0:
        return ""
    left, bottom, pad = 36, 24, 8
    w, h = width - left - pad, height - bottom - pad
    xs = left + (np.arange(v.size) / max(v.size - 1, 1)) * w
    ys = pad + (1 - np.clip(v, 0, 1)) * h
    pts = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    grid = "".join(
        f'<line x1="{left}" x2="{left + w}" y1="{pad + (1 - t) * h:.1f}" y2="{pad + (1 - t) * h:.1f}" '
        f'stroke="#ddd"/><text x="{left - 4}" y="{pad + (1 - t) * h + 4:.1f}" text-anchor="end" '
        f'font-size="10">{int(t * 100)}</text>' for t in (0, 0.25, 0.5, 0.75, 1.0)
    )
    ticks = "".join(
        f'<text x="{xs[r - 1]:.1f}" y="{height - 8}" text-anchor="middle" font-size="10">{r}</text>'
        for r in sorted({1, 5, 10, 20, v.size} & set(range(1, v.size + 1)))
    )
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
            f'aria-label="CMC curve"><title>CMC: rank-1 {100 * v[0]:.1f} %</title>{grid}{ticks}'
            f'<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="{pts}"/>'
            f'<text x="{left - 12}" y="{height - 8}" text-anchor="end" font-size="10">rank</text></svg>')


#: Camera pairs listed before the "all pairs" fold (the busiest, by number of queries).
CAMERA_PAIRS_SHOWN = 10


def groups_html(groups: dict[str, Any]) -> str:
    """The two group tables: by occlusion level and by camera pair (the busiest pairs, all in a fold)."""
    def table(head: str, rows: list[dict[str, Any]]) -> str:
        body = "".join(
            f"<tr><td>{html.escape(str(g['group']))}</td><td>{g['num_query']}</td>"
            f"<td>{_percent(g['rank1'])}</td><td>{_percent(g['mAP'])}</td></tr>" for g in rows
        )
        return (f'<table class="grp"><tr><th>{head}</th><th>queries</th>'
                f"<th>R1 %</th><th>mAP %</th></tr>{body}</table>")

    parts = []
    occ = groups.get("by_occlusion")
    if occ:
        rows = [g for i, g in enumerate(occ["groups"]) if i != UNKNOWN_GROUP or g["num_query"]]
        parts.append(f"<div><h2>By occlusion level <small>(visible fraction from {html.escape(occ['source'])})"
                     f"</small></h2>{table('visible', rows)}</div>")
    pairs = groups.get("by_camera_pair") or []
    if pairs:
        busiest = sorted(pairs, key=lambda g: -g["num_query"])[:CAMERA_PAIRS_SHOWN]
        fold = (f"<details><summary>all {len(pairs)} pairs</summary>{table('cameras', pairs)}</details>"
                if len(pairs) > len(busiest) else "")
        shown = "" if fold == "" else f" the {len(busiest)} with most queries;"
        parts.append(f"<div><h2>By camera pair <small>(query &rarr; first true match;{shown} "
                     f"{len(pairs)} pairs)</small></h2>{table('cameras', busiest)}{fold}</div>")
    return '<div class="top">' + "".join(parts) + "</div>"


def _image_sources(paths: Sequence[str], out_dir: Path, images: str) -> list[str]:
    if images == "embed":
        return jpeg_thumbnail_uris(paths)
    here, folders = out_dir.resolve(), {}
    srcs = []
    for p in paths:  # one resolve / relpath per image folder, not per image
        parent, name = os.path.split(str(p))
        if parent not in folders:
            folder = Path(parent or ".").resolve()
            try:
                folders[parent] = quote(Path(os.path.relpath(folder, here)).as_posix()) + "/"
            except ValueError:  # another drive (Windows): no relative path exists
                folders[parent] = folder.as_uri() + "/"
        srcs.append(folders[parent] + quote(name))
    return srcs


def _visibility_percent(vis: Any, rows: np.ndarray) -> list[list[int]] | None:
    if vis is None:
        return None
    v = np.asarray(vis.detach().cpu().numpy() if hasattr(vis, "detach") else vis, dtype=np.float64)
    v = v.reshape(v.shape[0], -1)[rows]
    return np.rint(np.clip(v, 0, 1) * 100).astype(int).tolist()


def report_data(summary: dict[str, Any], ap: Any, first_hit: Any, query: Sequence[Record],
                gallery: Sequence[Record], bd: QueryBreakdown, out_dir: Path, *, images: str = "embed",
                query_visibility: Any = None, gallery_visibility: Any = None,
                part_names: Sequence[str] = ()) -> dict[str, Any]:
    """The JSON the page's script reads: columns per query, the gallery images that appear in a top-k."""
    if images not in IMAGE_MODES:
        raise ConfigError(f"report images: unknown mode {images!r}; expected one of {IMAGE_MODES}")
    used, local = np.unique(bd.top.reshape(-1), return_inverse=True)
    top_local = local.reshape(bd.top.shape)
    ap = np.asarray(ap, dtype=np.float64).reshape(-1)
    first = np.asarray(first_hit).reshape(-1)
    sources = _image_sources([r.path for r in query] + [gallery[j].path for j in used.tolist()], out_dir, images)
    nq = len(query)
    return {
        "k": int(bd.top.shape[1]),
        "parts": list(part_names),
        "groups": list(OCCLUSION_LABELS),
        "visibility_source": bd.visible.source,
        "img": sources,
        "q": {
            "name": [r.path for r in query],
            "img": list(range(nq)),
            "pid": [r.pid for r in query],
            "cam": [r.camid for r in query],
            "ap": [None if math.isnan(a) else round(float(a), 4) for a in ap],
            "first": np.where(first >= 0, first + 1, 0).tolist(),  # 1-based rank, 0 = no true match
            "vis": [None if math.isnan(v) else v for v in np.round(bd.visible.values, 3).tolist()],  # NaN: no label
            "grp": occlusion_group(bd.visible.values).tolist(),
            "pv": _visibility_percent(query_visibility, np.arange(nq)),
            "top": top_local.tolist(),
            "dist": [[x if math.isfinite(x) else None for x in row]
                     for row in np.round(bd.top_distance.astype(np.float64), 4).tolist()],
            "mark": ["".join(m) for m in bd.marks.tolist()],
        },
        "g": {
            "name": [gallery[j].path for j in used.tolist()],
            "img": list(range(nq, nq + used.size)),
            "pid": [gallery[j].pid for j in used.tolist()],
            "cam": [gallery[j].camid for j in used.tolist()],
            "pv": _visibility_percent(gallery_visibility, used),
        },
    }


def write_html_report(path: str | Path, summary: dict[str, Any], cmc: Any, groups: dict[str, Any],
                      data: dict[str, Any]) -> Path:
    """Fill the page with the summary, CMC curve, group tables and `report_data`'s JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    title = html.escape(f"occreid evaluation: {summary.get('dataset', '')} · {summary.get('method', '')}")
    payload = json.dumps(data, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    page = (PAGE.replace("<!--SLOT:title-->", title)
            .replace("<!--SLOT:summary-->", summary_html(summary))
            .replace("<!--SLOT:cmc-->", cmc_svg(cmc))
            .replace("<!--SLOT:groups-->", groups_html(groups))
            .replace("<!--SLOT:data-->", payload))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def html_report(path: str | Path, summary: dict[str, Any], cmc: Any, ap: Any, first_hit: Any,
                query: Sequence[Record], gallery: Sequence[Record], bd: QueryBreakdown, groups: dict[str, Any],
                **options: Any) -> Path:
    """Build the data and write report.html in one call; `options` go to `report_data`."""
    data = report_data(summary, ap, first_hit, query, gallery, bd, Path(path).parent, **options)
    return write_html_report(path, summary, cmc, groups, data)


def visibility_options(cfg: Any, query_features: dict, gallery_features: dict) -> dict[str, Any]:
    """`html_report` options for the method's part visibility bars (empty when it predicts none)."""
    from occreid.evaluation.visible_fraction import method_part_names
    from occreid.methods import get_method

    qv, gv = query_features.get("visibility"), gallery_features.get("visibility")
    if qv is None or gv is None:
        return {}
    num_parts = int(np.prod(qv.shape[1:]))
    return {"query_visibility": qv, "gallery_visibility": gv,
            "part_names": method_part_names(get_method(cfg.model.name), cfg, num_parts)}
