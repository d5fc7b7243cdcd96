"""glibc malloc settings for processes that run a model on the CPU.

glibc serves an allocation above its mmap threshold (dynamic, at most 32 MiB on 64-bit Linux) with a
fresh ``mmap`` and returns it to the kernel on ``free``. A ResNet-50 activation at 473 px (2,048 ×
60 × 60 floats, 29.5 MB per image; query and supports batched) is above it, so every forward maps its
activations anew and the kernel zero-fills them page by page: 190,000 minor page faults and 0.4 s of
system time per 473-px PFENet forward were measured (issue 14). With mmap switched off and the heap's
top kept (``M_MMAP_MAX`` 0, a large ``M_TRIM_THRESHOLD``), freed activations are reused by the next
forward instead.

:func:`tune_for_tensors` applies this to the calling process; ``fsseg`` does so before it builds a
model (train, evaluate, pretrain, bench, predict), unless ``FSSEG_MALLOC=default``. The cost is a
process that keeps its peak heap until it exits. On other C libraries (musl, macOS) nothing is done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_HEAP_BYTES = 2**31 - 1  # the largest value mallopt's int takes: never give the heap's top back

ENV = "FSSEG_MALLOC"


def tune_for_tensors() -> str:
    """Switch glibc malloc to heap-only, top kept; returns what was done (for logs and bench files)."""
    setting = os.environ.get(ENV, "tuned")
    if setting not in ("tuned", "default"):
        raise ValueError(f"environment variable {ENV}={setting!r}: use 'tuned' or 'default'")
    if setting == "default":
        return f"glibc malloc defaults ({ENV}=default)"
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return "allocator untouched (not glibc)"
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, KEEP_HEAP_BYTES) == 1
    return "glibc malloc: no mmap, heap top kept" if ok else "glibc mallopt refused; allocator untouched"
