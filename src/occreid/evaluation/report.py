"""Evaluation reports: metrics.json, per_query.csv and a readable report.md in one folder."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from occreid.evaluation.by_group import groups_markdown
from occreid.evaluation.query_breakdown import CSV_COLUMNS

#: Provenance keys every report names (missing ones are written as "-").
PROVENANCE_KEYS = ("dataset", "protocol", "checkpoint", "config_hash", "rerank", "flip")
#: Columns `write_report` takes in `per_query` (`path` and the breakdown's CSV_COLUMNS optional).
PER_QUERY_COLUMNS = {"ap", "first_hit", "path", *CSV_COLUMNS}
#: Summary scalars shown in report.md as CMC rows instead (rank-1 once, not twice).
CMC_KEYS = ("rank1", "rank5", "rank10", "rank20")


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
                 cmc: Any, groups: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write the three report files and return their paths.

    summary: provenance (PROVENANCE_KEYS) and scalar metrics (e.g. mAP, mINP, rank1). per_query:
    columns `ap` and `first_hit` (required), optional `path` and CSV_COLUMNS; row i is query i. groups:
    `by_occlusion` / `by_camera_pair` tables (QueryBreakdown.groups), added to metrics.json and report.md.
    """
    unknown = sorted(set(per_query) - PER_QUERY_COLUMNS)
    if unknown:  # e.g. `query` for `path`: the column would be written empty on every row
        raise ValueError(f"per_query: unknown columns {unknown}; expected {sorted(PER_QUERY_COLUMNS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cmc_list = [float(x) for x in np.asarray(cmc).reshape(-1)]
    ap = np.asarray(per_query["ap"], dtype=np.float64).reshape(-1)
    first = np.asarray(per_query["first_hit"]).reshape(-1)
    paths = per_query.get("path")
    extra = [c for c in CSV_COLUMNS if c in per_query]
    if first.size != ap.size or any(len(per_query[c]) != ap.size for c in ["path", *extra] if c in per_query):
        raise ValueError("per_query columns must have one entry per query")
    files = {"metrics": out / "metrics.json", "per_query": out / "per_query.csv", "report": out / "report.md"}
    files["metrics"].write_text(json.dumps(_plain({**summary, **(groups or {}), "cmc": cmc_list}), indent=2) + "\n")
    with files["per_query"].open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["query_index", "path", "ap", "first_hit", *extra])
        for i in range(ap.size):
            ap_text = "" if math.isnan(ap[i]) else f"{ap[i]:.6f}"
            writer.writerow([i, paths[i] if paths is not None else "", ap_text, int(first[i]),
                             *(per_query[c][i] for c in extra)])
    files["report"].write_text(_markdown(summary, cmc_list, ap) + groups_markdown(groups or {}))
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
              if k not in PROVENANCE_KEYS and k not in CMC_KEYS
              and isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)]
    for r in (1, 5, 10, 20):
        if r <= len(cmc):
            lines.append(f"| rank-{r} | {cmc[r - 1]:.4f} |")
    skipped = int(np.isnan(ap).sum())
    lines += ["", f"{ap.size} queries, {skipped} skipped (no positive in the gallery).", ""]
    return "\n".join(lines)


#: Longest report folder name spelled out; longer setting lists are replaced by a hash of them.
MAX_NAME = 80


def report_folder_name(dataset: str, tags: list[str]) -> str:
    """`<dataset>` for the checkpoint's own evaluation, `<dataset>-<tag>-<tag>` when settings differ
    (e.g. `market1501-rerank`, `occluded_duke-best-flip-eval.k1=10`), so no evaluation replaces another."""
    import hashlib
    import re

    safe = [re.sub(r"[^A-Za-z0-9._=,+-]", "_", t) for t in tags]
    name = "-".join([dataset, *safe])
    if len(name) > MAX_NAME:
        short = [t for t in safe if "=" not in t]
        digest = hashlib.sha256("\n".join(tags).encode()).hexdigest()[:8]
        name = "-".join([dataset, *short, f"cfg{digest}"])
    return name


def claim_report_folder(folder: Path, checkpoint: Path) -> None:
    """Refuse to write into a report folder that holds the report of another checkpoint file (same
    settings name, e.g. two runs evaluated with one --out); the same checkpoint's report is replaced."""
    from occreid.errors import ConfigError

    metrics = folder / "metrics.json"
    if not metrics.is_file():
        return
    try:
        theirs = json.loads(metrics.read_text()).get("checkpoint_path")
    except (OSError, ValueError):
        theirs = None
    ours = str(Path(checkpoint).resolve())
    if theirs is not None and theirs != ours:
        raise ConfigError(
            f"{folder} holds the evaluation of {theirs}, not of {ours}; give another report folder with "
            f"--out (or delete {folder}) so that neither report is overwritten"
        )
