"""`occreid eval` phase timing (metrics.json `timing`) and `--runtime onnx` for eval and extract."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from occreid.cli.main import main
from occreid.engine.phase_timer import PhaseTimer, shares_table
from occreid.errors import ConfigError


def test_phase_timer_sums_repeats_and_tabulates():
    timer = PhaseTimer()
    for _ in range(2):
        with timer.phase("forward"):
            pass
    timer.add("data", 1.0)
    timer.add("forward", 3.0)
    d = timer.as_dict()
    assert list(d) == ["forward", "data", "total"] and d["total"] == pytest.approx(4.0, abs=1e-2)
    table = shares_table(d)
    assert "| data | 1.000 |" in table and "| total |" in table


def test_eval_records_phase_times_in_metrics_json(bot_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(bot_run, run)
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--rerank"]) == 0
    metrics = json.loads((run / "eval" / "market1501-rerank" / "metrics.json").read_text())
    timing = metrics["timing"]
    for phase in ("setup", "dataset", "data", "forward", "distance", "rerank", "metrics", "report", "pictures"):
        assert timing[phase] >= 0, phase
    assert timing["runtime"] == "torch"
    parts = sum(v for k, v in timing.items() if k not in ("total", "runtime"))
    assert timing["total"] == pytest.approx(parts, abs=0.01)


def test_eval_with_onnx_runtime_matches_torch(bot_run, tmp_path):
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    shutil.copytree(bot_run, run)
    torch_out, onnx_out = tmp_path / "t", tmp_path / "o"
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--out", str(torch_out)]) == 0
    assert main(["eval", "--checkpoint", str(run / "last.pt"), "--out", str(onnx_out), "--runtime", "onnx"]) == 0
    a = json.loads((torch_out / "market1501" / "metrics.json").read_text())
    b = json.loads((onnx_out / "market1501" / "metrics.json").read_text())
    assert b["timing"]["runtime"] == "onnx"
    assert a["mAP"] == pytest.approx(b["mAP"], abs=1e-4) and a["rank1"] == pytest.approx(b["rank1"], abs=1e-4)


def test_extract_with_onnx_runtime_matches_torch(bot_run, tiny_market, tmp_path):
    pytest.importorskip("onnxruntime")
    from occreid.inference.features_file import read_features

    images = tiny_market / "Market-1501" / "query"
    common = ["extract", "--checkpoint", str(bot_run / "last.pt"), "--images", str(images), "--workers", "0",
              "--no-progress", "--batch-size", "4"]
    assert main([*common, "--out", str(tmp_path / "t.feats")]) == 0
    assert main([*common, "--out", str(tmp_path / "o.feats"), "--runtime", "onnx", "--flip"]) == 0
    assert main([*common, "--out", str(tmp_path / "tf.feats"), "--flip"]) == 0
    a, b = read_features(tmp_path / "tf.feats"), read_features(tmp_path / "o.feats")
    assert a.paths == b.paths and a.identity == b.identity
    for k in a.arrays:
        np.testing.assert_allclose(np.asarray(a.arrays[k]), np.asarray(b.arrays[k]), atol=1e-4, rtol=1e-4)


def test_onnx_parity_failure_stops_the_run(bot_run):
    pytest.importorskip("onnxruntime")
    import occreid.api as reid
    from occreid.inference.onnx_features import OnnxFeatures

    model = reid.load(bot_run / "last.pt")
    features = OnnxFeatures(model)
    h, w = model.input_size
    with torch.no_grad():
        next(model.model.parameters()).mul_(2)  # the PyTorch model drifts from the exported graph
    with pytest.raises(ConfigError, match="disagrees with PyTorch"):
        features(torch.randn(2, 3, h, w))


def test_missing_export_extra_is_a_clear_error(monkeypatch):
    import builtins

    from occreid.inference.onnx_features import check_runtime

    real_import = builtins.__import__

    def no_onnx(name, *args, **kwargs):
        if name.split(".")[0] in ("onnx", "onnxruntime"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnx)
    with pytest.raises(ConfigError, match=r"occreid\[export\]"):
        check_runtime("onnx")
    with pytest.raises(ConfigError, match="unknown runtime"):
        check_runtime("tensorrt")
