"""Graph-based Global Reasoning unit (GloRe; Chen et al., CVPR 2019), 2-D version.

Pixels are projected onto ``num_node`` graph nodes (a learned, input-dependent soft assignment),
a one-layer graph convolution reasons over the nodes, and the nodes are projected back onto the
pixels. Written from the paper and the reference implementation (facebookresearch/GloRe,
``network/global_reasoning_unit.py``), whose details it keeps:

* 1×1 convolutions (with bias) reduce the input to ``num_state`` channels and to the projection map;
* GCN: a 1-D convolution over the node dimension with a residual connection (the ``(I - A_g)``
  adjacency of the paper, learned), ReLU, then a 1-D convolution over the state dimension
  (no bias);
* the reprojected states are expanded back by a 1×1 convolution without bias, followed by a
  BatchNorm (eps 1e-4) whose weight starts at zero, and added to the input: the unit is the
  identity at initialisation, so inserting it does not disturb pretrained features;
* ``num_state = 2 · num_node`` by default, as in GloRe.

The node features are divided by the number of pixels (GloRe's ``normalize``), which the reference
recommends whenever the input size is not fixed — true for few-shot episodes of any size.
"""

from __future__ import annotations

import torch
from torch import nn


class GraphConv(nn.Module):
    """One GloRe graph convolution over node features [N, num_state, num_node]."""

    def __init__(self, num_state: int, num_node: int) -> None:
        super().__init__()
        self.node_conv = nn.Conv1d(num_node, num_node, kernel_size=1)
        self.state_conv = nn.Conv1d(num_state, num_state, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, nodes: torch.Tensor) -> torch.Tensor:
        # Information diffuses between nodes (a learned adjacency applied along the node axis) ...
        h = self.node_conv(nodes.transpose(1, 2)).transpose(1, 2) + nodes
        # ... then each node's state is updated by a shared linear map.
        return self.state_conv(self.relu(h))


class GloReUnit(nn.Module):
    """GloRe unit on [N, C, H, W] features; output has the same shape and equals the input at init."""

    def __init__(
        self, channels: int, num_node: int, num_state: int | None = None, normalize: bool = True
    ) -> None:
        super().__init__()
        self.num_node = num_node
        self.num_state = num_state if num_state is not None else 2 * num_node
        self.normalize = normalize
        self.conv_state = nn.Conv2d(channels, self.num_state, kernel_size=1)
        self.conv_proj = nn.Conv2d(channels, self.num_node, kernel_size=1)
        self.gcn = GraphConv(self.num_state, self.num_node)
        self.conv_extend = nn.Conv2d(self.num_state, channels, kernel_size=1, bias=False)
        self.blocker = nn.BatchNorm2d(channels, eps=1e-4)
        nn.init.zeros_(self.blocker.weight)  # identity at init: the residual branch outputs exactly 0

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Node features [N, num_state, num_node] and the pixel→node projection [N, num_node, H·W]."""
        n = x.shape[0]
        states = self.conv_state(x).view(n, self.num_state, -1)
        projection = self.conv_proj(x).view(n, self.num_node, -1)
        nodes = torch.bmm(states, projection.transpose(1, 2))
        if self.normalize:
            nodes = nodes / states.shape[-1]
        return nodes, projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        nodes, projection = self.project(x)
        reasoned = self.gcn(nodes)
        # Reverse projection reuses the forward projection map (GloRe shares it, B^T).
        pixels = torch.bmm(reasoned, projection).view(n, self.num_state, h, w)
        return x + self.blocker(self.conv_extend(pixels))
