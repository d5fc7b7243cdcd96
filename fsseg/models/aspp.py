"""The ASPP block of BAM's meta learner (chunbolang/BAM ``model/ASPP.py``), in our own code.

Five parallel branches on a [N, C, h, w] map, each a convolution with bias + ReLU, all C → C: the
image-level branch (global average pool, 1×1, broadcast back), a 1×1, and 3×3 convolutions at dilation
6, 12 and 18. The outputs are concatenated to [N, 5·C, h, w]. Weights start Kaiming-normal (fan-in, gain
√2) as in the official ``_init_weight``; biases keep PyTorch's default initialisation.
"""

from __future__ import annotations

import torch
from torch import nn

ASPP_DILATIONS = (6, 12, 18)


def _branch(channels: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    conv = nn.Conv2d(channels, channels, kernel, padding=padding, dilation=dilation, bias=True)
    nn.init.kaiming_normal_(conv.weight)
    return nn.Sequential(conv, nn.ReLU())


class ASPP(nn.Module):
    def __init__(self, channels: int, dilations: tuple[int, ...] = ASPP_DILATIONS) -> None:
        super().__init__()
        self.image_level = _branch(channels, 1)
        self.point = _branch(channels, 1)
        self.atrous = nn.ModuleList(_branch(channels, 3, d) for d in dilations)
        self.out_channels = channels * (2 + len(dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pooled = self.image_level(x.mean(dim=(2, 3), keepdim=True)).expand(-1, -1, h, w)
        return torch.cat([pooled, self.point(x), *(branch(x) for branch in self.atrous)], dim=1)
