"""Any dataset described by an `index.csv` with columns `path,pid,camid,split` (extra columns ignored).

Paths are relative to the csv's folder (absolute paths are kept). `split` is `train`, `query` or
`gallery`, or a variant `query_<name>` chosen with the option `query=<name>` (same for train and
gallery); a single variant is taken when the plain value is absent. An empty camid becomes 0 in train
and query, 1 in the gallery (sets without cameras). Rows that do not parse are skipped and counted.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from occreid.data.datasets.assemble import assemble, default_labels_root, with_labels
from occreid.data.datasets.scan import LoadLog
from occreid.data.records import SPLITS, DatasetSplits, Record
from occreid.errors import DatasetError

COLUMNS = ("path", "pid", "camid", "split")
DEFAULT_CAMID = {"train": 0, "query": 0, "gallery": 1}


def read_index(index: Path, log: LoadLog) -> dict[str, list[tuple[str, int, int | None]]]:
    """Rows of the csv grouped by split value: (path as written, pid, camid or None)."""
    groups: dict[str, list[tuple[str, int, int | None]]] = {}
    with open(index, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(
                f"{index}: missing column(s) {', '.join(missing)}; the header must name {','.join(COLUMNS)}"
            )
        for line, row in enumerate(reader, start=2):
            path, pid, camid, split = (str(row[c] or "").strip() for c in COLUMNS)
            try:
                parsed = (path, int(pid), int(camid) if camid else None)
            except ValueError:
                parsed = None
            if parsed is None or not path or not split:
                log.skip(index.name, f"line {line}")
                continue
            groups.setdefault(split, []).append(parsed)
    return groups


def pick_split_value(groups: dict, split: str, variant: str | None, index: Path) -> str | None:
    """Which split value feeds `split`: `split_<variant>` if asked, else `split`, else its only variant."""
    variants = sorted(k for k in groups if k.startswith(split + "_"))
    if variant is not None:
        if f"{split}_{variant}" not in groups:
            raise DatasetError(
                f"{index}: option {split}={variant!r} but no row has split '{split}_{variant}' "
                f"(values present: {', '.join(sorted(groups))})"
            )
        return f"{split}_{variant}"
    if split in groups:
        return split
    if len(variants) > 1:
        choices = ", ".join(v[len(split) + 1 :] for v in variants)
        raise DatasetError(
            f"{index}: several {split} sets ({', '.join(variants)}); choose one with the option {split}=<{choices}>"
        )
    return variants[0] if variants else None


def label_folder(folder: Path, path: str) -> str:
    """The split folder of an image for part-label lookup: its folder relative to the csv."""
    parent = os.path.dirname(path)
    return os.path.relpath(parent, folder) if os.path.isabs(parent) else parent


def load_csv(
    root: Path,
    log: LoadLog,
    *,
    labels_root: str | Path | None = None,
    train: str | None = None,
    query: str | None = None,
    gallery: str | None = None,
) -> DatasetSplits:
    """A folder holding `index.csv` (or the csv file itself)."""
    index = root if root.is_file() else root / "index.csv"
    if not index.is_file():
        raise DatasetError(f"csv: expected {index} with the columns {','.join(COLUMNS)}")
    folder = index.parent
    labels = default_labels_root(folder, labels_root)
    groups = read_index(index, log)
    chosen = {s: pick_split_value(groups, s, v, index) for s, v in zip(SPLITS, (train, query, gallery))}
    splits: dict[str, list[Record] | None] = {}
    for split, value in chosen.items():
        if value is None:
            log.absent_split(split, f"no row of {index} has split '{split}'")
            splits[split] = None
            continue
        if value != split:
            log.note(f"{split} = rows with split '{value}'")
        rows = groups[value]
        no_camid = sum(c is None for _, _, c in rows)
        if no_camid:
            log.note(f"{split}: {no_camid} rows without camid, set to {DEFAULT_CAMID[split]}")
        records = [
            Record(os.path.normpath(os.path.join(folder, p)), pid, DEFAULT_CAMID[split] if c is None else c)
            for p, pid, c in rows
        ]
        splits[split] = attach_labels_by_folder(records, [label_folder(folder, p) for p, _, _ in rows], labels)
    unused = sorted(set(groups) - set(chosen.values()))
    if unused:
        log.note(f"ignored {sum(len(groups[u]) for u in unused)} rows with split {', '.join(unused)}")
    return assemble("csv", folder, log, **splits)


def attach_labels_by_folder(records: list[Record], folders: list[str], labels: Path) -> list[Record]:
    """`with_labels` per distinct image folder (one listing each), keeping the csv order."""
    out = list(records)
    by_folder: dict[str, list[int]] = {}
    for i, f in enumerate(folders):
        by_folder.setdefault(f, []).append(i)
    for f, idx in by_folder.items():
        for i, r in zip(idx, with_labels([records[i] for i in idx], labels, f)):
            out[i] = r
    return out
