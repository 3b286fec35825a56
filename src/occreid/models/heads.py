"""Classifier and embedding heads shared by the methods: BoT's BNNeck, a BN + FC classifier, a
projection head (Linear / 1x1 conv + BN + optional ReLU) and per-part linear maps / classifiers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

CLASSIFIER_INIT_STD = 0.001  # BoT: identity classifiers start near zero


def _init_classifier(linear: nn.Linear) -> None:
    nn.init.normal_(linear.weight, std=CLASSIFIER_INIT_STD)
    if linear.bias is not None:
        nn.init.zeros_(linear.bias)


def _init_bn(bn: nn.BatchNorm1d) -> None:
    nn.init.ones_(bn.weight)
    nn.init.zeros_(bn.bias)


def per_part_bn(bn: nn.BatchNorm1d, y: torch.Tensor) -> torch.Tensor:
    """A BatchNorm of P * D channels over [B, P, D]: each part's channels keep their own statistics."""
    b, p, d = y.shape
    return bn(y.reshape(b, p * d)).reshape(b, p, d)


class BNNeck(nn.Module):
    """BoT's BNNeck: feature -> BatchNorm1d (bias frozen at 0) -> bias-free Linear classifier.

    The triplet loss reads the feature before the BN, the ID loss the logits, and the test-time
    embedding is the BN output. Returns (bn_feature [B, D], logits [B, num_classes]).
    """

    def __init__(self, in_dim: int, num_classes: int, bias_free_bn: bool = True) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dim)
        _init_bn(self.bn)
        if bias_free_bn:
            self.bn.bias.requires_grad_(False)
        self.classifier = nn.Linear(in_dim, num_classes, bias=False)
        _init_classifier(self.classifier)

    def forward(self, feature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        bn_feature = self.bn(feature)
        return bn_feature, self.classifier(bn_feature)


class Classifier(nn.Module):
    """BN + FC identity classifier (SGSFA's SGA classifier, PCB's per-stripe classifiers).

    Input [B, D] -> logits [B, num_classes]. `bn=False` gives a plain linear classifier.
    """

    def __init__(self, in_dim: int, num_classes: int, bn: bool = True, bias: bool = False) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(in_dim) if bn else None
        if self.bn is not None:
            _init_bn(self.bn)
        self.fc = nn.Linear(in_dim, num_classes, bias=bias)
        _init_classifier(self.fc)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        if self.bn is not None:
            feature = self.bn(feature)
        return self.fc(feature)


class EmbeddingHead(nn.Module):
    """Projection in_dim -> out_dim with optional BN and ReLU, applied per vector.

    Accepts [B, C] (a linear layer), [B, P, C] (one shared layer over P parts, e.g. PAN's shared FC;
    BN statistics pooled over B and P, or per part channel with `bn_parts` = P) or [B, C, h, w] (the same
    weights as a 1x1 convolution).
    """

    def __init__(self, in_dim: int, out_dim: int, bn: bool = True, relu: bool = False,
                 bn_parts: int | None = None) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim, bias=not bn)
        nn.init.kaiming_normal_(self.fc.weight, a=0.0, mode="fan_out")
        if self.fc.bias is not None:
            nn.init.zeros_(self.fc.bias)
        self.bn = nn.BatchNorm1d(out_dim * (bn_parts or 1)) if bn else None
        if self.bn is not None:
            _init_bn(self.bn)
        self.relu = relu
        self.bn_parts = bn_parts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:
            y = self.fc(x)
            if self.bn is not None:
                y = self.bn(y)
        elif x.dim() == 3:
            y = self.fc(x)
            if self.bn is not None and self.bn_parts:
                if y.shape[1] != self.bn_parts:
                    raise ValueError(f"EmbeddingHead has a BatchNorm for {self.bn_parts} parts, got {y.shape[1]}")
                y = per_part_bn(self.bn, y)
            elif self.bn is not None:
                y = self.bn(y.transpose(1, 2)).transpose(1, 2)
        elif x.dim() == 4:
            y = F.conv2d(x, self.fc.weight[:, :, None, None], self.fc.bias)
            if self.bn is not None:
                b, d, h, w = y.shape
                y = self.bn(y.reshape(b, d, h * w)).reshape(b, d, h, w)
        else:
            raise ValueError(f"EmbeddingHead expects [B,C], [B,P,C] or [B,C,h,w], got shape {tuple(x.shape)}")
        return F.relu(y) if self.relu else y


class PartwiseLinear(nn.Module):
    """P independent linear maps applied to [B, P, C] -> [B, P, D] in one einsum (PAN Table 2's
    not-shared FCs, per-part classifiers); optional BatchNorm after the map, per part channel (P D
    channels) or, with `shared_bn`, one BatchNorm of D channels whose statistics pool the batch and the P
    parts (as `EmbeddingHead` on [B, P, C]).

    `classifier`: classifier initialisation (std CLASSIFIER_INIT_STD) and no bias; otherwise
    EmbeddingHead's initialisation per part, with a bias only when there is no BatchNorm.
    """

    def __init__(
        self, parts: int, in_dim: int, out_dim: int, bn: bool = True, classifier: bool = False,
        shared_bn: bool = False,
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(parts, out_dim, in_dim))
        if classifier:
            nn.init.normal_(self.weight, std=CLASSIFIER_INIT_STD)
        else:
            for w in self.weight.data:
                nn.init.kaiming_normal_(w, a=0.0, mode="fan_out")
        self.bias = None if (bn or classifier) else nn.Parameter(torch.zeros(parts, out_dim))
        self.shared_bn = shared_bn
        self.bn = nn.BatchNorm1d(out_dim if shared_bn else parts * out_dim) if bn else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("bpc,pdc->bpd", x, self.weight)
        if self.bias is not None:
            y = y + self.bias
        if self.bn is not None and self.shared_bn:
            y = self.bn(y.transpose(1, 2)).transpose(1, 2)
        elif self.bn is not None:
            y = per_part_bn(self.bn, y)
        return y


class PartClassifiers(nn.Module):
    """K independent BN + bias-free FC identity classifiers at once: [B, K, D] -> [B, K, classes].

    The BN normalises each of the K * D part channels (AMD-Net Table 2 "r/w ID loss").
    """

    def __init__(self, parts: int, dim: int, num_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(parts * dim)
        self.fc = PartwiseLinear(parts, dim, num_classes, bn=False, classifier=True)

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        b, k, d = parts.shape
        return self.fc(self.bn(parts.reshape(b, k * d)).view(b, k, d))
