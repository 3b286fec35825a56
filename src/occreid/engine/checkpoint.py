"""Atomic checkpoints that load with `torch.load(weights_only=True)`: tensors, numbers, strings only."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occreid.errors import CheckpointError

FORMAT_VERSION = 1


def save_atomic(obj: dict, path: str | Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path, *, method: str | None = None) -> dict:
    """Load safely (no code execution); check it is ours and, if given, of `method`."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        raise CheckpointError(
            f"{path}: cannot be loaded as an occreid checkpoint ({type(e).__name__}: {e}); "
            "it may be truncated or not a weights-only checkpoint"
        ) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not an occreid checkpoint (no 'model' and 'config' entries)")
    found = ckpt["config"].get("model", {}).get("name")
    if method is not None and found != method:
        raise CheckpointError(
            f"{path}: checkpoint of method {found!r}, but method {method!r} was asked for; "
            f"use model.name={found} or another checkpoint"
        )
    return ckpt


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors (weights_only-safe)."""
    np_state = np.random.get_state()  # noqa: NPY002 - the global legacy RNG is what user code seeds
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": torch.tensor([np_state[2], np_state[3]], dtype=torch.int64),
        "numpy_gauss": torch.tensor([np_state[4]], dtype=torch.float64),
        "python": torch.tensor(list(py_state[1]), dtype=torch.int64),
        "python_version": torch.tensor([py_state[0]], dtype=torch.int64),
        "python_gauss": torch.tensor([float("nan") if py_state[2] is None else py_state[2]]),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    keys = state["numpy_keys"].numpy().astype(np.uint32)
    pos, has_gauss = (int(v) for v in state["numpy_pos"])
    np.random.set_state(("MT19937", keys, pos, has_gauss, float(state["numpy_gauss"][0])))  # noqa: NPY002
    gauss = float(state["python_gauss"][0])
    random.setstate(
        (
            int(state["python_version"][0]),
            tuple(int(v) for v in state["python"]),
            None if np.isnan(gauss) else gauss,
        )
    )
