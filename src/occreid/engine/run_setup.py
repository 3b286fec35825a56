"""What training and evaluation both derive from a config before they start: the device and the dataset
loader's options. Kept apart so that `trainer` and `evaluate` need not import each other for them."""

from __future__ import annotations

import torch

from occreid.config import Config
from occreid.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`train.device` as a torch device; "auto" is CUDA when present; a missing CUDA is a ConfigError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name}: CUDA is not available on this machine; use train.device=cpu")
    return dev


def dataset_load_options(cfg: Config) -> dict:
    """The dataset loader's keyword options that a config sets (labels folder, Partial-REID query, CUHK03 variant)."""
    opts: dict = {"labels_root": cfg.data.labels_root}
    if cfg.data.dataset == "partial_reid":
        opts["query"] = cfg.data.partial_reid_query
    if cfg.data.dataset == "cuhk03":
        opts["variant"] = cfg.data.cuhk03_variant
    return opts
