"""ResNet-50-IBN-a (Pan et al. 2018): bn1 of every block in layer1..layer3 is half InstanceNorm, half BatchNorm.

Key names follow the IBN-Net release (`layer1.0.bn1.IN.weight`, `layer1.0.bn1.BN.running_mean`), so
`resnet50_ibn_a-*.pth` loads unchanged; layer4 and the stem keep plain BatchNorm as in IBN-a.
"""

from __future__ import annotations

import torch
from torch import nn

from occreid.models.backbones.resnet import Bottleneck, ResNet


class IBN(nn.Module):
    """Instance-Batch Normalisation: the first `ratio` of the channels through affine InstanceNorm,
    the rest through BatchNorm, concatenated back in the same order."""

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        self.half = int(channels * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.IN(x[:, : self.half]), self.BN(x[:, self.half :])], dim=1)


def resnet50_ibn_a(last_stride: int = 1) -> ResNet:
    """ResNet-50-IBN-a, 2048 output channels."""
    return ResNet(Bottleneck, (3, 4, 6, 3), last_stride, first_norms=(IBN, IBN, IBN, None))
