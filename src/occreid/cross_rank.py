"""Differentiable all-gather across DDP ranks, for losses that mine over the global batch. It sits below
`losses` and `methods` (both use it) and above nothing but torch; the process-group setup is in
`occreid.engine.distributed`."""

from __future__ import annotations

import torch
import torch.distributed as dist


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank in rank order; gradients flow back to each source rank.

    With DDP averaging gradients over W ranks, the mean of the per-rank losses computed on the gathered
    batch then has exactly the gradient of one process computing the loss on the global batch.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x), dim=0)
