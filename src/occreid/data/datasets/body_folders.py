"""Datasets with `occluded_body_images/` and `whole_body_images/` split folders holding one folder per
identity: Occluded-REID (test-only) and P-DukeMTMC-reID. Occluded images are the query (camid 0),
whole-body images the gallery (camid 1): the sets have no camera labels, so the two views stand in.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from occreid.data.datasets.assemble import assemble, default_labels_root, with_labels
from occreid.data.datasets.scan import LoadLog, find_dataset_folder, image_names, subfolder_names
from occreid.data.records import DatasetSplits, Record

OCCLUDED, WHOLE = "occluded_body_images", "whole_body_images"
QUERY_CAMID, GALLERY_CAMID = 0, 1
TEST_ONLY = "test-only dataset: train on another one (e.g. market1501)"
LEADING_PID = re.compile(r"^(\d+)_")


def parse_pid_folders(folder: Path, split_folder: str, camid: int, log: LoadLog) -> list[Record]:
    """Images in `<split_folder>/<pid>/`; images directly in the split folder are read as `PID_*`."""
    base = folder / split_folder
    records = []
    for sub in subfolder_names(base):
        if not sub.isdigit():
            log.skip(f"{split_folder}/", sub + "/")
            continue
        prefix = os.path.join(str(base), sub)
        records += [Record(os.path.join(prefix, n), int(sub), camid) for n in image_names(base / sub)]
    for name in image_names(base):
        m = LEADING_PID.match(name)
        if m is None:
            log.skip(f"{split_folder}/", name)
            continue
        records.append(Record(os.path.join(str(base), name), int(m.group(1)), camid))
    return records


def read_split(
    folder: Path, split_folder: str, camid: int, log: LoadLog, labels: Path, split: str
) -> list[Record] | None:
    """One split from one folder, or None (noted in the log) when the folder is absent."""
    if not (folder / split_folder).is_dir():
        log.absent_split(split, f"{folder / split_folder}/ does not exist")
        return None
    return with_labels(parse_pid_folders(folder, split_folder, camid, log), labels, split_folder)


def load_occluded_reid(root: Path, log: LoadLog, *, labels_root: str | Path | None = None) -> DatasetSplits:
    """Occluded-REID (`Occluded_REID/`): `.tif` or `.jpg` images; test-only."""
    folder = find_dataset_folder(root, "occluded_reid", ("Occluded_REID",), (OCCLUDED, WHOLE))
    labels = default_labels_root(folder, labels_root)
    log.absent_split("train", TEST_ONLY)
    query = read_split(folder, OCCLUDED, QUERY_CAMID, log, labels, "query")
    gallery = read_split(folder, WHOLE, GALLERY_CAMID, log, labels, "gallery")
    return assemble("occluded_reid", folder, log, query=query, gallery=gallery)


def load_p_dukemtmc(root: Path, log: LoadLog, *, labels_root: str | Path | None = None) -> DatasetSplits:
    """P-DukeMTMC-reID (`P-DukeMTMC-reID/`): `{train,test}/{occluded,whole}_body_images/<pid>/`.

    Train holds both views; test occluded images are the query, whole-body images the gallery.
    """
    folder = find_dataset_folder(root, "p_dukemtmc", ("P-DukeMTMC-reID",), ("train", "test"))
    labels = default_labels_root(folder, labels_root)
    train_parts = [
        read_split(folder, f"train/{sub}", camid, log, labels, "train")
        for sub, camid in ((OCCLUDED, QUERY_CAMID), (WHOLE, GALLERY_CAMID))
    ]
    train = None
    if any(part is not None for part in train_parts):
        log.absent.pop("train", None)
        train = [r for part in train_parts if part is not None for r in part]
    query = read_split(folder, f"test/{OCCLUDED}", QUERY_CAMID, log, labels, "query")
    gallery = read_split(folder, f"test/{WHOLE}", GALLERY_CAMID, log, labels, "gallery")
    return assemble("p_dukemtmc", folder, log, train=train, query=query, gallery=gallery)
