"""Market-1501-style datasets: `bounding_box_train/`, `query/`, `bounding_box_test/` with names
`PPPP_cC...` (Market-1501, DukeMTMC-reID, Occluded-Duke, CUHK03-NP, the synthetic set).

pid -1 is junk (dropped everywhere); pid 0 is a distractor (kept in the gallery only). Camera `cC`
becomes camid C - 1 (torchreid's convention).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from occreid.data.datasets.assemble import assemble, default_labels_root, with_labels
from occreid.data.datasets.scan import LoadLog, find_dataset_folder, image_names
from occreid.data.records import DatasetSplits, Record

MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
MARKET_SPLITS = (("train", "bounding_box_train"), ("query", "query"), ("gallery", "bounding_box_test"))
MARKET_FOLDERS = tuple(sub for _, sub in MARKET_SPLITS)


def parse_market_folder(folder: Path, split_folder: str, split: str, log: LoadLog) -> list[Record]:
    """Records of one Market-style split folder; junk and misplaced distractors are dropped and counted."""
    prefix = str(folder / split_folder) + os.sep
    records = []
    junk = distractors = 0
    for name in image_names(folder / split_folder):
        m = MARKET_NAME.match(name)
        pid, cam = (int(g) for g in m.groups()) if m else (-2, 0)
        if pid < -1 or cam < 1:
            log.skip(f"{split_folder}/", name)
        elif pid == -1:
            junk += 1
        elif pid == 0 and split != "gallery":
            distractors += 1
        else:
            records.append(Record(prefix + name, pid, cam - 1))
    log.drop(f"junk images (pid -1) in {split_folder}/", junk)
    log.drop(f"distractor images (pid 0) outside the gallery in {split_folder}/", distractors)
    return records


def load_market_layout(name: str, folder: Path, log: LoadLog, labels_root: str | Path | None) -> DatasetSplits:
    """Read the three Market-style split folders under a resolved dataset folder."""
    labels = default_labels_root(folder, labels_root)
    splits: dict[str, list[Record] | None] = {}
    for split, sub in MARKET_SPLITS:
        if not (folder / sub).is_dir():
            log.absent_split(split, f"{folder / sub}/ does not exist")
            splits[split] = None
            continue
        splits[split] = with_labels(parse_market_folder(folder, sub, split, log), labels, sub)
    return assemble(name, folder, log, **splits)


def load_market1501(root: Path, log: LoadLog, *, labels_root: str | Path | None = None) -> DatasetSplits:
    """Market-1501 (`Market-1501-v15.09.15/` or `Market-1501/`), names `PPPP_cCsS_FFFFFF_BB.jpg`."""
    folder = find_dataset_folder(root, "market1501", ("Market-1501-v15.09.15", "Market-1501"), MARKET_FOLDERS)
    return load_market_layout("market1501", folder, log, labels_root)


def load_dukemtmcreid(root: Path, log: LoadLog, *, labels_root: str | Path | None = None) -> DatasetSplits:
    """DukeMTMC-reID (`DukeMTMC-reID/`), names `PPPP_cC_fFFFFFFF.jpg`."""
    folder = find_dataset_folder(root, "dukemtmcreid", ("DukeMTMC-reID",), MARKET_FOLDERS)
    return load_market_layout("dukemtmcreid", folder, log, labels_root)


def load_occluded_duke(root: Path, log: LoadLog, *, labels_root: str | Path | None = None) -> DatasetSplits:
    """Occluded-Duke (`Occluded_Duke/`): Duke names; 1,870 query files also sit in the gallery
    (same camera, junk by protocol; `data check` reports them)."""
    folder = find_dataset_folder(root, "occluded_duke", ("Occluded_Duke",), MARKET_FOLDERS)
    return load_market_layout("occluded_duke", folder, log, labels_root)
