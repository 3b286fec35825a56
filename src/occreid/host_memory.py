"""Keep freed host memory in the process (glibc): large CPU tensors then reuse pages instead of being
mapped, zero-filled and unmapped on every operation.

By default glibc serves each allocation above 32 MB with its own `mmap` and returns it on `free`; a CPU
forward of a batch allocates and frees tens of such activations per call, so the kernel zero-fills
every page again (measured 2026-12-06 on the 2-core machine, MobileNetV2 192x96: evaluation at batch
128 ran 87 img/s with 14 s of system time per 20 s, 200 img/s with this setting; a training step at
batch 64 41 -> 49 img/s). `keep_freed_memory()` sets `M_MMAP_MAX=0` (no per-allocation mappings) and
a 1 GB trim threshold; results are unchanged, the price is that the process keeps its peak heap.

Opt-in (`OCCREID_HOST_MALLOC=keep`), not the default: on 2026-12-06 a PAB-ReID evaluation (MobileNetV2
192x96, batch 128, its focuser allocating a 330 MB tensor per batch) grew by about that much per batch
after the 98th gallery batch under this setting and was killed by the kernel at 20 GB inside training's
final evaluation; with the system allocator the same evaluation stayed under 2.5 GB. Unbounded growth
loses runs, a 2x faster evaluation does not justify it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
TRIM_THRESHOLD_BYTES = 1 << 30


def keep_freed_memory() -> bool:
    """Apply the setting on Linux/glibc when `OCCREID_HOST_MALLOC=keep`; True when it is in effect. The CLI
    calls it at start; API users may call it (it changes the whole process's allocator, so the library
    never applies it on its own)."""
    if os.environ.get("OCCREID_HOST_MALLOC", "").lower() != "keep" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
