"""The set `occreid data synth --out DIR` writes: Market-1501 naming in `bounding_box_train/`, `query/`,
`bounding_box_test/` directly under DIR, plus `synth.json` (and exact part labels in the labels root)."""

from __future__ import annotations

from pathlib import Path

from occreid.data.datasets.market_style import MARKET_FOLDERS, load_market_layout
from occreid.data.datasets.scan import LoadLog, find_dataset_folder
from occreid.data.records import DatasetSplits

MANIFEST = "synth.json"


def load_synthetic(root: Path, log: LoadLog, *, labels_root: str | Path | None = None) -> DatasetSplits:
    """DIR itself, or its parent when DIR is named `synthetic`."""
    folder = find_dataset_folder(root, "synthetic", ("synthetic",), (MANIFEST, *MARKET_FOLDERS))
    if not (folder / MANIFEST).is_file():
        log.note(f"{folder / MANIFEST} is missing: not written by `occreid data synth`?")
    return load_market_layout("synthetic", folder, log, labels_root)
