"""He fan-out initialisation, shared by the backbones built from scratch and by method layers whose
reference code uses it (AMD-Net's TFF)."""

from __future__ import annotations

from torch import nn


def he_fan_out_init(module: nn.Module) -> None:
    """He normal, fan-out mode (gain sqrt 2) for every convolution in `module`, biases zero; unit scale
    and zero shift for its BatchNorm / InstanceNorm layers (as torchvision's ResNet and MobileNetV2)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.InstanceNorm2d) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
