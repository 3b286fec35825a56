"""The record: one image with identity, camera and (optionally) its part-label file.

Every dataset loader produces `DatasetSplits` of `Record`s; everything downstream reads only these.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

SPLITS = ("train", "query", "gallery")


@dataclass(frozen=True)
class Record:
    """One image. `pid` is relabelled 0..N-1 in train splits and raw in query/gallery."""

    path: str
    pid: int
    camid: int
    label_path: str | None = None


@dataclass
class DatasetSplits:
    """The splits a loader found; an absent split is `None` (reported, not an error)."""

    name: str
    root: str
    train: list[Record] | None = None
    query: list[Record] | None = None
    gallery: list[Record] | None = None
    notes: list[str] = field(default_factory=list)

    def split(self, name: str) -> list[Record] | None:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def present(self) -> list[str]:
        return [s for s in SPLITS if getattr(self, s) is not None]

    @property
    def num_train_pids(self) -> int:
        return len({r.pid for r in self.train}) if self.train else 0


def relabel(records: Sequence[Record]) -> list[Record]:
    """Map the pids of a training split to 0..N-1 in sorted order of the raw pids."""
    mapping = {pid: i for i, pid in enumerate(sorted({r.pid for r in records}))}
    return [Record(r.path, mapping[r.pid], r.camid, r.label_path) for r in records]


def split_stats(records: Sequence[Record]) -> dict[str, int]:
    """Images, identities and cameras of one split."""
    return {
        "images": len(records),
        "ids": len({r.pid for r in records}),
        "cams": len({r.camid for r in records}),
    }
