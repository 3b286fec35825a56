"""Shared fixtures: a tiny Market-layout dataset written by the tests themselves."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_market(root: Path, train_ids=8, test_ids=4, cams=2, per_cam=4, size=(32, 16), seed=0, noise=12.0) -> Path:
    """Market-1501 layout under root/Market-1501 with per-identity colour patterns."""
    rng = np.random.default_rng(seed)
    base = root / "Market-1501"
    h, w = size
    def img(pid: int, k: int) -> Image.Image:
        prng = np.random.default_rng(pid)
        top, bottom = prng.integers(0, 255, 3), prng.integers(0, 255, 3)
        a = np.zeros((h, w, 3), np.float32)
        a[: h // 2] = top
        a[h // 2 :] = bottom
        a += rng.normal(0, noise, a.shape)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
    for split, pids in (("bounding_box_train", range(1, train_ids + 1)),
                        ("bounding_box_test", range(100, 100 + test_ids)),
                        ("query", range(100, 100 + test_ids))):
        d = base / split
        d.mkdir(parents=True, exist_ok=True)
        for pid in pids:
            for c in range(1, cams + 1):
                n = 1 if split == "query" else per_cam
                if split == "query" and c != 1:
                    continue
                for k in range(n):
                    img(pid, k).save(d / f"{pid:04d}_c{c}s1_{k:06d}_00.jpg", quality=90)
    return root


@pytest.fixture(scope="session")
def tiny_market(tmp_path_factory) -> Path:
    return write_market(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def noisy_market(tmp_path_factory) -> Path:
    """Strong per-pixel noise: no near-ties in max pooling, so gradients are well conditioned enough
    to compare two numerically different but equivalent computations (DDP vs one process)."""
    return write_market(tmp_path_factory.mktemp("noisy"), noise=70.0)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared real-data folder from OCCREID_DATA; real-data tests skip, saying why, without it."""
    root = os.environ.get("OCCREID_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("OCCREID_DATA is unset or missing: real-data tests need the shared data folder")
    return Path(root)


@pytest.fixture(scope="session")
def bot_run(tiny_market, tmp_path_factory) -> Path:
    """A run folder holding a tiny bot checkpoint whose config points at the tiny Market set."""
    from tests.test_api import write_checkpoint

    run = tmp_path_factory.mktemp("run")
    write_checkpoint(run / "last.pt", "bot", **{"data.dataset": "market1501", "data.root": str(tiny_market),
                                                 "data.workers": 0, "run.progress": "false"})
    return run
