"""Learning-rate schedules as a factor of the base rate, evaluated at fractional epochs."""

from __future__ import annotations

import math

from occreid.config.schema import TrainConfig


def lr_factor(cfg: TrainConfig, epoch: float) -> float:
    """Linear warm-up from `warmup_factor` over `warmup_epochs`, then multi-step, cosine or constant.

    BoT: warm-up 3.5e-5 -> 3.5e-4 over 10 epochs (factor 0.1), x0.1 at epochs 40 and 70.
    """
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        alpha = epoch / cfg.warmup_epochs
        warm = cfg.warmup_factor * (1 - alpha) + alpha
    else:
        warm = 1.0
    if cfg.scheduler == "multistep":
        decay = cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m)
    elif cfg.scheduler == "cosine":
        span = max(cfg.epochs - cfg.warmup_epochs, 1e-9)
        t = min(max(epoch - cfg.warmup_epochs, 0.0) / span, 1.0)
        decay = 0.5 * (1 + math.cos(math.pi * t))
    else:
        decay = 1.0
    return warm * decay
