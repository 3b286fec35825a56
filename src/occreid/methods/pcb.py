"""PCB (Sun et al. 2018): the backbone map cut into 6 horizontal stripes, each pooled, reduced to 256-d
(1x1 conv + BN + ReLU) and classified; CE-LS per stripe; SGD with the backbone at 0.1x the head's rate.
At test the reduced stripe features are concatenated."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from occreid.config import Config
from occreid.errors import ConfigError
from occreid.losses import cross_entropy_ls
from occreid.methods.building import make_backbone
from occreid.models.heads import EmbeddingHead
from occreid.models.output import ModelOutput
from occreid.models.pooling import stripe_pool


@dataclass
class Options:
    stripes: int = 6
    reduced_dim: int = 256
    ce_epsilon: float = 0.1
    dropout: float = 0.5
    test_feature: str = "stripes"


class PCB(nn.Module):
    def __init__(self, cfg: Config, num_classes: int):
        super().__init__()
        self.opts = Options(**cfg.method)
        self.backbone = make_backbone(cfg)
        c, n, d = self.backbone.out_channels, self.opts.stripes, self.opts.reduced_dim
        rows = -(-cfg.data.height // self.backbone.stride)  # rows of the backbone's output map
        if not 1 <= n <= rows:
            raise ConfigError(
                f"method.stripes={n}: the {cfg.data.height}-pixel input gives a map of {rows} rows at stride "
                f"{self.backbone.stride}; use 1..{rows} stripes or a taller data.height"
            )
        self.reduce = nn.ModuleList([EmbeddingHead(c, d, bn=True, relu=True) for _ in range(n)])
        self.dropout = nn.Dropout(self.opts.dropout)
        self.classifiers = nn.ModuleList([nn.Linear(d, num_classes) for _ in range(n)])

    def forward(self, x: torch.Tensor) -> ModelOutput:
        stripes = stripe_pool(self.backbone(x), self.opts.stripes)  # [B, n, C]
        reduced = torch.stack([head(stripes[:, i]) for i, head in enumerate(self.reduce)], dim=1)
        logits = {
            f"stripe{i}": clf(self.dropout(reduced[:, i])) for i, clf in enumerate(self.classifiers)
        }
        return ModelOutput(
            embeddings={"stripes": reduced.flatten(1), "pooled": stripes.flatten(1)}, parts=reduced, logits=logits
        )


class PCBLoss(nn.Module):
    """Sum over stripes of CE-LS, as the paper trains it."""

    def __init__(self, cfg: Config, num_classes: int, model: PCB):
        super().__init__()
        self.opts = Options(**cfg.method)

    def forward(self, out: ModelOutput, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ces = [cross_entropy_ls(v, batch["pid"], self.opts.ce_epsilon) for v in out.logits.values()]
        total = torch.stack(ces).sum()
        return total, {"ce": total.detach()}


def build_model(cfg: Config, num_classes: int) -> PCB:
    return PCB(cfg, num_classes)


def build_loss(cfg: Config, num_classes: int, model: PCB) -> PCBLoss:
    return PCBLoss(cfg, num_classes, model)


def uses_labels(cfg: Config) -> bool:
    """PCB trains without part labels: the dataset opens no label file."""
    return False


def distance(qf: dict, gf: dict, cfg: Config) -> torch.Tensor:
    from occreid.evaluation import global_distance

    key = Options(**cfg.method).test_feature
    return global_distance(qf[key], gf[key], metric=cfg.eval.distance)
