"""Tracker-ready ONNX (`export_onnx(..., tracker=True)`): one input `images`, one output `output`, called the
way tracker ReID backends call an ONNX file (BoxMOT's ONNX backend: BGR crops -> RGB, NCHW float32, / 255,
(x - mean) / std, `session.run([first output], {first input: batch})[0]`, then L2 normalisation), returns
the embedding `occreid.api` gives (`ReidModel.global_embedding`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import occreid.api as reid
from tests.test_api import write_checkpoint

onnx = pytest.importorskip("onnx", reason="export needs the optional onnx package (occreid[export])")
ort = pytest.importorskip("onnxruntime", reason="export needs the optional onnxruntime package (occreid[export])")

from occreid.inference.export_onnx import OnnxReidModel, export_onnx  # noqa: E402


@pytest.fixture(scope="module", params=["bot", "pabreid"])
def tracker_file(request, tmp_path_factory) -> tuple[reid.ReidModel, Path]:
    tmp = tmp_path_factory.mktemp(request.param)
    model = reid.load(write_checkpoint(tmp / "m.pt", request.param), flip=False)
    return model, export_onnx(model, tmp / "tracker.onnx", tracker=True)


def tracker_call(path: Path, bgr_crops: list[np.ndarray], mean: list[float], std: list[float]) -> np.ndarray:
    """A tracker's ReID backend, written from their public description: BGR crops (already at the model
    size) -> RGB -> [B, 3, H, W] float32 -> / 255 -> (x - mean) / std -> first output -> L2 normalised."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.stack([c[:, :, ::-1].transpose(2, 0, 1) for c in bgr_crops]).astype(np.float32) / 255.0
    batch = (batch - np.array(mean, np.float32).reshape(1, 3, 1, 1)) / np.array(std, np.float32).reshape(1, 3, 1, 1)
    feats = session.run([session.get_outputs()[0].name], {session.get_inputs()[0].name: batch})[0]
    return feats / np.linalg.norm(feats, axis=-1, keepdims=True)


def test_interface_is_one_float_input_images_and_one_output(tracker_file):
    model, path = tracker_file
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    h, w = model.input_size
    assert inp.name == "images" and inp.type == "tensor(float)"
    assert isinstance(inp.shape[0], str) and inp.shape[1:] == [3, h, w]  # dynamic batch, NCHW
    assert out.name == "output" and len(out.shape) == 2 and isinstance(out.shape[0], str)
    meta = OnnxReidModel(path).metadata
    assert meta["color_order"] == "RGB" and meta["input_size"] == [h, w]
    assert meta["mean"] == list(model.cfg.data.mean) and meta["std"] == list(model.cfg.data.std)
    assert meta["tracker_embedding"] == model.global_key and meta["outputs"] == ["output"]
    assert model.global_key == {"bot": "bnneck", "pabreid": "foreground"}[model.method]


@pytest.mark.parametrize("batch", [1, 5])
def test_tracker_call_returns_the_api_embedding(tracker_file, batch):
    model, path = tracker_file
    h, w = model.input_size
    rng = np.random.default_rng(batch)
    frame_bgr = rng.integers(0, 256, (3 * h, 4 * w, 3), dtype=np.uint8)  # a video frame as OpenCV reads it
    boxes = [(int(rng.integers(0, 3 * w)), int(rng.integers(0, 2 * h))) for _ in range(batch)]
    crops = [frame_bgr[y:y + h, x:x + w] for x, y in boxes]
    meta = OnnxReidModel(path).metadata
    got = tracker_call(path, crops, meta["mean"], meta["std"])
    want = model.global_embedding(model.embed([c[:, :, ::-1].copy() for c in crops]))  # the api takes RGB
    assert got.shape == want.shape == (batch, want.shape[1])
    assert np.abs(got - want).max() <= 1e-4
    raw = OnnxReidModel(path).run(np.zeros((2, 3, h, w), np.float32))["output"]
    assert np.allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-5)  # already unit vectors


def test_cli_tracker_export_reports_parity(tmp_path, capsys):
    from tests.test_extract import run_cli

    ckpt = write_checkpoint(tmp_path / "bot.pt", "bot")
    assert run_cli(["export", "onnx", "--tracker", "--checkpoint", str(ckpt), "--out", str(tmp_path / "t.onnx"),
                    "--parity-images", "2"]) == 0
    out = capsys.readouterr().out
    assert "tracker" in out and "outputs: output" in out and ": OK" in out
