"""OpenVINO IR export: fp32 parity with PyTorch (full and tracker graphs), metadata in rt_info, f32 inference
precision, size errors, the CLI, and the runtime accuracy check (R1 / mAP next to PyTorch, top-1 changes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import occreid.api as reid
from occreid.errors import ConfigError
from tests.test_api import write_checkpoint

pytest.importorskip("onnx", reason="OpenVINO export goes through ONNX: needs occreid[export]")
pytest.importorskip("onnxruntime", reason="OpenVINO export goes through ONNX: needs occreid[export]")
from occreid.inference.export_onnx import parity  # noqa: E402
from occreid.inference.export_openvino import OpenVinoReidModel, export_openvino, require_openvino  # noqa: E402

try:
    require_openvino()  # imports it with telemetry off, as occreid does
except ConfigError:
    pytest.skip("needs the optional openvino package (occreid[openvino])", allow_module_level=True)
from occreid.inference.runtime_accuracy import compare_runtimes  # noqa: E402


@pytest.fixture(scope="module")
def pab(tmp_path_factory) -> tuple[reid.ReidModel, Path]:
    tmp = tmp_path_factory.mktemp("ov")
    return reid.load(write_checkpoint(tmp / "pab.pt", "pabreid"), flip=False), tmp


def test_full_ir_parity_metadata_and_precision(pab):
    model, tmp = pab
    xml = export_openvino(model, tmp / "pab_openvino_model")
    assert xml == tmp / "pab_openvino_model" / "model.xml" and xml.with_suffix(".bin").is_file()
    runner = OpenVinoReidModel(xml.parent, threads=1)
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT").to_string() == "f32"
    assert runner.names == ["global", "foreground", "parts", "visibility"] and runner.input_name == "image"
    meta = runner.metadata
    assert meta["method"] == "pabreid" and meta["visibility_threshold"] == model.visibility_threshold
    h, w = model.input_size
    report = parity(model, runner, torch.randn(4, 3, h, w, generator=torch.Generator().manual_seed(1)))
    assert report.ok, report
    with pytest.raises(ConfigError, match=rf"\[B, 3, {h}, {w}\]"):
        runner.run(np.zeros((1, 3, h + 1, w), np.float32))


def test_tracker_ir_gives_the_unit_global_embedding(pab):
    model, tmp = pab
    runner = OpenVinoReidModel(export_openvino(model, tmp / "tracker.xml", tracker=True))
    assert runner.names == ["output"] and runner.input_name == "images"
    crops = [np.random.default_rng(i).integers(0, 256, (40, 20, 3), dtype=np.uint8) for i in range(3)]
    want = model.global_embedding(model.embed(crops))
    got = runner.run(torch.stack([model.to_tensor(c) for c in crops]))["output"]
    assert np.abs(got - want).max() <= 1e-4


def test_openvino_is_imported_without_its_telemetry():
    import sys

    assert sys.modules.get("openvino_telemetry") is None


def test_missing_ir_and_missing_metadata_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="occreid export openvino"):
        OpenVinoReidModel(tmp_path / "absent.xml")


def test_accuracy_check_lists_pytorch_and_each_runtime(pab, tiny_market):
    model, tmp = pab
    runners = {"OpenVINO fp32": OpenVinoReidModel(export_openvino(model, tmp / "acc.xml")),
               "OpenVINO tracker": OpenVinoReidModel(export_openvino(model, tmp / "acc_t.xml", tracker=True))}
    report = compare_runtimes(model, runners, "market1501", str(tiny_market))
    names = [r.name for r in report.rows]
    assert names == ["PyTorch", "OpenVINO fp32", "PyTorch foreground (cosine)", "OpenVINO tracker"]
    torch_row, ov_row, cos_row, tracker_row = report.rows
    assert ov_row.reference == "PyTorch" and tracker_row.reference == cos_row.name
    assert ov_row.mAP == pytest.approx(torch_row.mAP, abs=1e-6) and ov_row.top1_changed == 0.0 and ov_row.ok
    assert tracker_row.mAP == pytest.approx(cos_row.mAP, abs=1e-6) and tracker_row.top1_changed == 0.0
    table = report.table()
    assert "| PyTorch |" in table and "reference" in table and "| OK |" in table
    assert report.num_query == 4 and report.num_gallery == 32


def test_cli_openvino_export(tmp_path, capsys):
    from tests.test_extract import run_cli

    ckpt = write_checkpoint(tmp_path / "bot.pt", "bot")
    assert run_cli(["export", "openvino", "--checkpoint", str(ckpt), "--out", str(tmp_path / "bot.xml"),
                    "--parity-images", "2"]) == 0
    out = capsys.readouterr().out
    assert "OpenVINO fp32" in out and ": OK" in out and (tmp_path / "bot.bin").is_file()
