"""PFENet (Tian et al., "Prior Guided Feature Enrichment Network for Few-Shot Segmentation", TPAMI 2020).

Written from the paper and a reading of the official implementation (dvlab-research/PFENet,
``model/PFENet.py``, ``train.py``, ``util/util.py``); module names follow the official ones so the
two are easy to compare. Differences that are ours, and why, are listed in ``methods/pfenet/README.md``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from fsseg.method import BackboneSpec, Batch, FewShotMethod
from fsseg.models.backbones import build_backbone
from fsseg.models.heads import PROTOTYPE_EPS, classifier, conv_relu
from fsseg.models.ops import deep_supervision_loss, foreground, masked_average_pool, resize
from fsseg.models.prior import high_level_features, prior_stages, resize_mask, training_free_prior
from fsseg.registry import METHODS
from fsseg_methods.pfenet.declaration import PFENetDeclaration, PFENetParams


def _residual_block(dim: int) -> nn.Sequential:
    """Two 3×3 conv + ReLU; used as ``x + block(x)`` (``beta_conv`` and ``res2``)."""
    return nn.Sequential(*conv_relu(dim, dim, 3), *conv_relu(dim, dim, 3))


@METHODS.register("pfenet")
class PFENet(PFENetDeclaration, FewShotMethod):
    """Frozen backbone + training-free prior + Feature Enrichment Module (FEM)."""

    def __init__(self, params: PFENetParams, backbone: BackboneSpec) -> None:
        super().__init__(params, backbone)
        self.backbone = build_backbone(backbone)
        self.high_stage, self.before_high = prior_stages(
            self.backbone, tuple(params.mid_stages), params.high_stage, "config.method.params"
        )
        if self.wants_frozen_backbone():
            for p in self.backbone.parameters():
                p.requires_grad = False

        dim = params.reduce_dim
        fea_dim = sum(self.backbone.channels[s] for s in params.mid_stages)
        n_bins = len(params.ppm_scales)
        prior_channels = 1 if params.prior else 0
        self.down_query = nn.Sequential(*conv_relu(fea_dim, dim, 1), nn.Dropout2d(p=params.dropout))
        self.down_supp = nn.Sequential(*conv_relu(fea_dim, dim, 1), nn.Dropout2d(p=params.dropout))
        self.init_merge = nn.ModuleList(
            nn.Sequential(*conv_relu(2 * dim + prior_channels, dim, 1)) for _ in range(n_bins)
        )
        self.alpha_conv = nn.ModuleList(
            nn.Sequential(*conv_relu(2 * dim, dim, 1)) for _ in range(n_bins - 1)
        )
        self.beta_conv = nn.ModuleList(_residual_block(dim) for _ in range(n_bins))
        self.inner_cls = (
            nn.ModuleList(classifier(dim) for _ in range(n_bins)) if params.aux_weight > 0 else None
        )
        self.res1 = nn.Sequential(*conv_relu(dim * n_bins, dim, 1))
        self.res2 = _residual_block(dim)
        self.cls = classifier(dim)

    # --- helpers -----------------------------------------------------------------------------------
    def pyramid_bins(self, height: int, width: int) -> list[tuple[int, int]]:
        """FEM bin sizes for a mid-level feature map of ``height`` × ``width``."""
        p = self.params
        if p.ppm_mode == "absolute":
            return [(int(s), int(s)) for s in p.ppm_scales]
        # round half up (not Python's banker's rounding), never below one cell
        return [
            (max(1, int(s * height / p.ppm_reference + 0.5)), max(1, int(s * width / p.ppm_reference + 0.5)))
            for s in p.ppm_scales
        ]

    def _backbone_trainable(self) -> bool:
        return any(p.requires_grad for p in self.backbone.parameters())

    # --- forward -----------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        query_img, support_imgs = batch["query_img"], batch["support_imgs"]
        b, k = support_imgs.shape[:2]
        support_fg = foreground(batch["support_masks"]).flatten(0, 1)  # [B*K, H, W]

        # Query and supports go through the backbone as one batch: with frozen (eval-mode) BatchNorm
        # this gives the same features as separate passes, with fewer, larger kernels. BatchNorm on batch
        # statistics (backbone.frozen_bn: batch_stats) normalises each batch by itself, so then the
        # query batch and each shot's support batch pass separately, as in the official forward.
        wanted = (*p.mid_stages, self.before_high)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._backbone_trainable()):
            if self.backbone.training:
                parts = [self.backbone(query_img, stages=wanted)]
                parts += [self.backbone(support_imgs[:, i], stages=wanted) for i in range(k)]
                feats = {
                    s: torch.cat([parts[0][s], torch.stack([q[s] for q in parts[1:]], 1).flatten(0, 1)])
                    for s in wanted
                }
            else:
                feats = self.backbone(torch.cat([query_img, support_imgs.flatten(0, 1)]), stages=wanted)
        size = feats[p.mid_stages[0]].shape[-2:]
        # Mid-level features: cat(layer3, layer2), resized to the first stage's size if they differ
        # (the official VGG branch does this; for dilated ResNets the sizes already match).
        mid = torch.cat([resize(feats[s], size) for s in p.mid_stages], dim=1)
        query_feat = self.down_query(mid[:b])
        supp_feat = self.down_supp(mid[b:])

        # Prototype: weighted GAP with the mask resized to the feature size (official convention).
        mask_small = resize_mask(support_fg, size)[:, 0]
        prototype = masked_average_pool(supp_feat, mask_small, eps=PROTOTYPE_EPS).view(b, k, -1).mean(dim=1)

        prior = None
        if p.prior:
            # Training-free: the official code computes it without gradients even for layer4.
            with torch.no_grad():
                prev = feats[self.before_high]
                # the query's high-stage output is already there when the method also reads that stage
                known_query_high = feats[self.high_stage][:b] if self.high_stage in feats else None
                query_high, supp_high = high_level_features(
                    getattr(self.backbone, self.high_stage),
                    prev[:b],
                    prev[b:],
                    support_fg if p.mask_before_high else None,
                    query_high=known_query_high,
                    needed_fg=support_fg,
                    run=partial(self.backbone.run_stage, self.high_stage),
                )
                supp_high = supp_high.view(b, k, *supp_high.shape[1:])
                prior = training_free_prior(
                    query_high, supp_high, support_fg.view(b, k, *support_fg.shape[1:])
                )
                prior = resize(prior, size)
                if self.active_probe == "prior_off":
                    prior = torch.zeros_like(prior)

        logits, aux = self._enrich(query_feat, prototype, prior)
        out = {"logits": resize(logits, query_img.shape[-2:])}
        if self.training and self.inner_cls is not None:
            out.update({f"aux_logits_{i}": a for i, a in enumerate(aux)})
        if prior is not None:
            out["prior"] = prior
        return out

    def _enrich(
        self, query_feat: torch.Tensor, prototype: torch.Tensor, prior: torch.Tensor | None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Feature Enrichment Module: per-scale merge, top-down refinement, aux heads, fusion."""
        size = query_feat.shape[-2:]
        pyramid: list[torch.Tensor] = []  # merged features of each scale, at the full feature size
        aux: list[torch.Tensor] = []
        for idx, bin_size in enumerate(self.pyramid_bins(*size)):
            parts = [
                nn.functional.adaptive_avg_pool2d(query_feat, bin_size),
                prototype[:, :, None, None].expand(-1, -1, *bin_size),
            ]
            if prior is not None:
                parts.append(resize(prior, bin_size) * self.params.prior_gain)
            merged = self.init_merge[idx](torch.cat(parts, dim=1))
            if idx > 0:
                # Inter-scale merge: the previous (finer) scale's output, resized to this bin, refines it.
                previous = resize(pyramid[idx - 1], bin_size)
                merged = self.alpha_conv[idx - 1](torch.cat([merged, previous], dim=1)) + merged
            merged = self.beta_conv[idx](merged) + merged
            if self.training and self.inner_cls is not None:
                aux.append(self.inner_cls[idx](merged))
            pyramid.append(resize(merged, size))
        fused = self.res1(torch.cat(pyramid, dim=1))
        fused = self.res2(fused) + fused
        return self.cls(fused), aux

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Main CE + ``aux_weight`` × mean of the per-scale auxiliary CEs (ignore index 255)."""
        return deep_supervision_loss(
            outputs, batch["query_mask"], self.params.aux_weight, fg_weight=self.params.fg_weight
        )
