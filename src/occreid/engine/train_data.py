"""The training dataset a config asks for: files decoded and transformed per image in the DataLoader
workers, or the decode cache with the augmentation done in batch on the device (`data.decode_cache`);
part labels are read only for methods that train with them."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import torch
from torch.utils.data import Dataset

from occreid.config import Config
from occreid.data.batch_augment import BatchAugment
from occreid.data.records import Record
from occreid.engine.distributed import DistInfo
from occreid.methods import uses_labels

#: `data.decode_cache=auto` on the CPU. The cache path costs half the CPU time per batch there
#: (benchmarks/RESULTS.md, "Training data path"), but data is a few per cent of a CPU step: not worth a
#: cache of gigabytes and a first-run build by default.
AUTO_ON_CPU = False


def decode_cache_on(cfg: Config, device: torch.device) -> bool:
    """`data.decode_cache` resolved for `device`: auto is on with CUDA, AUTO_ON_CPU elsewhere."""
    setting = cfg.data.decode_cache
    if setting == "auto":
        return device.type == "cuda" or AUTO_ON_CPU
    return bool(setting)


def label_settings(cfg: Config, method: ModuleType) -> tuple[bool, str | None]:
    """(whether the method trains with part labels, the grouping to apply to them)."""
    labels = uses_labels(method, cfg)
    grouping = method.label_grouping(cfg) if labels and hasattr(method, "label_grouping") else None
    return labels, grouping


def prepare_decode_cache(
    cfg: Config, records: list[Record], dataset_root: str | Path, labels: bool, progress: bool
) -> tuple[Path, Path | None]:
    """(images entry, labels entry or None) of the decode cache for `records` at the config's input size,
    built now where absent or out of date (`occreid data cache` calls this ahead of training)."""
    from occreid.data.decode_cache import cache_root, ensure_images, ensure_labels

    d = cfg.data
    root = cache_root(d.cache_dir, dataset_root)
    opts = {"name": d.dataset, "progress": progress, "workers": max(1, d.workers)}
    images = ensure_images(records, d.height, d.width, root, **opts)
    return images, ensure_labels(records, d.height, d.width, root, images, **opts) if labels else None


def build_train_dataset(
    cfg: Config, records: list[Record], dataset_root: str | Path, method: ModuleType, device: torch.device,
    dist: DistInfo,
) -> tuple[Dataset, BatchAugment | None]:
    """(training dataset, batch augmentation to apply on the device or None). With the decode cache the
    main process builds a missing cache first and the other DDP ranks wait for it."""
    from occreid.data.cached_images import CachedImageDataset
    from occreid.data.images import ReidImageDataset
    from occreid.data.transforms import build_transforms

    labels, grouping = label_settings(cfg, method)
    transform = build_transforms(cfg.data, train=True)
    seed = cfg.train.seed
    if not decode_cache_on(cfg, device):
        return ReidImageDataset(records, transform, grouping=grouping, train=True, seed=seed, labels=labels), None
    if dist.is_main:
        folders = prepare_decode_cache(cfg, records, dataset_root, labels, progress=cfg.run.progress)
    if dist.enabled:  # NCCL wants the rank's GPU named
        torch.distributed.barrier(device_ids=[device.index or 0] if device.type == "cuda" else None)
    if not dist.is_main:
        folders = prepare_decode_cache(cfg, records, dataset_root, labels, progress=False)
    channels_last = cfg.train.channels_last and device.type == "cuda"
    augment = BatchAugment(transform, grouping, channels_last=channels_last)
    images, label_folder = folders
    return CachedImageDataset(records, images, augment, labels=label_folder, train=True, seed=seed), augment
