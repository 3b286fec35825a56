"""Training augmentation in batch on the device, the same as the per-image transforms for the same draws.

Why: per-image numpy transforms in DataLoader workers cost CPU time per image and ship float images to
the device. Here each item's parameters are drawn on the host by the per-image ops' own `draw` methods
(same numpy calls, same order, so one item seed gives one augmentation on either path), shipped as a
small float32 vector, and applied to a uint8 batch [B, H, W, 3] on the device with index gathers and
masks, no Python loop over images: flip, pad + crop, colour jitter, normalise, random erasing. Part
labels move with the pixels; a mirrored label swaps left / right parts, then is grouped (a look-up table
composed with the flip table, plus the row split of groupings such as `five_v`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from occreid.data.transforms import (
    FLIP_LUT,
    ColorJitter,
    JointTransform,
    Normalize,
    PadCrop,
    RandomErasing,
    RandomHorizontalFlip,
    Resize,
)
from occreid.labels.format import SPLIT_BANDS, grouping_lut

#: Layout of an item's parameter vector.
PARAMS = ("flip", "dy", "dx", "brightness", "contrast", "saturation",
          "erase", "erase_top", "erase_left", "erase_h", "erase_w")
_ORDER = (Resize, RandomHorizontalFlip, PadCrop, ColorJitter, Normalize, RandomErasing)
_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as transforms._gray


class BatchAugment:
    """The batched twin of a training `JointTransform` (resize, flip, pad + crop, colour jitter, normalise,
    random erasing, each optional but in that order; the resize is done by the decode cache).

    `draw(rng)` -> the item's parameter vector (float32 [len(PARAMS)]); `apply(images, labels, params)`
    augments a batch; calling the object on a collated batch dict replaces image (uint8 [B, H, W, 3] ->
    normalised float [B, 3, H, W]) and label (atomic -> grouped, uint8) and drops `aug`.
    """

    def __init__(self, transform: JointTransform, grouping: str | None = None, channels_last: bool = False):
        kinds = [type(op) for op in transform.ops]
        if kinds != [k for k in _ORDER if k in kinds] or Resize not in kinds or Normalize not in kinds:
            raise ValueError(
                f"batch augmentation needs ops in the order {[k.__name__ for k in _ORDER]} (resize and normalise "
                f"present, each at most once); got {[k.__name__ for k in kinds]}"
            )
        ops = {type(op): op for op in transform.ops}
        self.transform = transform
        resize: Resize = ops[Resize]
        self.width, self.height = resize.size
        self.flip: RandomHorizontalFlip | None = ops.get(RandomHorizontalFlip)
        self.pad_crop: PadCrop | None = ops.get(PadCrop)
        self.jitter: ColorJitter | None = ops.get(ColorJitter)
        self.erasing: RandomErasing | None = ops.get(RandomErasing)
        norm: Normalize = ops[Normalize]
        self.mean, self.std = norm.mean.view(1, 3, 1, 1), norm.std.view(1, 3, 1, 1)
        self.grouping = grouping
        self.channels_last = channels_last
        group = np.arange(len(FLIP_LUT), dtype=np.uint8) if grouping is None else grouping_lut(grouping)
        self.lut = torch.from_numpy(np.stack([group, group[FLIP_LUT]]))  # [not flipped / flipped, atomic]
        self._on_device: dict[torch.device, tuple[torch.Tensor, ...]] = {}

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_on_device"] = {}  # DataLoader workers only draw: never ship them device tensors
        return state

    def draw(self, rng: np.random.Generator | None) -> np.ndarray:
        """The item's parameters, drawn with the per-image ops' own `draw` in the per-image order."""
        flip = self.flip.draw(rng) if self.flip is not None else False
        pad = self.pad_crop.pad if self.pad_crop is not None and self.pad_crop.pad > 0 else 0
        top, left = self.pad_crop.draw(rng) if pad else (0, 0)
        b, c, s = self.jitter.draw(rng) if self.jitter is not None else (1.0, 1.0, 1.0)
        rect = self.erasing.draw(rng, self.height, self.width) if self.erasing is not None else None
        erase = (1.0, *rect) if rect is not None else (0.0, 0, 0, 0, 0)
        return np.array([float(flip), top - pad, left - pad, b, c, s, *erase], dtype=np.float32)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        out = dict(batch)
        params = out.pop("aug")
        out["image"], label = self.apply(batch["image"], batch.get("label"), params)
        if label is not None:
            out["label"] = label
        return out

    def apply(
        self, images: torch.Tensor, labels: torch.Tensor | None, params: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """uint8 images [B, H, W, 3] (+ atomic uint8 labels [B, H, W]) and params [B, P] on one device ->
        normalised float images [B, 3, H, W] (channels_last when asked) and grouped uint8 labels."""
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected uint8 images [B, H, W, 3], got {images.dtype} {tuple(images.shape)}")
        b, h, w, _ = images.shape
        dev = images.device
        p = params.to(dev)
        flip = p[:, 0] > 0.5
        source = self._source_pixels(flip, p[:, 1].long(), p[:, 2].long(), b, h, w)  # [B * H * W]

        mean, std, lut = self._constants(dev)
        img = _with_zero(images.reshape(b * h * w, 3)).index_select(0, source).view(b, h, w, 3)
        if self.jitter is not None:
            img = self._jitter(img, p[:, 3:6])  # float [B, H, W, 3] of whole numbers
        x = img.permute(0, 3, 1, 2)
        if not self.channels_last:
            x = x.contiguous()  # NCHW before the float passes, which then stream contiguous memory
        x = x.float().div_(255.0).sub_(mean).div_(std)  # as Normalize: (x / 255 - mean) / std
        erased = self._erase_mask(p[:, 6:], h, w) if self.erasing is not None else None
        if erased is not None:
            x.masked_fill_(erased[:, None], 0.0)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        if labels is None:
            return x, None
        lab = _with_zero(labels.reshape(b * h * w)).index_select(0, source).view(b, h * w)
        lab = torch.gather(lut[flip.long()], 1, lab.long()).view(b, h, w)  # per image: grouped, mirrored or not
        if erased is not None and self.erasing.erase_label:
            # as RandomErasing: the rectangle becomes background, before the bands that depend on the extent
            lab = lab.masked_fill(erased, 0)
        if self.grouping in SPLIT_BANDS:
            lab = split_bands(lab, *SPLIT_BANDS[self.grouping])
        return x, lab

    @staticmethod
    def _source_pixels(flip: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        """Flat index [B * H * W] of each output pixel's source pixel in the batch: out[y, x] = source[y + dy,
        x + dx] of the mirrored-or-not image (flip, then pad + crop); B * H * W, one past the last pixel, for
        pixels that fall in the padding (`_with_zero` puts a zero pixel there). Built from a row part and a
        column part, each pushed past the end where it falls outside, so that only one full-size index
        tensor is made (int32 when it fits: half the memory traffic on a CPU)."""
        dev = flip.device
        n = b * h * w
        dtype = torch.int32 if 2 * n < 2**31 else torch.int64
        rows = torch.arange(h, device=dev)[None] + dy[:, None]  # [B, H]
        cols = torch.arange(w, device=dev)[None] + dx[:, None]  # [B, W]
        row_part = torch.arange(b, device=dev)[:, None] * (h * w) + rows.clamp(0, h - 1) * w
        row_part = torch.where((rows >= 0) & (rows < h), row_part, n).to(dtype)
        col_part = torch.where(flip[:, None], w - 1 - cols, cols).clamp(0, w - 1)
        col_part = torch.where((cols >= 0) & (cols < w), col_part, n).to(dtype)
        return (row_part[:, :, None] + col_part[:, None, :]).clamp_(max=n).view(-1)

    def _constants(self, dev: torch.device) -> tuple[torch.Tensor, ...]:
        """(mean, std, label look-up table) on `dev`, copied once: a copy from pageable host memory
        would make the host wait for the stream at every batch."""
        if dev not in self._on_device:
            self._on_device[dev] = tuple(t.to(dev) for t in (self.mean, self.std, self.lut))
        return self._on_device[dev]

    @staticmethod
    def _jitter(img: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """ColorJitter on uint8 [B, H, W, 3] in float32, per image: brightness, contrast (around the mean
        luma), saturation (around each pixel's luma), each clipped to [0, 255]; rounded like np.rint."""
        f = factors.float().view(-1, 3, 1, 1, 1)
        x = (img.float() * f[:, 0]).clamp_(0, 255)
        mean = _luma(x).mean(dim=(1, 2)).view(-1, 1, 1, 1)
        x = ((x - mean) * f[:, 1] + mean).clamp_(0, 255)
        gray = _luma(x)[..., None]
        x = ((x - gray) * f[:, 2] + gray).clamp_(0, 255)
        return x.round_()  # half to even, as np.rint; whole numbers, so x / 255 equals the uint8 path's

    @staticmethod
    def _erase_mask(e: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """[B, H, W] True inside each item's erasing rectangle (e = erase, top, left, height, width)."""
        on, top, left, eh, ew = e[:, 0] > 0.5, *(e[:, i].long()[:, None] for i in range(1, 5))
        r = torch.arange(h, device=e.device)[None]
        c = torch.arange(w, device=e.device)[None]
        in_rows = (r >= top) & (r < top + eh)  # [B, H]
        in_cols = (c >= left) & (c < left + ew)  # [B, W]
        return on[:, None, None] & in_rows[:, :, None] & in_cols[:, None, :]


def _luma(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of float RGB [..., 3] -> [...], as transforms._gray; elementwise, so no TF32 matmul
    can round it differently on a GPU."""
    return x[..., 0] * _GRAY[0] + x[..., 1] * _GRAY[1] + x[..., 2] * _GRAY[2]


def split_bands(grouped: torch.Tensor, upper: int, lower: int) -> torch.Tensor:
    """`occreid.labels.format.split_bands` for a batch [B, H, W] on any device: per map, pixels of the
    upper part in rows below the middle of that part's row extent become the lower part."""
    part = grouped == upper
    rows = part.any(dim=-1).to(torch.uint8)  # [B, H]
    h = rows.shape[-1]
    top = rows.argmax(dim=-1)  # first True (0 when none, as numpy's argmax)
    bottom = h - 1 - rows.flip(-1).argmax(dim=-1)
    mid = (top + bottom).double() / 2.0
    below = torch.arange(h, device=grouped.device)[None] > mid[:, None]  # [B, H]
    return torch.where(part & below[:, :, None], torch.full_like(grouped, lower), grouped)


def _with_zero(rows: torch.Tensor) -> torch.Tensor:
    """`rows` [N, ...] with one zero row appended at index N: the pixel (or label) of the padding."""
    return torch.cat([rows, rows.new_zeros((1, *rows.shape[1:]))])
