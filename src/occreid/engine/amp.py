"""Mixed precision on CPU: bf16 autocast with a guard against a oneDNN bf16 convolution bug.

oneDNN v3.12 (PyTorch 2.13 CPU wheels) runs bf16 convolutions on AMX CPUs (Sapphire Rapids and later:
`amx_bf16` in /proc/cpuinfo) with its BRGEMM kernels (`brg_conv_fwd:avx10_1_512_amx` and the weight-
gradient kernel). These return garbage when the innermost output dimension is 1 and its stride is > 1:
errors larger than the output, values ~1e36 or NaN, different from call to call (they read memory the
kernel never wrote). This is pytorch/pytorch#169688; pytorch/pytorch#188426 guards only conv3d.
ResNet-18 at 32x16 meets it: layer3.0.conv1 (3x3, stride 2) maps 4x2 to 2x1, and a BoT step in
bf16 ended in a NaN loss. fp32 and fp16 use other kernels and are correct.
Minimal reproduction on such a CPU (relative error ~1 instead of ~3e-3; correct with
ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 or with torch.backends.mkldnn disabled):

    x, w = torch.randn(8, 128, 4, 2).bfloat16(), (0.05 * torch.randn(256, 128, 3, 3)).bfloat16()
    ref = F.conv2d(x.double(), w.double(), stride=2, padding=1)
    (F.conv2d(x, w, stride=2, padding=1).double() - ref).abs().max() / ref.abs().max()

The workaround: under CPU bf16 autocast, only the convolutions in that class run in float32 with
autocast off. Their result is cast back to bf16, and their backward runs in float32 too. They have
an output width of 1, so they cost little. Every other op keeps autocast's bf16.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

_CONV_DIMS = ((F.conv1d, 1), (F.conv2d, 2), (F.conv3d, 3))  # torch.convNd is the same object
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")


def _last(value) -> int:
    """The innermost entry of a conv argument given as an int or a per-dimension tuple."""
    return int(value[-1]) if isinstance(value, tuple | list) else int(value)


def strided_to_width_one(input_shape, weight_shape, stride=1, padding=0, dilation=1) -> bool:
    """Whether a convolution's innermost output size is 1 with an innermost stride > 1 (the bug's class)."""
    s = _last(stride)
    if s <= 1:
        return False
    pad = 0 if isinstance(padding, str) else _last(padding)  # "valid"; "same" needs stride 1
    k, d = int(weight_shape[-1]), _last(dilation)
    return (int(input_shape[-1]) + 2 * pad - d * (k - 1) - 1) // s + 1 == 1


def _float32(v):
    return v.float() if isinstance(v, torch.Tensor) and v.is_floating_point() else v


class StridedWidthOneConvInFloat32(TorchFunctionMode):
    """Runs F.conv1d/2d/3d calls that are in the oneDNN AMX bf16 bug's class in float32, autocast off."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if any(func is conv for conv, _ in _CONV_DIMS):
            a = {**dict(zip(_CONV_ARGS, args)), **kwargs}
            x, w = a["input"], a["weight"]
            if x.device.type == "cpu" and strided_to_width_one(
                x.shape, w.shape, a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1)
            ):
                with torch.autocast("cpu", enabled=False):
                    out = func(*[_float32(v) for v in args], **{k: _float32(v) for k, v in kwargs.items()})
                return out.to(torch.bfloat16)  # the dtype autocast gives a convolution
        return func(*args, **kwargs)


@contextlib.contextmanager
def cpu_bf16_autocast() -> Iterator[None]:
    """`torch.autocast("cpu", dtype=torch.bfloat16)` with the oneDNN AMX convolution guard (see module doc)."""
    with torch.autocast("cpu", dtype=torch.bfloat16), StridedWidthOneConvInFloat32():
        yield
