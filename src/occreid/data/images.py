"""Image reading and the image dataset that pairs each record with its (grouped) part label.

Reproducible augmentation: each item's random generator is seeded from where the item sits in the
training run, never from a shared, advancing stream. The preferred source is the sampler: with
`item_seeds=True` the identity samplers yield `(index, item_seed)` pairs whose seed is a function of
(sampler seed, epoch, position in the epoch's global order), so the same batch position gets the same
augmentation after a restart, in every DataLoader worker and on every DDP rank. A plain integer index
falls back to a seed from (dataset seed, epoch set by `set_epoch`, index); note that DataLoader workers
hold a copy of the dataset, so `set_epoch` reaches them only if they are re-created each epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from occreid.data.records import Record
from occreid.errors import DatasetError, LabelError
from occreid.labels.format import group_label, grouping_lut, read_label

Transform = Callable[[np.ndarray, np.ndarray | None, np.random.Generator | None], tuple[Any, Any]]


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB [H, W, 3]; an unreadable, corrupt or truncated file raises
    DatasetError naming it."""
    try:
        with Image.open(path) as im:
            im.load()
            return np.array(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DatasetError(
            f"{path}: cannot read image ({e}); run `occreid data check` to find broken files"
        ) from e


def label_size_problem(label_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> str | None:
    """None when a label of `label_shape` (H, W) fits an image of `image_shape`: the same size, or the
    same aspect ratio at another resolution (within one label pixel); else the mismatch in words."""
    (lh, lw), (ih, iw) = label_shape[:2], image_shape[:2]
    if (lh, lw) == (ih, iw) or abs(lw - lh * iw / ih) <= 1:
        return None
    return f"label {lh}x{lw} (HxW) does not fit image {ih}x{iw}: another aspect ratio, it would be stretched"


def fit_label(label: np.ndarray, shape: tuple[int, int], path: str | Path) -> np.ndarray:
    """The label at the image's size `shape`. Decision: a label at another resolution but the image's
    aspect ratio is resized nearest-neighbour; one of another aspect ratio (a label made for another
    image or crop) raises LabelError, since stretching it would put parts in the wrong places."""
    problem = label_size_problem(label.shape, shape)
    if problem:
        raise LabelError(f"{path}: {problem}; re-create it with `occreid labels make` "
                         "(`occreid data check` lists every such label)")
    if label.shape != shape:
        label = np.asarray(Image.fromarray(label).resize(shape[::-1], Image.Resampling.NEAREST))
    return label


class ReidImageDataset(Dataset):
    """Records -> dicts {image [3,H,W] float, pid, camid, index, label [H,W] uint8, has_label bool}.

    `label` is the record's part label, transformed with the image (flip swaps atomic left/right parts
    first) and then grouped into the K parts of `grouping` (0 = background); the atomic map when
    `grouping` is None; all zeros with has_label False when the record has no label file. Decision: a
    `label_path` whose file does not exist counts as unlabelled (partial label sets still train); an
    existing but unreadable file, or one of another aspect ratio than its image, raises LabelError. With
    `labels=False` (methods that train without part labels, and feature extraction) no label file is
    opened and items carry no `label` (has_label False). With `train=False` a plain index gets no random
    generator: the transform must then be deterministic (a random op raises).
    """

    def __init__(
        self,
        records: Sequence[Record],
        transform: Transform,
        grouping: str | None = None,
        train: bool = True,
        seed: int = 0,
        labels: bool = True,
    ) -> None:
        self.records = list(records)
        self.transform = transform
        self.grouping = grouping
        self.train = train
        self.seed = int(seed)
        self.labels = bool(labels)
        self.epoch = 0
        if grouping is not None:
            grouping_lut(grouping)  # an unknown grouping fails here, not in a worker

    def set_epoch(self, epoch: int) -> None:
        """Epoch used to seed items requested by a plain integer index."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def _rng(self, item: int | tuple[int, int]) -> tuple[int, np.random.Generator | None]:
        if isinstance(item, tuple | list):
            index, item_seed = int(item[0]), int(item[1])
            return index, np.random.default_rng(item_seed)
        index = int(item)
        if not self.train:
            return index, None
        return index, np.random.default_rng(np.random.SeedSequence([self.seed, self.epoch, index]))

    def _read_label(self, record: Record, shape: tuple[int, int]) -> np.ndarray | None:
        if record.label_path is None or not Path(record.label_path).is_file():
            return None
        return fit_label(read_label(record.label_path), shape, record.label_path)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, rng = self._rng(item)
        record = self.records[index]
        image = read_image(record.path)
        label = self._read_label(record, image.shape[:2]) if self.labels else None
        tensor, label_t = self.transform(image, label, rng)
        out = {"image": tensor, "pid": record.pid, "camid": record.camid, "index": index,
               "has_label": label is not None}
        if self.labels:
            if label_t is None:
                label_t = torch.zeros(tensor.shape[1:], dtype=torch.uint8)
            elif self.grouping is not None:
                label_t = torch.from_numpy(group_label(label_t.numpy(), self.grouping))
            out["label"] = label_t.to(torch.uint8)
        return out


def collate(batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack dataset items into a dict of batch tensors: pid, camid, index long; has_label bool; image;
    label (uint8) and aug (the batch path's augmentation parameters) when the items have them."""
    if not batch:
        raise ValueError("cannot collate an empty batch")
    out = {
        "image": torch.stack([b["image"] for b in batch]),
        "pid": torch.tensor([b["pid"] for b in batch], dtype=torch.long),
        "camid": torch.tensor([b["camid"] for b in batch], dtype=torch.long),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.long),
        "has_label": torch.tensor([b["has_label"] for b in batch], dtype=torch.bool),
    }
    for key in ("label", "aug"):
        if key in batch[0]:
            out[key] = torch.stack([b[key] for b in batch])
    return out
