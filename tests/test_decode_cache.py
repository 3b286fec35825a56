"""The decode cache (resized uint8 images and part labels, memory-mapped, rebuilt when files change, built
atomically, outside the dataset folder), the dataset served from it, label-free methods that open no label
file, and training that gives the same losses with the cache on and off."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from occreid.config.schema import DataConfig
from occreid.data import decode_cache
from occreid.data.batch_augment import BatchAugment
from occreid.data.cached_images import CachedImageDataset
from occreid.data.decode_cache import cache_root, ensure_images, ensure_labels, open_images, open_labels
from occreid.data.images import ReidImageDataset, collate, fit_label, read_image
from occreid.data.records import Record
from occreid.data.transforms import Resize, build_transforms
from occreid.errors import DatasetError, LabelError
from occreid.labels.format import read_label, write_label

from .method_checks import single_thread, trainer_cfg, write_band_labels

one_thread = pytest.fixture(autouse=True)(single_thread)

H, W = 32, 16


def _atomic(h: int, w: int) -> np.ndarray:
    lab = np.zeros((h, w), np.uint8)
    lab[: h // 4, w // 4 : 3 * w // 4] = 1
    lab[h // 4 : h // 2, : w // 2], lab[h // 4 : h // 2, w // 2 :] = 3, 4
    lab[h // 2 :, : w // 2], lab[h // 2 :, w // 2 :] = 5, 6
    return lab


def _records(folder: Path, n: int = 6) -> list[Record]:
    """Images of two sizes with the input's aspect ratio; labels at full size, at half size (i == 2), none
    (odd i) and a label path whose file does not exist (i == 5)."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        h, w = (40, 20) if i % 2 else (64, 32)
        arr = np.random.default_rng(i).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"{i}.png")
        label_path = None
        if i % 2 == 0:
            lh, lw = (h // 2, w // 2) if i == 2 else (h, w)
            write_label(folder / f"{i}_label.png", _atomic(lh, lw))
            label_path = str(folder / f"{i}_label.png")
        if i == 5:
            label_path = str(folder / "missing_label.png")
        records.append(Record(str(folder / f"{i}.png"), pid=i // 2, camid=i % 2, label_path=label_path))
    return records


def _build(records, root: Path, **kw) -> tuple[Path, Path]:
    images = ensure_images(records, H, W, root, progress=False, **kw)
    return images, ensure_labels(records, H, W, root, images, progress=False, **kw)


def test_cache_holds_images_and_labels_resized_as_the_per_image_path(tmp_path):
    records = _records(tmp_path / "ds")
    images, labels = _build(records, tmp_path / "cache", workers=2)
    pixels, sizes = open_images(images)
    maps, has = open_labels(labels)
    assert pixels.shape == (6, H, W, 3) and pixels.dtype == np.uint8 and maps.dtype == np.uint8
    resize = Resize(H, W)
    for i, r in enumerate(records):
        img = read_image(r.path)
        assert np.array_equal(pixels[i], resize.image(img)) and tuple(sizes[i]) == img.shape[:2]
        if i % 2 == 0:
            want = resize.label(fit_label(read_label(r.label_path), img.shape[:2], r.label_path))
            assert np.array_equal(maps[i], want) and maps[i].max() == 6
        else:
            assert not maps[i].any()
    assert has.tolist() == [True, False, True, False, True, False]
    assert images.parent == labels.parent == tmp_path / "cache"
    assert json.loads((images / "meta.json").read_text())["count"] == 6


@pytest.mark.parametrize("grouping", ["pabreid6", None])
def test_cached_items_augmented_in_batch_equal_the_per_image_dataset(tmp_path, grouping):
    records = _records(tmp_path / "ds")
    images, labels = _build(records, tmp_path / "cache")
    transform = build_transforms(DataConfig(height=H, width=W, pad=4, erasing_prob=0.5), train=True)
    aug = BatchAugment(transform, grouping)
    cached = CachedImageDataset(records, images, aug, labels=labels if grouping else None)
    plain = ReidImageDataset(records, transform, grouping=grouping, labels=grouping is not None)
    items = [(i, 1000 + 7 * i) for i in range(6)] + [(i, 99 + i) for i in range(6)]
    raw = collate([cached[it] for it in items])
    assert raw["image"].dtype == torch.uint8 and raw["image"].shape == (12, H, W, 3)
    got = aug(raw)
    want = collate([plain[it] for it in items])
    assert set(got) == set(want)
    assert torch.allclose(got["image"], want["image"], rtol=0, atol=1e-5)
    for key in ("pid", "camid", "index", "has_label"):
        assert torch.equal(got[key], want[key])
    if grouping:
        assert got["label"].dtype == want["label"].dtype == torch.uint8
        assert torch.equal(got["label"], want["label"])
    else:
        assert "label" not in got and not got["has_label"].any()


def test_a_changed_file_gives_a_new_key_and_a_rebuilt_entry(tmp_path, monkeypatch):
    records = _records(tmp_path / "ds")
    root = tmp_path / "cache"
    images, labels = _build(records, root)
    calls = []
    real_read = decode_cache.read_image
    monkeypatch.setattr(decode_cache, "read_image", lambda p: calls.append(p) or real_read(p))
    assert _build(records, root) == (images, labels) and calls == []  # up to date: nothing decoded

    white = np.full((64, 32, 3), 255, np.uint8)
    Image.fromarray(white).save(records[0].path)
    os.utime(records[0].path, ns=(0, os.stat(records[0].path).st_mtime_ns + 10**9))
    images2, labels2 = _build(records, root)
    assert images2 != images and labels2 != labels  # the labels entry depends on the images' key
    assert (open_images(images2)[0][0] == 255).all() and len(calls) == 6

    write_label(records[4].label_path, np.zeros((64, 32), np.uint8))
    os.utime(records[4].label_path, ns=(0, os.stat(records[4].label_path).st_mtime_ns + 10**9))
    images3, labels3 = _build(records, root)
    assert images3 == images2 and labels3 != labels2
    assert not open_labels(labels3)[0][4].any() and open_labels(labels3)[1][4]


@pytest.mark.parametrize("error,workers", [(KeyboardInterrupt, 1), (DatasetError, 2)])
def test_an_interrupted_build_leaves_no_cache(tmp_path, monkeypatch, error, workers):
    records = _records(tmp_path / "ds")
    root = tmp_path / "cache"
    real_read = decode_cache.read_image

    def failing(path):
        if path == records[2].path:
            raise error("stopped")
        return real_read(path)

    monkeypatch.setattr(decode_cache, "read_image", failing)
    with pytest.raises(error):
        ensure_images(records, H, W, root, progress=False, workers=workers)
    assert list(root.iterdir()) == []  # neither an entry nor its .tmp-* build folder
    monkeypatch.setattr(decode_cache, "read_image", real_read)
    images = ensure_images(records, H, W, root, progress=False)
    assert [p.name for p in root.iterdir()] == [images.name]


def test_cache_folder_defaults_to_the_user_cache_never_the_dataset_folder(tmp_path, monkeypatch):
    ds = tmp_path / "ds"
    records = _records(ds)
    before = sorted(p.relative_to(ds) for p in ds.rglob("*"))
    monkeypatch.delenv("OCCREID_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = cache_root(None, ds)
    assert root == tmp_path / "xdg" / "occreid"
    _build(records, root)
    assert sorted(p.relative_to(ds) for p in ds.rglob("*")) == before
    assert len(list(root.iterdir())) == 2
    monkeypatch.setenv("OCCREID_CACHE", str(tmp_path / "env"))
    assert cache_root(None, ds) == tmp_path / "env"
    assert cache_root(str(tmp_path / "cfg"), ds) == tmp_path / "cfg"  # data.cache_dir first
    monkeypatch.delenv("OCCREID_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(ds / "inner"))
    with pytest.raises(DatasetError, match="inside the dataset folder.*data.cache_dir"):
        cache_root(None, ds)
    assert cache_root(str(ds / "asked"), ds) == ds / "asked"  # only when the user asks for it


def test_a_dataset_without_labels_never_opens_a_label_file(tmp_path):
    records = _records(tmp_path / "ds")
    for r in records:
        if r.label_path and Path(r.label_path).is_file():
            Path(r.label_path).write_bytes(b"not a png")  # opening it would raise LabelError
    transform = build_transforms(DataConfig(height=H, width=W), train=True)
    batch = collate([ReidImageDataset(records, transform, labels=False)[i] for i in range(6)])
    assert "label" not in batch and not batch["has_label"].any() and batch["image"].shape == (6, 3, H, W)
    with pytest.raises(LabelError, match="0_label.png"):
        ReidImageDataset(records, transform)[0]
    images = ensure_images(records, H, W, tmp_path / "cache", progress=False)
    item = CachedImageDataset(records, images, BatchAugment(transform))[(0, 1)]
    assert "label" not in item and item["has_label"] is False


@pytest.mark.parametrize("name,options,expected", [
    ("bot", {}, False), ("pcb", {}, False), ("pan", {}, False), ("ocnet", {}, False),
    ("amdnet", {}, True), ("amdnet", {"method.part_attention": "stripes", "method.tff_guide": False}, False),
    ("pabreid", {}, True), ("pabreid", {"method.part_loss_weight": 0}, False), ("sgsfa", {}, True),
])
def test_which_methods_read_part_labels(name, options, expected, tmp_path):
    from occreid.config import load_config
    from occreid.engine.train_data import label_settings
    from occreid.methods import get_method

    cfg = load_config(None, [f"model.name={name}", *(f"{k}={v}" for k, v in options.items())])
    labels, grouping = label_settings(cfg, get_method(name))
    assert labels is expected and (grouping is not None) is expected


def _losses(out: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(ln).items() if k not in ("time", "train_s")}
            for ln in (out / "metrics.jsonl").read_text().splitlines()]


def test_training_gives_identical_losses_with_the_decode_cache_on_and_off(tiny_market, tmp_path):
    from occreid.engine.trainer import Trainer

    labels = tmp_path / "labels"
    write_band_labels(tiny_market, labels, 40)  # some labelled, some not
    runs = {}
    for on in (False, True):
        cfg = trainer_cfg("pabreid", tiny_market, tmp_path / f"run_{on}", {
            "method.predictor_channels": 16, "data.labels_root": str(labels), "data.decode_cache": on,
            "data.cache_dir": str(tmp_path / "cache"), "data.pad": 4, "data.erasing_prob": 0.5,
        }, iters=3)
        trainer = Trainer(cfg)
        assert isinstance(trainer.dataset, CachedImageDataset) is on
        trainer.fit()
        runs[on] = _losses(tmp_path / f"run_{on}")
    assert len(runs[True]) == 3 and runs[True] == runs[False]
    assert any(r["part"] > 0 for r in runs[True])  # the labels took part
    kinds = sorted(p.name.split("-")[1] for p in (tmp_path / "cache").iterdir())
    assert kinds == ["images", "labels"]


def test_a_label_free_method_trains_from_the_cache_without_opening_labels(tiny_market, tmp_path):
    from occreid.engine.trainer import Trainer

    garbage = tmp_path / "labels" / "bounding_box_train"
    garbage.mkdir(parents=True)
    for p in (tiny_market / "Market-1501" / "bounding_box_train").glob("*.jpg"):
        (garbage / f"{p.stem}.png").write_bytes(b"not a png")
    cfg = trainer_cfg("bot", tiny_market, tmp_path / "run", {
        "data.labels_root": str(tmp_path / "labels"), "data.decode_cache": True,
        "data.cache_dir": str(tmp_path / "cache"),
    }, iters=1)
    trainer = Trainer(cfg)
    assert sum(r.label_path is not None for r in trainer.train_records) > 0
    assert trainer.fit().iterations == 1
    assert [p.name.split("-")[1] for p in (tmp_path / "cache").iterdir()] == ["images"]


def test_cached_dataset_ships_no_arrays_to_workers_and_a_worker_reads_the_same_items(tmp_path):
    import pickle

    records = _records(tmp_path / "ds")
    images, labels = _build(records, tmp_path / "cache")
    aug = BatchAugment(build_transforms(DataConfig(height=H, width=W), train=True), "pabreid6")
    ds = CachedImageDataset(records, images, aug, labels=labels)
    items = [(i, 50 + i) for i in range(6)]
    here = collate([ds[it] for it in items])  # opens the memory maps in this process
    assert ds._arrays is not None and pickle.loads(pickle.dumps(ds))._arrays is None  # a worker maps its own
    loader = torch.utils.data.DataLoader(ds, sampler=items, batch_size=6, num_workers=1, collate_fn=collate)
    (there,) = list(loader)
    assert set(there) == set(here) and all(torch.equal(there[k], here[k]) for k in here)


def test_device_prefetcher_keeps_the_order_and_applies_the_transform_on_the_cpu():
    from occreid.data.prefetch import DevicePrefetcher

    batches = [{"image": torch.full((2, 1), float(i)), "pid": torch.tensor([i, i]), "name": f"b{i}"} for i in range(4)]
    seen = []

    def transform(batch):
        seen.append(int(batch["pid"][0]))
        return {**batch, "image": batch["image"] * 10}

    out = list(DevicePrefetcher(batches, torch.device("cpu"), transform))
    assert [b["name"] for b in out] == ["b0", "b1", "b2", "b3"] and seen == [0, 1, 2, 3]
    assert [float(b["image"][0, 0]) for b in out] == [0.0, 10.0, 20.0, 30.0]
    assert [b["pid"].tolist() for b in DevicePrefetcher(batches, torch.device("cpu"))] == [[i, i] for i in range(4)]


def test_under_ddp_rank0_builds_the_cache_before_the_barrier_and_other_ranks_read_it_after(
    tiny_market, tmp_path, monkeypatch
):
    from occreid.engine import train_data
    from occreid.engine.distributed import DistInfo
    from occreid.engine.trainer import load_training_data
    from occreid.methods import get_method

    cfg = trainer_cfg("bot", tiny_market, tmp_path / "run", {"data.decode_cache": True,
                                                             "data.cache_dir": str(tmp_path / "cache")})
    splits = load_training_data(cfg)
    events = []
    monkeypatch.setattr(torch.distributed, "barrier", lambda **kw: events.append("barrier"))
    real_read = decode_cache.read_image
    monkeypatch.setattr(decode_cache, "read_image", lambda p: events.append("decode") or real_read(p))
    args = (cfg, splits.train, splits.root, get_method("bot"), torch.device("cpu"))
    ds0, _ = train_data.build_train_dataset(*args, DistInfo(rank=0, world_size=2))
    assert events[-1] == "barrier" and events.count("decode") == len(splits.train)  # built, then the barrier
    events.clear()
    ds1, aug1 = train_data.build_train_dataset(*args, DistInfo(rank=1, world_size=2))
    assert events == ["barrier"]  # waits for rank 0, then only reads its cache
    assert ds1.images_folder == ds0.images_folder and aug1 is not None


def test_data_cache_command_builds_the_cache_a_run_would_use(tiny_market, tmp_path, capsys):
    from occreid.cli.main import main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model:\n  name: pabreid\ndata:\n  dataset: market1501\n  height: 32\n  width: 16\n")
    args = ["data", "cache", "--config", str(cfg), f"data.root={tiny_market}", f"data.cache_dir={tmp_path / 'c'}",
            f"data.labels_root={tmp_path / 'labels'}", "run.progress=false"]
    write_band_labels(tiny_market, tmp_path / "labels", 8)
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "images: " in out and "part labels: " in out
    assert sorted(p.name.split("-")[1] for p in (tmp_path / "c").iterdir()) == ["images", "labels"]
    assert main([*args[:5], f"data.cache_dir={tmp_path / 'd'}", "model.name=bot", "run.progress=false"]) == 0
    assert "trains without them" in capsys.readouterr().out
    assert [p.name.split("-")[1] for p in (tmp_path / "d").iterdir()] == ["images"]
