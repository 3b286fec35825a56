"""`occreid data check`: load a dataset and report what would make training or evaluation wrong.

Errors: no dataset at the root, an empty query set, unreadable or truncated images, unreadable part
labels or labels of another aspect ratio than their image, no query with a cross-camera match in the
gallery. Warnings: absent splits, names that do not parse, query ids absent from the gallery, query
files duplicated in the gallery (Occluded-Duke has 1,870: same camera, so junk by the protocol, but
worth knowing), part labels at another resolution (same aspect ratio) than their image.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from occreid.data.datasets import dataset_stats, load_dataset_with_log
from occreid.data.records import SPLITS, DatasetSplits, Record
from occreid.errors import DatasetError

EXAMPLES = 5


@dataclass
class CheckReport:
    """Findings of one check; `ok` when there is no error."""

    dataset: str
    root: str
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": self.root,
            "ok": self.ok,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            "info": self.info,
        }

    def to_text(self) -> str:
        lines = [f"dataset {self.dataset} at {self.root}"]
        for split, s in self.info.get("stats", {}).items():
            lines.append(f"  {split:<8} {s['images']:>7} images {s['ids']:>6} ids {s['cams']:>3} cams")
        notes = [n for n in self.info.get("notes", []) if n not in self.warnings]
        for title, items in (("notes", notes), ("warnings", self.warnings), ("errors", self.errors)):
            if items:
                lines.append(f"{title}:")
                lines += [f"  - {item}" for item in items]
        verdict = "OK" if self.ok else f"FAILED ({len(self.errors)} error{'s' * (len(self.errors) != 1)})"
        lines.append(f"result: {verdict}, {len(self.warnings)} warning{'s' * (len(self.warnings) != 1)}")
        return "\n".join(lines)


def examples(items: Sequence[str], n: int = EXAMPLES) -> str:
    shown = ", ".join(items[:n])
    return shown + (f" (+{len(items) - n} more)" if len(items) > n else "")


def verify_image(path: str) -> str | None:
    """None when Pillow can open and fully decode the image, else the reason."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
    except Exception as e:  # Pillow raises OSError, SyntaxError, struct.error... for bad files
        return f"{type(e).__name__}: {e}"
    return None


def unreadable_images(paths: Sequence[str], workers: int, progress: bool) -> list[tuple[str, str]]:
    """(path, reason) of every image that does not decode; decoding runs in a thread pool
    (Pillow releases the GIL while decoding)."""
    from tqdm import tqdm

    bar = tqdm(total=len(paths), desc="verify images", unit="img", disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        reasons = []
        for reason in pool.map(verify_image, paths):
            reasons.append(reason)
            bar.update()
    bar.close()
    return [(p, r) for p, r in zip(paths, reasons) if r is not None]


def check_label(image_path: str, label_path: str) -> tuple[str, str] | None:
    """(kind, reason) for a part label that is unreadable ("unreadable") or does not fit its image
    ("stretched": another aspect ratio; "rescaled": same aspect ratio, another resolution); None if fine."""
    from PIL import Image

    from occreid.data.images import label_size_problem
    from occreid.errors import LabelError
    from occreid.labels.format import read_label

    try:
        label = read_label(label_path)
    except LabelError as e:
        return "unreadable", str(e)
    try:
        with Image.open(image_path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - an unreadable image is reported by the image check
        return None
    problem = label_size_problem(label.shape, (h, w))
    if problem:
        return "stretched", problem
    if label.shape != (h, w):
        return "rescaled", f"label {label.shape[0]}x{label.shape[1]} for image {h}x{w}"
    return None


def label_problems(records: Sequence[Record], workers: int) -> tuple[dict[str, list[str]], int]:
    """Problems of every existing part-label file by kind (see `check_label`), as 'label (reason)', and
    how many label files were checked."""
    pairs = list(dict.fromkeys((r.path, r.label_path) for r in records
                               if r.label_path is not None and os.path.isfile(r.label_path)))
    found: dict[str, list[str]] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (_, label), result in zip(pairs, pool.map(lambda p: check_label(*p), pairs)):
            if result is not None:
                found.setdefault(result[0], []).append(f"{label} ({result[1]})")
    return found, len(pairs)


def check_labels(splits: DatasetSplits, report: CheckReport, workers: int) -> None:
    """Unreadable labels and labels of another aspect ratio than their image are errors (training stops
    on them with a LabelError); labels at another resolution but the same aspect ratio are a warning
    (resized nearest-neighbour when loaded)."""
    records = [r for s in splits.present() for r in splits.split(s)]
    found, report.info["labels_checked"] = label_problems(records, workers)
    if found.get("unreadable"):
        report.errors.append(f"{len(found['unreadable'])} part labels are unreadable: "
                             f"{examples(found['unreadable'], 3)}; re-create them with `occreid labels make`")
    if found.get("stretched"):
        report.errors.append(
            f"{len(found['stretched'])} part labels do not fit their image (another aspect ratio; loading "
            f"them raises LabelError rather than stretching): {examples(found['stretched'], 3)}; re-create "
            "them with `occreid labels make`"
        )
    if found.get("rescaled"):
        report.warnings.append(
            f"{len(found['rescaled'])} part labels are at another resolution than their image (same aspect "
            f"ratio), resized nearest-neighbour when loaded: {examples(found['rescaled'], 3)}"
        )


def cross_camera_matches(query: Sequence[Record], gallery: Sequence[Record]) -> np.ndarray:
    """Per query: how many distinct gallery cameras other than its own hold its identity (bool > 0 =
    the query can be evaluated: same-id same-camera gallery images are junk)."""
    qp = np.array([r.pid for r in query], dtype=np.int64)
    qc = np.array([r.camid for r in query], dtype=np.int64)
    gp = np.array([r.pid for r in gallery], dtype=np.int64)
    gc = np.array([r.camid for r in gallery], dtype=np.int64)
    pid0, cam0 = min(qp.min(), gp.min()), min(qc.min(), gc.min())
    qp, gp, qc, gc = qp - pid0, gp - pid0, qc - cam0, gc - cam0
    cams = int(max(qc.max(), gc.max())) + 1
    pairs = np.unique(gp * cams + gc)
    pids, cams_per_pid = np.unique(pairs // cams, return_counts=True)
    at = np.minimum(np.searchsorted(pids, qp), len(pids) - 1)
    in_gallery = pids[at] == qp
    own_camera = np.isin(qp * cams + qc, pairs)
    return np.where(in_gallery, cams_per_pid[at], 0) - own_camera


def check_matches(splits: DatasetSplits, report: CheckReport) -> None:
    """Query ids absent from the gallery, queries without a cross-camera match, duplicated files."""
    query, gallery = splits.query, splits.gallery
    gallery_ids = {r.pid for r in gallery}
    absent_ids = sorted({r.pid for r in query} - gallery_ids)
    queries_absent = sum(r.pid not in gallery_ids for r in query)
    if absent_ids:
        report.warnings.append(
            f"{len(absent_ids)} query ids ({queries_absent} query images) have no image in the gallery; "
            f"the evaluation skips them (ids: {examples([str(p) for p in absent_ids])})"
        )
    matched = cross_camera_matches(query, gallery) > 0
    report.info["queries_with_match"] = int(matched.sum())
    same_camera_only = int((~matched).sum()) - queries_absent
    if not matched.any():
        report.errors.append(
            "no query has a match in the gallery (same id, other camera): nothing can be evaluated. "
            "If the ids do appear in the gallery, the camera ids are probably equal between query and "
            "gallery (same-camera matches are junk by protocol): check how camids are parsed or set "
            "(test-only sets use query camid 0, gallery camid 1)"
        )
    elif same_camera_only:
        report.warnings.append(
            f"{same_camera_only} queries have gallery images of their id only under their own camera "
            f"(junk by protocol); the evaluation skips them"
        )
    in_gallery = {(os.path.basename(r.path), r.pid, r.camid) for r in gallery}
    duplicated = sorted(
        os.path.basename(r.path) for r in query if (os.path.basename(r.path), r.pid, r.camid) in in_gallery
    )
    report.info["duplicated_query_files"] = len(duplicated)
    if duplicated:
        report.warnings.append(
            f"{len(duplicated)} query files also sit in the gallery (same file name, id and camera, e.g. "
            f"{examples(duplicated, 3)}); junk by protocol, never counted as matches"
        )


def check_dataset(
    key: str,
    root: str | os.PathLike,
    *,
    verify_images: bool = True,
    workers: int = 2,
    progress: bool = True,
    **options: Any,
) -> CheckReport:
    """Load dataset `key` from `root` (options as for `load_dataset`) and check it."""
    report = CheckReport(dataset=key, root=str(root))
    try:
        splits, log = load_dataset_with_log(key, root, **options)
    except DatasetError as e:
        report.errors.append(str(e))
        return report
    report.root = splits.root
    report.info["stats"] = dataset_stats(splits)["splits"]
    report.info["notes"] = list(splits.notes)
    report.info["labels"] = {s: sum(r.label_path is not None for r in splits.split(s)) for s in splits.present()}
    for split, why in log.absent.items():
        if not why.startswith("test-only"):
            report.warnings.append(f"no {split} split: {why}")
    for folder, names in log.unparsable.items():
        report.warnings.append(
            f"{folder}: {len(names)} entries whose names do not parse were skipped (e.g. {examples(names)})"
        )
    for split in SPLITS:
        records = splits.split(split)
        if records is not None and not records:
            (report.errors if split == "query" else report.warnings).append(f"the {split} split is empty")
    if splits.query and splits.gallery:
        check_matches(splits, report)
    if verify_images:
        paths = list(dict.fromkeys(r.path for s in splits.present() for r in splits.split(s)))
        bad = unreadable_images(paths, workers, progress)
        report.info["images_verified"] = len(paths)
        report.info["unreadable"] = [p for p, _ in bad]
        if bad:
            report.errors.append(
                f"{len(bad)} images are unreadable or truncated: "
                + examples([f"{p} ({why})" for p, why in bad])
                + "; re-download or remove them"
            )
        check_labels(splits, report, workers)
    return report
