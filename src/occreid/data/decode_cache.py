"""The decode cache: every training image decoded once, resized to the input size, in a memory-mapped file.

Why: decoding a JPEG and resizing it is most of a data worker's time, every epoch again. The cache holds
uint8 arrays exactly as `Resize` makes them (PIL bilinear for images, nearest for part labels), so a
run reads finished pixels and augments them in batch (`occreid.data.batch_augment`).

Layout under the cache folder (`data.cache_dir`, else $OCCREID_CACHE, else $XDG_CACHE_HOME/occreid or
~/.cache/occreid; never inside the dataset folder unless pointed there):

    <name>-images-<H>x<W>-<key>/   images.npy uint8 [N, H, W, 3], sizes.npy int32 [N, 2] (decoded H, W), meta.json
    <name>-labels-<H>x<W>-<key>/   labels.npy uint8 [N, H, W] (atomic parts), has_label.npy bool [N], meta.json

The key hashes the format version, the size and every file's path, byte size and modification time (for
labels also the images' key), so a changed, added or removed file gives a new entry and a rebuild. An
entry is built in a `.tmp-*` folder and renamed into place when complete: an interrupted build leaves no
entry that could be read. Old entries are never read again; delete the folder to reclaim the space.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from occreid.data.images import fit_label, read_image
from occreid.data.records import Record
from occreid.data.transforms import Resize
from occreid.errors import DatasetError
from occreid.labels.format import read_label

FORMAT_VERSION = 1
ENV_VAR = "OCCREID_CACHE"
STALE_TMP_SECONDS = 24 * 3600  # a `.tmp-*` build folder this old was left by a killed build


def default_cache_root() -> Path:
    """$XDG_CACHE_HOME/occreid, else ~/.cache/occreid (the user's cache folder)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "occreid"


def cache_root(cache_dir: str | None, dataset_root: str | Path | None = None) -> Path:
    """The folder that holds decode-cache entries: `cache_dir` (data.cache_dir), else $OCCREID_CACHE, else
    the user's cache folder. The last one is refused when it lies inside the dataset folder, since a cache
    is written into a dataset folder only when the user asks for it."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    root = default_cache_root()
    if dataset_root is not None and _inside(root, Path(dataset_root).expanduser()):
        raise DatasetError(
            f"the default decode-cache folder {root} lies inside the dataset folder {dataset_root}; set "
            f"data.cache_dir=FOLDER (or {ENV_VAR}) to say where the cache goes, or data.decode_cache=false"
        )
    return root


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def _stat(path: str | None) -> list | None:
    """[path, size, mtime_ns] of a file, [path, None, None] when it does not exist, None without a path."""
    if path is None:
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return [str(path), None, None]
    return [str(path), st.st_size, st.st_mtime_ns]


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, separators=(",", ":")).encode()).hexdigest()


def images_key(records: Sequence[Record], height: int, width: int) -> str:
    """Hash of (format, size, each image's path, byte size and mtime); a missing image is a DatasetError."""
    files = []
    for r in records:
        st = _stat(r.path)
        if st is None or st[1] is None:
            raise DatasetError(f"{r.path}: image file not found; run `occreid data check` to list missing files")
        files.append(st)
    return _digest({"format": FORMAT_VERSION, "kind": "images", "size": [int(height), int(width)], "files": files})


def labels_key(records: Sequence[Record], height: int, width: int, image_key: str) -> str:
    """Hash of the images' key and each record's label path, byte size and mtime (absent files included)."""
    labels = [_stat(r.label_path) for r in records]
    return _digest({"format": FORMAT_VERSION, "kind": "labels", "size": [int(height), int(width)],
                    "images": image_key, "labels": labels})


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_") or "data"


def entry_folder(root: Path, name: str, kind: str, height: int, width: int, key: str) -> Path:
    return root / f"{_slug(name)}-{kind}-{int(height)}x{int(width)}-{key[:20]}"


def _complete(folder: Path, key: str) -> bool:
    try:
        return json.loads((folder / "meta.json").read_text()).get("key") == key
    except (OSError, ValueError):
        return False


def ensure_images(
    records: Sequence[Record], height: int, width: int, root: Path, *, name: str = "data",
    progress: bool = True, workers: int = 1,
) -> Path:
    """The images entry for `records` at (height, width), built now if absent or out of date."""
    key = images_key(records, height, width)
    folder = entry_folder(root, name, "images", height, width, key)
    if _complete(folder, key):
        return folder
    resize = Resize(height, width)
    n = len(records)

    def fill(tmp: Path) -> None:
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(n, height, width, 3))
        sizes = np.zeros((n, 2), dtype=np.int32)

        def one(i: int) -> None:
            image = read_image(records[i].path)
            sizes[i] = image.shape[:2]
            images[i] = resize.image(image)

        _run(one, n, workers, progress, f"decode cache: images {height}x{width}")
        images.flush()
        np.save(tmp / "sizes.npy", sizes)

    _build(folder, key, {"kind": "images", "count": n, "height": height, "width": width}, fill)
    return folder


def ensure_labels(
    records: Sequence[Record], height: int, width: int, root: Path, images: Path, *, name: str = "data",
    progress: bool = True, workers: int = 1,
) -> Path:
    """The atomic part-label entry for `records` (next to the `images` entry, whose decoded image sizes
    check each label's aspect ratio as `fit_label` does), built now if absent or out of date."""
    image_key = json.loads((images / "meta.json").read_text())["key"]
    key = labels_key(records, height, width, image_key)
    folder = entry_folder(root, name, "labels", height, width, key)
    if _complete(folder, key):
        return folder
    sizes = np.load(images / "sizes.npy")
    resize = Resize(height, width)
    n = len(records)

    def fill(tmp: Path) -> None:
        labels = np.lib.format.open_memmap(tmp / "labels.npy", mode="w+", dtype=np.uint8, shape=(n, height, width))
        has = np.zeros(n, dtype=bool)

        def one(i: int) -> None:
            path = records[i].label_path
            if path is None or not Path(path).is_file():  # as ReidImageDataset: a missing file = unlabelled
                labels[i] = 0
                return
            shape = (int(sizes[i, 0]), int(sizes[i, 1]))
            labels[i] = resize.label(fit_label(read_label(path), shape, path))
            has[i] = True

        _run(one, n, workers, progress, f"decode cache: part labels {height}x{width}")
        labels.flush()
        np.save(tmp / "has_label.npy", has)

    _build(folder, key, {"kind": "labels", "count": n, "height": height, "width": width}, fill)
    return folder


def _run(one: Callable[[int], None], n: int, workers: int, progress: bool, desc: str) -> None:
    """one(i) for i < n on `workers` threads (PIL decodes and resizes without the GIL), with a bar."""
    from tqdm import tqdm

    with tqdm(total=n, desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        if workers <= 1:
            for i in range(n):
                one(i)
                bar.update(1)
            return
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            for _ in pool.map(one, range(n)):
                bar.update(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # an error or Ctrl-C stops the queued images


def _build(folder: Path, key: str, meta: dict, fill: Callable[[Path], None]) -> None:
    """Fill a fresh `.tmp-*` folder, write meta.json last, then rename it to `folder` in one step; on any
    error or interrupt the tmp folder is removed, so no half-built entry is ever left to read."""
    root = folder.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_tmp(root)
    tmp = root / f".tmp-{folder.name}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        fill(tmp)
        text = json.dumps({"format": FORMAT_VERSION, "key": key, "created": time.time(), **meta}, indent=1)
        with open(tmp / "meta.json", "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _complete(folder, key):  # not another process's finished copy of the same entry
                if folder.exists():
                    shutil.rmtree(folder)  # an incomplete folder of that name (not written by this code)
                os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)  # the other process's copy won the rename


def _remove_stale_tmp(root: Path) -> None:
    now = time.time()
    for p in root.glob(".tmp-*"):
        try:
            if now - p.stat().st_mtime > STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def open_images(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images memmap [N, H, W, 3] uint8, decoded sizes [N, 2]) of an images entry, read-only."""
    return np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "sizes.npy")


def open_labels(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(atomic labels memmap [N, H, W] uint8, has_label [N] bool) of a labels entry, read-only."""
    return np.load(folder / "labels.npy", mmap_mode="r"), np.load(folder / "has_label.npy")
