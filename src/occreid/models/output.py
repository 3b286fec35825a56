"""The single output type of every model, in training and at test time."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ModelOutput:
    """What a model returns.

    embeddings: name -> [B, D] global-style vectors (e.g. "global", "bnneck", "foreground").
    parts: [B, P, D] part embeddings, or None.
    visibility: [B, P] part visibility scores in [0, 1] (or None: all visible).
    logits: name -> [B, num_classes] classifier outputs (training only).
    maps: name -> [B, C, h, w] attention / parsing maps (for losses and pictures).
    extras: anything else a loss recipe needs (named tensors).
    """

    embeddings: dict[str, torch.Tensor] = field(default_factory=dict)
    parts: torch.Tensor | None = None
    visibility: torch.Tensor | None = None
    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    def features(self) -> dict[str, torch.Tensor]:
        """The test-time tensors, flat and detached: embeddings, `parts` and `visibility`."""
        out = {k: v.detach() for k, v in self.embeddings.items()}
        if self.parts is not None:
            out["parts"] = self.parts.detach()
        if self.visibility is not None:
            out["visibility"] = self.visibility.detach()
        return out
