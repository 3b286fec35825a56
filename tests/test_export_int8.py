"""INT8 ONNX (ONNX Runtime static quantization calibrated on training crops): a quantized graph with the
metadata kept, close to PyTorch, the accuracy verdict (> 1 mAP point lost: not recommended) and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import occreid.api as reid
from occreid.errors import ConfigError, DatasetError
from tests.test_api import write_checkpoint

onnx = pytest.importorskip("onnx", reason="export needs the optional onnx package (occreid[export])")
pytest.importorskip("onnxruntime", reason="export needs the optional onnxruntime package (occreid[export])")

from occreid.inference.export_onnx import OnnxReidModel, parity  # noqa: E402
from occreid.inference.quantize_int8 import calibration_images, quantize_int8  # noqa: E402
from occreid.inference.runtime_accuracy import AccuracyReport, FormatAccuracy, compare_runtimes  # noqa: E402


def train_crops(tiny_market: Path) -> Path:
    return tiny_market / "Market-1501" / "bounding_box_train"


@pytest.fixture(scope="module")
def bot_int8(tmp_path_factory, tiny_market) -> tuple[reid.ReidModel, Path]:
    tmp = tmp_path_factory.mktemp("int8")
    model = reid.load(write_checkpoint(tmp / "bot.pt", "bot"), flip=False)
    return model, quantize_int8(model, tmp / "bot_int8.onnx", train_crops(tiny_market), count=40)


def test_quantized_graph_keeps_metadata_and_stays_close(bot_int8):
    model, path = bot_int8
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    runner = OnnxReidModel(path)
    assert runner.names == ["global", "bnneck"] and runner.metadata["method"] == "bot"
    q = runner.metadata["quantization"]
    assert q["calib_images"] == 40 and q["calibration"] == "minmax" and q["calib_folder"].endswith("bounding_box_train")
    h, w = model.input_size
    report = parity(model, runner, torch.randn(4, 3, h, w, generator=torch.Generator().manual_seed(0)))
    assert 0 < report.max_abs_diff["bnneck"] < 0.1  # quantized: not exact, but the same embedding


def test_calibration_sample_is_seeded_and_capped(tiny_market):
    a, b = calibration_images(train_crops(tiny_market), 10), calibration_images(train_crops(tiny_market), 10)
    assert a == b and len(a) == 10 and len(calibration_images(train_crops(tiny_market), 10_000)) == 64
    with pytest.raises(DatasetError, match="--calib .*not a folder"):
        calibration_images(tiny_market / "absent")


def test_accuracy_report_of_int8_and_the_verdict(bot_int8, tiny_market):
    model, path = bot_int8
    report = compare_runtimes(model, {"ONNX INT8": OnnxReidModel(path)}, "market1501", str(tiny_market))
    torch_row, int8_row = report.rows
    assert int8_row.reference == "PyTorch" and 0.0 <= int8_row.top1_changed <= 1.0
    assert int8_row.ok == (int8_row.map_drop <= 1.0)
    lossy = AccuracyReport("d", 1, 1, [FormatAccuracy("PyTorch", 0.5, 0.50, "PyTorch", 0.50, 0.0),
                                       FormatAccuracy("ONNX INT8", 0.5, 0.485, "PyTorch", 0.50, 0.25)])
    assert lossy.rows[1].map_drop == pytest.approx(1.5) and not lossy.rows[1].ok
    assert "-1.50 vs PyTorch" in lossy.table() and "not recommended" in lossy.table() and "25.0%" in lossy.table()


def test_cli_int8_with_accuracy_check_records_the_verdict(tmp_path, tiny_market, capsys):
    from tests.test_extract import run_cli

    ckpt = write_checkpoint(tmp_path / "bot.pt", "bot")
    out = tmp_path / "q.onnx"
    with pytest.raises(ConfigError, match="--calib"):
        run_cli(["export", "onnx", "--int8", "--checkpoint", str(ckpt), "--out", str(out)])
    status = run_cli(["export", "onnx", "--int8", "--calib", str(train_crops(tiny_market)), "--calib-images", "32",
                      "--checkpoint", str(ckpt), "--out", str(out), "--parity-images", "2",
                      "--check-dataset", "market1501", "--root", str(tiny_market)])
    text = capsys.readouterr().out
    check = OnnxReidModel(out).metadata["accuracy_check"]
    assert "ONNX INT8" in text and "| PyTorch |" in text and check["dataset"] == "market1501"
    assert status == (0 if check["recommended"] else 1)
    assert ("not recommended" in text) == (not check["recommended"])
    assert np.isfinite(check["mAP"]) and check["reference"] == "PyTorch"
