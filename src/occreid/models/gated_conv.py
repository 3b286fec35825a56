"""Gated convolution (SPEC "gated convolution"; AMD-Net TFF Eq. 11's tau_gate, PAB-ReID Eq. 9):
a per-pixel sigmoid gate that amplifies foreground positions before a 1x1 convolution."""

from __future__ import annotations

import torch
from torch import nn


class GatedConv(nn.Module):
    """a = sigmoid(BN(1x1(ReLU(1x1(BN(x)))))) -> [B, 1, h, w]; out = 1x1conv(x * (1 + a)).

    The gate is one channel (per pixel, shared by all channels). Its hidden width is
    (channels + guide_channels) // reduction; reduction 1 is the Gated-SCNN layout the papers build
    on. `guide_channels` > 0 lets the gate also read a guidance map concatenated to x (the AMD-Net
    release does this); the gated features are x alone. Returns (out, a) so the gate can be drawn.
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

    def forward(
        self, x: torch.Tensor, guide: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if (guide is None) != (self.guide_channels == 0):
            raise ValueError(
                f"GatedConv built with guide_channels={self.guide_channels} but guide "
                f"{'missing' if guide is None else 'given'}"
            )
        gate_input = x if guide is None else torch.cat([x, guide], dim=1)
        a = torch.sigmoid(self.gate(gate_input))
        return self.out(x * (1.0 + a)), a
