"""Pictures of an evaluation: CMC curve, rank lists (query + top-k with coloured borders) and the small
embedded JPEG thumbnails of report.html."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from occreid.evaluation.ranking import as_numpy

MARK_COLOURS = {"correct": (0, 170, 0), "wrong": (220, 0, 0), "junk": (150, 150, 150)}
THUMB = (64, 128)  # width, height of a thumbnail
BORDER = 4
GAP = 6
#: Height in pixels of report.html's thumbnails (width follows the aspect ratio) and their JPEG quality.
THUMB_HEIGHT = 80
THUMB_QUALITY = 70


def plot_cmc(cmc: Any, path: str | Path) -> Path:
    """Save the CMC curve (rank 1..len) as an image with matplotlib's Agg backend."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    values = np.asarray(cmc, dtype=np.float64).reshape(-1)
    fig = Figure(figsize=(5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(np.arange(1, values.size + 1), values * 100, marker=".")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(str(path))
    return Path(path)


def _thumb(path: str | Path, colour: tuple[int, int, int] | None) -> Image.Image:
    with Image.open(path) as im:
        img = im.convert("RGB").resize(THUMB)
    if colour is None:
        return img
    framed = Image.new("RGB", (THUMB[0] + 2 * BORDER, THUMB[1] + 2 * BORDER), colour)
    framed.paste(img, (BORDER, BORDER))
    return framed


def _row(query_path: str | Path, gallery_paths: Sequence[str | Path], marks: Sequence[str]) -> Image.Image:
    if len(gallery_paths) != len(marks):
        raise ValueError(f"{len(gallery_paths)} gallery images but {len(marks)} marks")
    unknown = set(marks) - set(MARK_COLOURS)
    if unknown:
        raise ValueError(f"unknown marks {sorted(unknown)}; expected one of {sorted(MARK_COLOURS)}")
    cell_w, cell_h = THUMB[0] + 2 * BORDER, THUMB[1] + 2 * BORDER
    row = Image.new("RGB", ((len(marks) + 1) * (cell_w + GAP) + GAP, cell_h + 2 * GAP), "white")
    row.paste(_thumb(query_path, (0, 0, 0)), (GAP, GAP))
    ImageDraw.Draw(row).line([(cell_w + 1.5 * GAP, 0), (cell_w + 1.5 * GAP, row.height)], fill="black")
    for k, (p, m) in enumerate(zip(gallery_paths, marks)):
        row.paste(_thumb(p, MARK_COLOURS[m]), (GAP + (k + 1) * (cell_w + GAP), GAP))
    return row


def rank_list_picture(query_path: str | Path, gallery_paths_top10: Sequence[str | Path],
                      marks: Sequence[str], path: str | Path) -> Path:
    """Save one row: the query (black frame) then its top gallery images framed green (correct),
    red (wrong) or grey (junk: same identity and camera, ignored by the metrics)."""
    _row(query_path, gallery_paths_top10, marks).save(path)
    return Path(path)


def rank_lists(distmat: Any, q_paths: Sequence[str], g_paths: Sequence[str], q_pids: Any, g_pids: Any,
               q_camids: Any, g_camids: Any, query_indices: Sequence[int], out_dir: str | Path,
               topk: int = 10) -> Path:
    """Save `rank_lists.png` in out_dir: one row per selected query with its top-k (stable) ranking."""
    d = as_numpy(distmat)
    qp, gp, qc, gc = (as_numpy(x).reshape(-1) for x in (q_pids, g_pids, q_camids, g_camids))
    rows = []
    for i in query_indices:  # a handful of queries for a picture, not the evaluation hot path
        top = np.argsort(d[i], kind="stable")[:topk]
        same = gp[top] == qp[i]
        junk = same & (gc[top] == qc[i])
        marks = np.where(junk, "junk", np.where(same, "correct", "wrong")).tolist()
        rows.append(_row(q_paths[i], [g_paths[j] for j in top], marks))
    if not rows:
        raise ValueError("query_indices is empty: nothing to draw")
    width = max(r.width for r in rows)
    sheet = Image.new("RGB", (width, sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sheet.save(out / "rank_lists.png")
    return out / "rank_lists.png"


def jpeg_thumbnail_uri(path: str | Path, height: int = THUMB_HEIGHT, quality: int = THUMB_QUALITY) -> str:
    """A `data:image/jpeg;base64,...` URI of the image scaled to `height` (JPEG decoded at reduced size)."""
    with Image.open(path) as im:
        w, h = im.size
        size = (max(1, round(w * height / max(h, 1))), height)
        im.draft("RGB", size)  # JPEG: decode at 1/2, 1/4 or 1/8 scale, far cheaper than full size
        small = im.convert("RGB").resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality, optimize=False)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def jpeg_thumbnail_uris(paths: Sequence[str | Path], height: int = THUMB_HEIGHT, quality: int = THUMB_QUALITY,
                        workers: int | None = None) -> list[str]:
    """Thumbnail URIs of many images, in order, on a thread pool (PIL releases the GIL while coding).
    An unreadable image gets "" so one bad file does not cost the whole report."""
    def one(p: str | Path) -> str:
        try:
            return jpeg_thumbnail_uri(p, height, quality)
        except OSError:
            return ""

    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 64:
        return [one(p) for p in paths]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths, chunksize=64))
