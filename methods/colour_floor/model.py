"""A non-learned floor: prototypes of raw pixel colours, cosine similarity, no training.

Every report shows it so that a reader sees what colour alone achieves on a benchmark.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsseg.method import BackboneSpec, Batch, FewShotMethod
from fsseg.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from fsseg.models.ops import background, cosine_map, foreground, masked_average_pool
from fsseg.registry import METHODS
from fsseg_methods.colour_floor.declaration import ColourFloorDeclaration, ColourFloorParams


@METHODS.register("colour_floor")
class ColourFloor(ColourFloorDeclaration, FewShotMethod):
    def __init__(self, params: ColourFloorParams, backbone: BackboneSpec) -> None:
        super().__init__(params, backbone)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _rgb(self, images: torch.Tensor) -> torch.Tensor:
        """Undo the harness's normalisation: raw colours in [0, 1]."""
        return images * self.std + self.mean

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        query, supports, masks = batch["query_img"], batch["support_imgs"], batch["support_masks"]
        b, k = supports.shape[:2]
        colours = self._rgb(supports.flatten(0, 1))
        flat_masks = masks.flatten(0, 1)
        fg = masked_average_pool(colours, foreground(flat_masks)).view(b, k, 3).mean(1)
        bg = masked_average_pool(colours, background(flat_masks)).view(b, k, 3).mean(1)
        logits = self.params.scale * cosine_map(self._rgb(query), torch.stack([bg, fg], dim=1))
        return {"logits": logits}

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        loss = F.cross_entropy(outputs["logits"], batch["query_mask"], ignore_index=255)
        return {"loss": loss}
