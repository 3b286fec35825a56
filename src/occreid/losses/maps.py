"""Pixel losses for part-attention maps, masked for images without part labels.

Both are means over pixels, not sums (a sum would outweigh the ID loss by the number of pixels), and only
over images whose label is valid; a batch without any valid label gives 0 that still has a gradient.
Targets at the attention-map resolution come from `downsample_label` / `soft_downsample`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from occreid.losses.precision import upcast


def _masked_mean(per_element: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """Mean of a [B, ...] tensor over the elements of the images with valid[b] True."""
    if valid is None:
        return per_element.mean()
    valid = valid.to(device=per_element.device, dtype=torch.bool)
    if valid.shape != per_element.shape[:1]:
        raise ValueError(f"valid mask {tuple(valid.shape)} does not match batch size {per_element.shape[0]}")
    mask = valid.view(-1, *([1] * (per_element.dim() - 1))).expand_as(per_element)
    kept = torch.where(mask, per_element, torch.zeros_like(per_element)).sum()
    count = valid.sum() * (per_element[0].numel() if per_element.shape[0] else 0)
    return kept / count.clamp(min=1)


def pixel_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    epsilon: float = 0.1,
    valid: torch.Tensor | None = None,
    background: bool = True,
) -> torch.Tensor:
    """Label-smoothed per-pixel CE (AMD Eq. 2, PAB Eq. 3-4), mean over pixels of valid images.

    `logits` [B, K+1, h, w] (channel 0 = background), `target` [B, h, w] long in 0..K, `valid` [B] bool.
    Smoothing spreads eps over the K+1 channels: target distribution (1 - eps) one_hot + eps / (K+1).
    `background=False` is Eq. 2 for a K-way softmax: `logits` [B, K, h, w], a pixel of part k (label
    1..K) has target (1 - eps) one_hot(k - 1) + eps / K, a background pixel (label 0) eps / K only.
    """
    if logits.dim() != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    log_probs = F.log_softmax(upcast(logits), dim=1)
    target = target.long()
    channel = target if background else (target - 1).clamp(min=0)
    nll = -log_probs.gather(1, channel.unsqueeze(1)).squeeze(1)
    if not background:
        nll = nll * (target > 0)
    uniform = -log_probs.mean(dim=1)
    return _masked_mean((1.0 - epsilon) * nll + epsilon * uniform, valid)


def parsing_cross_entropy(
    logits: torch.Tensor, batch: dict, epsilon: float = 0.1, background: bool = True, targets: str = "nearest"
) -> torch.Tensor:
    """`pixel_cross_entropy` of part-attention logits [B, K(+1), h, w] against the batch's parsing label
    ([B, H, W]) brought to the map, over the images whose batch["has_label"] is True.

    `targets="nearest"`: one label pixel per map cell (`downsample_label`; a 16x16 cell keeps its centre
    pixel, so thin parts such as arms often vanish). `targets="area"`: each cell's target is the fraction
    of its pixels per class (`soft_downsample`), smoothed as the hard target: (1 - eps) frac + eps / (K+1);
    it needs the background channel.
    """
    if targets == "nearest":
        target = downsample_label(batch["label"], tuple(logits.shape[-2:]))
        return pixel_cross_entropy(logits, target, epsilon, valid=batch.get("has_label"), background=background)
    if targets != "area":
        raise ValueError(f"targets={targets!r}: expected 'nearest' or 'area'")
    if not background:
        raise ValueError("targets='area' needs the background channel (background=True)")
    soft = soft_downsample(batch["label"], logits.shape[1], tuple(logits.shape[-2:])).to(logits.device)
    log_probs = F.log_softmax(upcast(logits), dim=1)
    target = (1.0 - epsilon) * soft + epsilon / logits.shape[1]
    return _masked_mean(-(target * log_probs).sum(dim=1), batch.get("has_label"))


def pixel_bce(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Binary CE on logits (SGSFA's whole-body / part attentions), mean over pixels of valid images.

    `logits` and `target` [B, h, w] or [B, K, h, w]; `target` in [0, 1] (soft targets allowed).
    """
    if logits.shape != target.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    logits = upcast(logits)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), reduction="none")
    return _masked_mean(per_pixel, valid)


def downsample_label(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of index maps [B, H, W] -> [B, h, w] (long).

    Samples the source pixel nearest each target pixel's centre, floor((i + 0.5) H / h), so a 16x
    reduction reads the middle of each 16 x 16 block rather than its top-left corner.
    """
    out = F.interpolate(label[:, None].float(), size=tuple(size), mode="nearest-exact")
    return out[:, 0].round().long()


def soft_downsample(
    label: torch.Tensor, num_classes: int, size: tuple[int, int], chunk: int = 16
) -> torch.Tensor:
    """Area-averaged one-hot maps [B, num_classes, h, w]: the fraction of each target cell per class.

    Chunked over images so the full-resolution one-hot ([chunk, C, H, W] floats) stays bounded.
    """
    out = []
    for start in range(0, label.shape[0], chunk):
        one_hot = F.one_hot(label[start : start + chunk].long(), num_classes).permute(0, 3, 1, 2).float()
        out.append(F.adaptive_avg_pool2d(one_hot, tuple(size)))
    if not out:
        return label.new_zeros((0, num_classes, *size), dtype=torch.float32)
    return torch.cat(out)
