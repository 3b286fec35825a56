"""The interface every backbone implements: a feature map, its stages, and pretrained loading."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from occreid.errors import CheckpointError
from occreid.models.backbones.pretrained import PACKAGED, LoadReport, PackagedWeights, copy_state, read_state_dict


class Backbone(nn.Module):
    """A convolutional trunk mapping images [B, 3, H, W] to a feature map [B, out_channels, H/s, W/s].

    Subclasses set `out_channels`, `stride` (output stride s), `stage_channels` (channels of each
    map returned by `forward_stages`) and `ignored_prefixes` (top-level modules of the official
    ImageNet checkpoint that the backbone does not use, such as the classifier).
    `forward_stages(x)[-1]` is the same tensor as `forward(x)`.

    A sequential trunk implements `forward_stem` and `stage_modules` (four modules sharing the trunk's
    parameters): methods that tap a stage (SGSFA after stage 1) or copy one (PAN's buffer layers) use
    them, whatever the backbone. A multi-branch trunk (HRNet) overrides `forward_stages` instead.
    `packaged_weights` names an ImageNet file that a registry package ships (`pretrained_path=imagenet`).
    """

    out_channels: int
    stride: int
    stage_channels: tuple[int, ...]
    ignored_prefixes: tuple[str, ...] = ()
    packaged_weights: PackagedWeights | None = None

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} is not a sequential trunk of stem + stages")

    def stage_modules(self) -> list[nn.Module]:
        raise NotImplementedError(f"{type(self).__name__} is not a sequential trunk of stem + stages")

    @property
    def sequential(self) -> bool:
        """True when the trunk is stem -> stage 1 -> ... -> stage 4 (`stage_modules` is implemented)."""
        return type(self).stage_modules is not Backbone.stage_modules

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.forward_stem(x)
        stages = []
        for stage in self.stage_modules():
            x = stage(x)
            stages.append(x)
        return stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[-1]

    def translate_state(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map another release's key names onto this module's (identity unless a backbone has two layouts)."""
        return dict(state)

    def resolve_pretrained(self, path: str | Path) -> Path:
        """`imagenet` -> the packaged file of this backbone (checked by sha256); any other value is a path."""
        if str(path) != PACKAGED:
            return Path(path)
        if self.packaged_weights is None:
            raise CheckpointError(
                f"model.pretrained_path=imagenet: no ImageNet file ships in a package for "
                f"{type(self).__name__}; give the path of your own ImageNet checkpoint, or use "
                "model.backbone=mobilenetv2_x1_0"
            )
        return self.packaged_weights.path()

    def load_pretrained(self, path: str | Path, strict: bool = False) -> LoadReport:
        """Load an ImageNet checkpoint (a path, or `imagenet` for the packaged file); log and return the report."""
        resolved = self.resolve_pretrained(path)
        state = self.translate_state(read_state_dict(resolved))
        source = str(resolved)
        if str(path) == PACKAGED and self.packaged_weights is not None:
            source = f"imagenet = {self.packaged_weights.description} ({resolved})"
        return copy_state(self, state, source, self.ignored_prefixes, strict=strict)
