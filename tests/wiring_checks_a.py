"""Helpers for the wiring and ablation tests of PAN, AMD-Net and SGSFA: which outputs change when one input
is perturbed, stand-in sub-modules that return tagged tensors, a few training steps that record which
parameters received a gradient, and the ablation table of a method card."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], atol: float = 1e-6) -> set[str]:
    """Names whose tensors differ (beyond atol) between two dicts with the same keys."""
    return {k for k in before if not torch.allclose(before[k], after[k], atol=atol, rtol=0)}


def tagged(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """A reproducible random tensor: a distinguishable stand-in value."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def stand_in(module: nn.Module, value: Callable[[torch.Tensor], object]) -> list:
    """Replace `module.forward` by `value(first input)`; returns the list that collects the inputs it saw."""
    seen: list = []

    def forward(x, *args, **kwargs):
        seen.append(x)
        return value(x)

    module.forward = forward  # type: ignore[method-assign]
    return seen


def record_inputs(module: nn.Module) -> list:
    """Forward hook: the first positional input of every call to `module`."""
    seen: list = []
    module.register_forward_hook(lambda m, args, out: seen.append(args[0].detach().clone()))
    return seen


def train_steps(model: nn.Module, loss_fn: nn.Module, images: torch.Tensor, batch: dict, steps: int = 2,
                lr: float = 1e-3) -> tuple[dict, set[str]]:
    """`steps` Adam steps; returns the loss terms of the first step and the names of the trainable
    parameters whose gradient was non-zero somewhere in the first step."""
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    first, reached = None, set()
    for step in range(steps):
        opt.zero_grad()
        total, terms = loss_fn(model(images), batch)
        total.backward()
        assert torch.isfinite(total), terms
        if step == 0:
            first = terms
            reached = {n for n, p in model.named_parameters() if p.grad is not None and bool(p.grad.any())}
        opt.step()
    return first, reached


def card_ablation_rows(method: str) -> list[tuple[str, list[str]]]:
    """The rows of the table under "## Paper rows and ablation configs" in docs/methods/<method>.md:
    (first cell, the ablation config stems named in the row)."""
    text = (ROOT / "docs" / "methods" / f"{method}.md").read_text()
    section = text.split("## Paper rows and ablation configs", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if line.startswith("|") and not re.match(r"^\|[\s|:-]+\|$", line) and "config" not in line.split("|")[2]:
            rows.append((line.split("|")[1].strip(), re.findall(r"ablations/([\w.]+)\.yaml", line)))
    return rows


def ablation_stems(method: str) -> list[str]:
    return sorted(p.stem for p in (ROOT / "configs" / method / "ablations").glob("*.yaml"))
