"""Batched device augmentation: for the same item seeds, the same pixels and part labels as the per-image
transforms (flip, pad + crop, colour jitter, normalise, random erasing, grouping), vectorised over a batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from occreid.config.schema import DataConfig
from occreid.data.batch_augment import PARAMS, BatchAugment, split_bands
from occreid.data.transforms import JointTransform, Normalize, PadCrop, RandomHorizontalFlip, Resize, build_transforms
from occreid.labels.format import group_label
from occreid.labels.format import split_bands as split_bands_numpy

H, W = 32, 16
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
ONE_STEP = 1.0 / 255.0 / min(STD)  # one uint8 step after normalisation


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, H, W, 3), dtype=np.uint8)


def _labels(n: int, seed: int = 1) -> np.ndarray:
    """Atomic maps with blocky parts on both sides (so flips and grouping matter) and some noise."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((n, H, W), np.uint8)
    lab[:, 2:8, 4:12] = 1
    lab[:, 8:18, 4:12] = 2
    lab[:, 8:18, :4], lab[:, 8:18, 12:] = 3, 4
    lab[:, 18:27, :8], lab[:, 18:27, 8:] = 5, 6
    lab[:, 27:, :8], lab[:, 27:, 8:] = 7, 8
    noise = rng.random(lab.shape) < 0.05
    lab[noise] = rng.integers(0, 9, size=int(noise.sum()))
    return lab


def _per_image(transform: JointTransform, images, labels, seeds, grouping):
    """What ReidImageDataset makes of each item: transform with the item's generator, then group."""
    xs, ls = [], []
    for img, lab, seed in zip(images, labels, seeds):
        x, l = transform(img, lab, np.random.default_rng(seed))
        ls.append(torch.from_numpy(group_label(l.numpy(), grouping)) if grouping else l)
        xs.append(x)
    return torch.stack(xs), torch.stack(ls)


def _batched(aug: BatchAugment, images, labels, seeds):
    params = torch.from_numpy(np.stack([aug.draw(np.random.default_rng(s)) for s in seeds]))
    x, lab = aug.apply(torch.from_numpy(images), torch.from_numpy(labels), params)
    return x, lab, params


def _cfg(**kw) -> DataConfig:
    base = {"height": H, "width": W, "flip_prob": 0.0, "pad": 0, "erasing_prob": 0.0, "color_jitter": 0.0}
    return DataConfig(**{**base, **kw})


CASES = {
    "flip": {"flip_prob": 0.5},
    "pad_crop": {"pad": 5},
    "erasing": {"erasing_prob": 0.7},
    "flip_pad_erasing": {"flip_prob": 0.5, "pad": 10, "erasing_prob": 0.5},
    "flip_pad_erasing_labels": {"flip_prob": 0.5, "pad": 10, "erasing_prob": 0.7, "erase_labels": True},
}


@pytest.mark.parametrize("grouping", [None, "pabreid6", "five_v"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_same_seeds_give_the_same_pixels_and_labels_as_the_per_image_path(case, grouping):
    cfg = _cfg(**CASES[case])
    transform = build_transforms(cfg, train=True)
    aug = BatchAugment(transform, grouping)
    n = 24
    images, labels, seeds = _images(n), _labels(n), list(range(100, 100 + n))
    want_x, want_l = _per_image(transform, images, labels, seeds, grouping)
    got_x, got_l, params = _batched(aug, images, labels, seeds)
    assert got_x.shape == (n, 3, H, W) and got_x.dtype == torch.float32 and got_x.is_contiguous()
    assert got_l.dtype == torch.uint8 and torch.equal(got_l, want_l)
    assert torch.allclose(got_x, want_x, rtol=0, atol=1e-5)
    # the draws were really random in this batch: both outcomes of each random op occur
    p = dict(zip(PARAMS, params.T))
    if cfg.flip_prob:
        assert 0 < p["flip"].sum() < n
    if cfg.pad:
        assert len(set(p["dy"].tolist())) > 3 and p["dy"].abs().max() <= cfg.pad
    if cfg.erasing_prob:
        assert 0 < p["erase"].sum() < n


def test_colour_jitter_within_one_uint8_step_and_everything_combined():
    cfg = _cfg(flip_prob=0.5, pad=4, erasing_prob=0.5, color_jitter=0.4)
    transform = build_transforms(cfg, train=True)
    aug = BatchAugment(transform, "sgsfa4")
    n = 24
    images, labels, seeds = _images(n, 3), _labels(n, 4), list(range(7, 7 + n))
    want_x, want_l = _per_image(transform, images, labels, seeds, "sgsfa4")
    got_x, got_l, params = _batched(aug, images, labels, seeds)
    assert torch.equal(got_l, want_l)
    diff = (got_x - want_x).abs()
    assert diff.max() <= ONE_STEP + 1e-5  # float32 sums in another order may round a value the other way
    assert (diff > 1e-5).float().mean() < 0.01
    factors = params[:, 3:6]
    assert (factors != 1).all() and (factors >= 0.6).all() and (factors <= 1.4).all()


def test_draws_consume_the_generator_exactly_like_the_per_image_ops():
    """The batch path must leave an item's generator where the per-image path leaves it, for every
    combination of ops, so that both paths stay in step for any op order a config makes."""
    for kw in [{}, *CASES.values(), {"flip_prob": 0.5, "pad": 3, "color_jitter": 0.2, "erasing_prob": 0.5}]:
        transform = build_transforms(_cfg(**kw), train=True)
        aug = BatchAugment(transform)
        for seed in range(20):
            a, b = np.random.default_rng(seed), np.random.default_rng(seed)
            aug.draw(a)
            transform(_images(1)[0], None, b)
            assert a.random() == b.random(), (kw, seed)


def test_a_hand_worked_flip_and_shift():
    ops = [Resize(2, 3), RandomHorizontalFlip(1.0), PadCrop(1), Normalize([0] * 3, [1] * 3)]
    aug = BatchAugment(JointTransform(ops))
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(1, 2, 3, 3) * 10
    lab = np.array([[[3, 0, 1], [5, 2, 7]]], np.uint8)
    # flip, then the crop window moved one pixel down and one right: out[y, x] = flipped[y + 1, x + 1]
    params = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0]], dtype=torch.float32)
    x, l = aug.apply(torch.from_numpy(img), torch.from_numpy(lab), params)
    flipped = img[0, :, ::-1]
    assert x[0, :, 0, 0].tolist() == pytest.approx((flipped[1, 1] / 255).tolist())
    assert x[0, :, 0, 1].tolist() == pytest.approx((flipped[1, 2] / 255).tolist())
    assert (x[0, :, 1] == 0).all() and (x[0, :, :, 2] == 0).all()  # outside the image: zero padding
    # row 1 of the flipped label is [8, 2, 6] after the left/right swap (7 -> 8, 5 -> 6)
    assert l.tolist() == [[[2, 6, 0], [0, 0, 0]]]


def test_channels_last_output_and_refused_op_orders():
    cfg = _cfg(flip_prob=0.5, pad=2)
    aug = BatchAugment(build_transforms(cfg, train=True), channels_last=True)
    x, lab, _ = _batched(aug, _images(4), _labels(4), [1, 2, 3, 4])
    assert x.is_contiguous(memory_format=torch.channels_last)
    plain, _, _ = _batched(BatchAugment(build_transforms(cfg, train=True)), _images(4), _labels(4), [1, 2, 3, 4])
    assert torch.equal(x, plain)
    with pytest.raises(ValueError, match="order"):
        BatchAugment(JointTransform([Resize(H, W), Normalize(MEAN, STD), RandomHorizontalFlip(0.5)]))
    with pytest.raises(ValueError, match="uint8 images"):
        aug.apply(torch.zeros(2, 3, H, W), None, torch.zeros(2, len(PARAMS)))


def test_split_bands_matches_numpy():
    rng = np.random.default_rng(0)
    maps = rng.integers(0, 4, size=(6, 20, 7)).astype(np.uint8)
    maps[0] = 0  # no upper part at all
    maps[1, :, :] = 1
    maps[1, 5:9, 2] = 2  # a narrow upper part
    got = split_bands(torch.from_numpy(maps), 2, 3)
    assert torch.equal(got, torch.from_numpy(split_bands_numpy(maps, "five_v")))


def test_a_batch_dict_is_replaced_in_place_of_image_label_and_aug():
    aug = BatchAugment(build_transforms(_cfg(flip_prob=0.5), train=True), "pabreid6")
    params = torch.from_numpy(np.stack([aug.draw(np.random.default_rng(s)) for s in range(3)]))
    batch = {"image": torch.from_numpy(_images(3)), "label": torch.from_numpy(_labels(3)), "aug": params,
             "pid": torch.tensor([0, 0, 1]), "has_label": torch.ones(3, dtype=torch.bool)}
    out = aug(batch)
    assert set(out) == {"image", "label", "pid", "has_label"}
    assert out["image"].shape == (3, 3, H, W) and out["label"].max() <= 6
    no_label = aug({k: v for k, v in batch.items() if k != "label"})
    assert "label" not in no_label and torch.equal(no_label["image"], out["image"])


@pytest.mark.parametrize("erase_labels", [False, True])
def test_erase_labels_marks_exactly_the_erased_rectangle_background(erase_labels):
    """data.erase_labels: the label is 0 inside the erased rectangle (both paths), untouched elsewhere;
    off, the label keeps the body behind the synthetic occluder."""
    cfg = _cfg(erasing_prob=1.0, erase_labels=erase_labels)
    transform = build_transforms(cfg, train=True)
    images, labels, seeds = _images(6), _labels(6), list(range(6))
    got_x, got_l, params = _batched(BatchAugment(transform, None), images, labels, seeds)
    want_x, want_l = _per_image(transform, images, labels, seeds, None)
    assert torch.equal(got_l, want_l)
    for i in range(6):
        top, left, eh, ew = (int(v) for v in params[i, 7:11])
        inside = torch.zeros(H, W, dtype=torch.bool)
        inside[top:top + eh, left:left + ew] = True
        assert inside.any() and (got_x[i][:, inside] == 0).all()
        original = torch.from_numpy(labels[i])
        assert torch.equal(got_l[i][~inside], original[~inside])
        if erase_labels:
            assert (got_l[i][inside] == 0).all()
        else:
            assert torch.equal(got_l[i][inside], original[inside]) and original[inside].any()
