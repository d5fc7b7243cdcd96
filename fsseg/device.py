"""Device choice: the GPU the scheduler gave this process (CUDA_VISIBLE_DEVICES), else the CPU."""

from __future__ import annotations

import os
import sys

import torch

from fsseg.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' → the first visible CUDA device or the CPU (said on stderr); explicit names are checked.

    A scheduler (SLURM's --gpus, or a CUDA_VISIBLE_DEVICES set by hand) hands a job its GPUs by making
    only those visible; the job then runs on cuda:0, the first of them, and says which one it was.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if name == "auto":
        if torch.cuda.is_available():
            if visible is not None:
                print(
                    f"fsseg: using cuda:0, the first GPU of CUDA_VISIBLE_DEVICES={visible!r}", file=sys.stderr
                )
            return torch.device("cuda", 0)
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        print(f"fsseg: no CUDA device available{hint}; running on the CPU", file=sys.stderr)
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device: {name!r} is not a device name (use auto, cpu or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} was asked for but no CUDA device is available")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        raise ConfigError(
            f"device: {name!r} was asked for but only {torch.cuda.device_count()} CUDA device(s) are "
            f"visible{hint}; under a scheduler use 'auto' (the first GPU it gave the job)"
        )
    return device


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
