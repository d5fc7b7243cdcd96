"""Convolutional pieces of the PFENet-style heads, shared by PFENet and DSMF-Net.

Both heads follow PFENet's official ``model/PFENet.py``: bias-free convolutions each followed by a ReLU,
a classifier of one 3×3 conv block, ``Dropout2d(0.1)`` and a 1×1 conv to the two classes, and the
support prototype by weighted global average pooling whose area denominator carries
:data:`PROTOTYPE_EPS`.
"""

from __future__ import annotations

from torch import nn

PROTOTYPE_EPS = 5e-4
"""Added to the mask area of PFENet's weighted GAP (``Weighted_GAP``: ``area + 0.0005``)."""


def conv_relu(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    """A bias-free ``kernel``×``kernel`` convolution (same padding) and an in-place ReLU."""
    return [
        nn.Conv2d(c_in, c_out, kernel_size=kernel, padding=kernel // 2, bias=False),
        nn.ReLU(inplace=True),
    ]


def classifier(dim: int, classes: int = 2) -> nn.Sequential:
    """3×3 conv, ReLU, Dropout2d(0.1), 1×1 conv to the classes (PFENet's ``cls`` / ``inner_cls``)."""
    return nn.Sequential(*conv_relu(dim, dim, 3), nn.Dropout2d(p=0.1), nn.Conv2d(dim, classes, kernel_size=1))
