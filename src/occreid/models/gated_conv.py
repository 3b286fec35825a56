"""Gated convolution (SPEC "gated convolution"; AMD-Net TFF Eq. 11's tau_gate, PAB-ReID Eq. 9):
a per-pixel sigmoid gate that amplifies foreground positions before a 1x1 convolution."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GatedConv(nn.Module):
    """a = sigmoid(BN(1x1(ReLU(1x1(BN(x)))))) -> [B, 1, h, w]; out = 1x1conv(x * (1 + a)).

    The gate is one channel (per pixel, shared by all channels). Its hidden width is
    (channels + guide_channels) // reduction; reduction 1 is the Gated-SCNN layout the papers build
    on. `guide_channels` > 0 lets the gate also read a guidance map concatenated to x (the AMD-Net
    release does this); the gated features are x alone. Returns (out, a) so the gate can be drawn;
    `gated` (or forward with project=False) stops before the output conv, and `project` applies it to
    pooled vectors.
    """

    def __init__(
        self,
        channels: int,
        reduction: int = 1,
        out_channels: int | None = None,
        guide_channels: int = 0,
    ) -> None:
        super().__init__()
        if reduction < 1:
            raise ValueError(f"GatedConv: reduction must be >= 1, got {reduction}")
        gate_in = channels + guide_channels
        hidden = max(1, gate_in // reduction)
        self.guide_channels = guide_channels
        self.gate = nn.Sequential(
            nn.BatchNorm2d(gate_in),
            nn.Conv2d(gate_in, hidden, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, kernel_size=1, bias=False),  # a BatchNorm follows: a bias would be dead
            nn.BatchNorm2d(1),
        )
        self.out = nn.Conv2d(channels, out_channels or channels, kernel_size=1, bias=False)

    def gated(
        self, x: torch.Tensor, guide: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The gated features before the output conv, (x * (1 + a), a).

        `out` is a bias-free 1x1 conv, so it commutes with any weighted sum over positions: a method that
        pools the gated map can pool first and apply `project` to the pooled vectors (h w times fewer MACs).
        """
        if (guide is None) != (self.guide_channels == 0):
            raise ValueError(
                f"GatedConv built with guide_channels={self.guide_channels} but guide "
                f"{'missing' if guide is None else 'given'}"
            )
        gate_input = x if guide is None else torch.cat([x, guide], dim=1)
        a = torch.sigmoid(self.gate(gate_input))
        return x * (1.0 + a), a

    def project(self, v: torch.Tensor) -> torch.Tensor:
        """The output 1x1 conv applied to vectors [..., channels] -> [..., out_channels]."""
        return F.linear(v, self.out.weight.flatten(1))

    def forward(
        self, x: torch.Tensor, guide: torch.Tensor | None = None, project: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(out, a); with project=False `gated`'s (x * (1 + a), a), called as the module so that
        complexity profiles attribute it to this module."""
        gated, a = self.gated(x, guide)
        return (self.out(gated) if project else gated), a
