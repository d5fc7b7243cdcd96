"""Frozen backbone stages on the CPU in oneDNN's blocked layout, weights reordered once.

A stage of a frozen backbone that runs in inference (no autograd, BatchNorm on its running
statistics, fp32, CPU) computes the same function at every forward, so its work can be prepared once:

* BatchNorm is folded into the convolution before it (``W·s``, ``(b − mean)·s + beta`` with
  ``s = gamma / sqrt(var + eps)``), which removes a pass over every activation;
* each convolution's weight is reordered once into oneDNN's blocked layout
  (``torch._C._nn.mkldnn_reorder_conv2d_weight``) instead of at every call;
* the activations stay in oneDNN's blocked layout (``Tensor.to_mkldnn``) through the whole stage,
  with ReLU, the residual addition and max-pooling done by oneDNN's kernels on that layout, and come
  back to a strided tensor once at the stage's end.

On one thread this runs a dilated ResNet-50 at 473 px in about 0.8 of the time of the plain modules
(AMD EPYC; see ``reports/anchor/``), because PyTorch sends single-threaded 1×1 convolutions to its
own GEMM path, not to oneDNN. The numbers agree with the plain modules to fp32 rounding (relative
error about 1e-6), not bit for bit.

The price is a second copy of the stage's weights in memory (94 MB for a ResNet-50) and the time to
build it, spent in the first inference call (tens of milliseconds).
The prepared copy (:class:`PackedStage`) is cached by the backbone and rebuilt when any weight,
BatchNorm statistic or device of the stage changes (tensor versions and storage addresses are
compared at every call). ``FSSEG_ONEDNN=plain`` switches the path off (for comparisons); a stage
containing a module this file does not know runs the plain way.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator

import torch
from torch import nn

from fsseg.errors import ConfigError

ENV = "FSSEG_ONEDNN"
_SETTINGS = ("packed", "plain")

# Leaf modules the packed copy can run on oneDNN tensors, BatchNorm folded away first.
_LEAVES = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Identity, nn.Dropout, nn.Dropout2d)


_FORCED_PLAIN = [0]  # depth of open plain_stages() blocks


@contextlib.contextmanager
def plain_stages() -> Iterator[None]:
    """Run every stage plainly inside the block, whatever the setting: for code that inspects the
    modules as they run (FLOP counting, forward hooks), which the packed copy would bypass."""
    _FORCED_PLAIN[0] += 1
    try:
        yield
    finally:
        _FORCED_PLAIN[0] -= 1


def onednn_setting() -> str:
    """``packed`` (default) or ``plain``, from the ``FSSEG_ONEDNN`` environment variable."""
    setting = os.environ.get(ENV, "packed")
    if setting not in _SETTINGS:
        raise ConfigError(f"environment variable {ENV}={setting!r}: use one of {list(_SETTINGS)}")
    return setting


def describe_setting() -> str:
    """One line for logs and bench files (checks the environment variable)."""
    if onednn_setting() == "plain":
        return f"frozen stages run plainly ({ENV}=plain)"
    return "frozen CPU fp32 stages run oneDNN-packed (BatchNorm folded, weights reordered once)"


def packing_applies(stage: nn.Module, x: torch.Tensor) -> bool:
    """Whether ``stage`` on ``x`` may run packed: CPU fp32 inference of a stage in eval mode."""
    return (
        onednn_setting() == "packed"
        and not _FORCED_PLAIN[0]
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.layout == torch.strided
        and not torch.is_grad_enabled()
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.is_available()
        and torch.backends.mkldnn.enabled
        and not any(m.training for m in stage.modules())
    )


def packable(stage: nn.Module) -> bool:
    """True when every module of ``stage`` is a container or a leaf the packed copy knows."""
    for module in stage.modules():
        if isinstance(module, _LEAVES):
            continue
        if next(module.children(), None) is None:  # an unknown leaf: parametrised or not, refuse
            return False
        if not isinstance(module, nn.Sequential) and not hasattr(module, "conv_bn_pairs"):
            return False  # a container whose forward we do not know to be layout-agnostic
    return True


class _OneDNNConv2d(nn.Module):
    """A 2-D convolution whose (BatchNorm-folded) weight is kept reordered for oneDNN."""

    def __init__(self, conv: nn.Conv2d, scale: torch.Tensor | None, shift: torch.Tensor | None) -> None:
        super().__init__()
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("only explicit zero padding is packed")
        weight = conv.weight.detach().float()
        bias = conv.bias.detach().float() if conv.bias is not None else weight.new_zeros(weight.shape[0])
        if scale is not None:
            weight = weight * scale.view(-1, 1, 1, 1)
            bias = bias * scale + shift
        self.stride, self.padding = list(conv.stride), list(conv.padding)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        # plain attributes, not buffers: the packed copy is never saved or moved
        self.weight = torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.contiguous().to_mkldnn(), self.padding, self.stride, self.dilation, self.groups
        )
        self.bias = bias.contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mkldnn_convolution(
            x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups
        )


def _bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) of an eval-mode BatchNorm: ``y = x * scale + shift``."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("a BatchNorm without running statistics cannot be folded")
    scale = torch.rsqrt(bn.running_var.detach().float() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().float()
    shift = -bn.running_mean.detach().float() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().float()
    return scale, shift


def _pack(module: nn.Module) -> None:
    """Replace, in place, conv(+BatchNorm) pairs by packed convolutions (BatchNorm → Identity)."""
    pairs: list[tuple[str, str | None]] = []
    if isinstance(module, nn.Sequential):
        names = [name for name, _ in module.named_children()]
        for i, name in enumerate(names):
            if isinstance(module[i], nn.Conv2d):
                follows_bn = i + 1 < len(names) and isinstance(module[i + 1], nn.BatchNorm2d)
                pairs.append((name, names[i + 1] if follows_bn else None))
    else:
        declared = dict(getattr(module, "conv_bn_pairs", ()))
        for name, child in module.named_children():
            if isinstance(child, nn.Conv2d):
                pairs.append((name, declared.get(name)))
    for conv_name, bn_name in pairs:
        conv = getattr(module, conv_name)
        scale = shift = None
        if bn_name is not None:
            scale, shift = _bn_affine(getattr(module, bn_name))
            setattr(module, bn_name, nn.Identity())
        setattr(module, conv_name, _OneDNNConv2d(conv, scale, shift))
    for child in module.children():
        if not isinstance(child, _OneDNNConv2d):
            _pack(child)


def _state_key(stage: nn.Module) -> tuple:
    """What the packed copy depends on: every tensor's identity, version and storage."""
    return tuple((id(t), t._version, t.data_ptr(), t.device) for t in (*stage.parameters(), *stage.buffers()))


class PackedStage:
    """A stage's packed copy (see the module docstring), with the key of the weights it was made from."""

    def __init__(self, stage: nn.Module) -> None:
        self.key = _state_key(stage)
        packed = copy.deepcopy(stage)
        with torch.no_grad():
            _pack(packed)
        self.module = packed

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous().to_mkldnn()).to_dense()


class PackedCache(dict):
    """Packed copies of a model's stages by name. A copy or a pickle of the model gets an empty cache:
    packed copies are rebuilt where they are used, never saved."""

    def __deepcopy__(self, memo: dict) -> PackedCache:
        return PackedCache()

    def __reduce__(self) -> tuple:
        return (PackedCache, ())


def run_packed_or_plain(stage: nn.Module, x: torch.Tensor, cache: PackedCache, name: str) -> torch.Tensor:
    """Run ``stage`` on ``x`` packed when :func:`packing_applies` and the stage is :func:`packable`,
    else plainly; ``cache`` (owned by the caller) keeps the packed copy under ``name``."""
    if not packing_applies(stage, x) or not packable(stage):
        return stage(x)
    entry = cache.get(name)
    if entry is None or entry.key != _state_key(stage):
        entry = cache[name] = PackedStage(stage)
    return entry(x)
