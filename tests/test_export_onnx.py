"""ONNX export: checker, metadata, dynamic batch, clear size errors, and per-method parity with PyTorch
(max |diff| <= 1e-4 on L2-normalised embeddings; visibility decisions identical away from the threshold)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import occreid.api as reid
from occreid.config import load_config
from occreid.errors import ConfigError
from occreid.inference.identity import model_identity
from occreid.methods import METHODS, get_method
from tests.test_api import write_checkpoint

onnx = pytest.importorskip("onnx", reason="export needs the optional onnx package (occreid[export])")
pytest.importorskip("onnxruntime", reason="export needs the optional onnxruntime package (occreid[export])")

from occreid.inference.export_onnx import OnnxReidModel, ParityReport, export_onnx, parity  # noqa: E402


def available(method: str) -> bool:
    try:
        get_method(method)
    except ConfigError:
        return False
    return True


def real_images(tiny_market: Path) -> list[str]:
    paths = sorted(str(p) for p in (tiny_market / "Market-1501" / "query").glob("*.jpg"))
    root = os.environ.get("OCCREID_DATA")
    mini = Path(root) / "mini" / "Occluded_Duke" / "query" if root else None
    if mini is not None and mini.is_dir():
        paths += sorted(str(p) for p in mini.glob("*.jpg"))[:6]
    return paths


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """method -> (ReidModel, ONNX path), exported once per module."""
    cache: dict[str, tuple[reid.ReidModel, Path]] = {}

    def get(method: str) -> tuple[reid.ReidModel, Path]:
        if method not in cache:
            tmp = tmp_path_factory.mktemp(method)
            model = reid.load(write_checkpoint(tmp / f"{method}.pt", method), flip=False)
            cache[method] = model, export_onnx(model, tmp / f"{method}.onnx")
        return cache[method]

    return get


@pytest.mark.parametrize("method", sorted(METHODS))
def test_parity_per_method_on_random_and_real_images(method, tiny_market, exported):
    if not available(method):
        pytest.skip(f"method {method} is not implemented in this checkout")
    model, path = exported(method)
    onnx.checker.check_model(onnx.load(str(path)))
    runner = OnnxReidModel(path)
    h, w = model.input_size
    random_batch = torch.randn(3, h, w, 3).permute(0, 3, 1, 2).contiguous()
    real_batch = torch.stack([model.to_tensor(p) for p in real_images(tiny_market)])
    for x in (random_batch, real_batch):
        report = parity(model, runner, x)
        assert report.ok, report
        assert all(v <= 1e-4 for k, v in report.max_abs_diff.items() if k != "visibility")
    meta = runner.metadata
    assert meta["method"] == method and meta["input_size"] == [h, w] and meta["color_order"] == "RGB"
    assert meta["mean"] == list(model.cfg.data.mean) and meta["config_hash"] == model.config_hash
    assert meta["outputs"] == runner.names and f"methods.{method}.distance" in meta["distance"]
    if "visibility" in runner.names:
        assert meta["visibility_threshold"] == model.visibility_threshold


def fresh_model(method: str, height: int, width: int, **options) -> reid.ReidModel:
    """An untrained resnet18 model at the given input size (no checkpoint: the graph is what is tested)."""
    overrides = [f"model.name={method}", "model.backbone=resnet18", f"data.height={height}", f"data.width={width}"]
    cfg = load_config(None, overrides + [f"method.{k}={v}" for k, v in options.items()])
    torch.manual_seed(0)
    net = get_method(method).build_model(cfg, 4).eval()
    return reid.ReidModel(net, cfg, identity=model_identity(cfg, None, ""), flip=False)


@pytest.mark.parametrize("height", [256, 384])
def test_pcb_six_stripes_at_uneven_and_even_map_heights(height, tmp_path):
    """256 x 128 gives a 16-row map (6 stripes share rows), 384 x 128 a 24-row map (4 rows each)."""
    model = fresh_model("pcb", height, 128, stripes=6)
    runner = OnnxReidModel(export_onnx(model, tmp_path / "pcb.onnx"))
    ops = {node.op_type for node in onnx.load(str(runner.path)).graph.node}
    assert not ops & {"AveragePool", "GlobalAveragePool"}  # stripes are a constant averaging matrix
    report = parity(model, runner, torch.randn(2, 3, height, 128))
    assert report.ok, report
    assert runner.run(torch.zeros(1, 3, height, 128))["parts"].shape == (1, 6, 256)


def test_amdnet_torch_fft_path_is_refused_with_the_option_to_use(tmp_path):
    model = fresh_model("amdnet", 64, 32, sim_dft="fft", sim_channels=4, tff_channels=16)
    with pytest.raises(ConfigError, match=r"amdnet.*fft.*method\.sim_dft=matmul"):
        export_onnx(model, tmp_path / "a.onnx")


def test_dynamic_batch_static_batch_and_size_errors(tmp_path, exported):
    model, path = exported("pcb")
    runner = OnnxReidModel(path)
    for b in (1, 5):
        out = runner.run(torch.randn(b, 3, 32, 16))
        assert out["parts"].shape == (b, 2, 256) and out["stripes"].shape == (b, 512)
    with pytest.raises(ConfigError, match=r"\[B, 3, 32, 16\]"):
        runner.run(np.zeros((1, 3, 64, 32), np.float32))
    static = OnnxReidModel(export_onnx(model, tmp_path / "s.onnx", dynamic_batch=False))
    assert static.session.get_inputs()[0].shape[0] == 1
    with pytest.raises(ConfigError, match="no occreid metadata"):
        plain = tmp_path / "plain.onnx"
        torch.onnx.export(torch.nn.Identity(), (torch.zeros(1, 3),), str(plain), dynamo=False)
        OnnxReidModel(plain)


class FakeRunner:
    def __init__(self, outputs: dict[str, np.ndarray]) -> None:
        self.outputs = outputs

    def run(self, x) -> dict[str, np.ndarray]:
        return self.outputs


class FakeModel:
    """Returns fixed features, so the parity arithmetic can be checked by hand."""

    visibility_threshold = 0.5
    device = torch.device("cpu")

    def __init__(self, feats: dict[str, np.ndarray]) -> None:
        self.feats = feats

    def model(self, x):
        class Out:
            def features(inner):
                return {k: torch.from_numpy(v) for k, v in self.feats.items()}
        return Out()


def test_parity_report_hand_worked():
    ref = {"emb": np.array([[3.0, 4.0]], np.float32),
           "visibility": np.array([[0.50005, 0.7, 0.2, 0.9]], np.float32)}
    # ONNX: same direction, twice the length (normalised: no difference) ...
    got = {"emb": np.array([[6.0, 8.0001]], np.float32),
           # ... one score crosses the threshold within 1e-4 of it (counted, allowed), one far away (a flip)
           "visibility": np.array([[0.49999, 0.3, 0.2, 0.9]], np.float32)}
    report = parity(FakeModel(ref), FakeRunner(got), torch.zeros(1))
    unit_got = np.array([6.0, 8.0001]) / np.linalg.norm([6.0, 8.0001])
    assert report.max_abs_diff["emb"] == pytest.approx(np.abs(unit_got - [0.6, 0.8]).max(), abs=1e-7)
    assert report.near_threshold == 1 and report.visibility_flips == 1 and not report.ok
    assert report.max_abs_diff["visibility"] == pytest.approx(0.4, abs=1e-6)
    assert ParityReport({"emb": 5e-5}, 0, 3).ok and not ParityReport({"emb": 2e-4}, 0, 0).ok


def test_cli_export_reports_parity(tmp_path, capsys, exported):
    from tests.test_extract import run_cli

    ckpt = exported("bot")[0].identity["checkpoint"]
    assert run_cli(["export", "onnx", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.onnx"),
                    "--parity-images", "2"]) == 0
    out = capsys.readouterr().out
    assert "onnx.checker passed" in out and ": OK" in out and (tmp_path / "m.onnx").is_file()
