"""Loaders and check on the shared real data (OCCREID_DATA); skipped when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from occreid.data.check import check_dataset
from occreid.data.datasets import dataset_stats, load_dataset

pytestmark = pytest.mark.realdata


def need(path: Path) -> Path:
    if not path.is_dir():
        pytest.skip(f"{path} is not in OCCREID_DATA")
    return path


def counts(splits) -> dict[str, tuple[int, int]]:
    return {s: (v["images"], v["ids"]) for s, v in dataset_stats(splits)["splits"].items()}


def test_occluded_duke_full(data_root):
    need(data_root / "Occluded_Duke")
    splits = load_dataset("occluded_duke", data_root)
    assert counts(splits) == {"train": (15618, 702), "query": (2210, 519), "gallery": (17661, 1110)}
    assert sorted({r.pid for r in splits.train}) == list(range(702))
    assert {r.camid for r in splits.gallery} == set(range(8))


def test_market1501_train_only(data_root):
    need(data_root / "Market-1501")
    splits = load_dataset("market1501", data_root)
    assert counts(splits) == {"train": (12936, 751)}
    assert splits.query is None and splits.gallery is None
    assert {r.camid for r in splits.train} == set(range(6))
    assert sum(n.startswith("no query split") or n.startswith("no gallery split") for n in splits.notes) == 2


@pytest.mark.parametrize("query", ["partial", "occluded"])
def test_partial_reid(data_root, query):
    need(data_root / "Partial_REID")
    splits = load_dataset("partial_reid", data_root, query=query)
    assert counts(splits) == {"query": (300, 60), "gallery": (300, 60)}
    per_id: dict[int, int] = {}
    for r in splits.query:
        per_id[r.pid] = per_id.get(r.pid, 0) + 1
    assert set(per_id.values()) == {5}
    assert any(query in n and "Partial-REID" in n for n in splits.notes)


def test_partial_ilids(data_root):
    need(data_root / "Partial_iLIDS")
    splits = load_dataset("partial_ilids", data_root)
    assert counts(splits) == {"query": (119, 119), "gallery": (119, 119)}
    assert {r.pid for r in splits.query} == {r.pid for r in splits.gallery}


def test_mini_is_a_root(data_root):
    mini = need(data_root / "mini")
    market = load_dataset("market1501", mini)
    assert market.train is None and len(market.query) == 3
    # 60 gallery images listed, 6 of them -1 junk
    assert len(market.gallery) == 54 and 0 in {r.pid for r in market.gallery}
    duke = load_dataset("occluded_duke", mini)
    # gallery: the 25 query ids plus 80 distractors of other ids
    assert counts(duke) == {"train": (48, 12), "query": (50, 25), "gallery": (229, 25 + 80)}


def test_occluded_duke_check_counts_duplicates(data_root):
    need(data_root / "Occluded_Duke")
    report = check_dataset("occluded_duke", data_root, verify_images=False)
    assert report.ok
    assert report.info["duplicated_query_files"] == 1870
    assert any(w.startswith("1870 query files also sit in the gallery") for w in report.warnings)


def test_mini_check_verifies_images(data_root):
    need(data_root / "mini" / "Occluded_Duke")
    report = check_dataset("occluded_duke", data_root / "mini", progress=False)
    assert report.ok and report.info["images_verified"] == 48 + 50 + 229
    assert report.info["queries_with_match"] == 50
