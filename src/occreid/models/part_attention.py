"""Part and body attention: pixel-level predictors of K part maps (+ background), the foreground map and
per-part visibility (PAB-ReID Eq. 1-2 and 5; AMD-Net Eq. 1, Eq. 5 and the quality score), and SGSFA's
sigmoid attentions (the whole-body attention of Fig. 3, the masked part embeddings of Fig. 4)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3x3_bn_relu(widths: list[int]) -> nn.Sequential:
    """(3x3 conv, BN, ReLU) from widths[i] to widths[i + 1] channels for each step (empty for one width)."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [
            nn.Conv2d(a, b, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(b),
            nn.ReLU(inplace=True),
        ]
    return nn.Sequential(*layers)


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
        self.body = conv3x3_bn_relu([in_channels] + [mid_channels] * num_layers)
        self.num_parts = num_parts
        self.background = background
        width = mid_channels if num_layers else in_channels
        self.classifier = nn.Conv2d(width, num_parts + int(background), kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.classifier(self.body(x))
        return logits, logits.softmax(dim=1)


class Eq2PixelPredictor(nn.Module):
    """PAB-ReID Eq. 1-2 as written: (3x3 conv, BN, ReLU) x num_layers, the last one to X + 1 channels,
    then the softmax. Returns (logits = the last ReLU's output, so all >= 0, probs)."""

    def __init__(self, in_channels: int, num_parts: int, mid_channels: int, num_layers: int = 2) -> None:
        super().__init__()
        if num_parts < 1 or num_layers < 1:
            raise ValueError(
                f"Eq2PixelPredictor: need num_parts >= 1 and num_layers >= 1, got {num_parts}, {num_layers}"
            )
        self.body = conv3x3_bn_relu([in_channels] + [mid_channels] * (num_layers - 1) + [num_parts + 1])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.body(x)
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


class WholeBodyAttention(nn.Module):
    """SGSFA Fig. 3: spatial attention 1x1(C -> C/r), BN, ReLU, 1x1(C/r -> 1) and channel attention GAP,
    FC(C -> C/r), ReLU, FC(C/r -> C), sigmoid, both read from x (decision: in parallel);
    out = x * sigmoid(s) * c.

    Returns (out, spatial logits [B, 1, h, w]); the sigmoid of the logits is M'_s of Eq. 8."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.spatial = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )
        self.channel = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.spatial(x)
        channel = torch.sigmoid(self.channel(x.mean(dim=(2, 3))))
        return x * torch.sigmoid(logits) * channel[:, :, None, None], logits


class PartAttention(nn.Module):
    """SGSFA Fig. 4: a shared first conv (1x1 C -> C/r, BN, ReLU), one 1x1 conv per part to its mask
    logit, then per part: mask * stage-4 map -> 1x1 conv to `dim` + BN + ReLU -> global average pooling.

    The K convolutions run as one conv to K * dim channels multiplied by the masks afterwards: a
    bias-free 1x1 conv commutes with a per-pixel scalar, so W(m * x) = m * (W x) exactly.
    Returns (vectors [B, K, dim], mask logits [B, K, h, w])."""

    def __init__(self, channels: int, num_parts: int, dim: int = 256, reduction: int = 2) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.num_parts, self.dim = num_parts, dim
        self.shared = nn.Sequential(
            nn.Conv2d(channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)
        )
        self.masks = nn.Conv2d(hidden, num_parts, 1)
        self.embed = nn.Conv2d(channels, num_parts * dim, 1, bias=False)
        nn.init.kaiming_normal_(self.embed.weight, mode="fan_out", nonlinearity="relu")
        self.bn = nn.BatchNorm2d(num_parts * dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, _, h, w = x.shape
        logits = self.masks(self.shared(x))
        y = self.embed(x).view(b, self.num_parts, self.dim, h, w) * torch.sigmoid(logits).unsqueeze(2)
        y = F.relu(self.bn(y.view(b, self.num_parts * self.dim, h, w)))
        return y.mean(dim=(2, 3)).view(b, self.num_parts, self.dim), logits
