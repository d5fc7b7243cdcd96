"""Efficiency of a method, measured by the harness the same way for every method.

:func:`measure_efficiency` times one method on a synthetic episode batch of the benchmark's input
size and reports

* parameters: total, trainable (``requires_grad``) and used (parameters of the sub-modules whose
  ``forward`` ran in the counted forward: a backbone stage a method builds but never runs is not used),
  each parameter counted once;
* FLOPs per episode: :class:`torch.utils.flop_counter.FlopCounterMode` over one forward in eval /
  inference mode. Like every FLOP counter built on it, it counts the matrix-multiply-like operators
  (convolution, mm, bmm, addmm, baddbmm, attention) at 2 FLOPs per multiply-add and ignores
  element-wise operators, normalisation, pooling and interpolation;
* latency: ``warmup`` untimed forwards, then the median and 90th percentile of ``repeats`` timed
  forwards (``torch.cuda.synchronize`` before and after each one on CUDA); FPS is episodes per
  second, ``batch_size * 1000 / median ms``;
* peak memory of one more (untimed) forward, whose meaning depends on the device and is named by
  ``peak_memory_kind``:
  ``cuda_max_memory_allocated`` — ``torch.cuda.max_memory_allocated`` after
  ``torch.cuda.reset_peak_memory_stats`` (weights, inputs and activations);
  ``cpu_peak_rss_growth`` — the process's peak resident set size during the forward minus its resident
  set size just before (activations and workspace: weights and inputs are already resident). The peak
  is ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` with its high-water mark reset first through
  ``/proc/self/clear_refs`` (Linux); the current RSS comes from ``psutil`` when it is installed, else
  from ``/proc/self/statm``. The C heap is trimmed first (glibc ``malloc_trim``) so that memory freed
  by the earlier forwards is not silently reused; where that is impossible the number is a lower
  bound and the kind says ``cpu_peak_rss_growth_lower_bound``. ``tracemalloc`` does not see PyTorch's
  allocations, so it is not used.

bf16 autocast and channels-last memory format are options, off unless asked for; the ``fsseg bench``
command times them next to the plain fp32 run, never instead of it. fp32 is IEEE fp32 on CUDA too
(TF32 off, :func:`fsseg.numerics.use_ieee_fp32`).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from fsseg.device import describe_device
from fsseg.errors import ConfigError
from fsseg.method import Batch
from fsseg.models.onednn import plain_stages
from fsseg.numerics import Numerics, cuda_has_native_bf16, use_ieee_fp32

BENCH_OVERRIDES: tuple[str, ...] = ("backbone.weights=none", "backbone.sha256=null")
"""Config overrides ``fsseg bench`` always applies: the backbone is randomly initialised.

Parameter counts, FLOPs, latency and memory do not depend on weight values, so timing needs no
pretrained backbone (``fold_pretrained``, ImageNet) and no trained run; the initialised model of
``build_method(cfg)`` is timed. Method-independent: no method is special-cased."""

_MB = 1024.0 * 1024.0


# --- inputs ---------------------------------------------------------------------------------------
def synthetic_episode(
    image_size: int, shot: int, batch_size: int = 1, device: torch.device | str = "cpu", seed: int = 0
) -> Batch:
    """A test-time episode batch as the evaluation loader makes it, filled with seeded noise.

    ``query_img`` [B,3,S,S] and ``support_imgs`` [B,K,3,S,S] are normalised-looking Gaussian noise;
    ``support_masks`` [B,K,S,S] long hold a foreground blob (an ellipse covering about a fifth of the
    image, shifted per shot) on background, so masked pooling sees both regions.
    """
    if image_size < 1 or shot < 1 or batch_size < 1:
        raise ValueError(f"image_size, shot, batch_size must be positive: {image_size}, {shot}, {batch_size}")
    generator = torch.Generator().manual_seed(seed)
    s = image_size
    query = torch.randn(batch_size, 3, s, s, generator=generator)
    supports = torch.randn(batch_size, shot, 3, s, s, generator=generator)
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    masks = torch.empty(batch_size, shot, s, s, dtype=torch.long)
    for k in range(shot):
        cy, cx = 0.5 + 0.1 * ((k % 3) - 1), 0.5 - 0.1 * (((k // 3) % 3) - 1)
        blob = ((yy - cy) / 0.3) ** 2 + ((xx - cx) / 0.22) ** 2 <= 1.0
        masks[:, k] = blob.long()
    batch = {
        "query_img": query,
        "support_imgs": supports,
        "support_masks": masks,
        "class_id": torch.ones(batch_size, dtype=torch.long),
        "episode_id": torch.arange(batch_size, dtype=torch.long),
    }
    return {key: value.to(device) for key, value in batch.items()}


# --- counts ---------------------------------------------------------------------------------------
def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts; a shared parameter counts once, buffers not at all."""
    params = list(module.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


def _precision(device: torch.device, amp_bf16: bool) -> contextlib.AbstractContextManager:
    return Numerics("bf16" if amp_bf16 else "fp32").autocast(device)


def count_flops(method: nn.Module, batch: Batch, amp_bf16: bool = False) -> tuple[int, dict[str, int], int]:
    """FLOPs of one forward of ``method`` on ``batch`` (no autograd), their split by operator, and the
    number of parameters the forward used (those of every sub-module whose ``forward`` ran)."""
    device = next(iter(batch.values())).device
    ran: set[int] = set()
    handles = [
        m.register_forward_pre_hook(lambda module, _args: ran.add(id(module))) for m in method.modules()
    ]
    try:
        # plain stages: the packed CPU copy (fsseg/models/onednn.py) would hide the modules from the
        # hooks and its oneDNN calls from the counter; the FLOPs are the model's, whichever path runs
        with (
            plain_stages(),
            torch.inference_mode(),
            _precision(device, amp_bf16),
            FlopCounterMode(display=False) as counter,
        ):
            method(batch)
    finally:
        for handle in handles:
            handle.remove()
    used: dict[int, int] = {}
    for module in method.modules():
        if id(module) in ran:
            used.update((id(p), p.numel()) for p in module.parameters(recurse=False))
    by_operator = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    by_operator = dict(sorted(by_operator.items(), key=lambda kv: -kv[1]))
    return int(counter.get_total_flops()), by_operator, sum(used.values())


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) with linear interpolation between order statistics."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --- memory ---------------------------------------------------------------------------------------
def _current_rss_bytes() -> tuple[int | None, str]:
    """Resident set size now, and where it was read from."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return int(psutil.Process().memory_info().rss), "psutil"
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE"), "/proc/self/statm"
    except (OSError, ValueError, IndexError):
        return None, "unavailable"


def _peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # bytes on macOS, KiB on Linux


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


def _trim_heap() -> bool:
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``); False where unavailable.

    Without it, memory freed by earlier forwards stays resident and a later forward reuses it
    without growing the resident set, so its peak would read as (nearly) zero.
    """
    try:
        libc = ctypes.CDLL(None)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # no C library handle, or not glibc
        return False
    trim.argtypes = [ctypes.c_size_t]
    trim(0)
    return True


class PeakMemory:
    """Context manager measuring the peak memory of the code it wraps (see the module docstring).

    After exit, ``peak_mb``, ``baseline_mb`` (``None`` when unavailable), ``kind`` and ``source``
    describe the measurement.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_mb: float | None = None
        self.baseline_mb: float | None = None
        self.kind = "unavailable"
        self.source = ""

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._baseline = torch.cuda.memory_allocated(self.device)
        else:
            self._trimmed = _trim_heap()
            self._was_reset = _reset_peak_rss()
            self._baseline, self._rss_source = _current_rss_bytes()
            self._peak_before = _peak_rss_bytes()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / _MB
            self.baseline_mb = self._baseline / _MB
            self.kind = "cuda_max_memory_allocated"
            self.source = "torch.cuda.max_memory_allocated after torch.cuda.reset_peak_memory_stats"
            return
        peak_after = _peak_rss_bytes()
        if self._baseline is None or peak_after is None or self._peak_before is None:
            self.source = "no resident-set-size source on this platform"
            return
        if not (self._was_reset or peak_after > self._peak_before):
            self.source = "peak RSS could not be reset and the code set no new process peak"
            return
        self.baseline_mb = self._baseline / _MB
        self.peak_mb = max(peak_after - self._baseline, 0) / _MB
        self.kind = "cpu_peak_rss_growth" if self._trimmed else "cpu_peak_rss_growth_lower_bound"
        steps = ["malloc_trim(0)" if self._trimmed else "no heap trim (freed memory may be reused unseen)"]
        if self._was_reset:
            steps.append("high-water mark reset via /proc/self/clear_refs")
        self.source = (
            f"getrusage ru_maxrss minus RSS before ({self._rss_source}); {', '.join(steps)}; "
            "one untimed forward"
        )


# --- timing ---------------------------------------------------------------------------------------
def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


@contextlib.contextmanager
def _eval_mode(method: nn.Module) -> Iterator[None]:
    was_training = method.training
    method.eval()
    try:
        yield
    finally:
        method.train(was_training)


def measure_efficiency(
    method: nn.Module,
    image_size: int,
    shot: int,
    device: torch.device | str,
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    amp_bf16: bool = False,
    channels_last: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Parameters, FLOPs, latency, FPS and peak memory of ``method`` on a synthetic episode batch.

    The method is moved to ``device`` (and, with ``channels_last``, its 4-D parameters are re-laid
    out in place); it runs in eval mode under ``torch.inference_mode`` and its training flag is
    restored afterwards. ``latency_ms_*`` are per forward of ``batch_size`` episodes; ``fps`` and the
    FLOPs are per episode. Returns a JSON-serialisable dict.
    """
    device = torch.device(device)
    if warmup < 0 or repeats < 1:
        raise ValueError(f"warmup must be >= 0 and repeats >= 1, got {warmup} and {repeats}")
    if amp_bf16 and device.type == "cuda" and not cuda_has_native_bf16(device):
        raise ConfigError(f"bf16 autocast was asked for but {describe_device(device)} has no native bf16")
    use_ieee_fp32(device)  # fp32 rows are IEEE fp32 on CUDA too, not TF32
    method.to(device)
    batch = synthetic_episode(image_size, shot, batch_size, device, seed)
    if channels_last:
        method.to(memory_format=torch.channels_last)
        batch["query_img"] = batch["query_img"].contiguous(memory_format=torch.channels_last)
    total, trainable = count_parameters(method)

    with _eval_mode(method):
        flops, flops_by_operator, used = count_flops(method, batch, amp_bf16)
        times_ms: list[float] = []
        with torch.inference_mode(), _precision(device, amp_bf16):
            for _ in range(warmup):
                method(batch)
            for _ in range(repeats):
                _synchronize(device)
                tick = time.perf_counter()
                method(batch)
                _synchronize(device)
                times_ms.append(1000.0 * (time.perf_counter() - tick))
            with PeakMemory(device) as memory:  # its own forward: trimming the heap would skew timings
                method(batch)

    median_ms = statistics.median(times_ms)
    return {
        "method": getattr(method, "registry_name", "") or type(method).__name__,
        "image_size": image_size,
        "shot": shot,
        "batch_size": batch_size,
        "amp_bf16": amp_bf16,
        "channels_last": channels_last,
        "params_total": total,
        "params_trainable": trainable,
        "params_used": used,
        "flops_per_episode": flops / batch_size,
        "gflops_per_episode": flops / batch_size / 1e9,
        "flops_by_operator": flops_by_operator,
        "flop_counter": "torch.utils.flop_counter.FlopCounterMode (matmul-like ops, 2 FLOPs per MAC)",
        "warmup": warmup,
        "repeats": repeats,
        "latency_ms": [round(t, 4) for t in times_ms],
        "latency_ms_median": median_ms,
        "latency_ms_p90": percentile(times_ms, 90),
        "latency_ms_min": min(times_ms),
        "fps": batch_size * 1000.0 / median_ms,
        "peak_memory_mb": memory.peak_mb,
        "peak_memory_kind": memory.kind,
        "peak_memory_source": memory.source,
        "memory_baseline_mb": memory.baseline_mb,
        "device": describe_device(device),
        "device_type": device.type,
        "cpu": _cpu_name(),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
    }


# --- the `fsseg bench` grid -----------------------------------------------------------------------
def bench_config(
    cfg: Any,
    sizes: Sequence[int] | None = None,
    shots: Sequence[int] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    warmup: int = 5,
    repeats: int = 20,
    amp_bf16: bool = False,
    channels_last: bool = False,
    log: Any = None,
) -> list[dict[str, Any]]:
    """Measure the configured method over sizes × shots × precision modes; one dict per measurement.

    ``cfg`` is an :class:`~fsseg.config.ExperimentConfig` (load it with :data:`BENCH_OVERRIDES`).
    ``sizes`` default to ``dataset.image_size`` and ``shots`` to ``eval.shot``. The plain fp32,
    contiguous run is always measured; ``amp_bf16`` / ``channels_last`` add runs with those options
    (both: all four combinations). The method is built once (its construction does not depend on
    the input size or shot) and each mode gets a fresh copy, so channels-last never leaks.
    """
    from fsseg.engine.build import build_method

    sizes = list(sizes or [cfg.dataset.image_size])
    shots = list(shots or [cfg.eval.shot])
    modes = [(False, False)]
    if amp_bf16:
        modes.append((True, False))
    if channels_last:
        modes.append((False, True))
    if amp_bf16 and channels_last:
        modes.append((True, True))
    identity = {
        "method": cfg.method.name,
        "variant": cfg.method.variant,
        "backbone": cfg.backbone.name,
        "output_stride": cfg.backbone.output_stride,
        "backbone_train_mode": cfg.backbone.train_mode,
        "dataset": cfg.dataset.name,
    }
    rows = []
    for bf16, cl in modes:
        method = build_method(cfg)
        for size in sizes:
            for shot in shots:
                row = measure_efficiency(
                    method, size, shot, device, batch_size, warmup, repeats, amp_bf16=bf16, channels_last=cl
                )
                rows.append({**row, **identity})
                if log is not None:
                    print(
                        f"fsseg bench: {cfg.method.name}-{cfg.method.variant} {cfg.backbone.name} {size}px "
                        f"{shot}-shot {mode_label(row)}: {row['latency_ms_median']:.1f} ms median, "
                        f"{row['gflops_per_episode']:.2f} GFLOPs",
                        file=log,
                        flush=True,
                    )
        del method
    return rows


def mode_label(row: dict[str, Any]) -> str:
    """``fp32`` or ``bf16``, with ``+cl`` for channels-last."""
    return ("bf16" if row.get("amp_bf16") else "fp32") + ("+cl" if row.get("channels_last") else "")


_COLUMNS: tuple[tuple[str, str], ...] = (
    ("method", "<"),
    ("variant", "<"),
    ("backbone", "<"),
    ("size", ">"),
    ("shot", ">"),
    ("mode", "<"),
    ("params M", ">"),
    ("trainable M", ">"),
    ("used M", ">"),
    ("GFLOPs", ">"),
    ("median ms", ">"),
    ("p90 ms", ">"),
    ("FPS", ">"),
    ("peak MB", ">"),
)


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """A fixed-width text table of :func:`bench_config` rows (header line, then one line per row)."""
    cells = []
    for row in rows:
        peak = row.get("peak_memory_mb")
        cells.append(
            (
                str(row.get("method", "")),
                str(row.get("variant", "")),
                str(row.get("backbone", "")),
                str(row["image_size"]),
                str(row["shot"]),
                mode_label(row),
                f"{row['params_total'] / 1e6:.2f}",
                f"{row['params_trainable'] / 1e6:.2f}",
                f"{row['params_used'] / 1e6:.2f}",
                f"{row['gflops_per_episode']:.2f}",
                f"{row['latency_ms_median']:.1f}",
                f"{row['latency_ms_p90']:.1f}",
                f"{row['fps']:.1f}",
                "n/a" if peak is None else f"{peak:.1f}",
            )
        )
    widths = [max([len(name), *(len(c[i]) for c in cells)]) for i, (name, _) in enumerate(_COLUMNS)]
    lines = ["  ".join(f"{name:{align}{w}}" for (name, align), w in zip(_COLUMNS, widths, strict=True))]
    for c in cells:
        padded = (f"{v:{align}{w}}" for v, (_, align), w in zip(c, _COLUMNS, widths, strict=True))
        lines.append("  ".join(padded))
    return "\n".join(lines)


def table_footnote(rows: Sequence[dict[str, Any]]) -> str:
    """What the machine-dependent columns mean for these rows (device, threads, memory kind)."""
    if not rows:
        return ""
    kinds = sorted({str(r["peak_memory_kind"]) for r in rows})
    first = rows[0]
    return (
        f"# device {first['device']} [{first['cpu']}], torch {first['torch_version']}, "
        f"{first['num_threads']} threads; batch {first['batch_size']} episode(s) per forward, "
        f"{first['warmup']} warm-up + {first['repeats']} timed forwards; FLOPs per episode "
        f"(conv/matmul only); peak MB = {', '.join(kinds)}"
    )
