"""Rank-list picture of search results: one row per query (query, then its top results).

Frames: green = same identity as the query, red = another identity (both when Market-style names give
the identities), grey = identity unknown (rows are drawn by `evaluation.pictures.rank_list_picture`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from PIL import Image

from occreid.inference.index import SearchResult, parse_names


def search_picture(result: SearchResult, path: str | Path, max_queries: int = 8) -> Path | None:
    """Save the rank lists of the first `max_queries` queries with results; None when there is none."""
    from occreid.evaluation.pictures import rank_list_picture

    q_pids, _ = parse_names(result.query_paths)
    g_pids, _ = parse_names(result.gallery_paths)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(len(result.query_paths)):  # a handful of rows for a picture
            if len(rows) == max_queries:
                break
            hits = result.indices[i][result.indices[i] >= 0]
            if hits.size == 0:
                continue
            known = (q_pids[i] > 0) & (g_pids[hits] >= 0)
            marks = ["correct" if k and g_pids[j] == q_pids[i] else "wrong" if k else "junk"
                     for j, k in zip(hits.tolist(), known.tolist())]
            row = rank_list_picture(result.query_paths[i], [result.gallery_paths[j] for j in hits], marks,
                                    Path(tmp) / f"row{i}.png")
            with Image.open(row) as im:
                rows.append(im.copy())
    if not rows:
        return None
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
