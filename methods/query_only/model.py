"""The opposite of the colour floor: a trained segmenter that never sees the support.

It has PFENet's frozen backbone and mid-level features and a small convolutional head on the query
alone. Whatever it scores on a benchmark is reachable without few-shot segmentation ("segment every
object that looks like a training object"); under a support swap its score cannot change. It is the
control of the learning check (``tests/test_learning.py``) and of the support-swap diagnostic: a
method whose score is not clearly above it, or drops as little under a swap, is not using its support.
"""

from __future__ import annotations

import torch
from torch import nn

from fsseg.method import BackboneSpec, Batch, FewShotMethod
from fsseg.models.backbones import build_backbone
from fsseg.models.ops import deep_supervision_loss, resize
from fsseg.registry import METHODS
from fsseg_methods.query_only.declaration import QueryOnlyDeclaration, QueryOnlyParams


@METHODS.register("query_only")
class QueryOnly(QueryOnlyDeclaration, FewShotMethod):
    """Frozen backbone → 1×1 reduction → two 3×3 conv blocks → 2-class logits; no support input."""

    def __init__(self, params: QueryOnlyParams, backbone: BackboneSpec) -> None:
        super().__init__(params, backbone)
        self.backbone = build_backbone(backbone)
        for p in self.backbone.parameters():
            p.requires_grad = False
        channels = sum(self.backbone.channels[s] for s in params.stages)
        dim = params.dim
        self.head = nn.Sequential(
            nn.Conv2d(channels, dim, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, 3, padding=1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, 2, 1),
        )

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        query = batch["query_img"]
        with torch.no_grad():
            feats = self.backbone(query, stages=tuple(self.params.stages))
        size = feats[self.params.stages[0]].shape[-2:]
        x = torch.cat([resize(feats[s], size) for s in self.params.stages], dim=1)
        return {"logits": resize(self.head(x), query.shape[-2:])}

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        return deep_supervision_loss(outputs, batch["query_mask"], 0.0, fg_weight=self.params.fg_weight)
