"""How a forward pass computes: fp32 (the reference) or bf16 autocast, and the memory layout (contiguous
or channels-last) of the model's 4-D weights, hence of its activations.

Training (``train.precision``, ``train.channels_last``), evaluation (``eval.*``) and backbone pretraining
(``pretrain.*``) each choose; fp32 and contiguous are the defaults. bf16 autocast runs convolutions and
matrix products in bfloat16 with fp32 accumulation (losses, norms and soft-max stay fp32); on a CPU with
native bf16 (``avx512_bf16`` or ``amx_bf16``) and on a CUDA card that supports it this is faster, and
scores move by a measured tolerance (``tests/test_learning.py`` bounds the class-mIoU change of bf16
evaluation). The training settings are part of a run's identity; the evaluation settings are written
into every ``summary.json``.

fp32 means IEEE float32 on every device. On CUDA, PyTorch runs cuDNN convolutions in TF32 by default
(10-bit mantissa inputs) on Ampere and later cards; :meth:`Numerics.prepare` turns TF32 off for cuDNN and
cuBLAS, so an fp32 CUDA run computes what an fp32 CPU run does up to rounding (summation order, cuDNN's
choice of algorithm), and bf16 is the one reduced precision, chosen by name.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fsseg.errors import ConfigError

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def cuda_has_native_bf16(device: torch.device) -> bool:
    """Whether the CUDA card ``device`` computes in bf16 natively (compute capability 8.0, Ampere, or later).

    Not ``torch.cuda.is_bf16_supported()``: by default that also answers yes for older cards, where
    bf16 is emulated and slow, and it asks about the current device rather than ``device``.
    """
    return torch.cuda.get_device_capability(device)[0] >= 8


def use_ieee_fp32(device: torch.device) -> None:
    """Turn TF32 off for cuDNN convolutions and cuBLAS matrix products when ``device`` is CUDA.

    The flags are per process; fsseg runs one job's forward passes per process, and every job that
    runs on CUDA calls this (through :meth:`Numerics.prepare`, or ``fsseg bench``). The legacy switches
    are used because they exist in every supported torch; mixing them with the newer ``fp32_precision``
    ones in one process makes torch refuse to read either.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool | None:
    """Whether the CPU has a bf16 instruction set (``None`` when this cannot be read, e.g. not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    lines = text.splitlines()
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return any(flag in flags for flag in CPU_BF16_FLAGS)


@dataclass(frozen=True)
class Numerics:
    """A precision (``fp32`` or ``bf16``) and a memory layout for the forward passes of one job."""

    precision: str = "fp32"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"precision: {self.precision!r} is not one of fp32, bf16")

    @classmethod
    def of(cls, section: Any) -> Numerics:
        """The numerics a config section chooses (``train``, ``eval``, ``pretrain``, ``base_learner``: each
        has ``precision`` and ``channels_last``)."""
        return cls(section.precision, section.channels_last)

    def check(self, device: torch.device, key: str) -> str | None:
        """Refuse bf16 on a CUDA card without it (naming ``key``); a note when a CPU would emulate it."""
        if self.precision != "bf16":
            return None
        if device.type == "cuda":
            if not cuda_has_native_bf16(device):
                raise ConfigError(
                    f"config.{key}: bf16 was asked for but {torch.cuda.get_device_name(device)} (compute "
                    f"capability {'.'.join(map(str, torch.cuda.get_device_capability(device)))}) has no "
                    "native bf16 (needs 8.0 or later); use fp32"
                )
            return None
        if device.type == "cpu" and cpu_has_native_bf16() is False:
            return (
                f"config.{key} is bf16 but this CPU has none of {', '.join(CPU_BF16_FLAGS)}: bf16 is "
                "emulated there and slower than fp32"
            )
        return None

    def prepare(self, device: torch.device, key: str) -> None:
        """Before a job's first forward on ``device``: :meth:`check` (its note, if any, printed to stderr
        as a log line) and IEEE fp32 on CUDA (:func:`use_ieee_fp32`)."""
        note = self.check(device, key)
        if note:
            print(f"fsseg: {note}", file=sys.stderr)
        use_ieee_fp32(device)

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The context a forward pass (and its loss) runs in."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def apply(self, module: nn.Module) -> nn.Module:
        """``module`` with its 4-D weights laid out channels-last when asked for (in place)."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return module

    def describe(self) -> str:
        return self.precision + (", channels-last" if self.channels_last else "")
