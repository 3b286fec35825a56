"""HRNet-W32 (Wang et al. 2020) fused to one stride-4 map of 1,920 channels, as used by AMD-Net and BPBReID.

The four branches (32/64/128/256 channels at strides 4/8/16/32) each go through the classification
model's `incre_modules` bottleneck (to 128/256/512/1,024 channels), are upsampled bilinearly to
stride 4 and concatenated: 128 + 256 + 512 + 1,024 = 1,920 channels. With `incre=False` the raw
branches are concatenated instead (480 channels).

Attribute names follow HRNet-Image-Classification's `cls_hrnet.py` (conv1, bn1, conv2, bn2, layer1,
transition1..3, stage2..4.<module>.branches / fuse_layers, incre_modules); timm's `hrnet_w32` uses
the same names for all of these, so both `hrnetv2_w32_imagenet_pretrained.pth` and timm's weights
load unchanged. The ImageNet head (downsamp_modules, final_layer, classifier) is ignored.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from occreid.models.backbones.base import Backbone
from occreid.models.backbones.resnet import BasicBlock, Bottleneck
from occreid.models.initialisation import he_fan_out_init

W32_CHANNELS = (32, 64, 128, 256)
HEAD_PLANES = (32, 64, 128, 256)
"""Bottleneck widths of the incre_modules; times expansion 4 gives 128/256/512/1,024 channels."""


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int, relu: bool) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class HighResolutionModule(nn.Module):
    """One exchange unit: 4 residual blocks per branch, then every branch receives the sum of all
    branches resampled to its resolution (1x1 conv + nearest upsampling from lower resolutions,
    chains of stride-2 3x3 convs from higher ones)."""

    def __init__(self, channels: tuple[int, ...], depth: int = 4):
        super().__init__()
        n = len(channels)
        self.branches = nn.ModuleList(nn.Sequential(*(BasicBlock(c, c) for _ in range(depth))) for c in channels)
        fuse_layers = []
        for i in range(n):
            row: list[nn.Module] = []
            for j in range(n):
                if j > i:
                    row.append(_conv_bn(channels[j], channels[i], 1, 1, relu=False))
                elif j == i:
                    row.append(nn.Identity())
                else:
                    steps = [_conv_bn(channels[j], channels[j], 3, 2, relu=True) for _ in range(i - j - 1)]
                    steps.append(_conv_bn(channels[j], channels[i], 3, 2, relu=False))
                    row.append(nn.Sequential(*steps))
            fuse_layers.append(nn.ModuleList(row))
        self.fuse_layers = nn.ModuleList(fuse_layers)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        fused = []
        for i, row in enumerate(self.fuse_layers):
            total = xs[i]
            for j, layer in enumerate(row):
                if j == i:
                    continue
                y = layer(xs[j])
                total = add_nearest_upsampled(total, y) if j > i else total + y
            fused.append(F.relu(total))
        return fused


def add_nearest_upsampled(total: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """total + y upsampled (nearest) to total's size, as HRNet fuses a lower-resolution branch.

    When total's size is a whole multiple f of y's (always, for inputs whose sides divide by 32), y is
    added broadcast over f x f blocks: the same values as `F.interpolate(y, mode="nearest")` then `+`,
    in one kernel and without writing the upsampled map to memory. Other sizes take that slower path."""
    b, c, h, w = total.shape
    yh, yw = y.shape[-2:]
    if h % yh or w % yw:
        return total + F.interpolate(y, size=(h, w), mode="nearest")
    fh, fw = h // yh, w // yw
    return (total.view(b, c, yh, fh, yw, fw) + y.view(b, c, yh, 1, yw, 1)).reshape(b, c, h, w)


def _transition(previous: tuple[int, ...], current: tuple[int, ...]) -> nn.ModuleList:
    """Adapt each kept branch (3x3 conv if its width changes) and spawn new branches from the lowest one."""
    layers: list[nn.Module] = []
    for i, c in enumerate(current):
        if i < len(previous):
            same = previous[i] == c
            layers.append(nn.Identity() if same else _conv_bn(previous[i], c, 3, 1, relu=True))
        else:
            extra = i + 1 - len(previous)
            steps = [
                _conv_bn(previous[-1], c if k == extra - 1 else previous[-1], 3, 2, relu=True) for k in range(extra)
            ]
            layers.append(nn.Sequential(*steps))
    return nn.ModuleList(layers)


class HRNet(Backbone):
    """HRNet-W32 trunk: stem (stride 4), layer1, stages 2-4 with 1/4/3 exchange units, fused output."""

    def __init__(self, incre: bool = True):
        super().__init__()
        c = W32_CHANNELS
        self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(*(Bottleneck(64 if k == 0 else 256, 64) for k in range(4)))
        self.transition1 = _transition((256,), c[:2])
        self.stage2 = nn.ModuleList(HighResolutionModule(c[:2]) for _ in range(1))
        self.transition2 = _transition(c[:2], c[:3])
        self.stage3 = nn.ModuleList(HighResolutionModule(c[:3]) for _ in range(4))
        self.transition3 = _transition(c[:3], c)
        self.stage4 = nn.ModuleList(HighResolutionModule(c) for _ in range(3))
        self.incre = incre
        if incre:
            self.incre_modules = nn.ModuleList(
                nn.Sequential(Bottleneck(ch, planes)) for ch, planes in zip(c, HEAD_PLANES)
            )
            self.stage_channels = tuple(p * Bottleneck.expansion for p in HEAD_PLANES)
            self.ignored_prefixes = ("downsamp_modules", "final_layer", "classifier")
        else:
            self.stage_channels = c
            self.ignored_prefixes = ("incre_modules", "downsamp_modules", "final_layer", "classifier")
        self.out_channels = sum(self.stage_channels)
        self.stage_channels = (*self.stage_channels, self.out_channels)
        self.stride = 4
        he_fan_out_init(self)

    @staticmethod
    def _run(stage: nn.ModuleList, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        for module in stage:
            xs = module(xs)
        return xs

    @staticmethod
    def _branch_inputs(transition: nn.ModuleList, ys: list[torch.Tensor]) -> list[torch.Tensor]:
        return [t(ys[i]) if i < len(ys) else t(ys[-1]) for i, t in enumerate(transition)]

    def forward_branches(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four branch maps at strides 4/8/16/32 (after the incre bottlenecks when enabled)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        x = self.layer1(x)
        ys = self._run(self.stage2, [t(x) for t in self.transition1])
        ys = self._run(self.stage3, self._branch_inputs(self.transition2, ys))
        ys = self._run(self.stage4, self._branch_inputs(self.transition3, ys))
        if self.incre:
            ys = [m(y) for m, y in zip(self.incre_modules, ys)]
        return ys

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four branch maps followed by their fusion at stride 4 (the `forward` output)."""
        branches = self.forward_branches(x)
        size = branches[0].shape[-2:]
        upsampled = [branches[0]] + [
            F.interpolate(b, size=size, mode="bilinear", align_corners=False) for b in branches[1:]
        ]
        return [*branches, torch.cat(upsampled, dim=1)]


def hrnet_w32(incre: bool = True) -> HRNet:
    """HRNet-W32 fused at stride 4: 1,920 channels (incre bottlenecks) or 480 (raw branches)."""
    return HRNet(incre=incre)
