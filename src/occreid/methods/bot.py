"""BoT, the BNNeck strong baseline (Luo et al. 2019): backbone -> GAP -> BNNeck; CE-LS on the BN
feature's logits, batch-hard triplet + centre loss on the pooled feature; the BN feature at test."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from occreid.config import Config
from occreid.losses import CenterLoss, cross_entropy_ls
from occreid.losses.global_batch import global_batch_triplet
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


class BoTLoss(nn.Module):
    """CE-LS(logits) + triplet(global) + w * centre(global); centres have their own SGD (BoT)."""

    own_optimizer = True

    def __init__(self, cfg: Config, num_classes: int, model: BoT):
        super().__init__()
        self.opts = Options(**cfg.method)
        self.center = CenterLoss(num_classes, model.backbone.out_channels) if self.opts.center_weight > 0 else None

    def forward(self, out: ModelOutput, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        pids = batch["pid"]
        g = out.embeddings["global"]
        terms = {
            "ce": cross_entropy_ls(out.logits["id"], pids, self.opts.ce_epsilon),
            "triplet": global_batch_triplet(g, pids, self.opts.triplet_margin),
        }
        total = terms["ce"] + terms["triplet"]
        if self.center is not None:
            terms["center"] = self.center(g, pids)
            total = total + self.opts.center_weight * terms["center"]
        return total, {k: v.detach() for k, v in terms.items()}

    def build_optimizer(self) -> torch.optim.Optimizer | None:
        return self.center.make_optimizer(self.opts.center_lr) if self.center is not None else None

    def before_step(self) -> None:
        if self.center is not None:
            self.center.unscale_grad(self.opts.center_weight)


def build_model(cfg: Config, num_classes: int) -> BoT:
    return BoT(cfg, num_classes)


def build_loss(cfg: Config, num_classes: int, model: BoT) -> BoTLoss:
    return BoTLoss(cfg, num_classes, model)


def distance(qf: dict, gf: dict, cfg: Config) -> torch.Tensor:
    """Euclidean (or cosine) distance between L2-normalised test features (BN feature by default)."""
    from occreid.evaluation import global_distance

    key = Options(**cfg.method).test_feature
    return global_distance(qf[key], gf[key], metric=cfg.eval.distance)
