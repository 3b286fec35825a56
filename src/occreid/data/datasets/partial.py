"""The partial-body test sets: Partial-REID (`PPP_KKK.jpg`) and Partial-iLIDS (pid = file stem).

Both are test-only (train on market1501); query camid 0, gallery camid 1 since they have no cameras.
"""

from __future__ import annotations

import os
from pathlib import Path

from occreid.data.datasets.assemble import assemble, default_labels_root, with_labels
from occreid.data.datasets.body_folders import (
    GALLERY_CAMID,
    OCCLUDED,
    QUERY_CAMID,
    TEST_ONLY,
    WHOLE,
    read_split,
)
from occreid.data.datasets.scan import LoadLog, find_dataset_folder, image_names
from occreid.data.records import DatasetSplits, Record
from occreid.errors import DatasetError

PARTIAL = "partial_body_images"
PARTIAL_REID_QUERIES = {"partial": PARTIAL, "occluded": OCCLUDED}


def load_partial_reid(
    root: Path, log: LoadLog, *, labels_root: str | Path | None = None, query: str = "partial"
) -> DatasetSplits:
    """Partial-REID (`Partial_REID/`); `query` picks `partial_body_images` or `occluded_body_images`."""
    if query not in PARTIAL_REID_QUERIES:
        raise DatasetError(
            f"partial_reid: option query={query!r} is not one of {sorted(PARTIAL_REID_QUERIES)} "
            f"(set data.partial_reid_query)"
        )
    folder = find_dataset_folder(root, "partial_reid", ("Partial_REID",), (PARTIAL, OCCLUDED, WHOLE))
    labels = default_labels_root(folder, labels_root)
    query_folder = PARTIAL_REID_QUERIES[query]
    log.note(
        f"protocol: Partial-REID ({query}): query = {query_folder}/ (camid {QUERY_CAMID}), "
        f"gallery = {WHOLE}/ (camid {GALLERY_CAMID})"
    )
    log.absent_split("train", TEST_ONLY)
    query_records = read_split(folder, query_folder, QUERY_CAMID, log, labels, "query")
    gallery = read_split(folder, WHOLE, GALLERY_CAMID, log, labels, "gallery")
    return assemble("partial_reid", folder, log, query=query_records, gallery=gallery)


def parse_stem_pids(folder: Path, split_folder: str, camid: int, log: LoadLog) -> list[Record]:
    """Images named `<pid>.<ext>`: the stem is the identity."""
    base = str(folder / split_folder)
    records = []
    for name in image_names(folder / split_folder):
        stem = os.path.splitext(name)[0]
        if not stem.isdigit():
            log.skip(f"{split_folder}/", name)
            continue
        records.append(Record(os.path.join(base, name), int(stem), camid))
    return records


def load_partial_ilids(root: Path, log: LoadLog, *, labels_root: str | Path | None = None) -> DatasetSplits:
    """Partial-iLIDS (`Partial_iLIDS/`): `Probe/` + `Gallery/` or `partial_body_images/` +
    `whole_body_images/`; one probe and one gallery image per identity."""
    conventions = (("Probe", "Gallery"), (PARTIAL, WHOLE))
    markers = tuple(f for pair in conventions for f in pair)
    folder = find_dataset_folder(root, "partial_ilids", ("Partial_iLIDS",), markers)
    labels = default_labels_root(folder, labels_root)
    probe, gallery_folder = next(
        (pair for pair in conventions if any((folder / f).is_dir() for f in pair)), conventions[0]
    )
    log.note(f"protocol: Partial-iLIDS: query = {probe}/ (camid {QUERY_CAMID}), gallery = {gallery_folder}/")
    log.absent_split("train", TEST_ONLY)
    splits: dict[str, list[Record] | None] = {}
    for split, sub, camid in (("query", probe, QUERY_CAMID), ("gallery", gallery_folder, GALLERY_CAMID)):
        if not (folder / sub).is_dir():
            log.absent_split(split, f"{folder / sub}/ does not exist")
            splits[split] = None
        else:
            splits[split] = with_labels(parse_stem_pids(folder, sub, camid, log), labels, sub)
    return assemble("partial_ilids", folder, log, **splits)
