"""Backbones in plain PyTorch that load the official ImageNet checkpoints (SPEC section 4).

`build_backbone(name, **options)` returns a `Backbone`: `forward(x)` gives the feature map,
`forward_stages(x)` the per-stage maps, `load_pretrained(path)` loads a local weight file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from occreid.errors import ConfigError
from occreid.models.backbones.base import Backbone
from occreid.models.backbones.hrnet import HRNet, hrnet_w32
from occreid.models.backbones.mobilenetv2 import MobileNetV2, mobilenetv2_x1_0
from occreid.models.backbones.osnet import OSNet, osnet_x0_25, osnet_x1_0
from occreid.models.backbones.pretrained import LoadReport, read_state_dict
from occreid.models.backbones.resnet import ResNet, resnet18, resnet34, resnet50
from occreid.models.backbones.resnet_ibn import resnet50_ibn_a

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet50_ibn_a": resnet50_ibn_a,
    "osnet_x1_0": osnet_x1_0,
    "osnet_x0_25": osnet_x0_25,
    "hrnet_w32": hrnet_w32,
    "mobilenetv2_x1_0": mobilenetv2_x1_0,
}


def backbone_options(name: str) -> dict[str, Any]:
    """The options a backbone accepts, with their defaults."""
    builder = _builder(name)
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()}


def build_backbone(name: str, **options: Any) -> Backbone:
    """Build backbone `name` with `options` (e.g. last_stride=1 for ResNets and MobileNetV2); randomly initialised."""
    accepted = backbone_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        listed = ", ".join(f"{k} (default {v!r})" for k, v in accepted.items()) or "none"
        raise ConfigError(
            f"unknown option(s) {unknown} for backbone {name!r} in model.backbone_options; it accepts: {listed}"
        )
    return _builder(name)(**options)


def _builder(name: str) -> Callable[..., Backbone]:
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r} (model.backbone); choose one of: {', '.join(BACKBONES)}")
    return BACKBONES[name]


__all__ = [
    "BACKBONES",
    "Backbone",
    "HRNet",
    "LoadReport",
    "MobileNetV2",
    "OSNet",
    "ResNet",
    "backbone_options",
    "build_backbone",
    "read_state_dict",
]
