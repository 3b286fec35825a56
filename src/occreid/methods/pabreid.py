"""PAB-ReID (Chen & Ge, paper 003): a pixel-level attention predictor supervised by human parsing labels
(Eq. 1-4), binary part visibility (Eq. 5), a fine-grained feature focuser that weights a whole-body
feature K1 by each attention map and filters it with a gated convolution (Eq. 6-9), a part triplet loss
on the mean per-part distance (Eq. 10-11), an ID loss (Eq. 12) and L = L_tri + L_ID + gamma L_part
(Eq. 13). At test, the foreground feature and the parts visible in both images are matched.
Fig. 5's loss study and Table III row 4 swap the ReID losses: `id_embeddings` (empty = no L_ID) and
`triplet` ("none", or a normal batch-hard triplet: "per_part", "global", "foreground", "concat_parts")."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from occreid.config import Config
from occreid.errors import ConfigError
from occreid.labels.format import GROUPINGS
from occreid.losses import cross_entropy_ls, euclidean_dist
from occreid.losses.global_batch import gathered_distance_triplet, global_batch_triplet
from occreid.losses.maps import parsing_cross_entropy
from occreid.methods.building import make_backbone
from occreid.models.gated_conv import GatedConv
from occreid.models.heads import BNNeck, EmbeddingHead
from occreid.models.output import ModelOutput
from occreid.models.part_attention import (
    Eq2PixelPredictor,
    PixelPartPredictor,
    foreground_map,
    part_maps,
    part_visibility,
)
from occreid.models.pooling import global_avg_pool, part_pool

EMBEDDINGS = ("global", "foreground", "parts")
TRIPLETS = ("part", "per_part", "global", "foreground", "concat_parts", "none")
POOL_EPS = 1e-6


@dataclass
class Options:
    """PAB-ReID's switches. Defaults are the paper's full model (Table III "ALL", mu = 0.5, gamma = 0.35)."""

    grouping: str = "pabreid6"  # X = 6 parts: head, left arm, right arm, torso, left leg, right leg
    # Table III row 1 ("w/o part attention block"): "stripes" = X fixed horizontal stripes, all visible,
    # no parsing supervision (decision: the block's maps are replaced by PCB-like stripes).
    part_attention: Literal["pixel_predictor", "stripes"] = "pixel_predictor"
    stripes: int = 6  # X in "stripes" mode
    # Table III row 3 ("w/o pixel-level attention predictor"): 0 = a single 1x1 conv to X + 1 maps.
    predictor_layers: int = 2  # Eq. 1-2: two (3x3 conv, BN, ReLU)
    predictor_channels: int = 256  # width of the hidden 3x3 conv (decision: the paper gives none)
    # "conv1x1": the shared predictor (a 1x1 conv gives the X + 1 logits); "eq2": Eq. 2 literally, the
    # last 3x3 conv gives X + 1 channels, then BN and ReLU before the softmax (logits clamped at >= 0).
    predictor_output: Literal["conv1x1", "eq2"] = "conv1x1"
    part_loss_weight: float = 0.35  # gamma_part (Eq. 13; Fig. 6 grid 0.15 / 0.35 / 0.55)
    part_loss_epsilon: float = 0.1  # label smoothing of Eq. 3-4, spread over the X + 1 channels
    # Eq. 3-4's target at the map's resolution: one label pixel per cell ("nearest") or the fraction of
    # the cell's pixels per part ("area", soft)
    part_targets: Literal["nearest", "area"] = "nearest"
    visibility_threshold: float = 0.5  # mu (Eq. 5; Fig. 6 grid 0.3 / 0.5 / 0.7); used at test only
    focuser: bool = True  # Table III row 2 ("w/o fine-grained feature focuser"): False = pool B directly
    focuser_channels: int | None = None  # width of K1 = Conv(B) (Eq. 7); None = the backbone's width
    gate_reduction: int = 1  # hidden width of the gated convolution's gate = channels // reduction
    pool_norm: Literal["mass", "hw"] = "mass"  # pooled part = sum_hw Q_i / sum_hw F_i ("mass") or / (h w)
    ce_epsilon: float = 0.1  # label smoothing of the ID loss (Eq. 12)
    # L_ID = the mean CE over these features (Eq. 12); [] = no ID loss (Fig. 5 "triplet" column)
    id_embeddings: list[str] = field(default_factory=lambda: ["global", "foreground"])
    # "part" = Eq. 10-11. Table III row 4 / Fig. 5 "triplet" (decision): "per_part" = a normal batch-hard
    # triplet on each part feature alone, averaged over the X parts. "global" / "foreground" /
    # "concat_parts": a normal triplet on one vector; "none" = no triplet term (Fig. 5 "ID" column).
    triplet: Literal["part", "per_part", "global", "foreground", "concat_parts", "none"] = "part"
    triplet_margin: float | None = 0.3  # alpha (Eq. 11); None = soft margin
    matching: Literal["binary", "continuous"] = "binary"  # binary = Eq. 5; continuous = sqrt(v_q v_g)
    test_embeddings: list[str] = field(default_factory=lambda: ["foreground", "parts"])

    def __post_init__(self) -> None:
        if self.part_attention == "pixel_predictor" and self.grouping not in GROUPINGS:
            raise ConfigError(f"method.grouping: unknown {self.grouping!r}; expected one of {sorted(GROUPINGS)}")
        if self.predictor_layers < 0 or (self.predictor_output == "eq2" and self.predictor_layers < 1):
            raise ConfigError(
                f"method.predictor_layers={self.predictor_layers}: need >= 0 (>= 1 with predictor_output=eq2)"
            )
        if self.stripes < 1:
            raise ConfigError(f"method.stripes must be at least 1, got {self.stripes}")
        ids = self.id_embeddings
        if any(n not in EMBEDDINGS[:2] for n in ids) or len(set(ids)) != len(ids):
            raise ConfigError(f"method.id_embeddings={ids}: choose a subset of {list(EMBEDDINGS[:2])} ([] = no L_ID)")
        if not self.test_embeddings or any(n not in EMBEDDINGS for n in self.test_embeddings):
            raise ConfigError(
                f"method.test_embeddings={self.test_embeddings}: choose a non-empty subset of {list(EMBEDDINGS)}"
            )
        if self.triplet not in TRIPLETS:
            raise ConfigError(f"method.triplet={self.triplet!r}: expected one of {list(TRIPLETS)}")
        if self.triplet == "none" and not self.id_embeddings:
            raise ConfigError("method.triplet=none with empty method.id_embeddings leaves no ReID loss")
        if not 0.0 <= self.visibility_threshold < 1.0:
            raise ConfigError(f"method.visibility_threshold (mu) must be in [0, 1), got {self.visibility_threshold}")

    @property
    def num_parts(self) -> int:
        """X: the grouping's part count, or the number of stripes."""
        return len(GROUPINGS[self.grouping]) if self.part_attention == "pixel_predictor" else self.stripes


def stripe_maps(num: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """[num, h, w] hard horizontal stripes: row r belongs to stripe floor(r num / h) (needs h >= num)."""
    if num > h:
        raise ConfigError(f"method.stripes={num} exceeds the feature-map height {h}; use fewer stripes")
    owner = torch.arange(h, device=like.device) * num // h
    rows = (owner.unsqueeze(0) == torch.arange(num, device=like.device).unsqueeze(1)).to(like.dtype)
    return rows.unsqueeze(2).expand(num, h, w)


def masked_sum_pool(q: torch.Tensor, maps: torch.Tensor, norm: str) -> torch.Tensor:
    """Pool already-weighted features q [B, K, C, h, w] -> [B, K, C]: sum over positions divided by
    the map mass sum_hw maps [B, K, h, w] ("mass") or by h w ("hw")."""
    total = q.sum(dim=(3, 4))
    if norm == "hw":
        return total / float(q.shape[3] * q.shape[4])
    return total / maps.sum(dim=(2, 3)).clamp(min=POOL_EPS).unsqueeze(2)


class PABReID(nn.Module):
    """Backbone -> part attention block (maps, visibility) -> global-local learning block (focuser)."""

    def __init__(self, cfg: Config, num_classes: int):
        super().__init__()
        self.opts = o = Options(**cfg.method)
        self.backbone = make_backbone(cfg)
        c = self.backbone.out_channels
        x = o.num_parts
        self.predictor: nn.Module | None = None
        if o.part_attention == "pixel_predictor":
            if o.predictor_output == "eq2":
                self.predictor = Eq2PixelPredictor(c, x, o.predictor_channels, o.predictor_layers)
            else:
                self.predictor = PixelPartPredictor(c, x, o.predictor_channels, o.predictor_layers, background=True)
        d = (o.focuser_channels or c) if o.focuser else c
        if "global" in o.test_embeddings and len(o.test_embeddings) > 1 and d != c:
            raise ConfigError(
                f"method.test_embeddings={o.test_embeddings}: 'global' has {c} channels but the focuser "
                f"gives {d}; matched embeddings must share a width (drop focuser_channels or 'global')"
            )
        self.k1 = EmbeddingHead(c, d, bn=True, relu=True) if o.focuser else None  # Eq. 7, as a 1x1 conv
        self.gate = GatedConv(d, reduction=o.gate_reduction) if o.focuser else None  # Eq. 9
        self.global_neck = BNNeck(c, num_classes)
        self.foreground_neck = BNNeck(d, num_classes)

    def attention(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        """Part attention block: "maps" [B, X+1, h, w] (foreground first, Eq. 6 as a max), the predictor's
        "logits" / "probs" [B, X+1, h, w] (background first) and the visibility "scores" [B, X]."""
        b, _, h, w = fmap.shape
        if self.predictor is None:
            parts = stripe_maps(self.opts.stripes, h, w, fmap).unsqueeze(0).expand(b, -1, -1, -1)
            fg = fmap.new_ones(b, 1, h, w)
            return {"maps": torch.cat([fg, parts], dim=1), "scores": fmap.new_ones(b, self.opts.stripes)}
        logits, probs = self.predictor(fmap)  # Eq. 1-2
        scores, _ = part_visibility(probs, self.opts.visibility_threshold)  # Eq. 5 before thresholding
        maps = torch.cat([foreground_map(probs), part_maps(probs)], dim=1)
        return {"maps": maps, "logits": logits, "probs": probs, "scores": scores}

    def focus(self, fmap: torch.Tensor, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Fine-grained feature focuser: P_i = K1 * F_i (Eq. 8), Q_i = gated conv(P_i) (Eq. 9), pooled.

        Returns pooled features [B, X+1, D] (foreground first) and the gate [B, X+1, h, w] (or None
        without the focuser, where the maps pool B directly)."""
        if self.k1 is None or self.gate is None:
            return part_pool(fmap, maps, norm=self.opts.pool_norm, eps=POOL_EPS), None
        k1 = self.k1(fmap)
        b, k = maps.shape[:2]
        p = k1.unsqueeze(1) * maps.unsqueeze(2)  # [B, X+1, D, h, w]
        gated, a = self.gate(p.flatten(0, 1), project=False)
        # the gate's bias-free 1x1 output conv commutes with pooling: pool first, then project the vectors
        pooled = masked_sum_pool(gated.view(b, k, *gated.shape[1:]), maps, self.opts.pool_norm)
        return self.gate.project(pooled), a.view(b, k, *a.shape[2:])

    def forward(self, images: torch.Tensor) -> ModelOutput:
        fmap = self.backbone(images)  # B
        att = self.attention(fmap)
        pooled, gate = self.focus(fmap, att["maps"])
        g = global_avg_pool(fmap)
        fg = pooled[:, 0]
        bn_g, logits_g = self.global_neck(g)
        bn_f, logits_f = self.foreground_neck(fg)
        maps = {"foreground": att["maps"][:, :1], "parts": att["maps"][:, 1:]}
        if "logits" in att:
            maps.update(part_logits=att["logits"], part_probs=att["probs"])
        if gate is not None:
            maps["gate"] = gate
        return ModelOutput(
            embeddings={"global": bn_g, "foreground": bn_f},
            parts=pooled[:, 1:],
            visibility=att["scores"],
            logits={"global": logits_g, "foreground": logits_f},
            maps=maps,
            extras={"global_raw": g, "foreground_raw": fg},
        )


def part_pair_distance(a: torch.Tensor, b: torch.Tensor, **_unused: torch.Tensor) -> torch.Tensor:
    """Eq. 10: d[i, j] = 1/X sum_x ||a[i, x] - b[j, x]||, for a [N, X, D] and b [M, X, D] -> [N, M]."""
    return torch.vmap(euclidean_dist)(a.transpose(0, 1), b.transpose(0, 1)).mean(dim=0)


class PABReIDLoss(nn.Module):
    """Eq. 13: L_tri (part triplet, Eq. 10-11) + L_ID (mean CE-LS over id_embeddings, Eq. 12) +
    gamma_part L_part (pixel CE-LS against the grouped parsing label, Eq. 3-4, images with labels only).
    Terms: "id" (absent with no id_embeddings), "part_triplet" or "triplet" (absent with triplet none),
    "part" (with a predictor and gamma_part > 0)."""

    def __init__(self, cfg: Config, num_classes: int, model: PABReID | None):
        super().__init__()
        self.opts = Options(**cfg.method)

    def triplet(self, out: ModelOutput, pids: torch.Tensor) -> tuple[str, torch.Tensor]:
        o = self.opts
        if o.triplet == "part":
            return "part_triplet", gathered_distance_triplet(part_pair_distance, out.parts, pids, o.triplet_margin)
        if o.triplet == "per_part":  # each part mined on its own distance, then the mean over parts
            per = [global_batch_triplet(out.parts[:, x], pids, o.triplet_margin) for x in range(out.parts.shape[1])]
            return "triplet", torch.stack(per).mean()
        feature = {
            "global": lambda: out.extras["global_raw"],
            "foreground": lambda: out.extras["foreground_raw"],
            "concat_parts": lambda: out.parts.flatten(1),
        }[o.triplet]()
        return "triplet", global_batch_triplet(feature, pids, o.triplet_margin)

    def forward(self, out: ModelOutput, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.opts
        pids = batch["pid"]
        terms: dict[str, torch.Tensor] = {}
        if o.id_embeddings:
            ids = [cross_entropy_ls(out.logits[k], pids, o.ce_epsilon) for k in o.id_embeddings]
            terms["id"] = torch.stack(ids).mean()
        if o.triplet != "none":
            name, tri = self.triplet(out, pids)
            terms[name] = tri
        first, *rest = terms.values()  # Options guarantees at least one ReID term
        total = sum(rest, first)
        if "part_logits" in out.maps and o.part_loss_weight > 0:
            terms["part"] = parsing_cross_entropy(out.maps["part_logits"], batch, o.part_loss_epsilon,
                                                  targets=o.part_targets)
            total = total + o.part_loss_weight * terms["part"]
        return total, {k: v.detach() for k, v in terms.items()}


def build_model(cfg: Config, num_classes: int) -> PABReID:
    return PABReID(cfg, num_classes)


def build_loss(cfg: Config, num_classes: int, model: PABReID) -> PABReIDLoss:
    return PABReIDLoss(cfg, num_classes, model)


def label_grouping(cfg: Config) -> str | None:
    """The pabreid6 grouping of the parsing labels; None in the stripes ablation (no supervision)."""
    o = Options(**cfg.method)
    return o.grouping if o.part_attention == "pixel_predictor" else None


def uses_labels(cfg: Config) -> bool:
    """L_part needs the part labels: with the pixel predictor and a non-zero part_loss_weight."""
    o = Options(**cfg.method)
    return o.part_attention == "pixel_predictor" and o.part_loss_weight > 0


def distance(qf: dict, gf: dict, cfg: Config) -> torch.Tensor:
    """Mean of the distances (eval.distance, L2-normalised features) over the test embeddings visible in
    both images (binary, Eq. 5 with mu) or weighted by sqrt(v_q v_g) (continuous). The foreground feature
    is always visible, so every pair has at least one common embedding by default."""
    from occreid.evaluation.distances import matched_part_distance

    o = Options(**cfg.method)
    return matched_part_distance(
        qf, gf, o.test_embeddings, o.matching, o.visibility_threshold, metric=cfg.eval.distance
    )
