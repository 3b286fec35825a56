"""Feature files: one folder of `.npy` arrays plus a JSON manifest, readable memory-mapped.

Layout of a feature folder (conventionally `NAME.feats/`):

- `manifest.json`: {"format": "occreid-features", "version": 1, "count": N,
  "arrays": {name: {"shape": [...], "dtype": "float32"}}, "identity": {...}, "skipped": [[path, why], ...]}
- `paths.txt`: the N image paths, one per line, in row order of every array.
- `<name>.npy`: one array per test feature of `ModelOutput.features()`: named embeddings [N, D],
  `parts` [N, P, D], `visibility` [N, P].

`identity` names the model that made the features: method, checkpoint path and sha256 prefix, config hash
and the full config (so a search can rebuild the method's distance recipe without the checkpoint).
A folder rather than one `.npz`: `.npy` files can be memory-mapped, so a gallery of a million part
embeddings is read lazily. Folders are written to a temporary sibling and renamed, so a reader never
sees a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from occreid.errors import DatasetError

FORMAT = "occreid-features"
VERSION = 1
MANIFEST = "manifest.json"
PATHS = "paths.txt"


@dataclass
class FeatureSet:
    """Named feature arrays (row i = image `paths[i]`), the model identity and the images skipped."""

    arrays: dict[str, np.ndarray]
    paths: list[str]
    identity: dict[str, Any] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, arr in self.arrays.items():
            if arr.shape[0] != len(self.paths):
                raise ValueError(f"feature {name!r} has {arr.shape[0]} rows for {len(self.paths)} paths")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def method(self) -> str | None:
        return self.identity.get("method")

    def take(self, rows: Any) -> FeatureSet:
        """The rows `rows` (indices or a boolean mask), read into memory."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return FeatureSet(
            {k: np.asarray(v[rows]) for k, v in self.arrays.items()},
            [self.paths[i] for i in rows.tolist()], self.identity, [],
        )

    def tensors(self, rows: Any = None) -> dict[str, torch.Tensor]:
        """Float32 tensors (optionally of some rows) in the dict form method distance recipes take."""
        pick = (lambda a: a) if rows is None else (lambda a: a[np.asarray(rows)])
        return {k: torch.from_numpy(np.array(pick(v), dtype=np.float32)) for k, v in self.arrays.items()}


def write_features(features: FeatureSet, folder: str | Path, dtype: str | None = None) -> Path:
    """Write a feature folder atomically; `dtype` ("float16"/"float32") converts the embeddings
    (visibility always stays float32)."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    arrays = {}
    for name, arr in features.arrays.items():
        out_dtype = np.float32 if name == "visibility" or dtype is None else np.dtype(dtype)
        data = np.asarray(arr, dtype=out_dtype)
        np.save(tmp / f"{name}.npy", data)
        arrays[name] = {"shape": list(data.shape), "dtype": str(data.dtype)}
    _write_paths(tmp / PATHS, features.paths)
    manifest = {
        "format": FORMAT, "version": VERSION, "count": len(features), "arrays": arrays,
        "identity": features.identity, "skipped": [list(s) for s in features.skipped],
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _replace_dir(tmp, folder)
    return folder


def _write_paths(path: Path, paths: Sequence[str]) -> None:
    bad = [p for p in paths if "\n" in p or "\r" in p]
    if bad:
        raise DatasetError(f"image path with a line break cannot be stored: {bad[0]!r}; rename the file")
    path.write_text("".join(f"{p}\n" for p in paths), encoding="utf-8")


def _replace_dir(tmp: Path, folder: Path) -> None:
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old{os.getpid()}")
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old)
    else:
        os.replace(tmp, folder)


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a feature folder; DatasetError naming the folder when it is not one."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DatasetError(f"{folder}: not an occreid feature folder (no {MANIFEST}); create one with "
                           "`occreid extract --checkpoint CKPT --images DIR --out FOLDER`")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DatasetError(f"{path}: format {manifest.get('format')!r} v{manifest.get('version')} is not "
                           f"{FORMAT!r} v{VERSION}; re-extract the features with this occreid")
    return manifest


def read_features(folder: str | Path, mmap: bool = True) -> FeatureSet:
    """Read a feature folder; with `mmap` the arrays are memory-mapped read-only (lazy, shared)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    arrays = {
        name: np.load(folder / f"{name}.npy", mmap_mode="r" if mmap else None) for name in manifest["arrays"]
    }
    paths = (folder / PATHS).read_text(encoding="utf-8").splitlines()
    if len(paths) != manifest["count"]:
        raise DatasetError(f"{folder / PATHS}: {len(paths)} paths for {manifest['count']} rows; "
                           "the folder is damaged, extract again")
    skipped = [tuple(s) for s in manifest.get("skipped", [])]
    return FeatureSet(arrays, paths, manifest.get("identity", {}), skipped)


def _copy_npy_data(src: Path, dest: Any) -> None:
    """Append the raw data of a C-ordered .npy file to an open file (plain reads: no memory map)."""
    with open(src, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise DatasetError(f"{src}: .npy format version {version} is not supported; extract again")
        fmt = np.lib.format
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        _, fortran, _ = read_header(f)
        if fortran:
            raise DatasetError(f"{src}: Fortran-ordered array; cannot merge")
        shutil.copyfileobj(f, dest, length=16 << 20)


def merge_feature_folders(parts: Sequence[str | Path], out: str | Path) -> Path:
    """Concatenate feature folders (same arrays and identity) into `out`, streaming file to file so the
    merged gallery is never held in memory at once."""
    manifests = [read_manifest(p) for p in parts]
    if not manifests:
        raise DatasetError("nothing to merge: no feature folders given")
    filled = [m for m in manifests if m["count"] > 0]  # empty part (all unreadable): no arrays
    first = filled[0] if filled else manifests[0]
    for p, m in zip(parts, manifests):
        if m["count"] == 0:
            continue
        if m["identity"] != first["identity"] or m["arrays"].keys() != first["arrays"].keys():
            raise DatasetError(f"{p}: other model or arrays than {parts[0]}; cannot merge")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    total = sum(m["count"] for m in manifests)
    arrays = {}
    for name, info in first["arrays"].items():
        shape = [total, *info["shape"][1:]]
        with open(tmp / f"{name}.npy", "wb") as dest:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(info["dtype"])), "fortran_order": False,
                      "shape": tuple(shape)}
            np.lib.format.write_array_header_2_0(dest, header)
            for p, m in zip(parts, manifests):
                if m["count"] > 0:
                    _copy_npy_data(Path(p) / f"{name}.npy", dest)
        arrays[name] = {"shape": shape, "dtype": info["dtype"]}
    paths = [line for p in parts for line in (Path(p) / PATHS).read_text(encoding="utf-8").splitlines()]
    _write_paths(tmp / PATHS, paths)
    manifest = {
        "format": FORMAT, "version": VERSION, "count": total, "arrays": arrays, "identity": first["identity"],
        "skipped": [s for m in manifests for s in m.get("skipped", [])],
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    _replace_dir(tmp, out)
    return out
