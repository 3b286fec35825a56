"""Make canonical part labels for whole splits from keypoint files, PifPaf or LIP mask files, or the
MediaPipe pose estimator: parallel over processes, resumable (existing outputs are kept and counted),
with a coverage report. An image the source has nothing for gets no label file (it trains unlabelled).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from occreid.errors import LabelError
from occreid.labels.format import ATOMIC_PARTS, label_path_for, read_label, write_label
from occreid.labels.keypoint_files import read_openpose18_csv, read_openpose18_json, read_people_json
from occreid.labels.keypoints import Keypoints, select_person

SOURCES = ("keypoints", "pifpaf", "lip", "mediapipe")
COVERAGE_FILE = "coverage.json"
_CHUNK = 32
_MAX_ERRORS = 20


@dataclass
class CoverageReport:
    """What a `make_labels` run produced. `part_visible[p]`: images whose label has part p."""

    source: str
    images: int = 0
    labelled: int = 0
    reused: int = 0
    no_source: int = 0
    empty: int = 0
    failed: int = 0
    part_visible: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ATOMIC_PARTS, 0))
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    sampled_from: int | None = None  # images in the splits when only a sample was labelled

    @property
    def part_fraction(self) -> dict[str, float]:
        """Fraction of all images in which each part is visible."""
        return {p: (n / self.images if self.images else 0.0) for p, n in self.part_visible.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "images": self.images,
            "labelled": self.labelled,
            "labelled_fraction": self.labelled / self.images if self.images else 0.0,
            "reused": self.reused,
            "no_source": self.no_source,
            "empty": self.empty,
            "failed": self.failed,
            "part_visible": dict(self.part_visible),
            "part_fraction": self.part_fraction,
            "seconds": round(self.seconds, 3),
            "sampled_from": self.sampled_from,
            "errors": list(self.errors),
        }

    def to_text(self) -> str:
        pct = 100.0 * self.labelled / self.images if self.images else 0.0
        lines = [
            f"part labels from {self.source}: {self.labelled} / {self.images} images labelled ({pct:.1f} %), "
            f"{self.reused} of them kept from an earlier run, in {self.seconds:.1f} s"
            + (f" (a random sample of {self.sampled_from})" if self.sampled_from not in (None, self.images) else ""),
            f"  no entry / no detection: {self.no_source}, no part visible: {self.empty}, failed: {self.failed}",
            "  part visible in (fraction of all images):",
        ]
        lines += [f"    {p:<11} {n:>7}  {self.part_fraction[p]:6.1%}" for p, n in self.part_visible.items()]
        lines += [f"  error: {e}" for e in self.errors]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Job:
    image: str
    out: str
    payload: Any  # keypoints: (people, target) | Path of a per-image file; masks: Path; None = no entry


def _image_size(path: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def _people_label(people: list[Keypoints], target: int | None, image: str, min_conf: float) -> np.ndarray | None:
    from occreid.labels.rasterise import rasterise_keypoints

    h, w = _image_size(image)
    person = people[target] if target is not None else select_person(people, (h, w), min_conf)
    return None if person is None else rasterise_keypoints(person, h, w, min_conf=min_conf)


def _label_one(job: _Job, source: str, options: Mapping[str, Any], estimator: Any) -> np.ndarray | None:
    """The atomic label of one image, None when the source has nothing for it."""
    if source == "mediapipe":
        from PIL import Image

        with Image.open(job.image) as im:
            rgb = np.asarray(im.convert("RGB"))
        kp, mask = estimator.estimate(rgb)
        if kp is None:
            return None
        from occreid.labels.rasterise import rasterise_keypoints

        return rasterise_keypoints(kp, *rgb.shape[:2], min_conf=options["min_conf"], person_mask=mask)
    if job.payload is None:
        return None
    if source == "keypoints":
        if isinstance(job.payload, Path):
            people, target = read_people_json(job.payload)
        else:
            people, target = job.payload
        return _people_label(people, target, job.image, options["min_conf"])
    if source == "pifpaf":
        from occreid.labels.pifpaf import pifpaf_to_label, read_pifpaf_fields

        return pifpaf_to_label(read_pifpaf_fields(job.payload), *_image_size(job.image), options["threshold"])
    from occreid.labels.lip import read_lip_label

    label = read_lip_label(job.payload)
    h, w = _image_size(job.image)
    if label.shape != (h, w):
        from PIL import Image

        label = np.asarray(Image.fromarray(label).resize((w, h), Image.Resampling.NEAREST))
    return label


def _run_chunk(args: tuple[list[_Job], str, dict[str, Any]]) -> list[tuple[str, np.ndarray | None, str]]:
    """Label a chunk of images: (status, parts present [8] or None, error) per job."""
    jobs, source, options = args
    estimator = None
    if source == "mediapipe":
        from occreid.labels.mediapipe_pose import MediaPipePose

        estimator = MediaPipePose(**options.get("mediapipe", {}))
    results = []
    try:
        for job in jobs:
            out = Path(job.out)
            try:
                if out.is_file() and not options["overwrite"]:
                    results.append(("reused", _parts_present(read_label(out)), ""))
                    continue
                label = _label_one(job, source, options, estimator)
                if label is None:
                    results.append(("no_source", None, ""))
                elif not label.any():
                    results.append(("empty", None, ""))
                else:
                    write_label(out, label)
                    results.append(("labelled", _parts_present(label), ""))
            except (LabelError, OSError, ValueError) as e:
                results.append(("failed", None, f"{job.image}: {e}"))
    finally:
        if estimator is not None:
            estimator.close()
    return results


def _parts_present(label: np.ndarray) -> np.ndarray:
    return np.bincount(label.ravel(), minlength=len(ATOMIC_PARTS) + 1)[1:] > 0


def _keypoint_payloads(keypoints_file: str | Path, jobs: Iterable[tuple[str, str, str]]) -> list[_Job]:
    """Resolve each image's keypoints: an index file (CSV / DukeMTMC-Pose JSON) keyed by stem, or a
    folder of per-image JSON files (`<split>/<stem>.json`, `<stem>.json` or `<file name>.json`)."""
    path = Path(keypoints_file)
    if path.is_dir():
        out = []
        for split, image, dest in jobs:
            name = Path(image).name
            cands = (path / split / f"{Path(name).stem}.json", path / f"{Path(name).stem}.json", path / f"{name}.json")
            found = next((c for c in cands if c.is_file()), None)
            out.append(_Job(image, dest, found))
        return out
    if not path.is_file():
        raise LabelError(f"keypoint file {path} does not exist; pass a CSV, a JSON index or a folder of JSON files")
    index = read_openpose18_csv(path) if path.suffix.lower() == ".csv" else read_openpose18_json(path)
    return [
        _Job(image, dest, ([index[Path(image).stem]], 0) if Path(image).stem in index else None)
        for _, image, dest in jobs
    ]


def _mask_payloads(source: str, masks_dir: str | Path, jobs: Iterable[tuple[str, str, str]]) -> list[_Job]:
    from occreid.labels.pifpaf import pifpaf_path

    root = Path(masks_dir)
    if not root.is_dir():
        raise LabelError(f"masks folder {root} does not exist; pass `<dataset>/masks/<name>`")
    out = []
    for split, image, dest in jobs:
        if source == "pifpaf":
            found = pifpaf_path(root, split, image)
        else:
            cand = root / split / f"{Path(image).stem}.png"
            found = cand if cand.is_file() else None
        out.append(_Job(image, dest, found))
    return out


def make_labels(
    records_by_split: Mapping[str, Sequence[str | Path]],
    source: str,
    out_root: str | Path,
    *,
    keypoints_file: str | Path | None = None,
    masks_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool = True,
    min_conf: float = 0.1,
    threshold: float = 0.3,
    overwrite: bool = False,
    mediapipe_options: Mapping[str, Any] | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> CoverageReport:
    """Write the canonical label of every image at `label_path_for(out_root, split folder, image)`.

    records_by_split: {split folder (e.g. "bounding_box_train"): image paths}. source: "keypoints"
    (needs keypoints_file), "pifpaf" or "lip" (need masks_dir = `<dataset>/masks/<name>`) or
    "mediapipe". Existing outputs are kept unless `overwrite`. The report is also written to
    `<out_root>/coverage.json`. workers > 1 runs spawned processes, so a script calling this must
    do so under `if __name__ == "__main__":`. `sample=N` labels only a seeded random N of the images
    (to estimate coverage and time before a long run; a later full run keeps them).
    """
    if source not in SOURCES:
        raise LabelError(f"unknown label source {source!r}; expected one of {SOURCES}")
    start = time.perf_counter()
    triples = [
        (split, str(image), str(label_path_for(out_root, split, image)))
        for split, images in records_by_split.items()
        for image in images
    ]
    sampled_from = len(triples)
    if sample is not None and sample < len(triples):
        if sample < 1:
            raise LabelError(f"--sample {sample}: expected a positive number of images")
        pick = np.sort(np.random.default_rng(seed).choice(len(triples), size=sample, replace=False))
        triples = [triples[i] for i in pick]
    if source == "keypoints":
        if keypoints_file is None:
            raise LabelError("source 'keypoints' needs a keypoint file (keypoints_file=...)")
        jobs = _keypoint_payloads(keypoints_file, triples)
    elif source in ("pifpaf", "lip"):
        if masks_dir is None:
            raise LabelError(f"source {source!r} needs the masks folder (masks_dir=<dataset>/masks/<name>)")
        jobs = _mask_payloads(source, masks_dir, triples)
    else:
        from occreid.labels.mediapipe_pose import require_mediapipe

        require_mediapipe()
        jobs = [_Job(image, dest, None) for _, image, dest in triples]
    options = {"min_conf": min_conf, "threshold": threshold, "overwrite": overwrite,
               "mediapipe": dict(mediapipe_options or {})}  # fmt: skip
    chunks = [(jobs[i : i + _CHUNK], source, options) for i in range(0, len(jobs), _CHUNK)]
    report = CoverageReport(source=source, images=len(jobs), sampled_from=sampled_from)
    from tqdm import tqdm

    with tqdm(total=len(jobs), desc=f"labels ({source})", unit="img", disable=not progress) as bar:
        if workers <= 1 or len(chunks) <= 1:
            results: Iterable[list] = map(_run_chunk, chunks)
            _collect(report, results, bar)
        else:
            with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
                _collect(report, pool.map(_run_chunk, chunks), bar)
    report.seconds = time.perf_counter() - start
    Path(out_root).mkdir(parents=True, exist_ok=True)
    (Path(out_root) / COVERAGE_FILE).write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def _collect(report: CoverageReport, results: Iterable[list], bar: Any) -> None:
    counts = np.zeros(len(ATOMIC_PARTS), dtype=np.int64)
    for chunk in results:
        for status, parts, error in chunk:
            if status in ("labelled", "reused"):
                report.labelled += 1
                report.reused += status == "reused"
                counts += parts
            elif status == "no_source":
                report.no_source += 1
            elif status == "empty":
                report.empty += 1
            else:
                report.failed += 1
                if len(report.errors) < _MAX_ERRORS:
                    report.errors.append(error)
        bar.update(len(chunk))
    report.part_visible = {p: int(n) for p, n in zip(ATOMIC_PARTS, counts)}
