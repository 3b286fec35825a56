"""Spatial pooling: global average / max / GeM, PCB stripes, and weighted part pooling over maps."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from occreid.models.device_constants import device_constant

PartNorm = Literal["hw", "mass", "abs_mass"]
PART_NORMS: tuple[str, ...] = ("hw", "mass", "abs_mass")


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, C] mean over positions (AMD-Net Eq. 7, f_g)."""
    return x.mean(dim=(2, 3))


def global_max_pool(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> [B, C] max over positions (PAN's global branch)."""
    return x.amax(dim=(2, 3))


def gem_pool(x: torch.Tensor, p: float | torch.Tensor = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean pooling [B, C, h, w] -> [B, C]: (mean_hw clamp(x, eps)^p)^(1/p).

    p = 1 is average pooling, p -> inf approaches max pooling; the clamp keeps the root defined.
    """
    return x.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


class GeM(nn.Module):
    """GeM pooling with a learnable exponent p (initial value `p`)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem_pool(x, self.p, self.eps)


def adaptive_average_matrix(size_in: int, size_out: int) -> torch.Tensor:
    """[size_out, size_in] float64 weights of 1-D adaptive average pooling: output i is the mean of inputs
    floor(i n / m) .. ceil((i + 1) n / m) - 1 (n = size_in, m = size_out), as `adaptive_avg_pool` does.

    Built from Python ints, so a traced / exported graph holds it as a constant (no adaptive pooling op,
    which ONNX only has for sizes that divide evenly)."""
    n, m = int(size_in), int(size_out)
    if not 1 <= m <= n:
        raise ValueError(f"adaptive_average_matrix: need 1 <= size_out <= size_in ({n}), got {m}")
    i = np.arange(m)
    start, end = (i * n) // m, -((-(i + 1) * n) // m)
    pos = np.arange(n)
    inside = (pos >= start[:, None]) & (pos < end[:, None])
    return torch.from_numpy(inside / (end - start)[:, None])


def averaging_matrix(size_in: int, size_out: int, like: torch.Tensor) -> torch.Tensor:
    """`adaptive_average_matrix` on `like`'s device and in its dtype; copied to a GPU once per size, not
    in every forward (each copy would make the host wait for the GPU)."""
    n, m = int(size_in), int(size_out)
    return device_constant(("adaptive_average", n, m), lambda: adaptive_average_matrix(n, m), like.device, like.dtype)


def adaptive_avg_pool2d_fixed(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """`F.adaptive_avg_pool2d(x, size)` [B, C, H, W] -> [B, C, h, w] as two constant averaging matrices
    (the pooling windows are rectangles, so the 2-D mean factorises into a row and a column mean)."""
    rows = averaging_matrix(x.shape[2], size[0], x)
    cols = averaging_matrix(x.shape[3], size[1], x)
    return rows @ x @ cols.t()


def stripe_pool(x: torch.Tensor, n: int) -> torch.Tensor:
    """PCB's horizontal stripes: adaptive average pooling to (n, 1); [B, C, h, w] -> [B, n, C].

    When h is not a multiple of n, stripe i covers rows floor(i h / n) .. ceil((i + 1) h / n) - 1
    (adaptive pooling's rule), so neighbouring stripes may share a row. Computed with a constant [n, h]
    averaging matrix, so the exported graph is the same for every h.
    """
    h = int(x.shape[2])
    if n < 1 or n > h:
        raise ValueError(f"stripe_pool: need 1 <= n <= height ({h}), got n={n}")
    rows = averaging_matrix(h, n, x)
    return rows @ x.mean(dim=3).transpose(1, 2)  # [n, h] @ [B, h, C]


def part_pool(
    features: torch.Tensor, maps: torch.Tensor, norm: PartNorm = "hw", eps: float = 1e-6
) -> torch.Tensor:
    """Weighted pooling of features [B, C, h, w] by K maps [B, K, h, w] -> [B, K, C].

    The numerator is sum_hw F * m for every part at once (one einsum, a batched matmul). Normalisers:
    "hw": h * w (AMD-Net Eq. 6 as written); "mass": sum_hw m (the usual weighted average, for
    non-negative maps); "abs_mass": sum_hw |m| (PAN Eq. 3: masks are raw 1x1-conv outputs, no
    softmax, and may be negative). Mass normalisers are clamped to at least `eps`.
    """
    if features.dim() != 4 or maps.dim() != 4:
        raise ValueError(
            f"part_pool expects features [B,C,h,w] and maps [B,K,h,w], got {tuple(features.shape)} "
            f"and {tuple(maps.shape)}"
        )
    b, _, h, w = features.shape
    if maps.shape[0] != b or maps.shape[2:] != features.shape[2:]:
        raise ValueError(
            f"part_pool: maps {tuple(maps.shape)} do not match features {tuple(features.shape)} "
            "in batch or spatial size (resize the maps first)"
        )
    maps = maps.to(features.dtype)
    weighted = torch.einsum("bchw,bkhw->bkc", features, maps)
    if norm == "hw":
        return weighted / float(h * w)
    if norm == "mass":
        mass = maps.sum(dim=(2, 3))
    elif norm == "abs_mass":
        mass = maps.abs().sum(dim=(2, 3))
    else:
        raise ValueError(f"part_pool: unknown norm {norm!r}; choose one of {PART_NORMS}")
    return weighted / mass.clamp(min=eps).unsqueeze(2)
