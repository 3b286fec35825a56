"""BoT, the BNNeck strong baseline (Luo et al. 2019): backbone -> GAP -> BNNeck; CE-LS on the BN
feature's logits, batch-hard triplet + centre loss on the pooled feature; the BN feature at test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from occreid.config import Config
from occreid.losses.recipes import IdTripletCenterLoss
from occreid.methods.building import make_backbone
from occreid.models.heads import BNNeck
from occreid.models.output import ModelOutput
from occreid.models.pooling import gem_pool, global_avg_pool, global_max_pool


@dataclass
class Options:
    ce_epsilon: float = 0.1
    triplet_margin: float | None = 0.3
    center_weight: float = 5e-4
    center_lr: float = 0.5
    pooling: Literal["avg", "max", "gem"] = "avg"
    test_feature: Literal["bnneck", "global"] = "bnneck"


POOLS = {"avg": global_avg_pool, "max": global_max_pool, "gem": gem_pool}


class BoT(nn.Module):
    def __init__(self, cfg: Config, num_classes: int):
        super().__init__()
        self.opts = Options(**cfg.method)
        self.backbone = make_backbone(cfg)
        self.neck = BNNeck(self.backbone.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        g = POOLS[self.opts.pooling](self.backbone(x))
        bn, logits = self.neck(g)
        return ModelOutput(embeddings={"global": g, "bnneck": bn}, logits={"id": logits})


class BoTLoss(IdTripletCenterLoss):
    """CE-LS(logits) + triplet(global) + w * centre(global); centres have their own SGD (BoT)."""

    def __init__(self, cfg: Config, num_classes: int, model: BoT):
        o = Options(**cfg.method)
        super().__init__(
            num_classes, model.backbone.out_channels, o.ce_epsilon, o.triplet_margin,
            center_weight=o.center_weight, center_lr=o.center_lr,
        )
        self.opts = o

    def forward(self, out: ModelOutput, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pids = batch["pid"]
        g = out.embeddings["global"]
        ce, triplet = self.id_triplet(out.logits["id"], g, pids)
        return self.finish(ce + triplet, {"ce": ce, "triplet": triplet}, g, pids)


def build_model(cfg: Config, num_classes: int) -> BoT:
    return BoT(cfg, num_classes)


def build_loss(cfg: Config, num_classes: int, model: BoT) -> BoTLoss:
    return BoTLoss(cfg, num_classes, model)


def uses_labels(cfg: Config) -> bool:
    """BoT trains without part labels: the dataset opens no label file."""
    return False


def distance(qf: dict, gf: dict, cfg: Config) -> torch.Tensor:
    """Euclidean (or cosine) distance between L2-normalised test features (BN feature by default)."""
    from occreid.evaluation import global_distance

    key = Options(**cfg.method).test_feature
    return global_distance(qf[key], gf[key], metric=cfg.eval.distance)
