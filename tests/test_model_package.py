"""Model packages (`occreid export package`): safetensors weights, no pickle anywhere, no training state; the
round trip package -> `occreid.api.load` gives identical embeddings; metrics, model card and `occreid eval`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import occreid.api as reid
from occreid.errors import CheckpointError, ConfigError
from tests.test_api import write_checkpoint

st = pytest.importorskip("safetensors.torch", reason="model packages need safetensors (occreid[package])")

from occreid.inference.model_package import write_package  # noqa: E402

PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05", b"PK\x03\x04")  # pickle; torch.save's zip


def with_training_state(path: Path) -> Path:
    """A checkpoint that also holds optimiser and RNG state, as the Trainer writes."""
    import torch

    ckpt = torch.load(path, weights_only=True)
    ckpt["optimizer"] = {"state": {0: {"exp_avg": torch.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    ckpt["loss"] = {"center.centers": torch.zeros(4, 8)}
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("method", ["bot", "pabreid"])
def test_round_trip_gives_identical_embeddings(method, tmp_path):
    ckpt = with_training_state(write_checkpoint(tmp_path / "run" / "last.pt", method))
    pkg = write_package(tmp_path / "run", tmp_path / "pkg")
    images = [np.random.default_rng(i).integers(0, 256, (50, 24, 3), dtype=np.uint8) for i in range(4)]
    a, b = reid.load(ckpt).embed(images), reid.load(pkg).embed(images)
    assert a.arrays.keys() == b.arrays.keys()
    for k in a.arrays:
        assert np.array_equal(a.arrays[k], b.arrays[k])
    assert (a.visibility is None) == (b.visibility is None)
    if a.visibility is not None:
        assert np.array_equal(a.visibility, b.visibility)
    assert (a.method, a.config_hash) == (b.method, b.config_hash)
    assert reid.load(pkg).identity["checkpoint_sha256"] == reid.load(ckpt).identity["checkpoint_sha256"]


def test_package_holds_no_pickle_and_no_training_state(tmp_path):
    import torch

    ckpt = with_training_state(write_checkpoint(tmp_path / "m.pt", "bot"))
    pkg = write_package(ckpt, tmp_path / "pkg")
    files = sorted(p for p in pkg.rglob("*") if p.is_file())
    assert {p.name for p in files} >= {"package.json", "model.safetensors", "config.json", "README.md"}
    assert not [p for p in files if p.suffix in (".pt", ".pth", ".pkl", ".pickle", ".bin", ".ckpt")]
    for p in files:
        assert not p.read_bytes().startswith(PICKLE_MAGIC), p
    weights = st.load_file(str(pkg / "model.safetensors"))
    assert set(weights) == set(torch.load(ckpt, weights_only=True)["model"])  # the model only
    text = " ".join(p.read_text() for p in files if p.suffix in (".json", ".md"))
    assert "exp_avg" not in text and "param_groups" not in text and "center.centers" not in text
    manifest = json.loads((pkg / "package.json").read_text())
    assert manifest["format"] == "occreid-model-package" and manifest["num_classes"] == 4
    assert sorted(manifest["files"]) == sorted(str(p.relative_to(pkg)) for p in files)


def test_metrics_and_model_card(tmp_path):
    ckpt = write_checkpoint(tmp_path / "run" / "last.pt", "bot")
    mine = {"dataset": "occluded_duke", "protocol": "occluded_duke (Market rule)", "rank1": 0.6, "rank5": 0.75,
            "mAP": 0.5, "mINP": 0.2, "rerank": False, "flip": False, "checkpoint_path": str(ckpt.resolve())}
    other = {**mine, "rank1": 0.1, "checkpoint_path": str((tmp_path / "run" / "best.pt").resolve())}
    for name, m in (("occluded_duke", mine), ("occluded_duke-best", other)):
        (tmp_path / "run" / "eval" / name).mkdir(parents=True)
        (tmp_path / "run" / "eval" / name / "metrics.json").write_text(json.dumps(m))
    pkg = write_package(ckpt, tmp_path / "pkg")
    assert [p.name for p in (pkg / "metrics").iterdir()] == ["occluded_duke.json"]
    card = (pkg / "README.md").read_text()
    assert "BoT" in card and "resnet18" in card and "synthetic" in card and "| occluded_duke |" in card
    assert "| 60.0 | 75.0 | 50.0 | 20.0 |" in card and "Backbone and pretraining" in card


def test_refusals_and_damage(tmp_path):
    ckpt = write_checkpoint(tmp_path / "m.pt", "bot")
    pkg = write_package(ckpt, tmp_path / "pkg")
    with pytest.raises(ConfigError, match="exists"):
        write_package(ckpt, pkg)
    with pytest.raises(ConfigError, match="already a model package"):
        write_package(pkg, tmp_path / "again")
    data = bytearray((pkg / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (pkg / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="damaged"):
        reid.load(pkg)
    assert not list(tmp_path.glob(".pkg.tmp*"))


def test_cli_package_then_eval_gives_the_checkpoints_metrics(tmp_path, tiny_market, capsys):
    from occreid.engine.evaluate import evaluate_checkpoint
    from tests.test_extract import run_cli

    ckpt = write_checkpoint(tmp_path / "run" / "last.pt", "bot")
    assert run_cli(["export", "package", "--checkpoint", str(ckpt), "--out", str(tmp_path / "pkg")]) == 0
    assert "model package ->" in capsys.readouterr().out
    kwargs = {"dataset": "market1501", "root": str(tiny_market), "progress": False, "overrides": ["data.workers=0"]}
    (want,) = evaluate_checkpoint(str(ckpt), **kwargs)
    (got,) = evaluate_checkpoint(str(tmp_path / "pkg"), **kwargs)
    assert (got["rank1"], got["mAP"]) == (want["rank1"], want["mAP"])
    assert Path(got["report_dir"]).is_relative_to(tmp_path / "pkg" / "eval")
