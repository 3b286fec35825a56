"""Time to make one training batch on this machine: the per-image path against the decode cache + batch
augmentation, in one process (no DataLoader workers), so the figure is the CPU (or GPU) work per batch.

    python benchmarks/data_path_speed.py [--images 256] [--batch 64] [--height 256] [--width 128]
        [--source 128x64] [--labels] [--device cpu|cuda] [--threads 1] [--repeats 3]

Writes `--images` random JPEGs of the `--source` size (Market-1501 crops are 128 x 64) and, with
`--labels`, atomic part-label PNGs, to a temporary folder; builds the decode cache there (timed apart);
then times batches of the BoT recipe (flip 0.5, pad 10, erasing 0.5, normalise):

- per-image: read + decode + resize + numpy transforms per image, collate (as a DataLoader worker does);
- cache: copy from the memory map + draw the parameters per image, collate, move to the device,
  `BatchAugment` (on CUDA synchronised before the clock stops).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from occreid.config.schema import DataConfig
from occreid.data.batch_augment import BatchAugment
from occreid.data.cached_images import CachedImageDataset
from occreid.data.decode_cache import ensure_images, ensure_labels
from occreid.data.images import ReidImageDataset, collate
from occreid.data.prefetch import to_device
from occreid.data.records import Record
from occreid.data.transforms import build_transforms
from occreid.labels.format import write_label


def write_images(folder: Path, n: int, h: int, w: int, labels: bool) -> list[Record]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        # photo-like: smooth colour regions plus mild noise (pure noise would make JPEG decoding slow)
        coarse = Image.fromarray(rng.integers(0, 256, size=(max(1, h // 8), max(1, w // 8), 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)
        arr = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        label_path = None
        if labels:
            label_path = folder / f"{i:05d}.png"
            write_label(label_path, rng.integers(0, 9, size=(h, w), dtype=np.uint8))
        label = None if label_path is None else str(label_path)
        records.append(Record(str(path), pid=i // 4, camid=i % 2, label_path=label))
    return records


def per_batch(make, batches: list[list[tuple[int, int]]], device: torch.device, repeats: int) -> float:
    """Best over `repeats` of the mean seconds per batch: CPU seconds of this process on the CPU (robust
    to other jobs on the machine; one torch thread, so CPU time is the work done), wall time on CUDA."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        for items in batches:
            out = make(items)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, (clock() - start) / len(batches))
        del out
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--source", default="128x64", help="HxW of the JPEGs written")
    ap.add_argument("--labels", action="store_true", help="also part labels (grouping pabreid6)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker uses 1)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sh, sw = (int(v) for v in args.source.split("x"))
    cfg = DataConfig(height=args.height, width=args.width)
    grouping = "pabreid6" if args.labels else None
    transform = build_transforms(cfg, train=True)
    aug = BatchAugment(transform, grouping)
    rng = np.random.default_rng(1)
    batches = []
    for _ in range(max(1, args.images // args.batch)):
        index, seeds = rng.integers(0, args.images, args.batch), rng.integers(0, 2**31, args.batch)
        batches.append([(int(i), int(s)) for i, s in zip(index, seeds)])
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        records = write_images(folder, args.images, sh, sw, args.labels)
        start = time.perf_counter()
        images = ensure_images(records, args.height, args.width, folder / "cache", progress=False)
        labels = ensure_labels(records, args.height, args.width, folder / "cache", images, progress=False) \
            if args.labels else None
        build_s = time.perf_counter() - start
        plain = ReidImageDataset(records, transform, grouping=grouping, labels=args.labels)
        cached = CachedImageDataset(records, images, aug, labels=labels)

        def per_image(items):
            return to_device(collate([plain[it] for it in items]), device)

        def from_cache(items):
            return aug(to_device(collate([cached[it] for it in items]), device))

        from_cache(batches[0])  # warm-up (first use of the memory map and the device)
        per_image(batches[0])
        t_plain = per_batch(per_image, batches, device, args.repeats)
        t_cache = per_batch(from_cache, batches, device, args.repeats)
    print(json.dumps({
        "device": str(device), "threads": args.threads, "batch": args.batch, "size": [args.height, args.width],
        "source": [sh, sw], "labels": args.labels, "torch": torch.__version__,
        "cache_build_s_per_image": round(build_s / args.images, 5),
        "per_image_ms_per_batch": round(1000 * t_plain, 1), "cache_ms_per_batch": round(1000 * t_cache, 1),
        "speedup": round(t_plain / t_cache, 2),
    }))


if __name__ == "__main__":
    main()
