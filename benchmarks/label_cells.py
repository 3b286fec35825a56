"""How much of each part label survives on a method's feature grid (issue #28, "all part-supervised
methods"): per part, the share of labelled training images that hold it at the input size, that keep at
least one cell of it when the label is sampled once per cell ("nearest", the default targets), and its
area-averaged mass in cells ("area" targets). Prints a Markdown table per grouping; `--json` keeps it.

    python benchmarks/label_cells.py --labels runs/labels/occduke_mediapipe --height 192 --width 96 \\
        --stride 16 --groupings amdnet5 pabreid6 --sample 3000 --json benchmarks/results/label_cells.json

Training labels only (the part supervision); nothing here reads a test image or a test label.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from occreid.data.transforms import Resize
from occreid.labels.format import group_label, part_names, read_label
from occreid.losses.maps import downsample_label, soft_downsample


def part_cells(labels: torch.Tensor, parts: int, grid: tuple[int, int]) -> dict[str, np.ndarray]:
    """For grouped labels [N, H, W] (0 = background, 1..parts): per image and part, present at full size
    [N, P] bool, cells kept by nearest sampling [N, P], area-averaged mass in cells [N, P]."""
    full = torch.stack([(labels == k + 1).flatten(1).any(1) for k in range(parts)], dim=1)
    nearest = downsample_label(labels, grid)
    kept = torch.stack([(nearest == k + 1).flatten(1).sum(1) for k in range(parts)], dim=1)
    mass = soft_downsample(labels, parts + 1, grid)[:, 1:].sum((2, 3))
    return {"present": full.numpy(), "kept_cells": kept.numpy(), "mass_cells": mass.numpy()}


def summarise(stats: dict[str, np.ndarray], names: list[str]) -> list[dict]:
    present, kept, mass = stats["present"], stats["kept_cells"], stats["mass_cells"]
    rows = []
    for k, name in enumerate(names):
        has = present[:, k]
        n = int(has.sum())
        rows.append({
            "part": name,
            "present_pct": 100.0 * has.mean(),
            "lost_by_nearest_pct": 100.0 * float((kept[has, k] == 0).mean()) if n else float("nan"),
            "nearest_cells_mean": float(kept[has, k].mean()) if n else float("nan"),
            "area_mass_cells_mean": float(mass[has, k].mean()) if n else float("nan"),
        })
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", required=True, help="a labels folder written by `occreid labels make`")
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--width", type=int, default=96)
    ap.add_argument("--stride", type=int, default=16, help="the feature grid's stride (16: last stride 1)")
    ap.add_argument("--groupings", nargs="+", default=["amdnet5", "pabreid6"])
    ap.add_argument("--sample", type=int, default=0, help="labels read (evenly spaced); 0 = all")
    ap.add_argument("--json")
    args = ap.parse_args()

    files = sorted(Path(args.labels).rglob("*.png"))
    if not files:
        print(f"{args.labels}: no label files (*.png); make them with `occreid labels make`", file=sys.stderr)
        return 2
    if args.sample and args.sample < len(files):
        files = [files[i] for i in np.linspace(0, len(files) - 1, args.sample).round().astype(int)]
    resize = Resize(args.height, args.width)
    atomic = np.stack([resize.label(read_label(f)) for f in files])
    grid = (args.height // args.stride, args.width // args.stride)
    out = {"labels": str(args.labels), "images": len(files), "input": [args.height, args.width],
           "grid": list(grid), "groupings": {}}
    for grouping in args.groupings:
        names = part_names(grouping)
        grouped = torch.from_numpy(np.stack([group_label(a, grouping) for a in atomic]).astype(np.int64))
        rows = summarise(part_cells(grouped, len(names), grid), names)
        out["groupings"][grouping] = rows
        print(f"\n{grouping}: {len(files)} labelled training images at {args.height}x{args.width}, "
              f"grid {grid[0]}x{grid[1]}\n")
        print("| part | present (% of images) | lost by nearest sampling (% of those) | cells kept, nearest "
              "(mean) | mass in cells, area (mean) |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['part']} | {r['present_pct']:.1f} | {r['lost_by_nearest_pct']:.1f} | "
                  f"{r['nearest_cells_mean']:.2f} | {r['area_mass_cells_mean']:.2f} |")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
