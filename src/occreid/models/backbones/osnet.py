"""OSNet (Zhou et al. 2019): omni-scale residual blocks of 1-4 stacked lite 3x3 convs, fused by a shared gate.

Attribute names follow torchreid's `osnet.py` (conv1.conv.weight, conv2.0.conv2a.conv1.weight,
conv2.2.0.conv.weight, gate.fc1.bias, ...) so that `osnet_*_imagenet.pth` loads unchanged; its
`fc` embedding layer and `classifier` are ignored (ReID heads bring their own).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from occreid.models.backbones.base import Backbone
from occreid.models.initialisation import he_fan_out_init


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm, optional ReLU (torchreid's ConvLayer / Conv1x1 / Conv1x1Linear)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class LiteConv3x3(nn.Module):
    """Pointwise 1x1 (linear) then depthwise 3x3, BatchNorm, ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False, groups=out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Unified aggregation gate: x * sigmoid(fc2(relu(fc1(GAP(x))))), 1x1 convs with bias, reduction 16."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = channels // reduction
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.fc2(self.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True))))
        return x * torch.sigmoid(g)


class OSBlock(nn.Module):
    """Bottleneck whose middle is four streams of 1..4 lite 3x3 convs, summed after one shared gate."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck_reduction: int = 4):
        super().__init__()
        mid = out_channels // bottleneck_reduction
        self.conv1 = ConvBN(in_channels, mid)
        self.conv2a = LiteConv3x3(mid, mid)
        self.conv2b = nn.Sequential(*(LiteConv3x3(mid, mid) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LiteConv3x3(mid, mid) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LiteConv3x3(mid, mid) for _ in range(4)))
        self.gate = ChannelGate(mid)
        self.conv3 = ConvBN(mid, out_channels, relu=False)
        self.downsample = ConvBN(in_channels, out_channels, relu=False) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.conv1(x)
        g = self.gate
        x2 = g(self.conv2a(x1)) + g(self.conv2b(x1)) + g(self.conv2c(x1)) + g(self.conv2d(x1))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(x2) + identity)


def _stage(in_channels: int, out_channels: int, depth: int, reduce: bool) -> nn.Sequential:
    blocks: list[nn.Module] = [OSBlock(in_channels, out_channels)]
    blocks += [OSBlock(out_channels, out_channels) for _ in range(1, depth)]
    if reduce:
        blocks.append(nn.Sequential(ConvBN(out_channels, out_channels), nn.AvgPool2d(2, stride=2)))
    return nn.Sequential(*blocks)


class OSNet(Backbone):
    """OSNet trunk (conv1, maxpool, conv2..conv5), output stride 16, without pooling or fc."""

    ignored_prefixes = ("fc", "classifier")

    def __init__(self, channels: tuple[int, int, int, int], depths: tuple[int, int, int] = (2, 2, 2)):
        super().__init__()
        self.conv1 = ConvBN(3, channels[0], kernel=7, stride=2)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = _stage(channels[0], channels[1], depths[0], reduce=True)
        self.conv3 = _stage(channels[1], channels[2], depths[1], reduce=True)
        self.conv4 = _stage(channels[2], channels[3], depths[2], reduce=False)
        self.conv5 = ConvBN(channels[3], channels[3])
        self.stage_channels = (channels[1], channels[2], channels[3], channels[3])
        self.out_channels = channels[3]
        self.stride = 16
        he_fan_out_init(self)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.conv1(x))

    def stage_modules(self) -> list[nn.Module]:
        """conv2 (stride 8), conv3 (16), conv4 (16) and conv5 (16)."""
        return [self.conv2, self.conv3, self.conv4, self.conv5]


def osnet_x1_0() -> OSNet:
    """OSNet x1.0: channels 64/256/384/512, 512 output channels."""
    return OSNet((64, 256, 384, 512))


def osnet_x0_25() -> OSNet:
    """OSNet x0.25: channels 16/64/96/128, 128 output channels."""
    return OSNet((16, 64, 96, 128))
