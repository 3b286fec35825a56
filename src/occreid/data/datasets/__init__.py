"""Dataset loaders: a key and a data root in, `DatasetSplits` out (names parsed, no image opened).

`DATASETS` is the only list of datasets: adding one is a module with a loader
`load_x(root: Path, log: LoadLog, *, labels_root=None, **options) -> DatasetSplits` and one line here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from occreid.data.datasets.body_folders import load_occluded_reid, load_p_dukemtmc
from occreid.data.datasets.csv_index import load_csv
from occreid.data.datasets.cuhk03 import load_cuhk03
from occreid.data.datasets.market_style import load_dukemtmcreid, load_market1501, load_occluded_duke
from occreid.data.datasets.msmt17 import load_msmt17
from occreid.data.datasets.partial import load_partial_ilids, load_partial_reid
from occreid.data.datasets.scan import LoadLog
from occreid.data.datasets.synthetic import load_synthetic
from occreid.data.records import SPLITS, DatasetSplits, split_stats
from occreid.errors import DatasetError

DATASETS: dict[str, Callable[..., DatasetSplits]] = {
    "market1501": load_market1501,
    "dukemtmcreid": load_dukemtmcreid,
    "occluded_duke": load_occluded_duke,
    "occluded_reid": load_occluded_reid,
    "p_dukemtmc": load_p_dukemtmc,
    "partial_reid": load_partial_reid,
    "partial_ilids": load_partial_ilids,
    "msmt17": load_msmt17,
    "cuhk03": load_cuhk03,
    "synthetic": load_synthetic,
    "csv": load_csv,
}

COMMON_PARAMETERS = ("root", "log", "labels_root")


def dataset_options(key: str) -> list[str]:
    """The options a dataset's loader accepts besides `labels_root`."""
    return [p for p in inspect.signature(DATASETS[key]).parameters if p not in COMMON_PARAMETERS]


def load_dataset_with_log(
    key: str, root: str | Path, *, labels_root: str | Path | None = None, **options: Any
) -> tuple[DatasetSplits, LoadLog]:
    """`load_dataset` plus the structured log of what was skipped (used by `data check`)."""
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset {key!r}; known datasets: {', '.join(sorted(DATASETS))}")
    unknown = sorted(set(options) - set(dataset_options(key)))
    if unknown:
        accepted = ", ".join(dataset_options(key)) or "none"
        raise DatasetError(f"dataset {key!r} has no option {', '.join(unknown)}; its options: {accepted}")
    log = LoadLog()
    splits = DATASETS[key](Path(root).expanduser(), log, labels_root=labels_root, **options)
    return splits, log


def load_dataset(key: str, root: str | Path, *, labels_root: str | Path | None = None, **options: Any) -> DatasetSplits:
    """Load dataset `key` from `root` (the folder holding the dataset folder, or that folder itself).

    Train pids are relabelled 0..N-1, test pids stay raw; an absent split is None plus a note. Part
    labels are picked up from `labels_root` (default `<dataset folder>/occreid_labels`).
    """
    return load_dataset_with_log(key, root, labels_root=labels_root, **options)[0]


def dataset_stats(splits: DatasetSplits) -> dict:
    """`{"dataset": name, "splits": {split: {"images", "ids", "cams"}}}`, absent splits omitted."""
    return {
        "dataset": splits.name,
        "splits": {s: split_stats(splits.split(s)) for s in SPLITS if splits.split(s) is not None},
    }


__all__ = ["DATASETS", "LoadLog", "dataset_options", "dataset_stats", "load_dataset", "load_dataset_with_log"]
