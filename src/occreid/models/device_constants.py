"""Constant tensors that a forward pass builds on the host (DFT and pooling matrices, masks), kept per GPU.

Copying a host tensor to a GPU with `.to(device)` waits until the device has finished all queued work (a
blocking copy), so building such a constant in every forward is a host sync per iteration. On a GPU the
copy is made once per key; on the CPU the constant is built each time, exactly as before, so a traced or
exported graph still holds it as a constant.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch

_ON_DEVICE: dict[tuple, torch.Tensor] = {}


def device_constant(
    key: Hashable, build: Callable[[], torch.Tensor], device: torch.device, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """`build()` (a host tensor) on `device` (and in `dtype`); on a GPU built and copied once per
    (key, device, dtype). The result is shared: never modify it in place."""
    device = torch.device(device)
    if device.type == "cpu":
        return build().to(device=device, dtype=dtype)
    cache_key = (key, str(device), dtype)
    tensor = _ON_DEVICE.get(cache_key)
    if tensor is None:
        tensor = build().to(device=device, dtype=dtype)
        _ON_DEVICE[cache_key] = tensor
    return tensor
