"""The interface every backbone implements: a feature map, its stages, and pretrained loading."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from occreid.models.backbones.pretrained import LoadReport, copy_state, read_state_dict


class Backbone(nn.Module):
    """A convolutional trunk mapping images [B, 3, H, W] to a feature map [B, out_channels, H/s, W/s].

    Subclasses set `out_channels`, `stride` (output stride s), `stage_channels` (channels of each
    map returned by `forward_stages`) and `ignored_prefixes` (top-level modules of the official
    ImageNet checkpoint that the backbone does not use, such as the classifier).
    `forward_stages(x)[-1]` is the same tensor as `forward(x)`.
    """

    out_channels: int
    stride: int
    stage_channels: tuple[int, ...]
    ignored_prefixes: tuple[str, ...] = ()

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def load_pretrained(self, path: str | Path, strict: bool = False) -> LoadReport:
        """Load an ImageNet checkpoint saved with the official key layout; log and return the report."""
        state = read_state_dict(path)
        return copy_state(self, state, str(path), self.ignored_prefixes, strict=strict)
