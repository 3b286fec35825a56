"""Dataset loaders on small file trees generated here: naming rules, splits, relabelling, label pickup."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from occreid.data.datasets import DATASETS, dataset_stats, load_dataset
from occreid.errors import DatasetError
from occreid.labels.format import write_label


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 8), (120, 30, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def make_files(base: Path, relpaths: list[str], data: bytes) -> None:
    for rel in relpaths:
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def by_name(records) -> dict[str, tuple[int, int]]:
    return {Path(r.path).name: (r.pid, r.camid) for r in records}


MARKET_FILES = [
    "bounding_box_train/0007_c3s1_000100_01.jpg",
    "bounding_box_train/0002_c1s1_000451_03.jpg",
    "bounding_box_train/0002_c6s2_000500_01.jpg",
    "bounding_box_train/0031_c2s1_000001_01.jpg",
    "bounding_box_train/-1_c1s1_000002_01.jpg",
    "bounding_box_train/0000_c1s1_000003_01.jpg",
    "query/0002_c4s1_000600_00.jpg",
    "query/0000_c2s1_000601_00.jpg",
    "query/-1_c2s1_000602_00.jpg",
    "bounding_box_test/0002_c1s1_000700_01.jpg",
    "bounding_box_test/0000_c5s1_000701_02.jpg",
    "bounding_box_test/-1_c2s1_000702_03.jpg",
    "bounding_box_test/0009_c2s1_000703_03.png",
    "bounding_box_test/not_a_reid_name.jpg",
    "bounding_box_test/Thumbs.db",
]


@pytest.mark.parametrize("folder_name", ["Market-1501-v15.09.15", "Market-1501"])
def test_market1501_naming_junk_distractors_and_relabel(tmp_path, jpeg, folder_name):
    make_files(tmp_path / folder_name, MARKET_FILES, jpeg)
    splits = load_dataset("market1501", tmp_path)
    assert splits.root == str(tmp_path / folder_name)
    # train: raw pids 2, 7, 31 -> 0, 1, 2 in sorted order; -1 junk and 0000 distractor dropped
    assert by_name(splits.train) == {
        "0002_c1s1_000451_03.jpg": (0, 0),
        "0002_c6s2_000500_01.jpg": (0, 5),
        "0007_c3s1_000100_01.jpg": (1, 2),
        "0031_c2s1_000001_01.jpg": (2, 1),
    }
    assert by_name(splits.query) == {"0002_c4s1_000600_00.jpg": (2, 3)}
    # gallery keeps the 0000 distractor with its raw pid; .png accepted; Thumbs.db ignored
    assert by_name(splits.gallery) == {
        "0002_c1s1_000700_01.jpg": (2, 0),
        "0000_c5s1_000701_02.jpg": (0, 4),
        "0009_c2s1_000703_03.png": (9, 1),
    }
    notes = "\n".join(splits.notes)
    assert "skipped 1 files" in notes and "not_a_reid_name.jpg" in notes
    assert "dropped 1 junk images (pid -1) in bounding_box_test/" in notes
    assert all(r.label_path is None for r in splits.train)


def test_root_may_be_the_dataset_folder_itself(tmp_path, jpeg):
    make_files(tmp_path / "Market-1501", MARKET_FILES, jpeg)
    direct = load_dataset("market1501", tmp_path / "Market-1501")
    parent = load_dataset("market1501", tmp_path)
    assert dataset_stats(direct) == dataset_stats(parent)
    assert direct.root == parent.root


def test_absent_split_is_none_with_a_note(tmp_path, jpeg):
    make_files(tmp_path / "Market-1501", [f for f in MARKET_FILES if f.startswith("bounding_box_train")], jpeg)
    splits = load_dataset("market1501", tmp_path)
    assert splits.query is None and splits.gallery is None and len(splits.train) == 4
    assert any(n.startswith("no query split") and "query/" in n for n in splits.notes)
    stats = dataset_stats(splits)
    assert stats == {"dataset": "market1501", "splits": {"train": {"images": 4, "ids": 3, "cams": 4}}}


@pytest.mark.parametrize(("key", "folder"), [("dukemtmcreid", "DukeMTMC-reID"), ("occluded_duke", "Occluded_Duke")])
def test_duke_style_names(tmp_path, jpeg, key, folder):
    files = [
        "bounding_box_train/0005_c2_f0046985.jpg",
        "bounding_box_train/0001_c8_f0000001.jpg",
        "query/0019_c1_f0051230.jpg",
        "bounding_box_test/0019_c1_f0051230.jpg",
        "bounding_box_test/0019_c6_f0051999.jpg",
    ]
    make_files(tmp_path / folder, files, jpeg)
    splits = load_dataset(key, tmp_path)
    assert splits.name == key
    assert by_name(splits.train) == {"0001_c8_f0000001.jpg": (0, 7), "0005_c2_f0046985.jpg": (1, 1)}
    assert by_name(splits.query) == {"0019_c1_f0051230.jpg": (19, 0)}
    assert sorted(by_name(splits.gallery).values()) == [(19, 0), (19, 5)]


def test_occluded_reid_tif_and_jpg_test_only(tmp_path, jpeg):
    files = [
        "occluded_body_images/001/001_01.tif",
        "occluded_body_images/001/001_02.tif",
        "occluded_body_images/012/012_01.jpg",
        "whole_body_images/001/001_01.tif",
        "whole_body_images/012/012_03.jpg",
    ]
    make_files(tmp_path / "Occluded_REID", files, jpeg)
    splits = load_dataset("occluded_reid", tmp_path)
    assert splits.train is None and any("test-only" in n for n in splits.notes)
    assert sorted((r.pid, r.camid, Path(r.path).suffix) for r in splits.query) == [
        (1, 0, ".tif"),
        (1, 0, ".tif"),
        (12, 0, ".jpg"),
    ]
    assert sorted((r.pid, r.camid) for r in splits.gallery) == [(1, 1), (12, 1)]


def test_p_dukemtmc_train_holds_both_views(tmp_path, jpeg):
    files = [
        "train/occluded_body_images/0005/0005_c2_f0046985.jpg",
        "train/whole_body_images/0005/0005_c1_f0046000.jpg",
        "train/whole_body_images/0040/0040_c1_f0046001.jpg",
        "test/occluded_body_images/0100/0100_c3_f0000001.jpg",
        "test/whole_body_images/0100/0100_c4_f0000002.jpg",
    ]
    make_files(tmp_path / "P-DukeMTMC-reID", files, jpeg)
    splits = load_dataset("p_dukemtmc", tmp_path)
    assert sorted((r.pid, r.camid) for r in splits.train) == [(0, 0), (0, 1), (1, 1)]
    assert [(r.pid, r.camid) for r in splits.query] == [(100, 0)]
    assert [(r.pid, r.camid) for r in splits.gallery] == [(100, 1)]


def partial_reid_tree(base: Path, data: bytes) -> None:
    files = [f"{sub}/{pid:03d}_{k:03d}.jpg" for sub in ("partial_body_images", "occluded_body_images",
             "whole_body_images") for pid in (1, 2, 60) for k in (1, 2)]  # fmt: skip
    make_files(base / "Partial_REID", files, data)
    (base / "Partial_REID" / "occluded_body_images" / "003_001.jpg").write_bytes(data)


@pytest.mark.parametrize("query", ["partial", "occluded"])
def test_partial_reid_query_option_and_protocol_note(tmp_path, jpeg, query):
    partial_reid_tree(tmp_path, jpeg)
    splits = load_dataset("partial_reid", tmp_path, query=query)
    folder = {"partial": "partial_body_images", "occluded": "occluded_body_images"}[query]
    assert {Path(r.path).parent.name for r in splits.query} == {folder}
    expected = [(p, 0) for p in (1, 1, 2, 2, 60, 60)] + ([(3, 0)] if query == "occluded" else [])
    assert sorted((r.pid, r.camid) for r in splits.query) == sorted(expected)
    assert sorted((r.pid, r.camid) for r in splits.gallery) == [(p, 1) for p in (1, 1, 2, 2, 60, 60)]
    assert splits.train is None
    assert any("Partial-REID" in n and query in n and folder in n for n in splits.notes)


def test_partial_reid_rejects_unknown_query(tmp_path, jpeg):
    partial_reid_tree(tmp_path, jpeg)
    with pytest.raises(DatasetError, match="partial.*occluded|occluded.*partial"):
        load_dataset("partial_reid", tmp_path, query="whole")


@pytest.mark.parametrize(("probe", "gallery"), [("Probe", "Gallery"), ("partial_body_images", "whole_body_images")])
def test_partial_ilids_both_folder_conventions(tmp_path, jpeg, probe, gallery):
    files = [f"{probe}/{i}.jpg" for i in (1, 2, 119)] + [f"{gallery}/{i}.jpg" for i in (1, 2, 119)]
    make_files(tmp_path / "Partial_iLIDS", files + [f"{probe}/readme.jpg"], jpeg)
    splits = load_dataset("partial_ilids", tmp_path)
    assert sorted((r.pid, r.camid) for r in splits.query) == [(1, 0), (2, 0), (119, 0)]
    assert sorted((r.pid, r.camid) for r in splits.gallery) == [(1, 1), (2, 1), (119, 1)]
    assert any("skipped 1 files" in n and "readme.jpg" in n for n in splits.notes)


def msmt_tree(base: Path, data: bytes, train_dir: str, test_dir: str, prefix_lists: bool) -> None:
    train = ["0000/0000_000_01_0303morning_0015_0.jpg", "0000/0000_001_05_0303morning_0016_1.jpg",
             "0003/0003_000_15_0303noon_0100_0.jpg"]  # fmt: skip
    val = ["0004/0004_000_02_0303noon_0101_0.jpg"]
    query = ["0010/0010_000_03_0113morning_0001_0.jpg"]
    gallery = ["0010/0010_001_07_0113morning_0002_0.jpg", "0011/0011_000_03_0113noon_0003_0.jpg"]
    folder = base / "MSMT17_V1"
    make_files(folder / train_dir, train + val, data)
    make_files(folder / test_dir, query + gallery, data)

    def write(name, rels, pids, sub):
        lines = [f"{sub + '/' if prefix_lists else ''}{rel} {pid}" for rel, pid in zip(rels, pids)]
        (folder / name).write_text("\n".join(lines + ["garbage line with three"]) + "\n")

    write("list_train.txt", train, [0, 0, 1], train_dir)
    write("list_val.txt", val, [2], train_dir)
    write("list_query.txt", query, [10], test_dir)
    write("list_gallery.txt", gallery, [10, 11], test_dir)


@pytest.mark.parametrize(
    ("train_dir", "test_dir", "prefix_lists"),
    [("train", "test", False), ("mask_train_v2", "mask_test_v2", False), ("train", "test", True)],
)
def test_msmt17_lists(tmp_path, jpeg, train_dir, test_dir, prefix_lists):
    msmt_tree(tmp_path, jpeg, train_dir, test_dir, prefix_lists)
    splits = load_dataset("msmt17", tmp_path)
    assert sorted((r.pid, r.camid) for r in splits.train) == [(0, 0), (0, 4), (1, 14)]
    assert all(Path(r.path).is_file() for s in splits.present() for r in splits.split(s))
    assert [(r.pid, r.camid) for r in splits.query] == [(10, 2)]
    assert [(r.pid, r.camid) for r in splits.gallery] == [(10, 6), (11, 2)]
    assert any("list_train.txt: skipped 1" in n for n in splits.notes)
    with_val = load_dataset("msmt17", tmp_path, with_val=True)
    # raw train pids 0, 0, 1 and val pid 2 -> relabelled 0, 0, 1, 2
    assert sorted((r.pid, r.camid) for r in with_val.train) == [(0, 0), (0, 4), (1, 14), (2, 1)]


@pytest.mark.parametrize("variant", ["labeled", "detected"])
def test_cuhk03_np_variants(tmp_path, jpeg, variant):
    for v in ("labeled", "detected"):
        pid = {"labeled": 1, "detected": 500}[v]
        files = [f"bounding_box_train/{pid:04d}_c1_1.png", f"bounding_box_train/{pid:04d}_c2_7.png",
                 f"query/{pid + 1:04d}_c1_1.png", f"bounding_box_test/{pid + 1:04d}_c2_9.png"]  # fmt: skip
        make_files(tmp_path / "cuhk03-np" / v, files, jpeg)
    splits = load_dataset("cuhk03", tmp_path, variant=variant)
    assert splits.root == str(tmp_path / "cuhk03-np" / variant)
    assert sorted((r.pid, r.camid) for r in splits.train) == [(0, 0), (0, 1)]
    expected_pid = 2 if variant == "labeled" else 501
    assert [(r.pid, r.camid) for r in splits.query] == [(expected_pid, 0)]
    assert [(r.pid, r.camid) for r in splits.gallery] == [(expected_pid, 1)]
    with pytest.raises(DatasetError, match="variant"):
        load_dataset("cuhk03", tmp_path, variant="classic")


def test_cuhk03_mat_layout_without_scipy_says_how_to_fix(tmp_path, monkeypatch):
    (tmp_path / "CUHK03").mkdir()
    (tmp_path / "CUHK03" / "cuhk03_new_protocol_config_labeled.mat").write_bytes(b"not read")
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(DatasetError, match="pip install scipy"):
        load_dataset("cuhk03", tmp_path)


def test_cuhk03_mat_new_protocol_with_scipy(tmp_path, jpeg):
    scipy_io = pytest.importorskip("scipy.io")
    folder = tmp_path / "CUHK03"
    names = ["1_001_1_01.png", "1_001_2_06.png", "1_002_1_01.png", "1_002_2_07.png", "2_003_1_02.png"]
    make_files(folder / "images_labeled", names, jpeg)
    filelist = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        filelist[i, 0] = np.array([n])
    scipy_io.savemat(
        folder / "cuhk03_new_protocol_config_labeled.mat",
        {
            "filelist": filelist,
            "labels": np.array([[7], [7], [9], [9], [4]]),
            "train_idx": np.array([[1], [2], [5]]),  # 1-based, as MATLAB writes them
            "query_idx": np.array([[3]]),
            "gallery_idx": np.array([[4]]),
        },
    )
    splits = load_dataset("cuhk03", tmp_path)
    assert sorted((r.pid, r.camid) for r in splits.train) == [(0, 0), (1, 0), (1, 1)]
    assert [(Path(r.path).name, r.pid, r.camid) for r in splits.query] == [("1_002_1_01.png", 9, 0)]
    assert [(Path(r.path).name, r.pid, r.camid) for r in splits.gallery] == [("1_002_2_07.png", 9, 1)]


def write_csv(path: Path, rows: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("path,pid,camid,split,width,note\n" + "\n".join(rows) + "\n")


def test_csv_index_relative_paths_extra_columns_and_bad_rows(tmp_path, jpeg):
    folder = tmp_path / "myset"
    make_files(folder, ["imgs/a.jpg", "imgs/b.jpg", "q/c.jpg", "g/d.jpg", "g/e.jpg"], jpeg)
    outside = tmp_path / "elsewhere" / "f.jpg"
    make_files(outside.parent, ["f.jpg"], jpeg)
    write_csv(
        folder / "index.csv",
        [
            "imgs/a.jpg,40,3,train,64,x",
            "imgs/b.jpg,12,1,train,64,",
            "q/c.jpg,5,0,query,64,",
            "g/d.jpg,5,2,gallery,64,",
            f"{outside},6,,gallery,64,",
            "g/e.jpg,notanint,2,gallery,64,",
            "g/e.jpg,7,2,demo,64,",
        ],
    )
    splits = load_dataset("csv", folder)
    assert by_name(splits.train) == {"a.jpg": (1, 3), "b.jpg": (0, 1)}
    assert [r.path for r in splits.train] == [str(folder / "imgs" / "a.jpg"), str(folder / "imgs" / "b.jpg")]
    assert by_name(splits.query) == {"c.jpg": (5, 0)}
    # an empty camid in the gallery becomes 1; the absolute path is kept
    assert by_name(splits.gallery) == {"d.jpg": (5, 2), "f.jpg": (6, 1)}
    assert str(outside) in {r.path for r in splits.gallery}
    notes = "\n".join(splits.notes)
    assert "skipped 1" in notes and "line 7" in notes and "demo" in notes
    assert dataset_stats(load_dataset("csv", folder / "index.csv")) == dataset_stats(splits)


def test_csv_split_variants(tmp_path, jpeg):
    folder = tmp_path / "set"
    make_files(folder, ["p/1.jpg", "o/1.jpg", "w/1.jpg"], jpeg)
    write_csv(
        folder / "index.csv",
        ["p/1.jpg,1,,query_partial,1,", "o/1.jpg,1,,query_occluded,1,", "w/1.jpg,1,,gallery_whole,1,"],
    )
    with pytest.raises(DatasetError, match="query=<occluded, partial>"):
        load_dataset("csv", folder)
    splits = load_dataset("csv", folder, query="occluded")
    assert [Path(r.path).parent.name for r in splits.query] == ["o"]
    assert [(r.pid, r.camid) for r in splits.gallery] == [(1, 1)]
    assert splits.train is None
    with pytest.raises(DatasetError, match="query_nope"):
        load_dataset("csv", folder, query="nope")


def test_csv_missing_columns_names_the_file(tmp_path):
    (tmp_path / "index.csv").write_text("file,id\na.jpg,1\n")
    with pytest.raises(DatasetError, match=r"index\.csv.*missing column\(s\) path, pid, camid, split"):
        load_dataset("csv", tmp_path)


@pytest.mark.parametrize("via_parent", [False, True])
def test_synthetic_layout_and_label_pickup(tmp_path, jpeg, via_parent):
    out = tmp_path / "synthetic"
    files = ["bounding_box_train/0001_c1s1_000001_01.jpg", "bounding_box_train/0001_c2s1_000002_01.jpg",
             "query/0005_c1s1_000003_01.jpg", "bounding_box_test/0005_c2s1_000004_01.jpg"]  # fmt: skip
    make_files(out, files, jpeg)
    (out / "synth.json").write_text("{}")
    label = np.zeros((8, 4), dtype=np.uint8)
    write_label(out / "occreid_labels" / "bounding_box_train" / "0001_c1s1_000001_01.png", label)
    write_label(out / "occreid_labels" / "query" / "0005_c1s1_000003_01.png", label)
    splits = load_dataset("synthetic", tmp_path if via_parent else out)
    labelled = {Path(r.path).name: r.label_path for s in splits.present() for r in splits.split(s)}
    assert labelled == {
        "0001_c1s1_000001_01.jpg": str(out / "occreid_labels" / "bounding_box_train" / "0001_c1s1_000001_01.png"),
        "0001_c2s1_000002_01.jpg": None,
        "0005_c1s1_000003_01.jpg": str(out / "occreid_labels" / "query" / "0005_c1s1_000003_01.png"),
        "0005_c2s1_000004_01.jpg": None,
    }
    assert not any("synth.json" in n for n in splits.notes)


def test_labels_root_option(tmp_path, jpeg):
    make_files(tmp_path / "Market-1501", MARKET_FILES, jpeg)
    labels = tmp_path / "my_labels"
    write_label(labels / "bounding_box_test" / "0000_c5s1_000701_02.png", np.ones((8, 4), dtype=np.uint8))
    splits = load_dataset("market1501", tmp_path, labels_root=labels)
    with_label = [(Path(r.path).name, r.label_path) for r in splits.gallery if r.label_path]
    assert with_label == [("0000_c5s1_000701_02.jpg", str(labels / "bounding_box_test" / "0000_c5s1_000701_02.png"))]
    assert all(r.label_path is None for r in splits.train + splits.query)


def test_wrong_root_is_one_clear_error(tmp_path):
    (tmp_path / "something_else").mkdir()
    with pytest.raises(DatasetError) as err:
        load_dataset("occluded_duke", tmp_path)
    message = str(err.value)
    assert str(tmp_path / "Occluded_Duke") in message
    assert "bounding_box_train/" in message and "query/" in message and "bounding_box_test/" in message
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("market1501", tmp_path / "missing")


def test_unknown_key_and_option(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("market", tmp_path)
    assert all(key in str(err.value) for key in DATASETS)
    with pytest.raises(DatasetError, match="no option colour.*query"):
        load_dataset("partial_reid", tmp_path, colour="red")


def test_every_key_has_a_loader_that_rejects_an_empty_root(tmp_path):
    for key in DATASETS:
        with pytest.raises(DatasetError, match=key if key != "csv" else "index.csv"):
            load_dataset(key, tmp_path)


def test_cuhk03_mat_images_extracted_from_hdf5(tmp_path):
    """cuhk-03.mat is MATLAB v7.3: refs to camera pairs, each [10 images x pids] of refs to images
    stored transposed ([3, W, H]); missing images are 2-element placeholders."""
    scipy_io = pytest.importorskip("scipy.io")
    h5py = pytest.importorskip("h5py")
    folder = tmp_path / "CUHK03"
    (folder / "cuhk03_release").mkdir(parents=True)
    rng = np.random.default_rng(0)
    pixels = {}
    with h5py.File(folder / "cuhk03_release" / "cuhk-03.mat", "w") as f:
        ref = h5py.special_dtype(ref=h5py.Reference)
        pair_refs = []
        for pair in range(2):
            grid = np.empty((10, 2), dtype=object)  # MATLAB order: [image index, pid]
            for pid in range(2):
                for index in range(10):
                    if index in (0, 5):
                        image = rng.integers(0, 256, size=(6, 3, 3), dtype=np.uint8)  # H=6, W=3
                        pixels[f"{pair + 1}_{pid + 1:03d}_{1 if index < 5 else 2}_{index + 1:02d}.png"] = image
                        data = image.T
                    else:
                        data = np.zeros(2, dtype=np.uint64)
                    grid[index, pid] = f.create_dataset(f"i{pair}_{pid}_{index}", data=data).ref
            pair_refs.append(f.create_dataset(f"pair{pair}", data=grid, dtype=ref).ref)
        f.create_dataset("labeled", data=np.array([pair_refs], dtype=object), dtype=ref)
    names = sorted(pixels)
    filelist = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        filelist[i, 0] = np.array([n])
    labels = np.array([[int(n.split("_")[0]) * 10 + int(n.split("_")[1])] for n in names])
    scipy_io.savemat(
        folder / "cuhk03_new_protocol_config_labeled.mat",
        {
            "filelist": filelist,
            "labels": labels,
            "train_idx": np.arange(1, 5)[:, None],
            "query_idx": np.array([[5]]),
            "gallery_idx": np.array([[6]]),
        },  # fmt: skip
    )
    splits = load_dataset("cuhk03", tmp_path)
    assert sorted(p.name for p in (folder / "images_labeled").iterdir()) == names
    for name, image in pixels.items():
        assert np.array_equal(np.asarray(Image.open(folder / "images_labeled" / name)), image)
    assert len(splits.train) == 4 and {r.pid for r in splits.train} == {0, 1}
    assert [(r.pid, r.camid) for r in splits.query] == [(labels[4, 0], int(names[4].split("_")[2]) - 1)]
    assert any("extracted" in n for n in splits.notes)
