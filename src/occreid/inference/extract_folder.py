"""`occreid extract`: features of every image under a folder, batched, with worker processes, resumable.

The sorted image list is cut into shards of `shard_size` images; each finished shard is written as a
feature folder under `OUT.parts/shard_NNNNN/` (atomically), so an interrupted run restarted with
`resume=True` skips the shards already done. When all are done they are merged into OUT (see
`features_file` for the format) and OUT.parts/ is removed. Unreadable images are skipped and listed in
the manifest; the run fails only when no image at all can be read.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from occreid.api import ReidModel
from occreid.errors import DatasetError
from occreid.inference.features_file import FeatureSet, merge_feature_folders, read_features, write_features

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
PLAN = "plan.json"


def list_images(folder: str | Path) -> list[str]:
    """All image files under `folder` (recursive), sorted, as absolute paths (a feature folder is read
    from other working directories: search pictures, re-ranks); DatasetError if there is none."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise DatasetError(f"--images {folder}: not a folder")
    paths = sorted(str(p) for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not paths:
        raise DatasetError(f"--images {folder}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in it")
    return paths


class FolderImages(Dataset):
    """Index -> (index, preprocessed tensor or None, error message); errors do not stop the loader."""

    def __init__(self, paths: list[str], transform: Any) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str]:
        from occreid.data.images import read_image

        try:
            return i, self.transform(read_image(self.paths[i]))[0], ""
        except DatasetError as e:
            return i, None, str(e)


def collate_readable(batch: list[tuple[int, torch.Tensor | None, str]]) -> dict[str, Any]:
    ok = [b for b in batch if b[1] is not None]
    return {
        "index": [b[0] for b in ok],
        "image": torch.stack([b[1] for b in ok]) if ok else None,
        "failed": [(b[0], b[2]) for b in batch if b[1] is None],
    }


def _plan(paths: list[str], shard_size: int, model: ReidModel) -> dict[str, Any]:
    digest = hashlib.sha256("\n".join(paths).encode()).hexdigest()[:16]
    return {"images": len(paths), "images_sha256": digest, "shard_size": shard_size,
            "config_hash": model.config_hash, "checkpoint_sha256": model.identity.get("checkpoint_sha256")}


def _prepare_parts(parts: Path, plan: dict[str, Any], resume: bool, out: Path) -> None:
    plan_file = parts / PLAN
    if parts.exists() and not resume:
        raise DatasetError(f"{parts} holds shards of an interrupted extraction: add --resume to continue it "
                           f"or delete {parts} to start again")
    if resume and plan_file.is_file():
        old = json.loads(plan_file.read_text())
        if old != plan:
            diff = sorted(k for k in plan if old.get(k) != plan[k])
            raise DatasetError(f"--resume: {parts} was made with other {', '.join(diff)} than this run "
                               f"(images folder, checkpoint or shard size changed); delete {parts} or "
                               f"choose another --out than {out}")
    parts.mkdir(parents=True, exist_ok=True)
    plan_file.write_text(json.dumps(plan, indent=1))


def extract_folder(
    model: ReidModel, images: str | Path, out: str | Path, *, batch_size: int = 64, workers: int = 2,
    resume: bool = False, shard_size: int = 4096, dtype: str | None = None, progress: bool = True,
) -> FeatureSet:
    """Extract features of all images under `images` into the feature folder `out`; returns it
    memory-mapped. `dtype="float16"` halves the embeddings on disk (visibility stays float32)."""
    from tqdm import tqdm

    paths = list_images(images)
    out = Path(out)
    parts = out.with_name(out.name + ".parts")
    _prepare_parts(parts, _plan(paths, shard_size, model), resume, out)
    shards = [parts / f"shard_{i:05d}" for i in range(0, (len(paths) + shard_size - 1) // shard_size)]
    pending = [i for i, s in enumerate(shards) if not (s / "manifest.json").is_file()]
    batches = [
        list(range(s, min(s + batch_size, (k + 1) * shard_size, len(paths))))
        for k in pending for s in range(k * shard_size, min((k + 1) * shard_size, len(paths)), batch_size)
    ]
    # forkserver: a forked child of a process that has loaded a threaded runtime (OpenVINO, ONNX Runtime)
    # can crash; the decoding workers start from a clean server process instead
    loader = DataLoader(FolderImages(paths, model.preprocess), batch_sampler=batches, num_workers=workers,
                        collate_fn=collate_readable, multiprocessing_context="forkserver" if workers else None)
    todo = sum(len(b) for b in batches)
    bar = tqdm(total=todo, desc="extract", unit="img", disable=not progress, dynamic_ncols=True)
    current, rows, chunks, failed = -1, [], {}, []
    for batch in loader:
        shard = (batch["index"] or [batch["failed"][0][0]])[0] // shard_size
        if shard != current and current >= 0:
            _write_shard(shards[current], paths, rows, chunks, failed, model, dtype)
            rows, chunks, failed = [], {}, []
        current = shard
        if batch["image"] is not None:
            for k, v in model.embed_tensor(batch["image"]).items():
                chunks.setdefault(k, []).append(v)
            rows += batch["index"]
        failed += batch["failed"]
        bar.update(len(batch["index"]) + len(batch["failed"]))
    if current >= 0:
        _write_shard(shards[current], paths, rows, chunks, failed, model, dtype)
    bar.close()
    merge_feature_folders(shards, out)
    shutil.rmtree(parts)
    result = read_features(out)
    if len(result) == 0:
        shutil.rmtree(out)
        first = result.skipped[0] if result.skipped else ("?", "?")
        raise DatasetError(f"--images {images}: none of the {len(paths)} images could be read "
                           f"(first: {first[0]}: {first[1]})")
    return result


def _write_shard(folder: Path, paths: list[str], rows: list[int], chunks: dict[str, list[np.ndarray]],
                 failed: list[tuple[int, str]], model: ReidModel, dtype: str | None) -> None:
    arrays = {k: np.concatenate(v) for k, v in chunks.items()}
    skipped = [(paths[i], msg) for i, msg in failed]
    write_features(FeatureSet(arrays, [paths[i] for i in rows], model.identity, skipped), folder, dtype=dtype)
