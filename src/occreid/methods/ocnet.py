"""OCNet (Kim et al., ICASSP 2022, paper 002): BoT backbone; four features f_g, f_t, f_b, f_c, each
reduced by its own grouped-convolution Converter Module (CM); the Center-Focus Module (CFM) gives f_c;
the Relational Adaptive Module (RAM) predicts weights F_w from pairwise relations and corrects
F_concat into F_final; Separation Loss (Eq. 1), weighted ID + triplet losses (Eq. 2-3), test distance
over F_final and F_BB (Eq. 4). No part labels are needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from occreid.config import Config
from occreid.errors import ConfigError
from occreid.losses.recipes import IdTripletCenterLoss
from occreid.methods.building import make_backbone
from occreid.models.heads import BNNeck
from occreid.models.output import ModelOutput
from occreid.models.pooling import global_avg_pool, stripe_pool

Fusion = Literal["ram", "relation_network", "none"]

# Eq. 2 branches in the paper's order (lambda_1 .. lambda_4): name of the logits / feature they read.
BRANCHES: tuple[str, ...] = ("final", "backbone", "global", "center")


@dataclass
class Options:
    """The `method:` section. Table 2 switches: `concat`, `cfm`, `fusion`, `sl_gamma` (0 = no SL);
    Table 3: `center_size` (W), `num_parts`, `sl_gamma`."""

    concat: bool = True  # f_g, f_t, f_b (+ f_c) concatenated into F_concat -> F_final (Table 2 "Concat")
    cfm: bool = True  # Center-Focus Module feature f_c
    fusion: Fusion = "ram"  # RAM weights, plain relation vectors (Table 2 "RN"), or F_final = F_concat
    num_parts: int = 2  # horizontal parts of F_BB: 2 = top / bottom
    center_size: int = 2  # W: the CFM window is the central W x W positions of F_BB
    cfm_attention: Literal["spatial", "per_channel"] = "spatial"
    cm_dim: int = 512  # output width of each Converter Module
    cm_groups: int = 4  # groups of the Converter Module's grouped convolution
    ram_hidden: int = 512  # width of RAM's first shared FC layer
    lambda_final: float = 0.8  # Eq. 2 lambda_1 .. lambda_4
    lambda_backbone: float = 0.5
    lambda_global: float = 0.25
    lambda_center: float = 0.25
    sl_gamma: float = 1.0  # Eq. 3 gamma
    ce_epsilon: float = 0.1
    triplet_margin: float | None = 0.3
    center_weight: float = 0.0  # BoT's centre loss on F_BB; Eq. 3 has none
    center_lr: float = 0.5
    alpha: float = 1.0  # Eq. 4
    test_feature: Literal["bnneck", "raw"] = "bnneck"
    test_normalize: bool = True

    def __post_init__(self) -> None:
        if self.num_parts < 1:
            raise ConfigError(f"method.num_parts must be >= 1, got {self.num_parts}")
        if self.center_size < 1:
            raise ConfigError(f"method.center_size must be >= 1, got {self.center_size}")
        if self.cm_dim < 1 or self.cm_groups < 1 or self.ram_hidden < 1:
            raise ConfigError("method.cm_dim, method.cm_groups and method.ram_hidden must be >= 1")
        if self.cm_dim % self.cm_groups:
            raise ConfigError(
                f"method.cm_dim={self.cm_dim} is not divisible by method.cm_groups={self.cm_groups}"
            )
        if not self.concat and self.fusion != "none":
            raise ConfigError(
                f"method.fusion={self.fusion!r} needs method.concat=true (there is no F_concat to fuse); "
                "set method.fusion=none"
            )
        if not self.concat and self.sl_gamma > 0:
            raise ConfigError(
                "method.sl_gamma > 0 needs method.concat=true (SL compares f_g with the part features); "
                "set method.sl_gamma=0"
            )
        if self.alpha < 0:
            raise ConfigError(f"method.alpha must be >= 0, got {self.alpha}")
        if self.alpha == 0 and not (self.concat or self.cfm):
            raise ConfigError("method.alpha=0 with concat=false and cfm=false leaves no test feature")


class ConverterModule(nn.Module):
    """K Converter Modules at once: feature k of [B, K, C] -> its own grouped 1x1 conv (C -> D, G groups)
    + BN + ReLU -> [B, K, D]. One Conv1d with K*G groups equals K separate grouped convolutions."""

    def __init__(self, in_dim: int, out_dim: int, num_features: int, groups: int) -> None:
        super().__init__()
        if in_dim % groups or out_dim % groups:
            raise ConfigError(
                f"method.cm_groups={groups} must divide the backbone width {in_dim} "
                f"and method.cm_dim={out_dim}"
            )
        self.num_features, self.out_dim = num_features, out_dim
        k = num_features
        self.conv = nn.Conv1d(k * in_dim, k * out_dim, 1, groups=k * groups, bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        self.bn = nn.BatchNorm1d(k * out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, k, _ = x.shape
        if k != self.num_features:
            raise ValueError(f"ConverterModule built for {self.num_features} features, got {k}")
        y = self.bn(self.conv(x.reshape(b, -1, 1))).squeeze(2)
        return F.relu(y).view(b, k, self.out_dim)


class CenterFocusModule(nn.Module):
    """CFM (Fig. 3b): softmax over the central W x W positions of F_BB weights that window; the weighted
    sum is added to GAP(F_BB). "spatial": one map from the channel mean; "per_channel": one per channel."""

    def __init__(self, size: int, attention: Literal["spatial", "per_channel"] = "spatial") -> None:
        super().__init__()
        self.size, self.attention = size, attention

    def window(self, fmap: torch.Tensor) -> torch.Tensor:
        h, w = fmap.shape[2:]
        s = self.size
        if s > h or s > w:
            raise ValueError(
                f"CFM window {s}x{s} does not fit the {h}x{w} feature map; lower method.center_size "
                "or raise the input size"
            )
        top, left = (h - s) // 2, (w - s) // 2
        return fmap[:, :, top : top + s, left : left + s]

    def forward(self, fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, h, w] -> (GAP + attended centre [B, C], attention [B, 1 or C, W, W])."""
        win = self.window(fmap)
        b, c, s, _ = win.shape
        logits = win.mean(dim=1, keepdim=True) if self.attention == "spatial" else win
        att = torch.softmax(logits.flatten(2), dim=2).view(b, -1, s, s)
        return global_avg_pool(fmap) + (win * att).sum(dim=(2, 3)), att


class RelationalAdaptiveModule(nn.Module):
    """RAM (Sec. 2.2): two shared FC layers g on every ordered pair (f_i, f_j); r_i = sum_j g(f_i, f_j).
    "ram": F_w = sigmoid(r), output F_concat * F_w; "relation_network" (Table 2 RN): output r."""

    def __init__(self, dim: int, hidden: int, mode: Literal["ram", "relation_network"] = "ram") -> None:
        super().__init__()
        self.mode = mode
        self.fc1 = nn.Linear(2 * dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def relations(self, feats: torch.Tensor) -> torch.Tensor:
        """[B, K, D] -> r [B, K, D], all K*K pairs in one batched pass."""
        b, k, d = feats.shape
        left, right = feats.unsqueeze(2).expand(b, k, k, d), feats.unsqueeze(1).expand(b, k, k, d)
        pairs = torch.cat([left, right], dim=3)  # pairs[:, i, j] = [f_i; f_j]
        return self.fc2(F.relu(self.fc1(pairs))).sum(dim=2)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, K, D] -> (corrected features [B, K, D], weights F_w [B, K, D] or None for RN)."""
        r = self.relations(feats)
        if self.mode == "relation_network":
            return r, None
        weights = torch.sigmoid(r)
        return feats * weights, weights


def separation_loss(f_g: torch.Tensor, parts: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Eq. 1: sum over parts p of (1 + cos(f_g, f_p)), mean over the batch; f_g [B, D], parts [B, P, D]."""
    cos = F.cosine_similarity(f_g.unsqueeze(1).float(), parts.float(), dim=2, eps=eps)
    return (1.0 + cos).sum(dim=1).mean()


class OCNet(nn.Module):
    """Backbone -> F_BB (GAP + BNNeck), CM features [f_g, f_t.., f_c] -> RAM -> F_final (BNNeck)."""

    def __init__(self, cfg: Config, num_classes: int) -> None:
        super().__init__()
        o = self.opts = Options(**cfg.method)
        self.backbone = make_backbone(cfg)
        c = self.backbone.out_channels
        stride = getattr(self.backbone, "stride", None)
        if stride and o.cfm and o.center_size > min(cfg.data.height // stride, cfg.data.width // stride):
            raise ConfigError(
                f"method.center_size={o.center_size} exceeds the {cfg.data.height // stride}x"
                f"{cfg.data.width // stride} feature map of {cfg.model.backbone} at "
                f"{cfg.data.height}x{cfg.data.width}; lower it or raise data.height / data.width"
            )
        self.backbone_neck = BNNeck(c, num_classes)
        self.num_features = (1 + o.num_parts if o.concat else 0) + (1 if o.cfm else 0)
        self.cfm = CenterFocusModule(o.center_size, o.cfm_attention) if o.cfm else None
        self.converter = (
            ConverterModule(c, o.cm_dim, self.num_features, o.cm_groups) if self.num_features else None
        )
        self.fusion = (
            RelationalAdaptiveModule(o.cm_dim, o.ram_hidden, o.fusion) if o.fusion != "none" else None
        )
        self.final_neck = BNNeck(self.num_features * o.cm_dim, num_classes) if o.concat else None
        self.global_neck = BNNeck(o.cm_dim, num_classes) if o.concat else None
        self.center_neck = BNNeck(o.cm_dim, num_classes) if o.cfm else None

    def forward(self, x: torch.Tensor) -> ModelOutput:
        o = self.opts
        fmap = self.backbone(x)
        f_bb = global_avg_pool(fmap)
        bn_bb, logits_bb = self.backbone_neck(f_bb)
        use_bn = o.test_feature == "bnneck"
        out = ModelOutput(
            embeddings={"backbone": bn_bb if use_bn else f_bb},
            logits={"backbone": logits_bb},
            extras={"backbone": f_bb},
        )
        if self.converter is None:
            return out
        pooled = [f_bb.unsqueeze(1), stripe_pool(fmap, o.num_parts)] if o.concat else []
        if self.cfm is not None:
            center_in, att = self.cfm(fmap)
            pooled.append(center_in.unsqueeze(1))
            out.maps["center_attention"] = att
        feats = self.converter(torch.cat(pooled, dim=1))  # [B, K, D]: f_g, f_t.., f_b, f_c
        out.extras["features"] = feats
        if self.cfm is not None:
            f_c = feats[:, -1]
            bn_c, out.logits["center"] = self.center_neck(f_c)
            out.extras["center"] = f_c
            if not o.concat:  # Table 2 index 2: f_c stands in for F_final in Eq. 4
                out.embeddings["final"] = bn_c if use_bn else f_c
        if not o.concat:
            return out
        f_g = feats[:, 0]
        _, out.logits["global"] = self.global_neck(f_g)
        out.extras["global"] = f_g
        out.extras["part_features"] = feats[:, 1 : 1 + o.num_parts]
        fused, weights = self.fusion(feats) if self.fusion is not None else (feats, None)
        f_final = fused.flatten(1)
        bn_final, out.logits["final"] = self.final_neck(f_final)
        out.extras["final"] = f_final
        out.embeddings["final"] = bn_final if use_bn else f_final
        out.parts = out.embeddings["final"].view(x.shape[0], self.num_features, o.cm_dim)
        if weights is not None:
            out.extras["relation_weights"] = weights
            out.visibility = weights.mean(dim=2)
        return out


class OCNetLoss(IdTripletCenterLoss):
    """Eq. 2-3: sum over branches of lambda_k (CE-LS(logits_k) + triplet(feature_k)) + gamma * SL.
    Triplets read the features before their BNNeck (BoT); the centre loss, if on, has its own SGD."""

    def __init__(self, cfg: Config, num_classes: int, model: OCNet) -> None:
        o = Options(**cfg.method)
        super().__init__(
            num_classes, model.backbone.out_channels, o.ce_epsilon, o.triplet_margin,
            center_weight=o.center_weight, center_lr=o.center_lr,
        )
        self.opts = o
        lambdas = (o.lambda_final, o.lambda_backbone, o.lambda_global, o.lambda_center)
        self.weights = dict(zip(BRANCHES, lambdas))

    def forward(self, out: ModelOutput, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o, pids = self.opts, batch["pid"]
        terms: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=pids.device)
        for name, weight in self.weights.items():
            if name not in out.logits or weight == 0:
                continue
            ce, triplet = self.id_triplet(out.logits[name], out.extras[name], pids)
            terms[f"ce_{name}"], terms[f"triplet_{name}"] = ce, triplet
            total = total + weight * (ce + triplet)
        if o.sl_gamma > 0 and "part_features" in out.extras:
            terms["sl"] = separation_loss(out.extras["global"], out.extras["part_features"])
            total = total + o.sl_gamma * terms["sl"]
        return self.finish(total, terms, out.extras["backbone"], pids)


def build_model(cfg: Config, num_classes: int) -> OCNet:
    return OCNet(cfg, num_classes)


def build_loss(cfg: Config, num_classes: int, model: OCNet) -> OCNetLoss:
    return OCNetLoss(cfg, num_classes, model)


def label_grouping(cfg: Config) -> None:
    """OCNet uses no part labels."""
    return None


def uses_labels(cfg: Config) -> bool:
    """No part labels: the dataset opens no label file."""
    return False


def distance(qf: dict, gf: dict, cfg: Config) -> torch.Tensor:
    """Eq. 4: D = d(F_final^q, F_final^g) + alpha d(F_BB^q, F_BB^g), each an (L2-normalised by default)
    Euclidean distance, or cosine with eval.distance=cosine."""
    from occreid.evaluation import global_distance

    o = Options(**cfg.method)
    metric = cfg.eval.distance
    terms = []
    if "final" in qf:
        terms.append(global_distance(qf["final"], gf["final"], metric=metric, normalize=o.test_normalize))
    if o.alpha > 0:
        bb = global_distance(qf["backbone"], gf["backbone"], metric=metric, normalize=o.test_normalize)
        terms.append(o.alpha * bb)
    return sum(terms[1:], terms[0])
