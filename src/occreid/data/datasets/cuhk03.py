"""CUHK03 under the new protocol (767 train / 700 test ids), `variant` = `labeled` or `detected`.

Two layouts: `cuhk03-np/<variant>/` with Market-style folders (names `PPPP_cC_...`), or the original
`CUHK03/` release with `cuhk-03.mat` and `cuhk03_new_protocol_config_<variant>.mat`. The latter needs
scipy (config) and, the first time, h5py to extract the images of the MATLAB v7.3 file into
`CUHK03/images_<variant>/` named `<cam pair>_<pid>_<view>_<index>.png` (view = camera, 1 or 2).
The classic 1,367 / 100 split is not supported.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from occreid.data.datasets.assemble import assemble, default_labels_root, with_labels
from occreid.data.datasets.market_style import MARKET_FOLDERS, load_market_layout
from occreid.data.datasets.scan import LoadLog, find_dataset_folder
from occreid.data.records import DatasetSplits, Record
from occreid.errors import DatasetError

VARIANTS = ("labeled", "detected")
MAT_SPLITS = (("train", "train_idx"), ("query", "query_idx"), ("gallery", "gallery_idx"))


def config_name(variant: str) -> str:
    return f"cuhk03_new_protocol_config_{variant}.mat"


def load_cuhk03(
    root: Path, log: LoadLog, *, labels_root: str | Path | None = None, variant: str = "labeled"
) -> DatasetSplits:
    """CUHK03-NP or the `.mat` release, new protocol; camid = camera - 1."""
    if variant not in VARIANTS:
        raise DatasetError(f"cuhk03: option variant={variant!r} is not one of {VARIANTS} (set data.cuhk03_variant)")
    np_names = (f"cuhk03-np/{variant}", variant)
    try:
        folder = find_dataset_folder(root, "cuhk03", np_names, MARKET_FOLDERS)
    except DatasetError:
        folder = None
    if folder is not None:
        log.note(f"protocol: CUHK03-NP {variant} (new protocol)")
        return load_market_layout("cuhk03", folder, log, labels_root)
    try:
        folder = find_dataset_folder(root, "cuhk03", ("CUHK03", "cuhk03"), (config_name(variant),))
    except DatasetError:
        where = " or ".join(f"{root / n}/" for n in np_names)
        raise DatasetError(
            f"cuhk03: no dataset found at {root}: expected {where} holding bounding_box_train/, query/, "
            f"bounding_box_test/, or {root / 'CUHK03'}/ holding {config_name(variant)} and cuhk-03.mat"
        ) from None
    return load_new_protocol_mat(folder, variant, log, labels_root)


def load_new_protocol_mat(folder: Path, variant: str, log: LoadLog, labels_root: str | Path | None) -> DatasetSplits:
    """Splits from `cuhk03_new_protocol_config_<variant>.mat` (1-based indices into `filelist`)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError(
            f"cuhk03: reading {folder / config_name(variant)} needs scipy: `pip install scipy` "
            f"(or use the cuhk03-np folders, which need nothing)"
        ) from None
    config = loadmat(str(folder / config_name(variant)))
    names = [str(np.ravel(entry)[0]) for entry in np.ravel(config["filelist"])]
    pids = np.ravel(config["labels"]).astype(np.int64)
    images = folder / f"images_{variant}"
    if not images.is_dir():
        extract_mat_images(folder, variant, images)
        log.note(f"extracted the {variant} images of cuhk-03.mat into {images}/")
    labels = default_labels_root(folder, labels_root)
    log.note(f"protocol: CUHK03 {variant} (new protocol, {config_name(variant)})")
    splits: dict[str, list[Record]] = {}
    for split, key in MAT_SPLITS:
        records = []
        for i in np.ravel(config[key]).astype(np.int64) - 1:
            fields = names[i].split("_")
            if len(fields) < 4 or not fields[2].isdigit():
                log.skip(config_name(variant), names[i])
                continue
            records.append(Record(os.path.join(str(images), names[i]), int(pids[i]), int(fields[2]) - 1))
        splits[split] = with_labels(records, labels, images.name)
    return assemble("cuhk03", folder, log, **splits)


def extract_mat_images(folder: Path, variant: str, out: Path) -> None:
    """Write the images of `cuhk-03.mat` (MATLAB v7.3 = HDF5) as PNGs, into a temp folder then rename."""
    places = (folder / "cuhk-03.mat", folder / "cuhk03_release" / "cuhk-03.mat")
    mat_path = next((p for p in places if p.is_file()), None)
    if mat_path is None:
        raise DatasetError(f"cuhk03: neither {out}/ nor cuhk-03.mat (in {folder}/ or its cuhk03_release/) exists")
    try:
        import h5py
    except ImportError:
        raise DatasetError(
            f"cuhk03: {out}/ is missing and extracting it from {mat_path} (MATLAB v7.3) needs h5py: `pip install h5py`"
        ) from None
    from PIL import Image

    tmp = out.with_name(out.name + ".partial")
    tmp.mkdir(exist_ok=True)
    with h5py.File(mat_path, "r") as mat:
        for pair, pair_ref in enumerate(mat[variant][0]):
            pair_images = mat[pair_ref][:].T
            for pid in range(pair_images.shape[0]):
                for index, ref in enumerate(pair_images[pid]):
                    image = mat[ref][:].T
                    if image.ndim < 3 or image.size == 0:
                        continue
                    view = 1 if index < 5 else 2
                    name = f"{pair + 1}_{pid + 1:03d}_{view}_{index + 1:02d}.png"
                    Image.fromarray(image.astype(np.uint8)).save(tmp / name)
    tmp.rename(out)
