"""Batches delivered on the device: on CUDA the next batch's host-to-device copy (from pinned memory) and
its batch transform run on a side stream while the current step computes; elsewhere a plain move.

Nothing here draws random numbers or reorders batches: the loader's order (and so a resumed run's
exact replay of its batches) is kept; at most one batch is read ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

Batch = dict[str, Any]


def to_device(batch: Batch, device: torch.device, non_blocking: bool = False) -> Batch:
    """The batch with every tensor on `device` (a no-op for tensors already there)."""
    return {k: (v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v) for k, v in batch.items()}


class DevicePrefetcher:
    """Iterate `loader`'s batches on `device`, passed through `transform` (e.g. `BatchAugment`) there.

    CUDA: batch i + 1 is taken from the loader and its non-blocking copy and transform are queued on a side
    stream before batch i is handed out, so they overlap step i; the consumer's stream waits for the side
    stream before it uses a batch, and the batch's tensors are recorded on the consumer's stream so their
    memory is not reused early. Use a DataLoader with pin_memory=True for truly asynchronous copies.
    """

    def __init__(
        self, loader: Iterable[Batch], device: torch.device, transform: Callable[[Batch], Batch] | None = None
    ) -> None:
        self.loader = loader
        self.device = torch.device(device)
        self.transform = transform

    def _finish(self, batch: Batch, non_blocking: bool) -> Batch:
        batch = to_device(batch, self.device, non_blocking=non_blocking)
        return self.transform(batch) if self.transform is not None else batch

    def __iter__(self) -> Iterator[Batch]:
        if self.device.type != "cuda":
            for batch in self.loader:
                yield self._finish(batch, non_blocking=False)
            return
        side = torch.cuda.Stream(device=self.device)
        batches = iter(self.loader)
        pending = self._queue(batches, side)
        while pending is not None:
            main = torch.cuda.current_stream(self.device)
            main.wait_stream(side)
            batch = pending
            for v in batch.values():
                if torch.is_tensor(v) and v.device.type == "cuda":
                    v.record_stream(main)
            pending = self._queue(batches, side)
            yield batch

    def _queue(self, batches: Iterator[Batch], side: torch.cuda.Stream) -> Batch | None:
        batch = next(batches, None)
        if batch is None:
            return None
        with torch.cuda.stream(side):
            return self._finish(batch, non_blocking=True)
