"""How far a size-preserving stage looks: the reach of its receptive field, in its own pixels.

A stage whose every layer keeps the spatial size (stride 1, "same" zero padding) computes its output
at a pixel from the input within ``radius`` pixels (Chebyshev distance) of it. So the output on a
box needs only the input on that box grown by ``radius``, cut at the map's border: where the crop's
edge is the map's edge, the zero padding is the same as the full map's. :func:`same_size_radius`
returns that radius, or ``None`` for a module that changes the size or that this file does not know.
"""

from __future__ import annotations

from torch import nn

_POINTWISE = (nn.BatchNorm2d, nn.ReLU, nn.Identity, nn.Dropout, nn.Dropout2d)


def _window_radius(kernel: int, stride: int, padding: int, dilation: int) -> int | None:
    reach = dilation * (kernel - 1)
    if stride != 1 or reach % 2 or padding != reach // 2:
        return None
    return reach // 2


def _pair(value: int | tuple[int, ...]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def same_size_radius(module: nn.Module) -> int | None:
    """The receptive reach of ``module`` if it preserves the spatial size, else ``None``.

    Known: 2-D convolutions and max-pools with stride 1 and "same" zero padding, point-wise modules,
    ``nn.Sequential`` (sum of its children) and residual blocks that declare ``conv_bn_pairs`` (their
    convolutions in order, in series; the larger of that and the shortcut).
    """
    if isinstance(module, _POINTWISE):
        return 0
    if isinstance(module, nn.Conv2d | nn.MaxPool2d):
        if isinstance(module, nn.Conv2d) and (
            module.padding_mode != "zeros" or isinstance(module.padding, str)
        ):
            return None
        if isinstance(module, nn.MaxPool2d) and module.ceil_mode:
            return None
        radii = [
            _window_radius(k, s, p, d)
            for k, s, p, d in zip(
                _pair(module.kernel_size),
                _pair(module.stride),
                _pair(module.padding),
                _pair(module.dilation),
                strict=True,
            )
        ]
        return None if None in radii else max(r for r in radii if r is not None)
    if isinstance(module, nn.Sequential):
        return _sum(same_size_radius(child) for child in module)
    pairs = getattr(module, "conv_bn_pairs", None)
    if pairs is not None:
        convs = {conv for conv, _ in pairs}
        others = (c for name, c in module.named_children() if name not in convs and name != "downsample")
        if any(same_size_radius(child) != 0 for child in others):
            return None  # something besides the declared convolutions reaches across pixels
        main = _sum(same_size_radius(getattr(module, conv)) for conv in convs)
        shortcut = getattr(module, "downsample", None)
        side = 0 if shortcut is None else same_size_radius(shortcut)
        return None if main is None or side is None else max(main, side)
    return None


def _sum(radii) -> int | None:
    total = 0
    for radius in radii:
        if radius is None:
            return None
        total += radius
    return total
