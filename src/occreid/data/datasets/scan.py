"""Finding a dataset folder and listing its images: one directory listing per folder, no stat per file.

`LoadLog` collects what a loader skipped (names that do not parse, absent splits) so that `load_dataset`
can write it into `DatasetSplits.notes` and `data check` can show examples.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from occreid.errors import DatasetError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass
class LoadLog:
    """What a loader noticed: free notes, absent splits (split -> why) and skipped names per folder."""

    notes: list[str] = field(default_factory=list)
    absent: dict[str, str] = field(default_factory=dict)
    unparsable: dict[str, list[str]] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    def note(self, line: str) -> None:
        self.notes.append(line)

    def absent_split(self, split: str, why: str) -> None:
        self.absent[split] = why

    def skip(self, folder: str, name: str) -> None:
        """A file (or row) whose name does not parse: skipped, counted, shown as an example."""
        self.unparsable.setdefault(folder, []).append(name)

    def drop(self, reason: str, count: int = 1) -> None:
        """Files that parse but are left out by the protocol (e.g. pid -1 junk)."""
        if count:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def to_notes(self) -> list[str]:
        lines = list(self.notes)
        lines += [f"no {split} split: {why}" for split, why in self.absent.items()]
        for folder, names in self.unparsable.items():
            lines.append(f"{folder}: skipped {len(names)} files whose names do not parse (e.g. {', '.join(names[:3])})")
        lines += [f"dropped {n} {reason}" for reason, n in self.dropped.items()]
        return lines


def image_names(folder: Path) -> list[str]:
    """Sorted image file names directly inside `folder` (empty when the folder does not exist)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.name.lower().endswith(IMAGE_EXTENSIONS))
    except (FileNotFoundError, NotADirectoryError):
        return []


def subfolder_names(folder: Path) -> list[str]:
    """Sorted names of the sub-folders of `folder` (e.g. one per identity)."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.is_dir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def find_dataset_folder(root: Path, key: str, names: Sequence[str], markers: Sequence[str]) -> Path:
    """The dataset folder: `root/<one of names>` or `root` itself, holding at least one of `markers`.

    Raises one DatasetError that says which folders were expected where.
    """
    if not root.exists():
        raise DatasetError(f"{key}: the data root {root} does not exist; pass the folder that holds the dataset")
    candidates = [root / n for n in names if (root / n).is_dir()] + [root]
    for folder in candidates:
        if any((folder / m).exists() for m in markers):
            return folder
    inside = ", ".join(m if "." in m else f"{m}/" for m in markers)
    where = " or ".join(f"{root / n}/" for n in names) if names else f"{root}/"
    raise DatasetError(
        f"{key}: no dataset found at {root}: expected {where} holding {inside} "
        f"(the root may be the folder that contains the dataset folder, or the dataset folder itself)"
    )
