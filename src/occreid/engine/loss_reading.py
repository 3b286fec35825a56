"""Losses kept on the device and read by the host in one transfer every few iterations.

`loss.item()` in every iteration makes the host wait until the GPU has finished that iteration, so the
GPU then idles while the host prepares the next one. The trainer instead keeps each iteration's detached
loss and logged terms here and reads them all at once (`read`) every `train.sync_every` iterations, at log
steps and before every checkpoint; its NaN and loss-guard checks then run over the values in order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class LossReading:
    """One iteration's loss and logged terms as Python floats; `iteration` is numbered as in metrics.jsonl."""

    iteration: int
    loss: float
    terms: dict[str, float]


class PendingLosses:
    """Detached losses (0-d tensors, any device) and their terms, waiting to be read in iteration order."""

    def __init__(self) -> None:
        self._items: list[tuple[int, torch.Tensor, dict[str, Any]]] = []

    def __len__(self) -> int:
        return len(self._items)

    def add(self, iteration: int, loss: torch.Tensor, terms: Mapping[str, Any]) -> None:
        """Keep iteration `iteration`'s loss and terms; nothing is copied to the host."""
        detached = {k: (v.detach() if torch.is_tensor(v) else v) for k, v in terms.items()}
        self._items.append((iteration, loss.detach(), detached))

    def drop_after(self, iteration: int) -> None:
        """Forget the values of iterations after `iteration` (one that did not complete)."""
        self._items = [item for item in self._items if item[0] <= iteration]

    def read(self) -> list[LossReading]:
        """Every pending value as Python floats, in iteration order, with one device-to-host copy; the
        list is emptied first, so values after a bad one are dropped when a check raises.

        Tensors are cast to float64 before the copy (float32 on MPS, which has none), so each value equals
        `float(tensor)` exactly."""
        items, self._items = self._items, []
        if not items:
            return []
        device = items[0][1].device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        flat = [loss.reshape(1) for _, loss, _ in items]
        flat += [v.reshape(1) for _, _, terms in items for v in terms.values() if torch.is_tensor(v)]
        values = iter(torch.cat([t.to(device=device, dtype=dtype) for t in flat]).tolist())
        losses = [next(values) for _ in items]
        readings = []
        for (it, _, terms), loss in zip(items, losses):
            read_terms = {k: (next(values) if torch.is_tensor(v) else float(v)) for k, v in terms.items()}
            readings.append(LossReading(it, loss, read_terms))
        return readings
