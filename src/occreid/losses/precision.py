"""Loss arithmetic runs in at least float32: half-precision (AMP) inputs are upcast, float64 kept."""

import torch


def upcast(t: torch.Tensor) -> torch.Tensor:
    return t.float() if t.is_floating_point() and t.element_size() < 4 else t
