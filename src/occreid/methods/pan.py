"""PAN, the Part-Aware Network (Ye et al., paper 001): a 1x1-conv mask generator without softmax
(Eq. 1), mask-weighted pooling normalised by sum |m| (Eq. 2-3) on a "buffer" copy of the last backbone
stage, global max pooling + FC to N_g, one shared FC to n_l for all locals (gamma = p n_l / N_g, Eq. 4),
and L = 1/2 (CE_global + CE_local) + soft-margin batch-hard triplet (Eq. 5). No part labels."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from occreid.config import Config
from occreid.errors import ConfigError
from occreid.losses import cross_entropy_ls
from occreid.losses.global_batch import global_batch_triplet
from occreid.methods.building import make_backbone
from occreid.models.backbones.base import Backbone
from occreid.models.heads import Classifier, EmbeddingHead, PartwiseLinear
from occreid.models.output import ModelOutput
from occreid.models.pooling import PartNorm, global_avg_pool, global_max_pool, part_pool

# Table 3 names: conv40 / conv50 are the last two backbone stages, conv41 / conv51 their deep copies.
MaskSource = Literal["conv40", "conv41", "conv50"]
LocalSource = Literal["conv50", "conv51"]
MaskActivation = Literal["none", "softmax_parts", "softmax_space"]


@dataclass
class Options:
    """PAN's switches; the defaults are the paper's final model (Table 3 row 6, p = 14, gamma = 7)."""

    parts: int = 14  # p, the number of masks (Fig. 3)
    mask_source: MaskSource = "conv50"  # F_g^1 (Table 3)
    local_source: LocalSource = "conv51"  # F_g^2 (Table 3); conv51 = the buffer layer
    mask_activation: MaskActivation = "none"  # Table 4: "softmax_parts" is the with-softmax row
    pool_norm: PartNorm = "abs_mass"  # Eq. 3 divides by sum |m_i|; "mass" / "hw" for comparison
    pool_eps: float = 1e-6  # floor of the Eq. 3 denominator
    mask_bias: bool = True  # the 1x1 mask convolution has a bias (decision)
    global_pool: Literal["max", "avg"] = "max"  # GMP in Fig. 1
    global_dim: int = 512  # N_g
    local_dim: int = 256  # n_l
    gamma: float | None = None  # Eq. 4: when set, n_l = gamma * N_g / p (Fig. 2)
    shared_local_fc: bool = True  # Table 2: one FC for all locals; false = one FC per part
    # BatchNorm after the local FC(s): "shared" = one BN of n_l channels pooled over the batch and the p
    # parts; "per_part" = p n_l channels, each part its own statistics (with the shared FC too: the
    # weights stay shared, Table 2's row). Table 2 changes only the FC.
    local_bn: Literal["shared", "per_part"] = "shared"
    fc_bn: bool = True  # BatchNorm1d after each FC (decision)
    local_classifier: Literal["concat", "per_part"] = "concat"  # decision: one classifier on all locals
    ce_epsilon: float = 0.1
    id_weight: float = 0.5  # Eq. 5: 1/2 (L_g,id + L_l,id)
    triplet_margin: float | None = None  # None = soft margin (Eq. 5, ref. 20)
    triplet_weight: float = 1.0
    # decision: the triplet on the global feature f_g. On f_cat (`concat`, SPEC's first reading) the soft
    # margin starts at 12.8 (4.4 on f_g), drives the local ID loss above chance for ~400 iterations and
    # cost 2.8 validation mAP on the pretrained protocol (method card, "Validation study")
    triplet_feature: Literal["concat", "global"] = "global"
    test_feature: Literal["concat", "global", "locals"] = "concat"

    def __post_init__(self) -> None:
        if self.parts < 1:
            raise ConfigError(f"method.parts must be at least 1, got {self.parts}")
        if self.global_dim < 1 or self.local_dim < 1:
            raise ConfigError("method.global_dim and method.local_dim must be positive")
        if self.gamma is not None:
            n_l = self.gamma * self.global_dim / self.parts
            if self.gamma <= 0 or abs(n_l - round(n_l)) > 1e-6:
                raise ConfigError(
                    f"method.gamma={self.gamma}: n_l = gamma * global_dim / parts = {n_l:g} must be a "
                    "positive whole number; change gamma, or set method.local_dim instead"
                )

    @property
    def resolved_local_dim(self) -> int:
        """n_l: `local_dim`, or gamma N_g / p when `gamma` is set (Eq. 4 solved for n_l)."""
        if self.gamma is None:
            return self.local_dim
        return int(round(self.gamma * self.global_dim / self.parts))

    @property
    def ratio(self) -> float:
        """gamma = N_l / N_g = p n_l / N_g (Eq. 4)."""
        return self.parts * self.resolved_local_dim / self.global_dim


def last_stages(backbone: Backbone) -> tuple[nn.Module, nn.Module]:
    """The penultimate ("Conv4") and last ("Conv5") stage modules of a sequential backbone, i.e. the
    modules producing `forward_stages(x)[-2]` and `[-1]` (ResNet layer3 / layer4, OSNet conv4 / conv5,
    MobileNetV2 features[7:14] / features[14:19])."""
    if not backbone.sequential:
        raise ConfigError(
            f"model.backbone: pan copies the last backbone stage as its buffer layer and needs a sequential "
            f"trunk (ResNet, OSNet, MobileNetV2), not {type(backbone).__name__}"
        )
    stages = backbone.stage_modules()
    return stages[-2], stages[-1]


def activate_masks(masks: torch.Tensor, activation: MaskActivation) -> torch.Tensor:
    """Raw masks (PAN, Sec. 2.1) or the softmax of VPM / PAT that Table 4 compares against:
    over the p masks at each position ("softmax_parts") or over positions per mask ("softmax_space")."""
    if activation == "none":
        return masks
    if activation == "softmax_parts":
        return masks.softmax(dim=1)
    if activation == "softmax_space":
        b, p, h, w = masks.shape
        return masks.reshape(b, p, h * w).softmax(dim=2).reshape(b, p, h, w)
    raise ConfigError(f"method.mask_activation: unknown {activation!r}")


class PAN(nn.Module):
    """Backbone to conv4, then conv5 (global branch, masks) and a copy of conv5 (local branch)."""

    def __init__(self, cfg: Config, num_classes: int):
        super().__init__()
        self.opts = o = Options(**cfg.method)
        self.backbone = make_backbone(cfg)
        conv4, conv5 = last_stages(self.backbone)
        c4, c5 = self.backbone.stage_channels[-2], self.backbone.stage_channels[-1]
        # the buffer layers start as deep copies of the stages they shadow ("Conv41", "Conv51")
        self.buffer_conv41 = copy.deepcopy(conv4) if o.mask_source == "conv41" else None
        self.buffer_conv51 = copy.deepcopy(conv5) if o.local_source == "conv51" else None
        self.mask_generator = nn.Conv2d(c5 if o.mask_source == "conv50" else c4, o.parts, 1, bias=o.mask_bias)
        n_l = o.resolved_local_dim
        self.global_fc = EmbeddingHead(c5, o.global_dim, bn=o.fc_bn)
        self.local_fc: nn.Module = (  # Table 2: one FC shared by all locals, or one per part
            EmbeddingHead(c5, n_l, bn=o.fc_bn, bn_parts=o.parts if o.local_bn == "per_part" else None)
            if o.shared_local_fc
            else PartwiseLinear(o.parts, c5, n_l, bn=o.fc_bn, shared_bn=o.local_bn == "shared")
        )
        self.global_classifier = Classifier(o.global_dim, num_classes, bn=False)
        self.local_classifier: nn.Module = (
            Classifier(o.parts * n_l, num_classes, bn=False)
            if o.local_classifier == "concat"
            else PartwiseLinear(o.parts, n_l, num_classes, bn=False, classifier=True)
        )

    @property
    def gamma(self) -> float:
        return self.opts.ratio

    def stage_maps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The Table 3 tensors: conv40, conv50 and, where built, the buffer outputs conv41, conv51."""
        stages = self.backbone.forward_stages(x)
        maps = {"conv40": stages[-2], "conv50": stages[-1]}
        if self.buffer_conv41 is not None:
            maps["conv41"] = self.buffer_conv41(stages[-3])
        if self.buffer_conv51 is not None:
            maps["conv51"] = self.buffer_conv51(maps.get("conv41", maps["conv40"]))
        return maps

    def masks(self, source: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Eq. 1, M = G(F_g^1): a 1x1 convolution to p masks, resized to F_g^2's grid if they differ."""
        m = activate_masks(self.mask_generator(source), self.opts.mask_activation)
        if m.shape[-2:] != size:
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        return m

    def forward(self, x: torch.Tensor) -> ModelOutput:
        o = self.opts
        maps = self.stage_maps(x)
        f_local, f_global = maps[o.local_source], maps["conv50"]  # F_g^2, F_g^3
        m = self.masks(maps[o.mask_source], tuple(f_local.shape[-2:]))
        pooled_locals = part_pool(f_local, m, norm=o.pool_norm, eps=o.pool_eps)  # Eq. 2-3: [B, p, C]
        pooled_global = (global_max_pool if o.global_pool == "max" else global_avg_pool)(f_global)
        g = self.global_fc(pooled_global)  # [B, N_g]
        locals_ = self.local_fc(pooled_locals)  # [B, p, n_l]
        concat = torch.cat([g, locals_.flatten(1)], dim=1)  # f_cat
        logits = {"global": self.global_classifier(g)}
        if o.local_classifier == "concat":
            logits["local"] = self.local_classifier(locals_.flatten(1))
        else:
            logits.update({f"local{i}": v for i, v in enumerate(self.local_classifier(locals_).unbind(1))})
        return ModelOutput(
            embeddings={"concat": concat, "global": g},
            parts=locals_,
            logits=logits,
            maps={"masks": m},
            extras={"pooled_locals": pooled_locals, "pooled_global": pooled_global},
        )

    def load_pretrained(self, path: str | Path):
        """Load ImageNet weights into the backbone, then re-copy them into the buffer layers."""
        report = self.backbone.load_pretrained(path)
        self.sync_buffers()
        return report

    def sync_buffers(self) -> None:
        """Set each buffer layer to the current weights of the stage it copies."""
        conv4, conv5 = last_stages(self.backbone)
        if self.buffer_conv41 is not None:
            self.buffer_conv41.load_state_dict(conv4.state_dict())
        if self.buffer_conv51 is not None:
            self.buffer_conv51.load_state_dict(conv5.state_dict())


class PANLoss(nn.Module):
    """Eq. 5: id_weight (CE-LS global + CE-LS local) + triplet_weight * batch-hard triplet (soft margin)."""

    def __init__(self, cfg: Config, num_classes: int, model: PAN):
        super().__init__()
        self.opts = Options(**cfg.method)

    def forward(self, out: ModelOutput, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.opts
        pids = batch["pid"]
        local_logits = [v for k, v in out.logits.items() if k.startswith("local")]
        # per-part classifiers: CE over the stacked [P B] rows = mean over parts of the per-part CE
        terms = {
            "ce_global": cross_entropy_ls(out.logits["global"], pids, o.ce_epsilon),
            "ce_local": cross_entropy_ls(
                torch.cat(local_logits), pids.repeat(len(local_logits)), o.ce_epsilon
            ),
            "triplet": global_batch_triplet(out.embeddings[o.triplet_feature], pids, o.triplet_margin),
        }
        total = o.id_weight * (terms["ce_global"] + terms["ce_local"]) + o.triplet_weight * terms["triplet"]
        return total, {k: v.detach() for k, v in terms.items()}


def build_model(cfg: Config, num_classes: int) -> PAN:
    """The PAN model; the trainer calls `PAN.load_pretrained` so the buffer copies start from the
    ImageNet weights too."""
    return PAN(cfg, num_classes)


def build_loss(cfg: Config, num_classes: int, model: PAN) -> PANLoss:
    return PANLoss(cfg, num_classes, model)


def label_grouping(cfg: Config) -> None:
    """PAN's masks are weakly supervised: no part labels."""
    return None


def uses_labels(cfg: Config) -> bool:
    """No part labels: the dataset opens no label file."""
    return False


def distance(qf: dict, gf: dict, cfg: Config) -> torch.Tensor:
    """Euclidean (or cosine) distance between L2-normalised f_cat (or the global / concatenated locals)."""
    from occreid.evaluation import global_distance

    key = Options(**cfg.method).test_feature
    if key == "locals":
        return global_distance(qf["parts"].flatten(1), gf["parts"].flatten(1), metric=cfg.eval.distance)
    return global_distance(qf[key], gf[key], metric=cfg.eval.distance)

