"""ResNet-18/34/50 (He et al. 2016, torchvision "v1.5": stride on the 3x3 conv) with a selectable last stride.

Attribute names follow torchvision (conv1, bn1, layer1.0.downsample.0, ...) so that the official
`resnet*-*.pth` files load unchanged; their `fc` head is ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from occreid.errors import ConfigError
from occreid.models.backbones.base import Backbone
from occreid.models.initialisation import he_fan_out_init

NormFactory = Callable[[int], nn.Module]


def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, norm1: NormFactory | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = (norm1 or nn.BatchNorm2d)(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(in_channels, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand by 4, with a shortcut; `norm1` replaces bn1 (IBN-a)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, norm1: NormFactory | None = None):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = (norm1 or nn.BatchNorm2d)(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(Backbone):
    """ResNet trunk without pooling or classifier: stem, then layer1..layer4 (strides 4, 8, 16, 16|32).

    `stem` is the torchvision stem (conv1, bn1, relu, maxpool) as one callable; `layer1..layer4` are
    attributes so methods can attach attention after a stage or deep-copy `layer4` (PAN).
    `first_norms[i]` optionally replaces bn1 in every block of layer i+1 (used by IBN-a).
    """

    ignored_prefixes = ("fc",)

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        depths: tuple[int, int, int, int],
        last_stride: int = 1,
        first_norms: tuple[NormFactory | None, ...] = (None, None, None, None),
    ):
        super().__init__()
        if last_stride not in (1, 2):
            raise ConfigError(f"model.backbone_options.last_stride must be 1 or 2, got {last_stride!r}")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        layers = []
        for i, (depth, stride) in enumerate(zip(depths, (1, 2, 2, last_stride))):
            planes = 64 * 2**i
            norm1 = first_norms[i]
            blocks = [block(in_channels, planes, stride, norm1)]
            in_channels = planes * block.expansion
            blocks += [block(in_channels, planes, 1, norm1) for _ in range(1, depth)]
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.stage_channels = tuple(64 * 2**i * block.expansion for i in range(4))
        self.out_channels = self.stage_channels[-1]
        self.stride = 16 * last_stride
        self.last_stride = last_stride
        he_fan_out_init(self)

    @property
    def stem(self) -> nn.Sequential:
        """conv1 -> bn1 -> relu -> maxpool (stride 4), sharing this model's modules."""
        return nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def stage_modules(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]


def resnet18(last_stride: int = 1) -> ResNet:
    """ResNet-18, 512 output channels."""
    return ResNet(BasicBlock, (2, 2, 2, 2), last_stride)


def resnet34(last_stride: int = 1) -> ResNet:
    """ResNet-34, 512 output channels."""
    return ResNet(BasicBlock, (3, 4, 6, 3), last_stride)


def resnet50(last_stride: int = 1) -> ResNet:
    """ResNet-50, 2048 output channels; last_stride 1 (ReID default, stride 16) or 2 (ImageNet, 32)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), last_stride)
