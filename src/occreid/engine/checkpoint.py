"""Atomic checkpoints that load with `torch.load(weights_only=True)`: tensors, numbers, strings only.

A run keeps two: `last.pt` and the one before it, `last.prev.pt`, so a `last.pt` damaged on disk still
leaves a good checkpoint to resume from (`load_for_resume`).
"""

from __future__ import annotations

import errno
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occreid.errors import CheckpointError

FORMAT_VERSION = 1
PARTIAL_WRITE_GLOB = ".*.pt.tmp*"  # what save_atomic writes before its rename; never a finished file


class UnreadableCheckpoint(CheckpointError):
    """The file exists but does not unpickle: truncated, damaged, or not a weights-only checkpoint."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = path, reason
        super().__init__(
            f"{path}: cannot be loaded as an occreid checkpoint ({reason}); "
            "it may be truncated or not a weights-only checkpoint"
        )


class CheckpointWriteError(CheckpointError):
    """A checkpoint could not be written (e.g. the disk is full); the partial file was removed."""


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before `path` is kept: last.pt -> last.prev.pt."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_atomic(obj: dict, path: str | Path, *, keep_previous: bool = False) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target, so `path` is
    always a whole file; keep_previous: the file it replaces becomes `previous_path(path)`.

    Any failure (disk full, a signal's exception) removes the temporary file and leaves `path` as it was;
    an OSError becomes CheckpointWriteError saying so.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous and path.is_file():
            _keep_copy(path, previous_path(path))
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = _os_error(e)
        if cause is None:
            raise
        state = f"{path.name} on disk is unchanged" if path.is_file() else f"no {path.name} was written"
        if cause.errno in (errno.ENOSPC, errno.EDQUOT):
            reason = f"no space left on the device of {path.parent}"
            fix = "free some space there"
        else:
            reason = f"{type(cause).__name__}: {cause}"
            fix = f"check that {path.parent} is writable"
        raise CheckpointWriteError(
            f"{path}: cannot write the checkpoint ({reason}); the partial file was removed and {state}; {fix}"
        ) from e
    _fsync_folder(path.parent)


def _keep_copy(path: Path, keep: Path) -> None:
    """Make `keep` a second name of `path` (a hard link: no copy, no space), atomically."""
    tmp = keep.with_name(f".{keep.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(path, tmp)
        except OSError:  # a file system without hard links
            shutil.copy2(path, tmp)
        os.replace(tmp, keep)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _os_error(e: BaseException) -> OSError | None:
    """The OSError behind `e`, if any: torch.save wraps a failed write in a RuntimeError."""
    seen = 0
    while e is not None and seen < 8:
        if isinstance(e, OSError):
            return e
        e = e.__cause__ or e.__context__
        seen += 1
    return None


def _fsync_folder(folder: Path) -> None:
    """Make a rename durable: sync the folder entry too (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_partial_writes(folder: str | Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a killed process never finished; returns them.
    Call only while holding the run's lock (no live writer)."""
    removed = []
    for p in sorted(Path(folder).glob(PARTIAL_WRITE_GLOB)):
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


def load_for_resume(
    folder: str | Path, *, method: str | None = None, move_aside: bool = True
) -> tuple[dict | None, Path | None, list[str]]:
    """The newest checkpoint of the run in `folder` that loads, its path, and notes: last.pt, else
    last.prev.pt; (None, None, notes) when neither does.

    With `move_aside` (the one writing process), a file that does not unpickle is renamed to
    NAME.corrupt, kept for inspection but never loaded or rotated again; the notes name it.
    """
    last = Path(folder) / "last.pt"
    notes: list[str] = []
    for path in (last, previous_path(last)):
        if not path.is_file():
            continue
        try:
            return load_checkpoint(path, method=method), path, notes
        except UnreadableCheckpoint as e:
            if move_aside:
                aside = path.with_name(f"{path.name}.corrupt")
                os.replace(path, aside)
                notes.append(f"{path} cannot be loaded ({e.reason}); renamed it to {aside.name}")
            else:
                notes.append(f"{path} cannot be loaded ({e.reason})")
    return None, None, notes


def load_checkpoint(path: str | Path, *, method: str | None = None) -> dict:
    """Load safely (no code execution); check it is ours and, if given, of `method`. A model package
    folder (`occreid export package`) loads from its safetensors, without the training state."""
    from occreid.inference.model_package import package_folder, read_package

    path = Path(path)
    if package_folder(path) is not None:
        return read_package(package_folder(path), method=method)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same thing to the user
        first_line = (str(e).splitlines() or [""])[0][:300]
        raise UnreadableCheckpoint(path, f"{type(e).__name__}: {first_line}") from None
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
