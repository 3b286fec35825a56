"""Pictures of part labels: an image with its label blended over it and a legend, and grids of those."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from occreid.errors import LabelError
from occreid.labels.format import ATOMIC_PARTS, read_label

# Fixed colour per atomic index (0 = background, left parts warm, right parts cool).
PALETTE = np.array(
    [
        (0, 0, 0),  # background
        (230, 25, 75),  # head
        (60, 180, 75),  # torso
        (255, 225, 25),  # left_arm
        (0, 130, 200),  # right_arm
        (245, 130, 48),  # left_leg
        (145, 30, 180),  # right_leg
        (240, 50, 230),  # left_foot
        (70, 240, 240),  # right_foot
    ],
    dtype=np.uint8,
)
_LEGEND_ROW = 11


def colourise(label: np.ndarray) -> np.ndarray:
    """Atomic index map [H, W] -> RGB [H, W, 3] with the fixed palette."""
    return PALETTE[np.asarray(label)]


def overlay(image: Image.Image | np.ndarray, label: np.ndarray, alpha: float = 0.5, legend: bool = True
            ) -> Image.Image:  # fmt: skip
    """The image with its label blended over the body pixels (background untouched), and a legend of
    the parts below it when `legend`."""
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32)
    label = np.asarray(label)
    if rgb.shape[:2] != label.shape:
        label = np.asarray(Image.fromarray(label).resize(rgb.shape[1::-1], Image.Resampling.NEAREST))
    body = (label > 0)[..., None]
    mixed = np.where(body, (1 - alpha) * rgb + alpha * colourise(label), rgb)
    picture = Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8))
    if not legend:
        return picture
    width = max(picture.width, 96)
    canvas = Image.new("RGB", (width, picture.height + _LEGEND_ROW * len(ATOMIC_PARTS) + 2), "white")
    canvas.paste(picture, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(ATOMIC_PARTS, start=1):
        y = picture.height + 2 + (k - 1) * _LEGEND_ROW
        draw.rectangle((2, y, 10, y + 8), fill=tuple(int(v) for v in PALETTE[k]))
        draw.text((14, y - 1), name, fill=(0, 0, 0))
    return canvas


def show_labels(
    paths: Sequence[str | Path],
    label_paths: Sequence[str | Path | None],
    out_png: str | Path,
    ncols: int = 8,
    height: int = 256,
) -> Path:
    """Write a grid of overlays (each resized to `height`, one legend below the grid) to `out_png`;
    an image without a label file is shown plain."""
    if len(paths) != len(label_paths):
        raise LabelError(f"{len(paths)} images but {len(label_paths)} label paths")
    if not paths:
        raise LabelError("no images to show")
    tiles = []
    for img_path, lab_path in zip(paths, label_paths):
        with Image.open(img_path) as im:
            rgb = im.convert("RGB")
        size = (max(1, round(rgb.width * height / rgb.height)), height)
        rgb = rgb.resize(size, Image.Resampling.BILINEAR)
        if lab_path is not None and Path(lab_path).is_file():
            lab = np.asarray(Image.fromarray(read_label(lab_path)).resize(size, Image.Resampling.NEAREST))
            rgb = overlay(rgb, lab, legend=False)
        tiles.append(rgb)
    ncols = max(1, min(ncols, len(tiles)))
    nrows = -(-len(tiles) // ncols)
    cell_w = max(t.width for t in tiles)
    legend = overlay(np.zeros((1, 1, 3), np.uint8), np.zeros((1, 1), np.uint8))
    legend = legend.crop((0, 1, legend.width, legend.height))
    grid = Image.new("RGB", (max(ncols * cell_w, legend.width), nrows * height + legend.height), "white")
    for i, tile in enumerate(tiles):
        grid.paste(tile, ((i % ncols) * cell_w, (i // ncols) * height))
    grid.paste(legend, (0, nrows * height))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(out)
    return out
