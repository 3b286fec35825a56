"""MSMT17 (V1 and V2): image folders plus list files of `relative/path pid` lines.

The camera is the third `_` field of the file name (`0000_000_01_0303morning_0015_0.jpg` -> camid 0).
The validation list joins the training split only when `with_val=True` (the usual protocol keeps it out).
"""

from __future__ import annotations

import os
from pathlib import Path

from occreid.data.datasets.assemble import assemble, default_labels_root, with_labels
from occreid.data.datasets.scan import LoadLog, find_dataset_folder, subfolder_names
from occreid.data.records import DatasetSplits, Record

FOLDER_NAMES = ("MSMT17_V2", "MSMT17_V1", "msmt17/MSMT17_V2", "msmt17/MSMT17_V1", "MSMT17")
LISTS = {"train": "list_train.txt", "val": "list_val.txt", "query": "list_query.txt", "gallery": "list_gallery.txt"}
IMAGE_DIRS = {"train": ("train", "mask_train_v2"), "test": ("test", "mask_test_v2")}


def image_dir(folder: Path, part: str) -> str:
    """The name of the train or test image folder (V1 `train`, V2 `mask_train_v2`, any case)."""
    present = {name.lower(): name for name in subfolder_names(folder)}
    return next((present[n] for n in IMAGE_DIRS[part] if n in present), IMAGE_DIRS[part][0])


def parse_list(folder: Path, list_name: str, dir_name: str, log: LoadLog) -> list[Record]:
    """Records of one list file; lines that do not parse are skipped and counted."""
    records = []
    with open(folder / list_name, encoding="utf-8") as f:
        for line in f:
            fields = line.split()
            if not fields:
                continue
            rel = fields[0]
            cam = os.path.basename(rel).split("_")
            if len(fields) != 2 or not fields[1].isdigit() or len(cam) < 3 or not cam[2].isdigit():
                log.skip(list_name, line.strip())
                continue
            # lists written relative to the image folder or to the dataset folder
            base = folder if rel.split("/", 1)[0] == dir_name else folder / dir_name
            records.append(Record(os.path.join(str(base), rel), int(fields[1]), int(cam[2]) - 1))
    return records


def load_msmt17(
    root: Path, log: LoadLog, *, labels_root: str | Path | None = None, with_val: bool = False
) -> DatasetSplits:
    """MSMT17 (`MSMT17_V1/` or `MSMT17_V2/`): train from `list_train.txt` (+ `list_val.txt` if
    `with_val`), query and gallery from `list_query.txt` / `list_gallery.txt` under `test/`."""
    folder = find_dataset_folder(root, "msmt17", FOLDER_NAMES, tuple(LISTS.values()))
    labels = default_labels_root(folder, labels_root)
    dirs = {"train": image_dir(folder, "train"), "test": image_dir(folder, "test")}
    splits: dict[str, list[Record] | None] = {}
    for split, lists in (("train", ["train"] + ["val"] * with_val), ("query", ["query"]), ("gallery", ["gallery"])):
        dir_name = dirs["train" if split == "train" else "test"]
        present = [LISTS[k] for k in lists if (folder / LISTS[k]).is_file()]
        if not present:
            log.absent_split(split, f"{folder / LISTS[lists[0]]} does not exist")
            splits[split] = None
            continue
        records = [r for name in present for r in parse_list(folder, name, dir_name, log)]
        splits[split] = with_labels(records, labels, dir_name)
    if with_val and (folder / LISTS["val"]).is_file():
        log.note("train includes list_val.txt (with_val=True)")
    return assemble("msmt17", folder, log, **splits)
