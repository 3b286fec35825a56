"""Joint image + label transforms: geometry moves image and label together."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from occreid.config.schema import DataConfig
from occreid.data.transforms import (
    ColorJitter,
    JointTransform,
    Normalize,
    PadCrop,
    RandomErasing,
    RandomHorizontalFlip,
    Resize,
    build_transforms,
)

IDENTITY = Normalize([0.0, 0.0, 0.0], [1.0, 1.0, 1.0])


def _image(h: int = 8, w: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _label(h: int = 8, w: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 9, size=(h, w), dtype=np.uint8)


def test_flip_mirrors_pixels_and_swaps_left_right_parts() -> None:
    img, lab = _image(), _label()
    out, out_lab = JointTransform([RandomHorizontalFlip(1.0), IDENTITY])(img, lab, np.random.default_rng(0))
    swap = {0: 0, 1: 1, 2: 2, 3: 4, 4: 3, 5: 6, 6: 5, 7: 8, 8: 7}
    h, w = lab.shape
    for i in range(h):
        for j in range(w):
            assert out_lab[i, j].item() == swap[int(lab[i, w - 1 - j])]
            assert out[:, i, j].tolist() == pytest.approx((img[i, w - 1 - j] / 255.0).tolist())
    # hand-worked: a left arm (3) in the left column becomes a right arm (4) in the right column
    tiny = np.array([[3, 0, 1]], dtype=np.uint8)
    _, flipped = JointTransform([RandomHorizontalFlip(1.0), IDENTITY])(
        _image(1, 3), tiny, np.random.default_rng(0)
    )
    assert flipped.tolist() == [[1, 0, 4]]


def test_flip_probability_zero_keeps_everything() -> None:
    img, lab = _image(), _label()
    out, out_lab = JointTransform([RandomHorizontalFlip(0.0), IDENTITY])(img, lab, np.random.default_rng(0))
    assert torch.equal(out_lab, torch.from_numpy(lab))
    assert torch.allclose(out, torch.from_numpy(img).permute(2, 0, 1).float() / 255)


def test_pad_crop_moves_marked_pixel_with_label() -> None:
    h, w, pad = 12, 10, 3
    img = np.zeros((h, w, 3), dtype=np.uint8)
    lab = np.zeros((h, w), dtype=np.uint8)
    img[5, 4] = (200, 100, 50)
    lab[5, 4] = 2
    seen_offsets = set()
    for seed in range(12):
        out, out_lab = JointTransform([PadCrop(pad), IDENTITY])(img, lab, np.random.default_rng(seed))
        assert out.shape == (3, h, w) and out_lab.shape == (h, w)
        marked = torch.nonzero(out_lab == 2).tolist()
        bright = torch.nonzero(out[0] > 0).tolist()
        assert marked == bright  # the pixel and its label moved together
        if marked:
            ((i, j),) = marked
            seen_offsets.add((i - 5, j - 4))
            assert abs(i - 5) <= pad and abs(j - 4) <= pad
            assert out[:, i, j].tolist() == pytest.approx([200 / 255, 100 / 255, 50 / 255])
        # padding is background in the label and black in the image
        assert int(out_lab.sum()) in (0, 2)
    assert len(seen_offsets) > 1  # the crop offset is random


def test_erasing_changes_image_only() -> None:
    img, lab = _image(32, 16), _label(32, 16)
    ops = [IDENTITY, RandomErasing(p=1.0)]
    out, out_lab = JointTransform(ops)(img, lab, np.random.default_rng(3))
    plain = torch.from_numpy(img).permute(2, 0, 1).float() / 255
    erased = (out != plain).any(0)
    assert erased.any()
    assert torch.all(out[:, erased] == 0.0)  # filled with the mean colour (0 after normalising)
    rows, cols = torch.nonzero(erased, as_tuple=True)
    area = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    assert 0.02 * 32 * 16 * 0.5 <= area <= 0.4 * 32 * 16 * 1.5  # one rectangle of the drawn size
    assert torch.equal(out_lab, torch.from_numpy(lab))


def test_normalise_hand_worked() -> None:
    img = np.full((1, 1, 3), 255, dtype=np.uint8)
    out, lab = JointTransform([Normalize([0.5, 0.25, 0.0], [0.5, 0.25, 2.0])])(img, None)
    assert out.flatten().tolist() == pytest.approx([1.0, 3.0, 0.5])
    assert lab is None


def test_resize_bilinear_image_nearest_label() -> None:
    img, lab = _image(16, 8), _label(16, 8)
    out, out_lab = JointTransform([Resize(8, 4), IDENTITY])(img, lab)
    assert out.shape == (3, 8, 4) and out.dtype == torch.float32
    assert out_lab.shape == (8, 4) and out_lab.dtype == torch.uint8
    assert set(out_lab.unique().tolist()) <= set(np.unique(lab).tolist())  # no blended label values
    pil_label = np.asarray(Image.fromarray(lab).resize((4, 8), Image.Resampling.NEAREST))
    assert out_lab.numpy().tolist() == pil_label.tolist()


def test_color_jitter_leaves_label_and_stays_in_range() -> None:
    img, lab = _image(), _label()
    jit, jit_lab = JointTransform([ColorJitter(0.5, 0.5, 0.5), IDENTITY])(img, lab, np.random.default_rng(0))
    assert torch.equal(jit_lab, torch.from_numpy(lab))
    assert 0.0 <= jit.min().item() and jit.max().item() <= 1.0
    assert not torch.allclose(jit, torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    # brightness alone on a grey pixel: factor f in [0.5, 1.5] scales the value
    grey = np.full((1, 1, 3), 100, dtype=np.uint8)
    out, _ = JointTransform([ColorJitter(0.5, 0.0, 0.0), IDENTITY])(grey, None, np.random.default_rng(1))
    f = np.random.default_rng(1).uniform(0.5, 1.5)
    assert out.flatten().tolist() == pytest.approx([round(100 * f) / 255] * 3)


def test_build_transforms_shapes_and_reproducibility() -> None:
    cfg = DataConfig(height=32, width=16, pad=2, erasing_prob=0.5, color_jitter=0.2)
    train = build_transforms(cfg, train=True)
    test = build_transforms(cfg, train=False)
    img, lab = _image(40, 20), _label(40, 20)
    a, la = train(img, lab, np.random.default_rng(9))
    b, lb = train(img, lab, np.random.default_rng(9))
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert a.shape == (3, 32, 16) and a.dtype == torch.float32 and la.dtype == torch.uint8
    t, tl = test(Image.fromarray(img), None)
    assert t.shape == (3, 32, 16) and tl is None
    assert train.is_random and not test.is_random
    with pytest.raises(ValueError, match="Generator"):
        train(img, lab)
