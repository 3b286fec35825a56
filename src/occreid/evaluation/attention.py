"""Part-attention overlays: what each part map of a model looks at, drawn over the input images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

# background black, then distinct colours for up to 10 parts (tab10)
PART_COLOURS = np.array(
    [(0, 0, 0), (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
     (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)],
    dtype=np.float32,
)


def colour_probs(image: np.ndarray, probs: np.ndarray, alpha: float = 0.7, floor: float = 0.5) -> np.ndarray:
    """Blend the arg-max part colour of `probs` [C, h, w] (channel 0 background) over `image` [H, W, 3];
    background pixels stay untouched. Opacity is `alpha * (floor + (1 - floor) * c)` with c the winning
    probability rescaled from chance (1 / C) to certainty, so a part is visible even where a young model
    is unsure (a plain `alpha * p` left early-training overlays almost invisible)."""
    h, w = image.shape[:2]
    up = torch.nn.functional.interpolate(torch.from_numpy(probs)[None], size=(h, w), mode="bilinear",
                                         align_corners=False)[0].numpy()
    winner = up.argmax(0)
    chance = 1.0 / up.shape[0]
    c = np.clip((up.max(0) - chance) / (1.0 - chance), 0.0, 1.0)
    opacity = (alpha * (floor + (1.0 - floor) * c) * (winner > 0))[..., None]
    colours = PART_COLOURS[np.minimum(winner, len(PART_COLOURS) - 1)]
    out = image.astype(np.float32) * (1 - opacity) + colours * opacity
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


@torch.no_grad()
def attention_overlays(
    model: torch.nn.Module, cfg, paths: Sequence[str], out_png: str | Path, *, key: str = "part_probs",
    part_names: Sequence[str] = (), height: int = 192,
) -> Path | None:
    """Write a grid (image over its overlay) for `paths`; None when the model has no map `key`."""
    from occreid.data.images import read_image
    from occreid.data.transforms import build_transforms

    tf = build_transforms(cfg.data, train=False)
    images = [read_image(p) for p in paths]
    batch = torch.stack([tf(im, None)[0] for im in images])
    was = model.training
    model.eval()
    out = model(batch.to(next(model.parameters()).dtype))
    model.train(was)
    if key not in out.maps:
        return None
    probs = out.maps[key].float().cpu().numpy()
    tiles = []
    for im, pr in zip(images, probs):
        pil = Image.fromarray(im)
        size = (max(1, round(pil.width * height / pil.height)), height)
        rgb = np.asarray(pil.resize(size, Image.Resampling.BILINEAR))
        tiles.append((rgb, colour_probs(rgb, pr)))
    tw = max(t[0].shape[1] for t in tiles)
    legend = 14 * (len(part_names) + 1) if part_names else 0
    canvas = Image.new("RGB", (tw * len(tiles), 2 * height + legend), "white")
    for i, (a, b) in enumerate(tiles):
        canvas.paste(Image.fromarray(a), (i * tw, 0))
        canvas.paste(Image.fromarray(b), (i * tw, height))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(part_names, start=1):
        y = 2 * height + 2 + (k - 1) * 14
        draw.rectangle((2, y, 12, y + 10), fill=tuple(int(v) for v in PART_COLOURS[k]))
        draw.text((16, y), name, fill=(0, 0, 0))
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out_png)
    return out_png
