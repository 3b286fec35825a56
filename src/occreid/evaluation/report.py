"""Evaluation reports: metrics.json, per_query.csv and a readable report.md in one folder."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

#: Provenance keys every report names (missing ones are written as "-").
PROVENANCE_KEYS = ("dataset", "protocol", "checkpoint", "config_hash", "rerank", "flip")


def _plain(value: Any) -> Any:
    """JSON-safe version of numpy / torch scalars and arrays (NaN becomes null)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_report(out_dir: str | Path, summary: dict[str, Any], per_query: dict[str, Any],
                 cmc: Any) -> dict[str, Path]:
    """Write the three report files and return their paths.

    summary: provenance (PROVENANCE_KEYS) and scalar metrics (e.g. mAP, mINP, rank1). per_query:
    columns `ap` and `first_hit` (required), optional `path`; row i is query i.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmc_list = [float(x) for x in np.asarray(cmc).reshape(-1)]
    ap = np.asarray(per_query["ap"], dtype=np.float64).reshape(-1)
    first = np.asarray(per_query["first_hit"]).reshape(-1)
    paths = per_query.get("path")
    if first.size != ap.size or (paths is not None and len(paths) != ap.size):
        raise ValueError("per_query columns must have one entry per query")
    files = {"metrics": out / "metrics.json", "per_query": out / "per_query.csv", "report": out / "report.md"}
    files["metrics"].write_text(json.dumps(_plain({**summary, "cmc": cmc_list}), indent=2) + "\n")
    with files["per_query"].open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["query_index", "path", "ap", "first_hit"])
        for i in range(ap.size):
            ap_text = "" if math.isnan(ap[i]) else f"{ap[i]:.6f}"
            writer.writerow([i, paths[i] if paths is not None else "", ap_text, int(first[i])])
    files["report"].write_text(_markdown(summary, cmc_list, ap))
    return files


def _fmt(value: Any) -> str:
    if isinstance(value, float | np.floating):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _markdown(summary: dict[str, Any], cmc: list[float], ap: np.ndarray) -> str:
    lines = ["# Evaluation report", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(summary.get(k))} |" for k in PROVENANCE_KEYS]
    lines += ["", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in summary.items()
              if k not in PROVENANCE_KEYS and isinstance(v, int | float | np.integer | np.floating)]
    for r in (1, 5, 10, 20):
        if r <= len(cmc):
            lines.append(f"| rank-{r} | {cmc[r - 1]:.4f} |")
    skipped = int(np.isnan(ap).sum())
    lines += ["", f"{ap.size} queries, {skipped} skipped (no positive in the gallery).", ""]
    return "\n".join(lines)
