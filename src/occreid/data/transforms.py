"""Joint image + part-label transforms: every geometric change moves the label with the picture.

Input: an RGB image (uint8 numpy H x W x 3 or PIL) and an atomic part-label map (uint8 H x W, see
`occreid.labels.format`) or None. Output: a normalised float tensor [3, H, W] and a uint8 tensor [H, W]
(or None). All randomness comes from the numpy Generator passed to the call, so a run is reproducible.
Order as in BoT: resize, flip, pad + crop, (colour jitter), normalise, random erasing.

Each random op draws its parameters in `draw(rng)` and only then applies them; the batched device path
(`occreid.data.batch_augment`) calls the same `draw` methods in the same order, so one item seed gives
one augmentation on either path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from occreid.labels.format import ATOMIC_INDEX

Label = np.ndarray | None


def _flip_lut() -> np.ndarray:
    """Atomic index -> its mirror-image part (left <-> right), others unchanged."""
    lut = np.arange(len(ATOMIC_INDEX) + 1, dtype=np.uint8)
    for name, idx in ATOMIC_INDEX.items():
        if name.startswith("left_"):
            other = ATOMIC_INDEX["right_" + name[len("left_") :]]
            lut[idx], lut[other] = other, idx
    return lut


FLIP_LUT = _flip_lut()


class JointOp(Protocol):
    def __call__(self, image: Any, label: Label, rng: np.random.Generator | None) -> tuple[Any, Label]: ...


def _require(rng: np.random.Generator | None, op: str) -> np.random.Generator:
    if rng is None:
        raise ValueError(f"{op} is random: pass a numpy Generator (rng=...) so the run is reproducible")
    return rng


class Resize:
    """Bilinear resize of the image (PIL), nearest-neighbour resize of the label to (height, width)."""

    def __init__(self, height: int, width: int) -> None:
        self.size = (int(width), int(height))

    def image(self, image: np.ndarray) -> np.ndarray:
        if image.shape[1::-1] != self.size:
            image = np.array(Image.fromarray(image).resize(self.size, Image.Resampling.BILINEAR))
        return image

    def label(self, label: np.ndarray) -> np.ndarray:
        if label.shape[::-1] != self.size:
            label = np.array(Image.fromarray(label).resize(self.size, Image.Resampling.NEAREST))
        return label

    def __call__(self, image: np.ndarray, label: Label, rng: np.random.Generator | None) -> tuple[Any, Label]:
        return self.image(image), None if label is None else self.label(label)


class RandomHorizontalFlip:
    """Mirror image and label with probability p; the label also swaps left/right parts (3<->4, 5<->6,
    7<->8), because the mirrored person's left arm lies where the right arm of an unmirrored one would."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = p

    def draw(self, rng: np.random.Generator | None) -> bool:
        """Whether to mirror (one uniform draw when p > 0, none otherwise)."""
        return self.p > 0 and _require(rng, "RandomHorizontalFlip").random() < self.p

    def __call__(self, image: np.ndarray, label: Label, rng: np.random.Generator | None) -> tuple[Any, Label]:
        if not self.draw(rng):
            return image, label
        image = np.ascontiguousarray(image[:, ::-1])
        if label is not None:
            label = np.ascontiguousarray(FLIP_LUT[label[:, ::-1]])
        return image, label


class PadCrop:
    """Zero-pad by `pad` on every side, then crop the original size at a random offset (BoT's Pad +
    RandomCrop). The label is padded with background 0 and cropped at the same offset."""

    def __init__(self, pad: int) -> None:
        self.pad = int(pad)

    def draw(self, rng: np.random.Generator | None) -> tuple[int, int]:
        """(top, left) of the crop in the padded image (pad, pad = no shift); (0, 0) and no draw when pad is 0."""
        if self.pad <= 0:
            return 0, 0
        top, left = (int(v) for v in _require(rng, "PadCrop").integers(0, 2 * self.pad + 1, size=2))
        return top, left

    def __call__(self, image: np.ndarray, label: Label, rng: np.random.Generator | None) -> tuple[Any, Label]:
        if self.pad <= 0:
            return image, label
        h, w = image.shape[:2]
        p = self.pad
        top, left = self.draw(rng)
        padded = np.zeros((h + 2 * p, w + 2 * p, image.shape[2]), dtype=image.dtype)
        padded[p : p + h, p : p + w] = image
        image = padded[top : top + h, left : left + w].copy()
        if label is not None:
            lab = np.zeros((h + 2 * p, w + 2 * p), dtype=label.dtype)
            lab[p : p + h, p : p + w] = label
            label = lab[top : top + h, left : left + w].copy()
        return image, label


def _gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of float RGB [H, W, 3] -> [H, W, 1]."""
    return (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]


class ColorJitter:
    """Brightness, contrast and saturation each scaled by a factor drawn from [1 - s, 1 + s] (in that
    order), applied to the image only; values clipped to [0, 255]."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0) -> None:
        self.strengths = (float(brightness), float(contrast), float(saturation))

    def draw(self, rng: np.random.Generator | None) -> tuple[float, float, float]:
        """(brightness, contrast, saturation) factors: one uniform draw per non-zero strength, in that order."""
        if not any(self.strengths):
            return 1.0, 1.0, 1.0
        rng = _require(rng, "ColorJitter")
        b, c, s = (float(rng.uniform(max(0.0, 1 - v), 1 + v)) if v > 0 else 1.0 for v in self.strengths)
        return b, c, s

    def __call__(self, image: np.ndarray, label: Label, rng: np.random.Generator | None) -> tuple[Any, Label]:
        if not any(self.strengths):
            return image, label
        b, c, s = self.draw(rng)
        img = image.astype(np.float32)
        img = np.clip(img * b, 0, 255)
        mean = _gray(img).mean()
        img = np.clip((img - mean) * c + mean, 0, 255)
        gray = _gray(img)
        img = np.clip((img - gray) * s + gray, 0, 255)
        return np.rint(img).astype(np.uint8), label


class Normalize:
    """uint8 H x W x 3 -> float tensor [3, H, W]: (x / 255 - mean) / std; label -> uint8 tensor (part
    indices fit a byte: 8x less to ship than int64; losses take it as is)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: np.ndarray, label: Label, rng: np.random.Generator | None) -> tuple[Any, Any]:
        if not (image.flags.writeable and image.flags.c_contiguous):
            image = np.array(image)
        tensor = torch.from_numpy(image).permute(2, 0, 1).float().div_(255.0)
        tensor = (tensor - self.mean) / self.std
        return tensor, None if label is None else torch.from_numpy(np.array(label, dtype=np.uint8))


class RandomErasing:
    """Erase one random rectangle of the normalised image with probability p (Zhong et al. 2020, as in
    BoT / torchreid: area fraction in [sl, sh], aspect in [r1, 1 / r1], up to 100 attempts).

    Decision: erased pixels are set to 0, i.e. the dataset mean colour after normalisation. By default the
    label is left unchanged, so the parsing target stays the body behind the synthetic occluder, as BoT and
    torchreid erase only the image; `erase_label` (`data.erase_labels`) marks the rectangle background (0)
    in the label too, so a part-supervised model learns that an occluder is not body.
    """

    def __init__(self, p: float = 0.5, sl: float = 0.02, sh: float = 0.4, r1: float = 0.3,
                 erase_label: bool = False) -> None:
        self.p, self.sl, self.sh, self.r1, self.erase_label = p, sl, sh, r1, erase_label

    def draw(self, rng: np.random.Generator | None, h: int, w: int) -> tuple[int, int, int, int] | None:
        """(top, left, height, width) of the rectangle to erase in an h x w image, or None (no erasing)."""
        if self.p <= 0 or _require(rng, "RandomErasing").random() >= self.p:
            return None
        for _ in range(100):
            area = rng.uniform(self.sl, self.sh) * h * w
            aspect = rng.uniform(self.r1, 1.0 / self.r1)
            eh = int(round(math.sqrt(area * aspect)))
            ew = int(round(math.sqrt(area / aspect)))
            if 0 < eh < h and 0 < ew < w:
                top = int(rng.integers(0, h - eh + 1))
                left = int(rng.integers(0, w - ew + 1))
                return top, left, eh, ew
        return None

    def __call__(self, image: torch.Tensor, label: Any, rng: np.random.Generator | None) -> tuple[Any, Any]:
        rect = self.draw(rng, *image.shape[1:])
        if rect is None:
            return image, label
        top, left, eh, ew = rect
        image = image.clone()
        image[:, top : top + eh, left : left + ew] = 0.0
        if self.erase_label and label is not None:
            label = label.clone()
            label[top : top + eh, left : left + ew] = 0
        return image, label


class JointTransform:
    """Joint ops in order: (image, label or None, rng) -> (tensor [3, H, W], uint8 [H, W] or None)."""

    def __init__(self, ops: Sequence[JointOp]) -> None:
        self.ops = list(ops)

    def __call__(
        self,
        image: np.ndarray | Image.Image,
        label: np.ndarray | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(image, Image.Image):
            image = np.asarray(image.convert("RGB"))
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected a uint8 H x W x 3 RGB image, got {image.dtype} {image.shape}")
        if label is not None:
            label = np.asarray(label, dtype=np.uint8)
            if label.ndim != 2:
                raise ValueError(f"expected an H x W label map, got shape {label.shape}")
        out: Any = image
        for op in self.ops:
            out, label = op(out, label, rng)
        return out, label

    @property
    def is_random(self) -> bool:
        return any(
            isinstance(op, RandomHorizontalFlip | PadCrop | ColorJitter | RandomErasing) for op in self.ops
        )


def build_transforms(cfg_data: Any, train: bool) -> JointTransform:
    """The train or test pipeline from a `DataConfig` (height, width, flip_prob, pad, erasing_prob,
    erase_labels, color_jitter, mean, std). Test: resize + normalise only."""
    ops: list[JointOp] = [Resize(cfg_data.height, cfg_data.width)]
    if train:
        if cfg_data.flip_prob > 0:
            ops.append(RandomHorizontalFlip(cfg_data.flip_prob))
        if cfg_data.pad > 0:
            ops.append(PadCrop(cfg_data.pad))
        if cfg_data.color_jitter > 0:
            j = cfg_data.color_jitter
            ops.append(ColorJitter(j, j, j))
    ops.append(Normalize(cfg_data.mean, cfg_data.std))
    if train and cfg_data.erasing_prob > 0:
        ops.append(RandomErasing(cfg_data.erasing_prob, erase_label=cfg_data.erase_labels))
    return JointTransform(ops)
