"""SGSFA (Ren et al., paper 004): semantic-guided attention (a whole-body attention after stage 1, four part
attentions after stage 4, BCE against parsing masks, Eq. 8-9), spatial feature alignment by body
proportions below the detected head top (Sec. 3.2.1), the dynamic classification loss over the regions
chosen by Eq. 1-3, L = lambda (L_tri + L_se) + (1 - lambda) L_dcls (Eq. 11) and shared-visible matching
(Eq. 4-7). Decisions where the paper leaves room are `Options` fields (see docs/methods/sgsfa.md)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from occreid.config import Config
from occreid.errors import ConfigError
from occreid.labels.format import part_names
from occreid.losses import cross_entropy_ls, downsample_label, pixel_bce, soft_downsample
from occreid.losses.classification import cross_entropy_ls_rows
from occreid.losses.global_batch import global_batch_triplet
from occreid.methods.building import make_backbone
from occreid.models.backbones.base import Backbone
from occreid.models.device_constants import device_constant
from occreid.models.heads import Classifier, EmbeddingHead
from occreid.models.output import ModelOutput
from occreid.models.part_attention import PartAttention, WholeBodyAttention
from occreid.models.pooling import adaptive_avg_pool2d_fixed, part_pool

GROUPING = "sgsfa4"
SGA_PARTS = tuple(part_names(GROUPING))  # head, upper_body, lower_body, shoes
SFA_PARTS = ("top", "middle", "bottom")
MATCHED_PARTS = SGA_PARTS + SFA_PARTS  # Eq. 6's i = head, upper, lower, shoes, top, middle, bottom
FR = ("top", "middle", "bottom", "top+middle", "middle+bottom")  # Eq. 1
# Eq. 1 regions as unions of the three proportion bands (rows of REGION_BANDS: region x band).
REGION_BANDS = ((1, 0, 0), (0, 1, 0), (0, 0, 1), (1, 1, 0), (0, 1, 1))
POOL_EPS = 1e-6


@dataclass
class Options:
    """SGSFA's switches; defaults are the paper's full model (lambda = 0.8, Table 5 "SGSFA")."""

    whole_body_attention: bool = True  # Table 5: False = "SGSFA w/o whole attention"
    whole_reduction: int = 8  # gamma of Fig. 3 (spatial and channel attention)
    part_reduction: int = 2  # gamma_1 of Fig. 4 (the shared first convolution C -> C / 2)
    feature_dim: int = 256  # "each attention module outputs a 256d vector"; SFA regions too (decision)
    label_resize: Literal["nearest", "area"] = "nearest"  # masks to 64x32 / 16x8: nearest or area fraction
    head_threshold: float = 0.5  # head top = first row with head attention > this (paper: "non-zero")
    head_start_offset: int = 1  # regions start at l_head + offset (Sec. 3.3: "line l_head + 1")
    proportions: list[float] = field(default_factory=lambda: [0.15, 0.23, 0.62])  # top / middle / bottom
    # Sec. 4.3.1 claim 3: "proportions" = bands below the head top (Sec. 3.2.1); "stripes" = three equal
    # horizontal stripes of the whole map from row 0, no head top (the horizontal partitioning it beats)
    band_split: Literal["proportions", "stripes"] = "proportions"
    tau: float = 0.01  # Eq. 5 threshold on the mean of a part mask (Eq. 4); decision: parts are small
    region_tau: float | None = 0.1  # Eq. 2 / 5 for top / middle / bottom (whole-body mask); None = tau
    # L_dcls over every Eq. 3 region of each image ("all", the default: +2.5 val mAP [+1.5, +3.7] on the
    # pretrained protocol's validation split, issue #28) or one drawn per image ("sample", Sec. 3.2.2)
    dcls_regions: Literal["sample", "all"] = "all"
    lambda_weight: float = 0.8  # lambda of Eq. 11 (Fig. 6 sweep)
    # None: L_se inside lambda as Eq. 11. A number: L_se weighted by it outside lambda, so the part masks
    # (which place the SFA bands) still train at lambda = 0 (Fig. 6's lambda = 0 endpoint uses 0.8)
    se_weight: float | None = None
    sga_ce_weight: float = 1.0  # the SGA classifiers' CE-LS (Sec. 4.2) inside the lambda term; 0 = Eq. 11
    ce_epsilon: float = 0.1  # label smoothing of Eq. 10
    triplet_margin: float | None = 0.3  # batch-hard triplet on the concatenated SGA vectors; None = soft
    # Eq. 7 over shared visible parts, over all parts (Sec. 4.3.1 claim 2), or "global": one distance
    # between the L2-normalised global average of the stage-4 map (Sec. 4.3.1 claim 1, test time only)
    matching: Literal["shared", "all", "global"] = "shared"
    # the parts Eq. 7 sums at test: "both" = head .. shoes + top / middle / bottom; "semantic" = the four
    # SGA parts (Fig. 6, lambda = 1: "only the semantic feature is considered"); "spatial" = the three bands
    test_branch: Literal["both", "semantic", "spatial"] = "both"
    normalise_distance: bool = False  # Eq. 7 is a sum; True divides by the number of shared parts

    def __post_init__(self) -> None:
        if len(self.proportions) != 3 or any(p <= 0 for p in self.proportions):
            raise ConfigError(f"method.proportions must be three positive fractions, got {self.proportions}")
        if abs(sum(self.proportions) - 1.0) > 1e-6:
            raise ConfigError(f"method.proportions must sum to 1 (paper: 0.15, 0.23, 0.62), got {self.proportions}")
        if not 0.0 <= self.lambda_weight <= 1.0:
            raise ConfigError(f"method.lambda_weight (Eq. 11) must be in [0, 1], got {self.lambda_weight}")
        for key in ("tau", "region_tau", "head_threshold"):
            v = getattr(self, key)
            if v is not None and not 0.0 <= v < 1.0:
                raise ConfigError(f"method.{key} must be in [0, 1), got {v}")
        if self.whole_reduction < 1 or self.part_reduction < 1 or self.feature_dim < 1:
            raise ConfigError("method.whole_reduction, part_reduction and feature_dim must be >= 1")
        if self.se_weight is not None and self.se_weight < 0:
            raise ConfigError(f"method.se_weight must be >= 0 or null, got {self.se_weight}")
        if self.head_start_offset < 0:
            raise ConfigError(f"method.head_start_offset must be >= 0, got {self.head_start_offset}")

    @property
    def region_threshold(self) -> float:
        return self.tau if self.region_tau is None else self.region_tau

    @property
    def test_parts(self) -> slice:
        """The columns of MATCHED_PARTS that Eq. 7 sums for `test_branch`."""
        k = len(SGA_PARTS)
        return {"both": slice(None), "semantic": slice(0, k), "spatial": slice(k, None)}[self.test_branch]


def split_backbone(backbone: Backbone) -> tuple[Callable, Callable]:
    """(stem + stage 1, stages 2-4) of a sequential backbone (ResNet layer1, OSNet conv2, MobileNetV2
    features[2:4] for stage 1), sharing its modules, so the whole-body attention can sit between them."""
    if not backbone.sequential:
        raise ConfigError(
            f"model.backbone: SGSFA's whole-body attention needs a sequential trunk (ResNet, OSNet, MobileNetV2) "
            f"with a stage 1, not {type(backbone).__name__}; use one or set method.whole_body_attention=false"
        )
    stages = backbone.stage_modules()

    def first(x):
        return stages[0](backbone.forward_stem(x))

    def rest(x):
        for stage in stages[1:]:
            x = stage(x)
        return x

    return first, rest


def head_top(head_mask: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """l_head (Sec. 3.2.1): per image the first row, scanning top-down, with a head-mask value > threshold.

    head_mask [B, h, w] -> (rows [B] long, found [B] bool); rows is 0 where nothing exceeds the threshold.
    Fixed-shape: the argmax of the hit rows weighted by h - row (largest for the first hit, no ties), so
    the exported graph has no data-dependent slicing."""
    h = int(head_mask.shape[1])
    hit = (head_mask > threshold).any(dim=2)  # [B, h]
    first_weight = torch.arange(h, 0, -1, device=head_mask.device, dtype=torch.float32)  # exact ints
    return (hit.float() * first_weight).argmax(dim=1), hit.any(dim=1)


def band_bounds(top: torch.Tensor, found: torch.Tensor, h: int, offset: int, proportions: list[float]) -> torch.Tensor:
    """Row bounds [B, 4] = (start, b1, b2, h) of the top / middle / bottom bands (rows [start, b1), [b1, b2),
    [b2, h)): start = l_head + offset (0 when no head is found), kept <= h - 3; the n = h - start rows are cut
    at floor(p1 n + 0.5) and floor((p1 + p2) n + 0.5), clamped so every band keeps at least one row."""
    if h < 3:
        raise ConfigError(f"SGSFA needs a feature map at least 3 rows high for its three bands, got {h}")
    start = torch.where(found, top + offset, torch.zeros_like(top)).clamp(max=h - 3)
    n = (h - start).double()
    c1 = torch.floor(proportions[0] * n + 0.5).long()
    c2 = torch.floor((proportions[0] + proportions[1]) * n + 0.5).long()
    c1 = torch.minimum(c1.clamp(min=1), (h - start) - 2)
    c2 = torch.minimum(torch.maximum(c2, c1 + 1), (h - start) - 1)
    return torch.stack([start, start + c1, start + c2, torch.full_like(start, h)], dim=1)


def band_rows(bounds: torch.Tensor, h: int) -> torch.Tensor:
    """Row masks [B, 3, h] (float 0/1) of the three bands from `band_bounds`."""
    rows = torch.arange(h, device=bounds.device).view(1, 1, h)
    lo, hi = bounds[:, :3].unsqueeze(2), bounds[:, 1:].unsqueeze(2)
    return ((rows >= lo) & (rows < hi)).float()


def choose_regions(t: torch.Tensor, m: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Eq. 3 as written: candidate mask [B, 5] over FR = (top, middle, bottom, top+middle, middle+bottom).

    t, m, b all visible: FR; t and m: {top, middle, top+middle}; t: {top}; otherwise the empty set."""
    t, m, b = t.bool(), m.bool(), b.bool()
    full, tm = t & m & b, t & m & ~b
    return torch.stack([t, full | tm, full, full | tm, full], dim=1)


class SGSFA(nn.Module):
    """Backbone with the whole-body attention after stage 1; SGA branch (4 part attentions + classifiers) and
    SFA branch (proportion bands below the head top, 5 Eq. 1 regions, classifiers) on the stage-4 map."""

    def __init__(self, cfg: Config, num_classes: int):
        super().__init__()
        self.opts = o = Options(**cfg.method)
        self.backbone = make_backbone(cfg)
        c, d = self.backbone.out_channels, o.feature_dim
        self.whole: WholeBodyAttention | None = None
        if o.whole_body_attention:
            split_backbone(self.backbone)  # fail at build time for an unsupported backbone
            self.whole = WholeBodyAttention(self.backbone.stage_channels[0], o.whole_reduction)
        self.parts = PartAttention(c, len(SGA_PARTS), d, o.part_reduction)
        self.sga_classifiers = nn.ModuleList([Classifier(d, num_classes) for _ in SGA_PARTS])
        self.sfa_embed = EmbeddingHead(c, d, bn=True, relu=True)  # shared by the regions (decision)
        self.sfa_classifiers = nn.ModuleList([Classifier(d, num_classes) for _ in FR])

    def trunk(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stage-4 map and the whole-body spatial logits (None without the whole-body attention)."""
        if self.whole is None:
            return self.backbone(images), None
        first, rest = split_backbone(self.backbone)
        masked, logits = self.whole(first(images))
        return rest(masked), logits

    def forward(self, images: torch.Tensor) -> ModelOutput:
        o = self.opts
        fmap, whole_logits = self.trunk(images)
        b = fmap.shape[0]
        h, w = int(fmap.shape[2]), int(fmap.shape[3])  # constants of an exported graph (fixed input size)
        sga, part_logits = self.parts(fmap)  # [B, 4, d], [B, 4, h, w]
        part_masks = torch.sigmoid(part_logits)
        if o.band_split == "proportions":
            top, found = head_top(part_masks[:, 0].detach(), o.head_threshold)
            bounds = band_bounds(top, found, h, o.head_start_offset, o.proportions)
        else:  # three equal stripes from row 0: "no head found" with proportions 1/3 each
            none = torch.zeros(b, dtype=torch.long, device=fmap.device)
            bounds = band_bounds(none, none.bool(), h, 0, [1 / 3, 1 / 3, 1 / 3])
        bands = band_rows(bounds, h)  # [B, 3, h]
        region_bands = device_constant(
            "sgsfa_region_bands", lambda: torch.tensor(REGION_BANDS), bands.device, bands.dtype
        )  # [5 regions, 3 bands], copied to a GPU once
        regions = torch.einsum("rk,bkh->brh", region_bands, bands)
        region_maps = regions.unsqueeze(3).expand(b, len(FR), h, w)
        sfa = self.sfa_embed(part_pool(fmap, region_maps, norm="mass", eps=POOL_EPS))  # [B, 5, d]
        if whole_logits is not None:  # Eq. 4 over each band of the whole-body mask (decision)
            body = adaptive_avg_pool2d_fixed(torch.sigmoid(whole_logits), (h, w))
        else:  # without it: the union (max) of the four part masks
            body = part_masks.amax(dim=1, keepdim=True)
        band_vis = part_pool(body.detach(), region_maps[:, :3], norm="mass", eps=POOL_EPS)[:, :, 0]
        part_vis = part_masks.detach().mean(dim=(2, 3))  # Eq. 4
        logits = {f"sga_{n}": clf(sga[:, i]) for i, (n, clf) in enumerate(zip(SGA_PARTS, self.sga_classifiers))}
        logits.update({f"sfa_{n}": clf(sfa[:, i]) for i, (n, clf) in enumerate(zip(FR, self.sfa_classifiers))})
        maps = {"part_logits": part_logits, "parts": part_masks, "bands": bands.unsqueeze(3).expand(b, 3, h, w)}
        if whole_logits is not None:
            maps.update(whole_body_logits=whole_logits, whole_body=torch.sigmoid(whole_logits))
        embeddings = {"sga": sga.flatten(1), "sfa": sfa[:, :3].flatten(1)}
        if o.matching == "global":
            embeddings["global"] = fmap.mean(dim=(2, 3))
        return ModelOutput(
            embeddings=embeddings,
            parts=torch.cat([sga, sfa[:, :3]], dim=1),
            visibility=torch.cat([part_vis, band_vis], dim=1),
            logits=logits,
            maps=maps,
            extras={"band_bounds": bounds, "sfa_regions": sfa},
        )


def visible_parts(visibility: torch.Tensor, opts: Options) -> torch.Tensor:
    """Eq. 5: 0/1 [N, 7], v_i > tau for the four SGA parts and v_i > region tau for top / middle / bottom."""
    k = len(SGA_PARTS)
    v = visibility.float()
    return torch.cat([v[:, :k] > opts.tau, v[:, k:] > opts.region_threshold], dim=1).float()


class SGSFALoss(nn.Module):
    """Eq. 11: lambda (L_tri + L_se + w L_sga) + (1 - lambda) L_dcls, with L_se of Eq. 8-9 (BCE means, images
    with labels only), L_sga the mean CE-LS of the four SGA classifiers and L_dcls CE-LS over the Eq. 3
    regions (one drawn per image, or all of them)."""

    def __init__(self, cfg: Config, num_classes: int, model: SGSFA | None):
        super().__init__()
        self.opts = Options(**cfg.method)

    def semantic(self, out: ModelOutput, batch: dict) -> torch.Tensor:
        """L_se (Eq. 9) = BCE(whole body) + sum over the four parts of BCE(part): each a pixel mean (Eq. 8)."""
        part_logits = out.maps["part_logits"]
        if "label" not in batch:
            return part_logits.sum() * 0.0
        label, valid = batch["label"], batch.get("has_label")
        k = len(SGA_PARTS)
        target = self._resize(label, k + 1, part_logits.shape[-2:])[:, 1:]
        loss = k * pixel_bce(part_logits, target, valid)  # sum of the K per-part pixel means
        if "whole_body_logits" in out.maps:
            logits = out.maps["whole_body_logits"][:, 0]
            loss = loss + pixel_bce(logits, self._resize((label > 0).long(), 2, logits.shape[-2:])[:, 1], valid)
        return loss

    def _resize(self, label: torch.Tensor, classes: int, size) -> torch.Tensor:
        """One-hot targets [B, classes, h, w]: nearest label or area fraction per cell."""
        if self.opts.label_resize == "area":
            return soft_downsample(label, classes, tuple(size))
        return F.one_hot(downsample_label(label, tuple(size)), classes).permute(0, 3, 1, 2).float()

    def dynamic(self, out: ModelOutput, pids: torch.Tensor) -> torch.Tensor:
        """L_dcls: CE-LS on the region(s) chosen by Eq. 3 from the band visibilities (Eq. 2)."""
        o = self.opts
        logits = torch.stack([out.logits[f"sfa_{n}"] for n in FR], dim=1)  # [B, 5, N]
        vis = out.visibility[:, len(SGA_PARTS):] > o.region_threshold
        cand = choose_regions(vis[:, 0], vis[:, 1], vis[:, 2])
        if o.dcls_regions == "sample":
            scores = torch.rand(cand.shape, device=cand.device).masked_fill(~cand, -1.0)
            pick = scores.argmax(dim=1)
            cand = F.one_hot(pick, len(FR)).bool() & cand
        # the mean over the chosen (image, region) pairs, 0 when none is chosen; a weighted sum over all
        # pairs rather than a selection, which would make the host wait for the GPU every iteration
        per_pair = cross_entropy_ls_rows(logits.flatten(0, 1), pids.repeat_interleave(len(FR)), o.ce_epsilon)
        chosen = cand.flatten()
        return torch.where(chosen, per_pair, torch.zeros_like(per_pair)).sum() / chosen.sum().clamp(min=1)

    def forward(self, out: ModelOutput, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.opts
        pids = batch["pid"]
        sga = [cross_entropy_ls(out.logits[f"sga_{n}"], pids, o.ce_epsilon) for n in SGA_PARTS]
        terms = {
            "triplet": global_batch_triplet(out.embeddings["sga"], pids, o.triplet_margin),
            "se": self.semantic(out, batch),
            "sga_id": torch.stack(sga).mean(),
            "dcls": self.dynamic(out, pids),
        }
        sga_branch = terms["triplet"] + o.sga_ce_weight * terms["sga_id"]
        if o.se_weight is None:  # Eq. 11: lambda (L_tri + L_se) + (1 - lambda) L_dcls
            total = o.lambda_weight * (sga_branch + terms["se"]) + (1.0 - o.lambda_weight) * terms["dcls"]
        else:
            total = o.lambda_weight * sga_branch + o.se_weight * terms["se"] + (1.0 - o.lambda_weight) * terms["dcls"]
        return total, {k: v.detach() for k, v in terms.items()}


def build_model(cfg: Config, num_classes: int) -> SGSFA:
    return SGSFA(cfg, num_classes)


def build_loss(cfg: Config, num_classes: int, model: SGSFA) -> SGSFALoss:
    return SGSFALoss(cfg, num_classes, model)


def label_grouping(cfg: Config) -> str | None:
    """Head, upper body, lower body, shoes (the whole-body mask is their union)."""
    return GROUPING


def uses_labels(cfg: Config) -> bool:
    """L_se (Eq. 8-9) is supervised by the part labels."""
    return True


def distance(qf: dict, gf: dict, cfg: Config) -> torch.Tensor:
    """Eq. 6-7: dist = sum_i v_i^q v_i^g d_i over the 7 parts (or `test_branch`'s 4 / 3), d_i the
    (L2-normalised) Euclidean or cosine distance; "all" matching counts every part. Pairs sharing no part
    get (number of parts) x 2, the largest possible sum (decision: Eq. 7 would give them 0).
    normalise_distance: the mean over shared parts instead. "global" matching: one distance between the
    global features."""
    from occreid.evaluation import NO_COMMON_PART_DISTANCE, global_distance, part_distance

    o = Options(**cfg.method)
    if o.matching == "global":
        return global_distance(qf["global"], gf["global"], metric=cfg.eval.distance)
    cols = o.test_parts
    qp, gp = qf["parts"][:, cols].float(), gf["parts"][:, cols].float()
    if o.matching == "shared":
        qv = visible_parts(qf["visibility"], o)[:, cols]
        gv = visible_parts(gf["visibility"], o)[:, cols]
    else:
        qv, gv = torch.ones(qp.shape[:2]), torch.ones(gp.shape[:2])
    mean = part_distance(qp, gp, qv, gv, mode="binary", metric=cfg.eval.distance)
    if o.normalise_distance:
        return mean
    shared = qv @ gv.t()
    return torch.where(shared > 0, mean * shared, torch.full_like(mean, qp.shape[1] * NO_COMMON_PART_DISTANCE))
