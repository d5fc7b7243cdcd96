"""Checks that weights and gradients hold only finite numbers.

A loss can stay finite while parameters have already overflowed (e.g. a huge learning rate on a
layer whose output is later normalised away), so the training engine checks the parameters and
gradients themselves at every checkpoint and before writing ``model.pt``, and evaluation refuses
weights that are not finite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


def nonfinite_names(tensors: Iterable[tuple[str, torch.Tensor | None]]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity (``None`` entries skipped)."""
    return [
        name
        for name, tensor in tensors
        if tensor is not None
        and (tensor.is_floating_point() or tensor.is_complex())
        and not bool(torch.isfinite(tensor).all())
    ]


def nonfinite_in_state(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Non-finite entries of a ``state_dict``."""
    return nonfinite_names((k, v) for k, v in state.items() if isinstance(v, torch.Tensor))


def nonfinite_in_module(module: torch.nn.Module) -> tuple[list[str], list[str]]:
    """Non-finite (parameters and buffers, gradients) of ``module``."""
    weights = nonfinite_in_state(module.state_dict())
    grads = nonfinite_names((name, p.grad) for name, p in module.named_parameters())
    return weights, grads


def describe_names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{len(names)} tensor(s): {shown}" + (
        f" and {len(names) - limit} more" if len(names) > limit else ""
    )
