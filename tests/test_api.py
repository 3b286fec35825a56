"""Python API: load a checkpoint, embed paths / PIL / arrays, the method's distance, clear errors, tracks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import occreid.api as reid
from occreid.config import load_config, to_dict
from occreid.engine.checkpoint import save_atomic
from occreid.errors import CheckpointError, ConfigError, DatasetError
from occreid.methods import get_method

SIZE = {"bot": (32, 16), "pcb": (32, 16)}


def write_checkpoint(path: Path, method: str = "bot", num_classes: int = 4, **overrides) -> Path:
    """A checkpoint in the Trainer's format (weights-only) of a freshly built resnet18 model whose BN
    statistics saw one random batch: fast, and loadable like a trained one."""
    h, w = SIZE.get(method, (64, 32))
    o = {"model.name": method, "model.backbone": "resnet18", "data.height": h, "data.width": w}
    if method == "pcb":
        o["method.stripes"] = 2
    o.update(overrides)
    cfg = load_config(None, [f"{k}={v}" for k, v in o.items()])
    torch.manual_seed(0)
    model = get_method(method).build_model(cfg, num_classes)
    with torch.no_grad():
        model.train()(torch.randn(8, 3, h, w))
    state = {"format": 1, "method": method, "config": to_dict(cfg), "model": model.state_dict(),
             "num_classes": num_classes, "iteration": 0}
    save_atomic(state, path)
    return path


@pytest.fixture(scope="module")
def bot_ckpt(tmp_path_factory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "bot.pt", "bot")


def _manual_tensor(img: np.ndarray, h: int, w: int) -> torch.Tensor:
    """Independent preprocessing: PIL bilinear resize, /255, ImageNet mean / std, CHW."""
    arr = np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32) / 255
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return torch.from_numpy(((arr - mean) / std).astype(np.float32)).permute(2, 0, 1)


def test_embed_accepts_paths_pil_and_arrays_and_matches_manual_forward(bot_ckpt, tiny_market):
    model = reid.load(bot_ckpt)
    paths = sorted((tiny_market / "Market-1501" / "query").glob("*.jpg"))[:3]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    big = np.asarray(Image.fromarray(arrays[0]).resize((40, 80)))  # another size: resized by embed
    by_path = model.embed([str(p) for p in paths], batch_size=2)
    by_pil = model.embed([Image.fromarray(a) for a in arrays])
    by_array = model.embed([*arrays, big])
    assert by_path.paths == [str(p) for p in paths] and by_array.paths[3] == "<input 3>"
    for k in ("bnneck", "global"):
        np.testing.assert_allclose(by_path.arrays[k], by_pil.arrays[k], atol=1e-6)
        np.testing.assert_allclose(by_path.arrays[k], by_array.arrays[k][:3], atol=1e-6)
    x = torch.stack([_manual_tensor(a, 32, 16) for a in [*arrays, big]])
    with torch.no_grad():
        expected = model.model(x).embeddings["bnneck"].numpy()
    np.testing.assert_allclose(by_array.arrays["bnneck"], expected, atol=1e-5)
    assert by_path.visibility is None and by_path.method == "bot" and len(by_path.config_hash) == 12


def test_distance_is_the_methods_recipe_computed_by_hand(bot_ckpt):
    model = reid.load(bot_ckpt)
    rng = np.random.default_rng(0)
    a = model.embed([rng.integers(0, 255, (40, 20, 3), dtype=np.uint8) for _ in range(3)])
    b = model.embed([rng.integers(0, 255, (30, 18, 3), dtype=np.uint8) for _ in range(4)])
    d = model.distance(a, b)
    assert d.shape == (3, 4)
    for i in range(3):  # BoT: Euclidean distance of L2-normalised BN features
        for j in range(4):
            u = a.arrays["bnneck"][i] / np.linalg.norm(a.arrays["bnneck"][i])
            v = b.arrays["bnneck"][j] / np.linalg.norm(b.arrays["bnneck"][j])
            assert d[i, j] == pytest.approx(float(np.sqrt(((u - v) ** 2).sum())), abs=1e-5)


def test_hand_worked_distance_of_known_vectors(bot_ckpt):
    model = reid.load(bot_ckpt)
    dim = 512
    e1 = np.zeros((1, dim), np.float32)
    e1[0, 0] = 3.0  # unit vector x after normalisation
    e2 = np.zeros((2, dim), np.float32)
    e2[0, 1] = 0.5  # orthogonal: sqrt(2)
    e2[1, 0] = -2.0  # opposite: 2
    a = reid.Embeddings({"bnneck": e1, "global": e1}, None, "bot", model.config_hash, ["a"])
    b = reid.Embeddings({"bnneck": e2, "global": e2}, None, "bot", model.config_hash, ["b", "c"])
    np.testing.assert_allclose(model.distance(a, b), [[np.sqrt(2.0), 2.0]], atol=1e-6)
    other = reid.Embeddings(b.arrays, None, "bot", "0123456789ab", ["b", "c"])
    with pytest.raises(ConfigError, match="same model"):
        model.distance(a, other)


def test_unreadable_images_are_skipped_and_listed_all_unreadable_fails(bot_ckpt, tmp_path, tiny_market):
    model = reid.load(bot_ckpt)
    good = sorted((tiny_market / "Market-1501" / "query").glob("*.jpg"))[0]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    e = model.embed([str(broken), str(good), str(tmp_path / "missing.jpg")])
    assert e.paths == [str(good)] and len(e.arrays["bnneck"]) == 1
    assert [s[0] for s in e.skipped] == [str(broken), str(tmp_path / "missing.jpg")]
    with pytest.raises(DatasetError, match="none of the 2 images"):
        model.embed([str(broken), str(tmp_path / "missing.jpg")])
    with pytest.raises(DatasetError, match="no images"):
        model.embed([])


def test_input_size_mismatch_and_unknown_method_are_clear_errors(bot_ckpt, tmp_path):
    model = reid.load(bot_ckpt)
    with pytest.raises(ConfigError, match=r"\[B, 3, 32, 16\]"):
        model.embed_tensor(torch.zeros(1, 3, 64, 32))
    ckpt = torch.load(bot_ckpt, weights_only=True)
    ckpt["config"]["model"]["name"] = "mystery_net"
    save_atomic(ckpt, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match="unknown method 'mystery_net'"):
        reid.load(tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match="not found"):
        reid.load(tmp_path / "nothing.pt")


def test_flip_averages_image_and_mirror(bot_ckpt):
    plain, flipped = reid.load(bot_ckpt, flip=False), reid.load(bot_ckpt, flip=True)
    img = np.random.default_rng(1).integers(0, 255, (32, 16, 3), dtype=np.uint8)
    a = plain.embed([img, np.ascontiguousarray(img[:, ::-1])]).arrays["bnneck"]
    f = flipped.embed([img]).arrays["bnneck"]
    np.testing.assert_allclose(f[0], (a[0] + a[1]) / 2, atol=1e-5)


def test_tracklet_aggregation_hand_worked():
    # track 7: frames with parts [[3,4],[1,0]] vis [1, 0] and [[0,2],[0,5]] vis [1, 1]
    parts = np.array([[[3, 4], [1, 0]], [[0, 2], [0, 5]], [[1, 0], [0, 1]]], np.float32)
    vis = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]], np.float32)
    glob = np.array([[2, 0], [0, 3], [5, 5]], np.float32)
    e = reid.Embeddings({"parts": parts, "global": glob}, vis, "m", "h", ["a", "b", "c"])
    t = reid.aggregate_tracks(e, [7, 7, 2])
    assert t.paths == ["track 2", "track 7"]
    # part 0 of track 7: (1 * [0.6, 0.8] + 1 * [0, 1]) / 2
    np.testing.assert_allclose(t.arrays["parts"][1, 0], [0.3, 0.9], atol=1e-6)
    # part 1 of track 7: only frame 2 has weight: [0, 1]
    np.testing.assert_allclose(t.arrays["parts"][1, 1], [0.0, 1.0], atol=1e-6)
    # track 2 sees nothing: plain mean of its one frame, visibility 0
    np.testing.assert_allclose(t.arrays["parts"][0], [[1, 0], [0, 1]], atol=1e-6)
    np.testing.assert_allclose(t.visibility, [[0, 0], [1, 1]])
    np.testing.assert_allclose(t.arrays["global"][1], [0.5, 0.5], atol=1e-6)


def test_tracklet_aggregation_matches_loop_reference():
    rng = np.random.default_rng(3)
    n, p, d = 12, 3, 5
    parts = rng.normal(size=(n, p, d)).astype(np.float32)
    vis = rng.uniform(size=(n, p)).astype(np.float32)
    vis[vis < 0.3] = 0
    ids = rng.integers(0, 4, n)
    e = reid.Embeddings({"parts": parts}, vis, "m", "h", [str(i) for i in range(n)])
    t = reid.aggregate_tracks(e, ids)
    for row, tid in enumerate(sorted(set(ids.tolist()))):
        frames = [i for i in range(n) if ids[i] == tid]
        for k in range(p):
            num, den = np.zeros(d), 0.0
            for i in frames:
                num += vis[i, k] * parts[i, k] / np.linalg.norm(parts[i, k])
                den += vis[i, k]
            if den > 0:
                np.testing.assert_allclose(t.arrays["parts"][row, k], num / den, atol=1e-5)
            assert t.visibility[row, k] == pytest.approx(max(vis[i, k] for i in frames))


@pytest.mark.slow
def test_checkpoint_written_by_the_trainer_loads(tiny_market, tmp_path):
    from occreid.engine.trainer import Trainer
    from tests.test_engine import small_overrides

    cfg = load_config(None, small_overrides(tiny_market, tmp_path / "run",
                                            **{"train.max_iters": 1, "train.checkpoint_every": 1}))
    Trainer(cfg).fit()
    model = reid.load(tmp_path / "run")  # a run folder means its last.pt
    e = model.embed(sorted(str(p) for p in (tiny_market / "Market-1501" / "query").glob("*.jpg")))
    assert model.identity["checkpoint_sha256"] and e.arrays["bnneck"].shape == (4, 512)
    assert np.isfinite(model.distance(e, e)).all()
