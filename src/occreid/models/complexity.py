"""Model size and cost: parameter counts with a per-module breakdown, and multiply-accumulates (MACs)
measured with torch's FlopCounterMode. Papers' "FLOPs" (e.g. PAN's 5.98 G) are usually MACs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

OWN_PARAMETERS = "(own)"  # breakdown key for parameters registered on the root module itself


def count_parameters(model: nn.Module) -> dict:
    """{"total", "trainable", "by_module": {top-level child name: count}}; shared tensors count once.

    A parameter shared by several children is attributed to the first one that registers it, and
    parameters of the root itself go under "(own)", so the breakdown always sums to "total".
    """
    by_module: dict[str, int] = {name: 0 for name, _ in model.named_children()}
    total = trainable = 0
    for name, param in model.named_parameters():  # yields each shared tensor once
        n = param.numel()
        total += n
        trainable += n if param.requires_grad else 0
        head = name.split(".", 1)[0]
        key = head if "." in name and head in by_module else OWN_PARAMETERS
        by_module[key] = by_module.get(key, 0) + n
    return {"total": total, "trainable": trainable, "by_module": by_module}


@dataclass
class MacsReport:
    """Giga multiply-accumulates of one forward pass, overall and per top-level child module.

    A child called twice counts twice. Only ops FlopCounterMode knows are counted (convolutions,
    matmuls, attention); element-wise ops and normalisation layers add nothing.
    """

    total_gmacs: float
    by_module: dict[str, float] = field(default_factory=dict)


def profile_macs(
    model: nn.Module, input_shape: Sequence[int], device: torch.device | str | None = None
) -> MacsReport:
    """Run `model` once in eval mode, without grad, on zeros of `input_shape` (batch included).

    FlopCounterMode counts 2 FLOPs per multiply-add, so its totals are halved to give MACs. The
    model's training flag is restored afterwards.
    """
    if device is None:
        first = next(model.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    first_float = next((p for p in model.parameters() if p.is_floating_point()), None)
    dtype = first_float.dtype if first_float is not None else torch.float32
    x = torch.zeros(tuple(input_shape), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        counter = FlopCounterMode(display=False, depth=None)
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    root = type(model).__name__
    by_module: dict[str, float] = {}
    for key, ops in counter.get_flop_counts().items():
        # keys are "Global", "<RootClass>" and "<RootClass>.<child>[.<grandchild>...]"
        prefix, _, rest = key.partition(".")
        if prefix == root and rest and "." not in rest:
            by_module[rest] = sum(ops.values()) / 2 / 1e9
    return MacsReport(total_gmacs=counter.get_total_flops() / 2 / 1e9, by_module=by_module)


def count_macs(
    model: nn.Module, input_shape: Sequence[int], device: torch.device | str | None = None
) -> float:
    """GMACs of one forward pass on zeros of `input_shape` (FlopCounterMode FLOPs / 2 / 1e9)."""
    return profile_macs(model, input_shape, device).total_gmacs
