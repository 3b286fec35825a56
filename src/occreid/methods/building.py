"""Construction steps every method shares (the backbone from the config)."""

from __future__ import annotations

from torch import nn

from occreid.config import Config


def make_backbone(cfg: Config) -> nn.Module:
    """The configured backbone; ResNets take `model.last_stride`, other options come from
    `model.backbone_options`."""
    from occreid.models.backbones import backbone_options, build_backbone

    opts = dict(cfg.model.backbone_options)
    if "last_stride" in backbone_options(cfg.model.backbone):
        opts.setdefault("last_stride", cfg.model.last_stride)
    return build_backbone(cfg.model.backbone, **opts)
