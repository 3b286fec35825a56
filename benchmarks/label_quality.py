"""Quality of MediaPipe part labels where a reference exists: keypoint files and exact synthetic labels.

    python benchmarks/label_quality.py --root /data [--sample 300] [--synthetic 60] [--modes crop,detector]
        [--json out.json]

Needs the `pose` extra. For each MediaPipe mode it reports, against each reference set:
- detected: images where MediaPipe returned a person;
- PCK@0.1: share of joints (present in both, MediaPipe visibility > 0.5) within 0.1 x crop height of
  the reference joint, over detected images; left and right are the person's own in both;
- per-part IoU (pixels summed over images, undetected images counted as all background) of the
  MediaPipe label (rasterised, cut by its person mask) against the reference label.
Reference sets: Market-1501 train with its OpenPose-18 CSV (a seeded sample of images with >= 8 joints;
the reference label is rasterised from the file's joints, so IoU measures agreement, not truth); the
mini sets' keypoint files (Occluded-Duke queries with the DukeMTMC-Pose OpenPose-18 JSON and AlphaPose
JSON, Market-1501 with the pose-gan OpenPose CSV); rendered synthetic people with their exact labels.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from occreid.labels.format import ATOMIC_PARTS, read_label
from occreid.labels.keypoint_files import read_openpose18_csv, read_openpose18_json, read_people_json
from occreid.labels.keypoints import Keypoints, select_person
from occreid.labels.mediapipe_pose import MediaPipePose
from occreid.labels.quality import confusion, part_iou
from occreid.labels.rasterise import rasterise_keypoints


def _load_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def keypoint_set(images: list[Path], table: dict[str, Keypoints], sample: int | None, seed: int = 0):
    """(image, reference label, reference keypoints) for images with >= 8 joints in the keypoint table."""
    rows = []
    for p in images:
        kp = table.get(p.name) or table.get(p.stem)
        if kp is not None and kp.present(0.0).sum() >= 8:
            rows.append((p, kp))
    if sample is not None and sample < len(rows):
        idx = np.random.default_rng(seed).choice(len(rows), sample, replace=False)
        rows = [rows[i] for i in sorted(idx)]
    out = []
    for p, kp in rows:
        h, w = _load_rgb(p).shape[:2]
        out.append((p, rasterise_keypoints(kp, h, w), kp))
    return out


def synthetic_set(n: int, workdir: Path):
    """(image, exact label, None) for n rendered training images (occluded and not)."""
    from occreid.data.synth import generate

    ids = max(n // 2, 2)
    generate(workdir, ids=ids, cams=2, images_per_id_cam=2, queries_per_id=1, seed=0, workers=1, progress=False)
    images = sorted((workdir / "bounding_box_train").glob("*.jpg"))[:n]
    return [(p, read_label(workdir / "occreid_labels" / "bounding_box_train" / (p.stem + ".png")), None)
            for p in images]


def evaluate(estimator: MediaPipePose, rows) -> dict:
    conf = np.zeros((len(ATOMIC_PARTS) + 1,) * 2, dtype=np.int64)
    detected, hits, joints = 0, 0, 0
    t0 = time.perf_counter()
    for path, ref_label, ref_kp in rows:
        rgb = _load_rgb(path)
        h, w = rgb.shape[:2]
        kp, mask = estimator.estimate(rgb)
        pred = np.zeros((h, w), np.uint8)
        if kp is not None:
            detected += 1
            pred = rasterise_keypoints(kp, h, w, person_mask=mask)
            if ref_kp is not None:
                both = ref_kp.present(0.0) & kp.present(0.5)
                d = np.linalg.norm(kp.xy[both] - ref_kp.xy[both], axis=1) / h
                hits += int((d < 0.1).sum())
                joints += int(both.sum())
        conf += confusion(pred, ref_label)
    iou = part_iou(conf)
    body = conf[1:, 1:].sum() / max(conf.sum() - conf[0, 0], 1)
    vals = [v for v in iou.values() if not np.isnan(v)]
    return {"images": len(rows), "detected": detected, "pck_0.1": hits / joints if joints else None,
            "iou": iou, "miou": float(np.mean(vals)) if vals else float("nan"), "body_iou": float(body),
            "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", required=True, help="data root with Market-1501/ and mini/Occluded_Duke/")
    ap.add_argument("--sample", type=int, default=300, help="Market-1501 train images to score")
    ap.add_argument("--synthetic", type=int, default=60, help="rendered images to score (0: skip)")
    ap.add_argument("--modes", default="crop,detector")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    root = Path(args.root)
    sets = {}
    market = root / "Market-1501"
    if (market / "keypoints_openpose18_train.csv").is_file():
        images = sorted((market / "bounding_box_train").glob("*.jpg"))
        sets["Market-1501 train vs OpenPose CSV"] = keypoint_set(
            images, read_openpose18_csv(market / "keypoints_openpose18_train.csv"), args.sample)
    mini = root / "mini" / "Occluded_Duke"
    duke_json = mini / "keypoints_openpose18_DukeMTMC-Pose_query_points_subset.json"
    if duke_json.is_file():
        sets["mini Occluded-Duke query vs DukeMTMC-Pose"] = keypoint_set(
            sorted((mini / "query").glob("*.jpg")), read_openpose18_json(duke_json), None)
    mini_market = root / "mini" / "Market-1501"
    market_csv = mini_market / "keypoints_openpose18_pose-gan_market-annotation_subset.csv"
    if market_csv.is_file():
        images = sorted(mini_market.glob("*/*.jpg"))
        sets["mini Market-1501 vs pose-gan OpenPose CSV"] = keypoint_set(images, read_openpose18_csv(market_csv), None)
    alphapose = mini / "keypoints_alphapose_sep-json"
    if alphapose.is_dir():
        table = {}
        for js in sorted(alphapose.glob("*.json")):
            people, target = read_people_json(js)
            image = next(iter(sorted(mini.glob(f"*/{js.stem}.jpg"))), None)
            if image is not None:
                h, w = _load_rgb(image).shape[:2]
                person = people[target] if target is not None else select_person(people, (h, w))
                if person is not None:
                    table[image.name] = person
        images = sorted(mini.glob("*/*.jpg"))
        sets["mini Occluded-Duke vs AlphaPose JSON"] = keypoint_set(images, table, None)
    tmp = tempfile.TemporaryDirectory()
    if args.synthetic:
        sets["synthetic vs exact labels"] = synthetic_set(args.synthetic, Path(tmp.name) / "syn")
    results = []
    for mode in args.modes.split(","):
        with MediaPipePose(mode=mode) as est:
            for name, rows in sets.items():
                r = evaluate(est, rows)
                results.append({"mode": mode, "set": name, **r})
    tmp.cleanup()

    short = ["head", "torso", "l arm", "r arm", "l leg", "r leg", "l foot", "r foot"]
    print("| mode | reference | detected | PCK@0.1 | " + " | ".join(short) + " | mIoU | body | s/img |")
    print("|---" * (len(short) + 8) + "|")
    for r in results:
        pck = "-" if r["pck_0.1"] is None else f"{r['pck_0.1']:.3f}"
        ious = " | ".join(f"{r['iou'][p]:.3f}" for p in ATOMIC_PARTS)
        print(f"| {r['mode']} | {r['set']} | {r['detected']} / {r['images']} | {pck} | {ious} | "
              f"{r['miou']:.3f} | {r['body_iou']:.3f} | {r['seconds'] / max(r['images'], 1):.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
