"""The training dataset served from the decode cache: decoded uint8 pixels plus each item's augmentation
parameters, drawn on the host from the item's seed; the pixels are augmented later, in batch, on the
device (`occreid.data.batch_augment`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occreid.data.batch_augment import BatchAugment
from occreid.data.decode_cache import open_images, open_labels
from occreid.data.images import ReidImageDataset
from occreid.data.records import Record


class CachedImageDataset(ReidImageDataset):
    """Records -> dicts {image [H,W,3] uint8, pid, camid, index, has_label, aug [P] float32, label [H,W]
    uint8 (atomic parts, only with a labels entry)}.

    Items are seeded exactly as `ReidImageDataset` seeds them (`(index, item_seed)` pairs from the
    sampler, or the dataset seed, epoch and index), and `augment.draw` makes the same numpy draws in the
    same order as the per-image transforms, so both paths give the same augmentation. The memory maps
    are opened lazily in each process: a DataLoader worker never receives a pickled copy of the arrays.
    """

    def __init__(
        self,
        records: Sequence[Record],
        images: Path,
        augment: BatchAugment,
        labels: Path | None = None,
        train: bool = True,
        seed: int = 0,
    ) -> None:
        super().__init__(records, augment.transform, grouping=None, train=train, seed=seed, labels=labels is not None)
        self.images_folder = Path(images)
        self.labels_folder = None if labels is None else Path(labels)
        self.augment = augment
        self._arrays: tuple | None = None
        n = len(open_images(self.images_folder)[1])
        if n != len(self.records):
            raise ValueError(f"{self.images_folder}: holds {n} images, expected {len(self.records)}")

    def _open(self) -> tuple:
        if self._arrays is None:
            images, _ = open_images(self.images_folder)
            labels = open_labels(self.labels_folder) if self.labels_folder is not None else (None, None)
            self._arrays = (images, *labels)
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = self._rng(item)
        record = self.records[index]
        images, labels, has_label = self._open()
        out = {
            "image": torch.from_numpy(np.array(images[index])),
            "pid": record.pid,
            "camid": record.camid,
            "index": index,
            "has_label": bool(has_label[index]) if labels is not None else False,
            "aug": torch.from_numpy(self.augment.draw(rng)),
        }
        if labels is not None:
            out["label"] = torch.from_numpy(np.array(labels[index]))
        return out
