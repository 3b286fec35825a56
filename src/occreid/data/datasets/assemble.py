"""The last step of every loader: attach existing part labels, relabel train pids, write the notes."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from occreid.data.datasets.scan import LoadLog
from occreid.data.records import DatasetSplits, Record, relabel
from occreid.labels.format import label_path_for

LABELS_FOLDER = "occreid_labels"


def default_labels_root(dataset_folder: Path, labels_root: str | Path | None) -> Path:
    """The labels root a loader uses: the one given, else `<dataset folder>/occreid_labels`."""
    return Path(labels_root) if labels_root is not None else dataset_folder / LABELS_FOLDER


def with_labels(records: list[Record], labels_root: Path, split_folder: str) -> list[Record]:
    """Set `label_path` where a canonical label exists; one directory listing for the whole split."""
    try:
        with os.scandir(labels_root / split_folder) as entries:
            stems = {e.name[:-4] for e in entries if e.name.endswith(".png")}
    except (FileNotFoundError, NotADirectoryError):
        return records
    if not stems:
        return records
    return [
        replace(r, label_path=str(label_path_for(labels_root, split_folder, r.path)))
        if os.path.splitext(os.path.basename(r.path))[0] in stems
        else r
        for r in records
    ]


def assemble(
    name: str,
    folder: Path,
    log: LoadLog,
    *,
    train: list[Record] | None = None,
    query: list[Record] | None = None,
    gallery: list[Record] | None = None,
) -> DatasetSplits:
    """Build the `DatasetSplits`: train pids relabelled 0..N-1, test pids raw, notes from the log."""
    return DatasetSplits(
        name=name,
        root=str(folder),
        train=relabel(train) if train is not None else None,
        query=query,
        gallery=gallery,
        notes=log.to_notes(),
    )
