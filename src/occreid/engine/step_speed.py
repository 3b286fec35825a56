"""Settings that keep a training step on a GPU fast without changing what it computes: fused optimiser
kernels, the cuDNN autotuner, and how often the host reads the losses (each read waits for the GPU)."""

from __future__ import annotations

from collections.abc import Iterable

import torch

GPU_SYNC_EVERY = 8
"""`train.sync_every=auto` on a GPU: the losses are read once per 8 iterations (1 on the CPU)."""

KERNEL_CHOICES = ("fused", "foreach")
"""The optimiser options that pick kernels, not maths; a resumed run keeps those of its own device."""


def resolve_sync_every(value: int | str, device: torch.device) -> int:
    """`train.sync_every` as a number of iterations. `auto` is 1 on the CPU, where reading a loss costs
    nothing, and GPU_SYNC_EVERY on a GPU, where every read makes the host wait for the device."""
    if value == "auto":
        return 1 if device.type == "cpu" else GPU_SYNC_EVERY
    return int(value)


def fused_optimizer_options(params: Iterable[torch.Tensor]) -> dict[str, bool]:
    """`{"fused": True}` when every parameter is a floating-point CUDA tensor: Adam, AdamW and SGD then
    update all parameters in a few kernels instead of several per tensor. `{}` otherwise, i.e. torch's
    default (foreach kernels on CUDA, a loop over the parameters on the CPU), so CPU results are unchanged."""
    params = list(params)
    if params and all(p.is_cuda and p.is_floating_point() for p in params):
        return {"fused": True}
    return {}


def with_device_kernels(saved: dict, optimizer: torch.optim.Optimizer) -> dict:
    """A saved optimiser state whose parameter groups take `optimizer`'s fused / foreach choice, so a run
    resumed on another device (GPU checkpoint on the CPU, or back) uses the kernels of the device it runs
    on; loading then also places the step counters where those kernels want them. A state of another
    layout is returned as it is, for `load_state_dict` to refuse with its own message."""
    if len(saved.get("param_groups", ())) != len(optimizer.param_groups):
        return saved
    groups = [
        {**group, **{k: live[k] for k in KERNEL_CHOICES if k in live}}
        for group, live in zip(saved["param_groups"], optimizer.param_groups)
    ]
    return {**saved, "param_groups": groups}


def use_cudnn_autotuner(enabled: bool, device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms once per input shape instead of guessing them
    (a training run has fixed shapes: one input size, drop_last batches). Off = cuDNN's heuristics."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = enabled
