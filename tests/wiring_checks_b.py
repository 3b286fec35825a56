"""Helpers for the wiring tests of pabreid, ocnet, bot and pcb: stand-in sub-modules that return a chosen
(tagged) tensor, the slices of a tensor an output depends on (by autograd), call spies, and the card's
ablation table."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn


class StandIn(nn.Module):
    """Replaces a sub-module: records its inputs and returns `out` (a leaf, so gradients can be read)."""

    def __init__(self, out: torch.Tensor, **attrs) -> None:
        super().__init__()
        self.out, self.inputs = out, []
        for k, v in attrs.items():
            setattr(self, k, v)

    def forward(self, *args):
        self.inputs.append(args)
        return self.out


def leaf(*shape: int, seed: int = 0) -> torch.Tensor:
    """A random leaf tensor that requires grad (the stand-in's output)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)


def reached(y: torch.Tensor, x: torch.Tensor, dim: int = 1) -> set[int]:
    """Indices i along `dim` of x whose slice gets a non-zero gradient from a random weighting of y (random,
    so that no sum cancels, e.g. through a training-mode BatchNorm)."""
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(3))
    (g,) = torch.autograd.grad((y * w).sum(), x, retain_graph=True, allow_unused=True)
    if g is None:
        return set()
    other = [d for d in range(g.dim()) if d != dim % g.dim()]
    return {i for i, v in enumerate(g.abs().sum(dim=other).tolist()) if v > 0}


def spy(monkeypatch, owner, name: str) -> list[tuple]:
    """Wraps owner.name (a function) to record each call's positional arguments; returns the record."""
    calls: list[tuple] = []
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


def card_ablation_table(card: Path) -> list[tuple[str, list[str]]]:
    """The rows of the card's "## Ablation table" section: (paper row, config file names it names)."""
    text = card.read_text()
    section = text.split("## Ablation table", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) < 2 or set(cells[0]) <= set("-: ") or cells[0] == "paper row":
            continue
        rows.append((cells[0], re.findall(r"`([\w./-]+\.yaml)`", cells[1])))
    return rows
