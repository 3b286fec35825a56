"""Pixel-level part attention: a small conv predictor of K part maps (+ background), the foreground
map and per-part visibility (PAB-ReID Eq. 1-2 and 5; AMD-Net Eq. 1, Eq. 5 and the quality score)."""

from __future__ import annotations

import torch
from torch import nn


class PixelPartPredictor(nn.Module):
    """num_layers x (3x3 conv, BN, ReLU), then a 1x1 conv to K (+1 background, channel 0) logits.

    forward returns (logits [B, K+1, h, w], probs = softmax over channels). PAB-ReID uses two layers
    and K = 6; AMD-Net's Eq. 1 is num_layers = 0 (a single 1x1 conv) with K = 5. Decision: the final
    1x1 conv replaces PAB Eq. 2's ReLU-before-softmax, which would clamp every logit at >= 0.
    """

    def __init__(
        self,
        in_channels: int,
        num_parts: int,
        mid_channels: int = 256,
        num_layers: int = 2,
        background: bool = True,
    ) -> None:
        super().__init__()
        if num_parts < 1 or num_layers < 0:
            raise ValueError(
                f"PixelPartPredictor: need num_parts >= 1 and num_layers >= 0, got {num_parts}, {num_layers}"
            )
        layers: list[nn.Module] = []
        width = in_channels
        for _ in range(num_layers):
            layers += [
                nn.Conv2d(width, mid_channels, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(mid_channels),
                nn.ReLU(inplace=True),
            ]
            width = mid_channels
        self.body = nn.Sequential(*layers)
        self.num_parts = num_parts
        self.background = background
        self.classifier = nn.Conv2d(width, num_parts + int(background), kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(self.body(x))
        return logits, logits.softmax(dim=1)


def part_maps(probs: torch.Tensor, has_background: bool = True) -> torch.Tensor:
    """The K part channels of [B, K(+1), h, w] probabilities (drops background channel 0)."""
    return probs[:, 1:] if has_background else probs


def foreground_map(probs: torch.Tensor, has_background: bool = True) -> torch.Tensor:
    """Foreground attention [B, 1, h, w] = max over the part channels (AMD-Net Eq. 5's p_t)."""
    return part_maps(probs, has_background).amax(dim=1, keepdim=True)


def part_visibility(
    probs: torch.Tensor, threshold: float, has_background: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-part scores [B, K] = max over pixels of each part map, and visible = scores > threshold.

    AMD-Net's quality score uses gamma = 0.4, PAB-ReID Eq. 5 mu = 0.5 (strict inequality in both).
    """
    scores = part_maps(probs, has_background).amax(dim=(2, 3))
    return scores, scores > threshold
