"""PANet (Wang et al., ICCV 2019): prototype alignment network, one-way few-shot segmentation.

Masked average pooling (eps 1e-5) of support features gives a foreground prototype and a
background prototype (averaged over shots); query logits are 20 × cosine similarity to them. In
training, prototype alignment regularisation (PAR) reverses the roles: the query's own prediction
gives query prototypes that must segment the supports.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fsseg import IGNORE_INDEX
from fsseg.method import BackboneSpec, Batch, FewShotMethod
from fsseg.models.backbones import build_backbone
from fsseg.models.ops import background, cosine_map, foreground, masked_average_pool
from fsseg.registry import METHODS
from fsseg_methods.panet.declaration import PANetDeclaration, PANetParams


@METHODS.register("panet")
class PANet(PANetDeclaration, FewShotMethod):
    def __init__(self, params: PANetParams, backbone: BackboneSpec) -> None:
        super().__init__(params, backbone)
        self.backbone = build_backbone(backbone)
        stage = params.feature_stage
        if stage == "auto":
            stage = "conv5" if backbone.name == "vgg16" else "layer3"
        if stage not in self.backbone.stages:
            raise ValueError(
                f"PANet feature_stage {stage!r} is not a stage of {backbone.name}: {self.backbone.stages}"
            )
        self.stage = stage
        self.backbone.truncate(stage)
        if self.wants_frozen_backbone():
            self.backbone.requires_grad_(False)

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images, stages=(self.stage,))[self.stage]

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        query, supports, masks = batch["query_img"], batch["support_imgs"], batch["support_masks"]
        b, k = supports.shape[:2]
        size = query.shape[-2:]
        feats = self._features(torch.cat([supports.flatten(0, 1), query]))
        support_feats = feats[: b * k]
        query_feats = feats[b * k :]
        flat_masks = masks.flatten(0, 1)
        fg = (
            masked_average_pool(support_feats, foreground(flat_masks), self.params.eps).view(b, k, -1).mean(1)
        )
        bg = (
            masked_average_pool(support_feats, background(flat_masks), self.params.eps).view(b, k, -1).mean(1)
        )
        low_logits = self.params.scale * cosine_map(query_feats, torch.stack([bg, fg], dim=1))
        logits = F.interpolate(low_logits, size=size, mode="bilinear", align_corners=False)
        out = {"logits": logits}
        if self.training and self.params.align:
            out["align_loss"] = self._alignment_loss(
                low_logits, query_feats, support_feats.view(b, k, *feats.shape[1:]), masks
            )
        return out

    def _alignment_loss(
        self,
        low_logits: torch.Tensor,
        query_feats: torch.Tensor,
        support_feats: torch.Tensor,
        masks: torch.Tensor,
    ) -> torch.Tensor:
        """PAR: prototypes from the query's predicted masks (at feature resolution) segment each support."""
        b, k = support_feats.shape[:2]
        predicted = low_logits.argmax(dim=1)  # [B, h, w]
        region = torch.stack([predicted == 0, predicted == 1], dim=1).to(query_feats.dtype)  # [B, 2, h, w]
        protos = torch.einsum("nchw,nphw->npc", query_feats, region) / (
            region.sum((-2, -1))[..., None] + self.params.eps
        )
        support_logits = self.params.scale * cosine_map(
            support_feats.flatten(0, 1), protos.repeat_interleave(k, dim=0)
        )
        support_logits = F.interpolate(
            support_logits, size=masks.shape[-2:], mode="bilinear", align_corners=False
        )
        per_pixel = F.cross_entropy(
            support_logits, masks.flatten(0, 1), ignore_index=IGNORE_INDEX, reduction="none"
        )
        valid = (masks.flatten(0, 1) != IGNORE_INDEX).float()
        per_support = (per_pixel * valid).sum((-2, -1)) / valid.sum((-2, -1)).clamp_min(1)
        # As in the official code, an episode whose query prediction has no foreground is skipped.
        has_fg = (region[:, 1].sum((-2, -1)) > 0).float()
        return (per_support.view(b, k).mean(1) * has_fg).mean()

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        main = F.cross_entropy(outputs["logits"], batch["query_mask"], ignore_index=IGNORE_INDEX)
        terms = {"main": main}
        total = main
        if "align_loss" in outputs:
            terms["align"] = outputs["align_loss"]
            total = total + self.params.align_weight * outputs["align_loss"]
        return {"loss": total, **terms}
