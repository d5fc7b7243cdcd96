"""PSPNet's pyramid pooling head (Zhao et al., CVPR 2017), as BAM's base learner uses it.

Layout from the PSPNet / BAM code (chunbolang/BAM ``model/PPM.py``, ``model/PSPNet.py``): each bin
average-pools the feature map to ``bin × bin``, reduces it by a 1×1 conv (no bias) + BatchNorm + ReLU to
``channels / len(bins)`` and is upsampled back (bilinear, ``align_corners=True``); the input and the
upsampled bins are concatenated (2 × channels), then a 3×3 conv to 512 (no bias) + BatchNorm + ReLU +
Dropout2d(0.1) and a 1×1 conv (with bias) give the class logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PSP_BINS = (1, 2, 3, 6)
PSP_HIDDEN = 512


class PyramidPooling(nn.Module):
    """The pyramid pooling module: ``[x, up(bin_1(x)), …]`` → [N, 2·C, h, w] for 4 bins."""

    def __init__(self, channels: int, bins: tuple[int, ...] = PSP_BINS) -> None:
        super().__init__()
        reduced = channels // len(bins)
        self.branches = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(size),
                nn.Conv2d(channels, reduced, kernel_size=1, bias=False),
                nn.BatchNorm2d(reduced),
                nn.ReLU(inplace=True),
            )
            for size in bins
        )
        self.out_channels = channels + reduced * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [
            F.interpolate(branch(x), size, mode="bilinear", align_corners=True) for branch in self.branches
        ]
        return torch.cat([x, *pooled], dim=1)


class PSPHead(nn.Module):
    """Pyramid pooling + classifier: backbone features [N, C, h, w] → logits [N, classes, h, w]."""

    def __init__(self, channels: int, classes: int, hidden: int = PSP_HIDDEN, dropout: float = 0.1) -> None:
        super().__init__()
        self.ppm = PyramidPooling(channels)
        self.cls = nn.Sequential(
            nn.Conv2d(self.ppm.out_channels, hidden, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout2d(p=dropout),
            nn.Conv2d(hidden, classes, kernel_size=1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.cls(self.ppm(features))


class PSPNet(nn.Module):
    """A backbone read at ``stage`` followed by a :class:`PSPHead`; both are shared with the caller, not
    copied, so training this module trains the caller's modules (how a method exposes its base learner).

    ``forward(images)`` returns logits at the feature resolution.
    """

    def __init__(self, backbone: nn.Module, stage: str, head: PSPHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.stage = stage
        self.head = head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images, stages=(self.stage,))[self.stage])
