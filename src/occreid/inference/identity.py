"""Who made a set of features: method, checkpoint fingerprint, config hash, visibility threshold."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from occreid.config import Config

#: Threshold on visibility scores used when a method declares none: the shared binary part distance
#: counts a float score as visible when it is > 0.5 (`occreid.evaluation.part_distance`).
DEFAULT_VISIBILITY_THRESHOLD = 0.5


def file_sha256(path: str | Path, prefix: int = 16) -> str:
    """First `prefix` hex digits of the file's sha256 (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:prefix]


def visibility_threshold(cfg: Config) -> float:
    """The method's visibility threshold: the attribute `visibility_threshold` of its `Options` when it
    declares one (PAB-ReID's mu, AMD-Net's gamma), else DEFAULT_VISIBILITY_THRESHOLD."""
    from occreid.methods import get_method

    opts = get_method(cfg.model.name).Options(**cfg.method)
    value = getattr(opts, "visibility_threshold", None)
    return DEFAULT_VISIBILITY_THRESHOLD if value is None else float(value)


def distance_recipe(cfg: Config) -> str:
    """A readable name of the method's test distance (module, metric, first docstring line)."""
    from occreid.methods import get_method

    module = get_method(cfg.model.name)
    doc = (module.distance.__doc__ or "").strip().splitlines()
    return f"{module.__name__}.distance (eval.distance={cfg.eval.distance}){': ' + doc[0] if doc else ''}"


def model_identity(cfg: Config, checkpoint: str | Path | None, sha256: str) -> dict[str, Any]:
    """The identity stored with features and exports; `config` lets a search rebuild the distance. The
    checkpoint path is resolved (absolute), so `occreid search --images` finds it from any folder."""
    import json

    from occreid.config import config_hash, to_dict

    return {
        "method": cfg.model.name, "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
        "checkpoint_sha256": sha256, "config_hash": config_hash(cfg),
        "config": json.loads(json.dumps(to_dict(cfg), default=str)),
    }
