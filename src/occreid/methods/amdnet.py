"""AMD-Net (Ge et al., paper 000): parsing-supervised part attention (Eq. 1-2) on a Spatial-frequency
Interaction Module (SIM, Eq. 3-4), a Taylor-inspired Feature Filter (TFF, Eq. 8-11) in the feature branch,
foreground / part / global pooling (Eq. 5-7) with part quality scores, a part-soft triplet loss with a
head weight (Eq. 12-13) and L = L_tri + L_CE,global + L_CE,part_a (Eq. 14). At test the foreground feature
and the parts visible in both images are matched (SPEC 1 and 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Literal

import numpy as np
import torch
from torch import nn

from occreid.config import Config
from occreid.cross_rank import all_gather_with_grad
from occreid.errors import ConfigError
from occreid.labels.format import GROUPINGS
from occreid.losses import batch_hard_triplet, cross_entropy_ls, euclidean_dist
from occreid.losses.global_batch import gathered_distance_triplet
from occreid.losses.maps import parsing_cross_entropy
from occreid.methods.building import make_backbone
from occreid.models.backbones.resnet import BasicBlock
from occreid.models.device_constants import device_constant
from occreid.models.gated_conv import GatedConv
from occreid.models.heads import BNNeck, EmbeddingHead, PartClassifiers
from occreid.models.initialisation import he_fan_out_init
from occreid.models.output import ModelOutput
from occreid.models.part_attention import PixelPartPredictor, foreground_map, part_maps, part_visibility
from occreid.models.pooling import global_avg_pool, part_pool, stripe_pool

GLOBAL_EMBEDDINGS = ("foreground", "concat", "global")  # F_global = {f_t, f_c, f_g}
TEST_EMBEDDINGS = ("foreground", "global", "parts")
POOL_EPS = 1e-6
PHASE_EPS = 1e-8  # keeps the phase's gradient finite at an exactly-zero frequency bin
AMPLITUDE_FLOOR = 1e-30  # on |X|^2 (float32 keeps it): sqrt stays differentiable at a zero bin
SIM_DFTS = ("matmul", "fft")


@dataclass
class Options:
    """AMD-Net's switches. Defaults are the paper's full model (Table 2 "Ours") with SPEC's decisions."""

    grouping: str = "amdnet5"  # k = 5: head, arms, trunk, legs, feet (head must be part 1, Eq. 12)
    # Table 2 "w/o Part Attention": "stripes" = k fixed horizontal stripes, all visible, no parsing
    # supervision and no SIM (decision: the attention maps are replaced by PCB-like stripes).
    part_attention: Literal["parsing", "stripes"] = "parsing"
    background: bool = True  # decision: a background channel (K+1 softmax); False = Eq. 1's K-way softmax
    part_loss_epsilon: float = 0.15  # sigma of Eq. 2, spread over the softmax channels
    # Eq. 2's target at the map's resolution: one label pixel per cell ("nearest") or the fraction of the
    # cell's pixels per part ("area", soft; needs the background channel)
    part_targets: Literal["nearest", "area"] = "nearest"
    part_loss_weight: float = 1.0  # weight of L_CE,part_a in Eq. 14
    visibility_threshold: float = 0.4  # gamma: part visible iff max_hw p_k > gamma
    # SIM (Eq. 3-4). Table 2 "w/o SIM": sim = false.
    sim: bool = True
    sim_channels: int = 64  # the bottleneck the FFT runs in (the authors' code: 64)
    sim_alpha: float = 0.35  # alpha of Eq. 4, blending at the backbone's full width
    sim_amplitude: Literal["image_mean", "one"] = "image_mean"  # the constant replacing the amplitude
    sim_dft: Literal["matmul", "fft"] = "matmul"  # SIM transforms: real DFT matrices (exportable) or fft
    # TFF (Eq. 8-11). Table 2 "w/o TFF": tff_blocks = 0 (F = the reduced G; the width stays tff_channels).
    tff_blocks: int = 3
    # Width of F, the feature branch (decision): a 1x1 conv + BN + ReLU reduction of G, kept when
    # tff_blocks = 0, so TFF and the embedding width are separate switches; null = G's full width.
    tff_channels: int | None = 256
    tff_gate_input: Literal["block_input", "next_block"] = "block_input"  # Eq. 10: f(tau_j); release: next
    tff_guide: bool = (
        False  # the release also feeds a 1-channel guidance map (from the PAGB input) to the gate
    )
    gate_reduction: int = 1  # hidden width of the gated convolution's gate = channels // reduction
    # initialisation of TFF's convolutions: PyTorch's default, or He normal fan-out (the release's)
    tff_init: Literal["pytorch", "he_fan_out"] = "pytorch"
    pool_norm: Literal["hw", "mass"] = "hw"  # Eq. 6 divides by H W; "mass" divides by sum_hw p_i
    ce_epsilon: float = 0.1  # label smoothing of L_CE,global (shared setting)
    id_embeddings: list[str] = field(default_factory=lambda: list(GLOBAL_EMBEDDINGS))
    # L_CE,global over the id_embeddings (Eq. 14 leaves it open): their mean (each head 1/3 against the
    # part terms at 1) or their sum
    id_reduction: Literal["mean", "sum"] = "mean"
    # Table 2 "w/o part-soft triplet": "id" = part ID losses, "hard_triplet" = batch-hard per part.
    part_loss: Literal["part_soft", "id", "hard_triplet"] = "part_soft"
    head_weight: float = 0.5  # beta_head (Eq. 12)
    triplet_margin: float | None = 0.3  # M (Eq. 13); null = soft margin
    matching: Literal["binary", "continuous"] = "binary"  # binary: gamma threshold; continuous: sqrt(v_q v_g)
    test_embeddings: list[str] = field(default_factory=lambda: ["foreground", "parts"])

    def __post_init__(self) -> None:
        if self.grouping not in GROUPINGS:
            raise ConfigError(
                f"method.grouping: unknown {self.grouping!r}; expected one of {sorted(GROUPINGS)}"
            )
        for key, allowed in (("id_embeddings", GLOBAL_EMBEDDINGS), ("test_embeddings", TEST_EMBEDDINGS)):
            names = getattr(self, key)
            if not names or any(n not in allowed for n in names):
                raise ConfigError(f"method.{key}={names}: choose a non-empty subset of {list(allowed)}")
        if not 0.0 <= self.visibility_threshold < 1.0:
            raise ConfigError(
                f"method.visibility_threshold (gamma) must be in [0, 1), got {self.visibility_threshold}"
            )
        if not 0.0 <= self.sim_alpha <= 1.0:
            raise ConfigError(f"method.sim_alpha must be in [0, 1], got {self.sim_alpha}")
        if self.part_targets == "area" and not self.background:
            raise ConfigError("method.part_targets=area needs method.background=true (the soft target gives "
                              "each cell's background fraction its own channel)")
        if self.sim_dft not in SIM_DFTS:
            raise ConfigError(f"method.sim_dft: unknown {self.sim_dft!r}; choose one of {list(SIM_DFTS)}")
        if (
            self.tff_blocks < 0
            or self.sim_channels < 1
            or (self.tff_channels is not None and self.tff_channels < 1)
        ):
            raise ConfigError(
                f"method: need tff_blocks >= 0, sim_channels >= 1 and tff_channels >= 1 or null; got "
                f"{self.tff_blocks}, {self.sim_channels}, {self.tff_channels}"
            )
        if self.tff_guide and self.tff_blocks and not self.uses_parsing:
            raise ConfigError(
                "method.tff_guide=true reads its guidance map from the part attention branch, which "
                "method.part_attention=stripes does not build; set method.tff_guide=false"
            )
        if self.head_weight < 0:
            raise ConfigError(f"method.head_weight (beta_head) must be >= 0, got {self.head_weight}")

    @property
    def num_parts(self) -> int:
        return len(GROUPINGS[self.grouping])

    @property
    def uses_parsing(self) -> bool:
        return self.part_attention == "parsing"


def spectrum_phase(real: torch.Tensor, imag: torch.Tensor, width: int) -> torch.Tensor:
    """Phase [B, c, h, w // 2 + 1] of a half spectrum (`rfft2` of a real map of width `width`) given as
    real and imaginary parts.

    The self-conjugate bins (rows 0 and h/2, columns 0 and w/2) are real for a real input; their
    imaginary round-off (or a signed zero) would flip a negative bin's phase between +pi and -pi, which
    the phase MLP does not treat alike, so their phase is set to exactly 0 or +pi by the sign of the real
    part (written out rather than left to atan2's signed zero, which ONNX's Atan-based atan2 resolves to -pi).
    """
    h, nv, width = int(real.shape[-2]), int(real.shape[-1]), int(width)

    def self_conjugate() -> torch.Tensor:
        rows, cols = np.arange(h), np.arange(nv)
        return torch.from_numpy(((rows == 0) | (2 * rows == h))[:, None] & ((cols == 0) | (2 * cols == width))[None, :])

    shifted = real + PHASE_EPS
    real_phase = torch.where(shifted < 0, torch.full_like(shifted, math.pi), torch.zeros_like(shifted))
    mask = device_constant(("self_conjugate_bins", h, nv, width), self_conjugate, real.device)
    return torch.where(mask, real_phase, torch.atan2(imag, shifted))


def dft_cos_sin(n: int, bins: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [n, bins] (float32) of 2 pi j k / n for position j and frequency k.

    The angle comes from the integer residue j k mod n and the sines at residues 0 and n / 2 are exact
    zeros, so the real bins stay real. Built from Python ints: a constant in a traced / exported graph."""
    residue = np.outer(np.arange(n), np.arange(bins)) % n
    angle = 2.0 * np.pi * residue / n
    sin = np.where((2 * residue) % n == 0, 0.0, np.sin(angle))
    cos, sin = (torch.from_numpy(a).to(device=device, dtype=torch.float32) for a in (np.cos(angle), sin))
    return cos, sin


def height_dft(h: int, inverse: bool, device: torch.device) -> torch.Tensor:
    """[2h, 2h] real matrix of the complex DFT over the height acting on rows laid out as [re | im]:
    [re | im] @ M = [re' | im'] with e^{-2 pi i u m / h} (forward) or e^{+2 pi i u m / h} (inverse)."""
    cos, sin = dft_cos_sin(h, h, device)  # both symmetric
    sin = sin if inverse else -sin
    return torch.cat([torch.cat([cos, sin], 1), torch.cat([-sin, cos], 1)], 0)


def width_rfft_matrix(w: int) -> torch.Tensor:
    """[w, 2 nv] host matrix [cos | -sin] of the w // 2 + 1 = nv width bins (x @ it = [re | im])."""
    cos, sin = dft_cos_sin(w, w // 2 + 1)
    return torch.cat([cos, -sin], 1)


def width_irfft_matrix(width: int, nv: int, h: int) -> torch.Tensor:
    """[2 nv, width] host matrix of `irfft2_real`'s last step: [scale cos^T ; -scale sin^T], scale_v =
    w_v / (h width) with w_v = 1 on the self-conjugate columns, else 2."""
    cos, sin = dft_cos_sin(width, nv)
    v = np.arange(nv)
    weight = np.where((v == 0) | (2 * v == width), 1.0, 2.0) / (h * width)
    scale = torch.from_numpy(weight).to(dtype=torch.float32).unsqueeze(1)
    return torch.cat([scale * cos.t(), -scale * sin.t()], 0)


def rfft2_real(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`torch.fft.rfft2` of a real map [B, c, h, w] as (real, imag) [B, c, h, w // 2 + 1] by DFT matrices,
    X_uv = sum_mn x_mn e^{-2 pi i (u m / h + v n / w)}: the w // 2 + 1 bins of the width, then all h bins
    of the height, each one matrix product over the flattened batch."""
    c, h, w = (int(n) for n in x.shape[1:])  # the batch stays symbolic (-1) in an exported graph
    nv = w // 2 + 1
    cpu = torch.device("cpu")
    t = x @ device_constant(("width_rfft", w), lambda: width_rfft_matrix(w), x.device)  # [B, c, h, re | im]
    t = t.reshape(-1, c, h, 2, nv).permute(0, 1, 4, 3, 2).reshape(-1, c, nv, 2 * h)
    y = (t @ device_constant(("height_dft", h, False), lambda: height_dft(h, False, cpu), x.device))
    y = y.reshape(-1, c, nv, 2, h)
    return y[:, :, :, 0].transpose(2, 3), y[:, :, :, 1].transpose(2, 3)


def irfft2_real(real: torch.Tensor, imag: torch.Tensor, width: int) -> torch.Tensor:
    """`torch.fft.irfft2(real + i imag, s=(h, width))` [B, c, h, width] of a half spectrum [B, c, h, nv]:
    a full inverse DFT over the height to Z, then x_mn = (1 / hw) sum_v w_v Re(Z_mv e^{2 pi i v n / w}),
    w_v = 1 on the self-conjugate columns (whose imaginary part, as in `irfft2`, is ignored), else 2."""
    c, h, nv = (int(n) for n in real.shape[1:])
    width, cpu = int(width), torch.device("cpu")
    y = torch.stack([real.transpose(2, 3), imag.transpose(2, 3)], dim=3).reshape(-1, c, nv, 2 * h)
    z = (y @ device_constant(("height_dft", h, True), lambda: height_dft(h, True, cpu), real.device))
    z = z.reshape(-1, c, nv, 2, h).permute(0, 1, 4, 3, 2).reshape(-1, c, h, 2 * nv)  # [B, c, h, re | im]
    return z @ device_constant(("width_irfft", width, nv, h), lambda: width_irfft_matrix(width, nv, h), real.device)


class SpatialFrequencyInteraction(nn.Module):
    """SIM (Eq. 3-4): F_out = alpha * restore(IFFT(A * exp(i W_b(phase(FFT(project(G))))))) + (1 - alpha) G.

    `project` / `restore` are 1x1 convs C <-> width; the FFT is `rfft2` over the map; the amplitude is
    replaced by a constant (the mean amplitude per image and channel, or 1); W_b is a 1x1-conv MLP on the
    phase. `irfft2` returns (1 / hw) sum_uv w_v Re(Y_uv e^{2 pi i (u m / h + v n / w)}), w_v = 1 on the
    self-conjugate columns and 2 elsewhere. `dft`: "matmul" computes both transforms with real cos / sin
    matrices (no complex tensors: exportable to ONNX), "fft" with `torch.fft`; they agree to float precision.
    """

    def __init__(
        self,
        channels: int,
        width: int = 64,
        alpha: float = 0.35,
        amplitude: str = "image_mean",
        dft: str = "matmul",
    ) -> None:
        super().__init__()
        if dft not in SIM_DFTS:
            raise ConfigError(f"method.sim_dft: unknown {dft!r}; choose one of {list(SIM_DFTS)}")
        self.alpha = alpha
        self.amplitude = amplitude
        self.dft = dft
        self.project = nn.Conv2d(channels, width, kernel_size=1)
        self.phase_mlp = nn.Sequential(  # W_b
            nn.Conv2d(width, 2 * width, kernel_size=1),
            nn.LeakyReLU(0.1),
            nn.Conv2d(2 * width, width, kernel_size=1),
        )
        self.restore = nn.Conv2d(width, channels, kernel_size=1)

    def frequency(self, g: torch.Tensor) -> torch.Tensor:
        """The frequency branch at full width [B, C, h, w] (Eq. 3 and the IFFT term of Eq. 4)."""
        h, w = int(g.shape[-2]), int(g.shape[-1])  # constants of an exported graph
        z = self.project(g).float()
        with torch.autocast(g.device.type, enabled=False):  # the transforms stay in float32 under AMP
            if self.dft == "fft":
                spectrum = torch.fft.rfft2(z)
                re, im = spectrum.real, spectrum.imag
            else:
                re, im = rfft2_real(z)
            phase = spectrum_phase(re, im, w)
            if self.amplitude == "image_mean":
                # |X|; the floor keeps the gradient at an exactly-zero bin at 0, as torch's complex abs does
                amp = (re * re + im * im).clamp(min=AMPLITUDE_FLOOR).sqrt().mean(dim=(2, 3), keepdim=True)
            else:
                amp = torch.ones_like(phase[:, :, :1, :1])
        new_phase = self.phase_mlp(phase).float()
        with torch.autocast(g.device.type, enabled=False):
            y_re, y_im = amp * torch.cos(new_phase), amp * torch.sin(new_phase)
            if self.dft == "fft":
                freq = torch.fft.irfft2(torch.complex(y_re, y_im), s=(h, w))
            else:
                freq = irfft2_real(y_re, y_im, w)
        return self.restore(freq.to(g.dtype))

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return self.alpha * self.frequency(g) + (1.0 - self.alpha) * g


class TaylorBasisBlock(nn.Module):
    """One TFF basis block (Eq. 11): t1 = R(t0), tau_{j+2} = t1 + gate(x) + 3 (t1 - t0).

    R is a residual block of two 3x3 convs; gate is the gated convolution. Eq. 10 evaluates f at tau_j,
    so x = t0 ("block_input"); the release gates the output of a further residual block, x = R2(t1)
    ("next_block"). With guide, the gate also reads a 1-channel guidance map.
    """

    def __init__(
        self, channels: int, gate_input: str = "block_input", guide: bool = False, reduction: int = 1
    ):
        super().__init__()
        self.residual = BasicBlock(channels, channels)
        self.next_block = BasicBlock(channels, channels) if gate_input == "next_block" else None
        self.gate = GatedConv(channels, reduction=reduction, guide_channels=int(guide))

    def forward(
        self, t0: torch.Tensor, guide: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        t1 = self.residual(t0)
        gated, a = self.gate(t0 if self.next_block is None else self.next_block(t1), guide)
        return t1 + gated + 3.0 * (t1 - t0), a


class TaylorFeatureFilter(nn.Module):
    """TFF: `blocks` basis blocks in sequence (Eq. 5, F = T(G)); returns F and the gates [B, n, h, w]."""

    def __init__(
        self,
        channels: int,
        blocks: int = 3,
        gate_input: str = "block_input",
        guide: bool = False,
        reduction: int = 1,
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            TaylorBasisBlock(channels, gate_input, guide, reduction) for _ in range(blocks)
        )

    def forward(
        self, x: torch.Tensor, guide: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gates = []
        for block in self.blocks:
            x, a = block(x, guide)
            gates.append(a)
        return x, torch.cat(gates, dim=1)


class AMDNet(nn.Module):
    """Backbone G -> PAGB (SIM, 1x1 conv, softmax: maps, visibility) and GFLB (TFF: F; pooled features)."""

    def __init__(self, cfg: Config, num_classes: int):
        super().__init__()
        self.opts = o = Options(**cfg.method)
        self.backbone = make_backbone(cfg)
        c, k = self.backbone.out_channels, o.num_parts
        self.sim = (
            SpatialFrequencyInteraction(c, o.sim_channels, o.sim_alpha, o.sim_amplitude, o.sim_dft)
            if o.sim and o.uses_parsing
            else None
        )
        # Eq. 1: a single 1x1 conv (W_a) then the softmax
        self.attention = (
            PixelPartPredictor(c, k, num_layers=0, background=o.background) if o.uses_parsing else None
        )
        d = o.tff_channels or c
        self.reduce = EmbeddingHead(c, d, bn=True, relu=True) if o.tff_channels is not None else None
        self.guide = nn.Conv2d(c, 1, kernel_size=1, bias=False) if o.tff_guide and o.tff_blocks else None
        self.tff = (
            TaylorFeatureFilter(d, o.tff_blocks, o.tff_gate_input, o.tff_guide, o.gate_reduction)
            if o.tff_blocks
            else None
        )
        self.foreground_neck = BNNeck(d, num_classes)
        self.concat_neck = BNNeck(k * d, num_classes)
        self.global_neck = BNNeck(d, num_classes)
        self.part_classifiers = PartClassifiers(k, d, num_classes) if o.part_loss == "id" else None
        if self.tff is not None and o.tff_init == "he_fan_out":  # last: the other layers draw as by default
            he_fan_out_init(self.tff)

    def part_attention(self, g: torch.Tensor) -> dict[str, torch.Tensor]:
        """PAGB: "logits" / "probs" [B, K(+1), h, w] (background first) from the SIM-enhanced G (Eq. 1)."""
        assert self.attention is not None
        enhanced = self.sim(g) if self.sim is not None else g
        logits, probs = self.attention(enhanced)
        return {"logits": logits, "probs": probs, "input": enhanced}

    def features(
        self, g: torch.Tensor, guide_source: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """GFLB's F = T(G) (Eq. 5), after the channel reduction; also the TFF gates (or None)."""
        f = self.reduce(g) if self.reduce is not None else g
        if self.tff is None:
            return f, None
        guide = self.guide(guide_source) if self.guide is not None and guide_source is not None else None
        return self.tff(f, guide)

    def forward(self, images: torch.Tensor) -> ModelOutput:
        o = self.opts
        g = self.backbone(images)
        maps: dict[str, torch.Tensor] = {}
        if self.attention is not None:
            att = self.part_attention(g)
            f, gates = self.features(g, att["input"])
            probs = att["probs"]
            parts_p = part_maps(probs, o.background)
            fg_p = foreground_map(probs, o.background)  # p_t = max_i p_i
            scores, _ = part_visibility(probs, o.visibility_threshold, o.background)
            pooled = part_pool(f, torch.cat([fg_p, parts_p], dim=1), norm=o.pool_norm, eps=POOL_EPS)  # Eq. 6
            f_t, f_parts = pooled[:, 0], pooled[:, 1:]
            maps.update(part_logits=att["logits"], part_probs=probs, foreground=fg_p, parts=parts_p)
        else:
            f, gates = self.features(g, None)
            if f.shape[2] < o.num_parts:
                raise ConfigError(
                    f"method.part_attention=stripes: {o.num_parts} stripes need a feature map at least "
                    f"{o.num_parts} rows high, got {f.shape[2]}; use a taller input (data.height)"
                )
            f_t = global_avg_pool(f)
            f_parts = stripe_pool(f, o.num_parts)
            scores = f.new_ones(f.shape[0], o.num_parts)
        if gates is not None:
            maps["tff_gates"] = gates
        f_g = global_avg_pool(f)  # Eq. 7
        f_c = f_parts.flatten(1)  # f_1 (+) ... (+) f_k
        bn_t, logit_t = self.foreground_neck(f_t)
        bn_c, logit_c = self.concat_neck(f_c)
        bn_g, logit_g = self.global_neck(f_g)
        extras = {"foreground_raw": f_t, "concat_raw": f_c, "global_raw": f_g}
        if self.part_classifiers is not None:
            extras["part_id_logits"] = self.part_classifiers(f_parts)
        return ModelOutput(
            embeddings={"foreground": bn_t, "concat": bn_c, "global": bn_g},
            parts=f_parts,
            visibility=scores,
            logits={"foreground": logit_t, "concat": logit_c, "global": logit_g},
            maps=maps,
            extras=extras,
        )


def per_part_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distances of every part: a [N, K, D], b [M, K, D] -> [K, N, M]."""
    return torch.vmap(euclidean_dist)(a.transpose(0, 1), b.transpose(0, 1))


def part_soft_distance(
    a: torch.Tensor, b: torch.Tensor, head_weight: float = 0.5, **_unused: torch.Tensor
) -> torch.Tensor:
    """Eq. 12 (its f_2^b read as f_1^b): ((1 + beta) d(head) + sum_{k>=2} d(part k)) / (K + beta), [N, M]."""
    dist = per_part_distances(a, b)
    weights = torch.ones(dist.shape[0], dtype=dist.dtype, device=dist.device)
    weights[0] += head_weight
    return torch.einsum("k,knm->nm", weights, dist) / weights.sum()


class AMDNetLoss(nn.Module):
    """Eq. 14: L_part^tri (part-soft triplet, Eq. 12-13, or a Table 2 replacement) + L_CE,global (CE-LS
    over f_t, f_c, f_g, mean or sum: `id_reduction`) + w * L_CE,part_a (pixel CE-LS, Eq. 2, images with
    labels only)."""

    def __init__(self, cfg: Config, num_classes: int, model: AMDNet | None):
        super().__init__()
        self.opts = Options(**cfg.method)

    def part_term(self, out: ModelOutput, pids: torch.Tensor) -> tuple[str, torch.Tensor]:
        o = self.opts
        assert out.parts is not None
        if o.part_loss == "part_soft":
            pair_distance = partial(part_soft_distance, head_weight=o.head_weight)
            return "part_triplet", gathered_distance_triplet(pair_distance, out.parts, pids, o.triplet_margin)
        if o.part_loss == "hard_triplet":
            cols = all_gather_with_grad(out.parts)
            col_pids = all_gather_with_grad(pids) if cols is not out.parts else pids
            per_part = torch.vmap(
                lambda d: batch_hard_triplet(d, pids, o.triplet_margin, pids_other=col_pids)
            )
            return "part_hard_triplet", per_part(per_part_distances(out.parts, cols)).mean()
        logits = out.extras["part_id_logits"]  # [B, K, classes]
        k = logits.shape[1]
        return "part_id", cross_entropy_ls(logits.flatten(0, 1), pids.repeat_interleave(k), o.ce_epsilon)

    def forward(self, out: ModelOutput, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        o = self.opts
        pids = batch["pid"]
        ids = [cross_entropy_ls(out.logits[k], pids, o.ce_epsilon) for k in o.id_embeddings]
        name, part_term = self.part_term(out, pids)
        stacked = torch.stack(ids)
        terms = {"id": stacked.mean() if o.id_reduction == "mean" else stacked.sum(), name: part_term}
        total = terms["id"] + part_term
        if "part_logits" in out.maps and o.part_loss_weight > 0:
            terms["part_attention"] = parsing_cross_entropy(
                out.maps["part_logits"], batch, o.part_loss_epsilon, background=o.background,
                targets=o.part_targets,
            )
            total = total + o.part_loss_weight * terms["part_attention"]
        return total, {k: v.detach() for k, v in terms.items()}


def build_model(cfg: Config, num_classes: int) -> AMDNet:
    return AMDNet(cfg, num_classes)


def build_loss(cfg: Config, num_classes: int, model: AMDNet) -> AMDNetLoss:
    return AMDNetLoss(cfg, num_classes, model)


def label_grouping(cfg: Config) -> str | None:
    """The amdnet5 grouping of the parsing labels; None in the stripes ablation (no supervision)."""
    o = Options(**cfg.method)
    return o.grouping if o.uses_parsing else None


def uses_labels(cfg: Config) -> bool:
    """L_CE,part_a needs the part labels: with parsing attention and a non-zero part_loss_weight."""
    o = Options(**cfg.method)
    return o.uses_parsing and o.part_loss_weight > 0


def distance(qf: dict, gf: dict, cfg: Config) -> torch.Tensor:
    """Mean of L2-normalised Euclidean distances over the foreground feature and the parts visible in both
    images (binary) or weighted by sqrt(v_q v_g) (continuous); pairs sharing nothing get the largest."""
    from occreid.evaluation.distances import matched_part_distance

    o = Options(**cfg.method)
    return matched_part_distance(
        qf, gf, o.test_embeddings, o.matching, o.visibility_threshold, metric=cfg.eval.distance
    )
