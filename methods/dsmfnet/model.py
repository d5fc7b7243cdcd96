"""DSMF-Net (Qi et al., "DSMF-Net: Dual Semantic Metric Learning Fusion Network for Few-Shot Aerial
Image Semantic Segmentation", IEEE JSTARS 2025). There is no public code; this is our reading of the
paper, with every choice the paper leaves open written down in ``methods/dsmfnet/README.md`` and
exposed as a parameter.

Pipeline (query and supports share every module):

1. **GPML** (graph prototype metric learning): the features of three intermediate backbone stages
   each pass their own GloRe unit; a mask-weighted average of the support's graph features is the
   stage's *graph prototype*, and the cosine similarity of the query's graph features with it,
   min-max normalised, is one probability map per stage.
2. **Prior** (prior-guided metric learning): PFENet's training-free prior on the high-level stage.
3. **SFF** (scale-aware feature fusion): each stage's features are resampled to one pyramid level
   (shallow → fine, deep → coarse), reduced, and merged with the support prototype and all maps;
   neighbouring levels are merged by 1×1 convolutions into intermediate-scale features; everything is
   resized to the output scale and concatenated into the fused feature. The classifier sees the
   fused feature together with the probability maps and the prior.
4. **Loss**: CE on the main logits + ``aux_weight`` × mean CE of one auxiliary head per pyramid level.
"""

from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from fsseg.method import BackboneSpec, Batch, FewShotMethod
from fsseg.models.backbones import build_backbone
from fsseg.models.glore import GloReUnit
from fsseg.models.heads import PROTOTYPE_EPS, classifier, conv_relu
from fsseg.models.ops import (
    cosine_map,
    deep_supervision_loss,
    foreground,
    masked_average_pool,
    minmax_normalise,
    resize,
)
from fsseg.models.prior import high_level_features, prior_stages, training_free_prior
from fsseg.registry import METHODS
from fsseg_methods.dsmfnet.declaration import DSMFNetDeclaration, DSMFNetParams


def _resample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Average-pool when shrinking (no aliasing of fine detail), bilinear when growing."""
    h, w = x.shape[-2:]
    if (h, w) == size:
        return x
    if size[0] <= h and size[1] <= w:
        return F.adaptive_avg_pool2d(x, size)
    return resize(x, size)


@METHODS.register("dsmfnet")
class DSMFNet(DSMFNetDeclaration, FewShotMethod):
    """Frozen backbone + GPML graph prototypes + PFENet prior + SFF pyramid fusion."""

    def __init__(self, params: DSMFNetParams, backbone: BackboneSpec) -> None:
        super().__init__(params, backbone)
        self.backbone = build_backbone(backbone)
        self.high_stage, self.before_high = prior_stages(
            self.backbone, tuple(params.stages), params.high_stage, "config.method.params"
        )
        if self.wants_frozen_backbone():
            for p in self.backbone.parameters():
                p.requires_grad = False

        channels = self.backbone.channels
        dim = params.reduce_dim
        # Stages whose features enter SFF: all of them, or only the deepest when the pyramid is off.
        self.sff_stages = list(params.stages) if params.sff != "off" else [params.stages[-1]]
        sff_on_graph = params.sff in ("full", "no_merge", "off")
        self.glore = nn.ModuleDict()
        for name in params.stages:
            if params.gpml == "graph" or (sff_on_graph and name in self.sff_stages):
                nodes = params.num_node or max(channels[name] // params.node_divisor, 1)
                self.glore[name] = GloReUnit(channels[name], num_node=nodes)

        self.n_maps = (len(params.stages) if params.gpml != "off" else 0) + (1 if params.prior == "on" else 0)
        self.reduce = nn.ModuleDict(
            {
                name: nn.Sequential(*conv_relu(channels[name], dim, 1), nn.Dropout2d(p=params.dropout))
                for name in self.sff_stages
            }
        )
        # Per level: reduced query feature, expanded support prototype and all maps → one feature.
        self.merge = nn.ModuleDict(
            {name: nn.Sequential(*conv_relu(2 * dim + self.n_maps, dim, 1)) for name in self.sff_stages}
        )
        self.neighbour_merge = nn.ModuleList()
        n_parts = len(self.sff_stages)
        if params.sff in ("full", "no_graph"):
            self.neighbour_merge.extend(
                nn.Sequential(*conv_relu(2 * dim, dim, 1)) for _ in range(len(self.sff_stages) - 1)
            )
            n_parts += len(self.neighbour_merge)
        self.fuse = (
            nn.Sequential(*conv_relu(n_parts * dim, dim, 1)) if params.sff != "off" else nn.Identity()
        )
        self.aux_cls = (
            nn.ModuleDict({name: classifier(dim) for name in self.sff_stages})
            if params.aux_weight > 0
            else None
        )
        self.head_in = nn.Sequential(*conv_relu(dim + self.n_maps, dim, 1))
        self.head_res = nn.Sequential(*conv_relu(dim, dim, 3), *conv_relu(dim, dim, 3))
        self.cls = classifier(dim)

    def _backbone_trainable(self) -> bool:
        return any(p.requires_grad for p in self.backbone.parameters())

    def level_sizes(self, base: tuple[int, int]) -> dict[str, tuple[int, int]]:
        """Pyramid level of each SFF stage: the shallowest at ``base`` (output scale), halving per stage."""
        if self.params.sff == "off":
            return {self.sff_stages[0]: base}
        return {
            name: (math.ceil(base[0] / 2**i), math.ceil(base[1] / 2**i))
            for i, name in enumerate(self.sff_stages)
        }

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        p = self.params
        query_img, support_imgs = batch["query_img"], batch["support_imgs"]
        b, k = support_imgs.shape[:2]
        support_fg = foreground(batch["support_masks"]).flatten(0, 1)  # [B*K, H, W]

        wanted = tuple(dict.fromkeys((*p.stages, self.before_high)))
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._backbone_trainable()):
            feats = self.backbone(torch.cat([query_img, support_imgs.flatten(0, 1)]), stages=wanted)
        # Graph features of query and supports in one batch (the GloRe BatchNorm sees both).
        graph = {name: unit(feats[name]) for name, unit in self.glore.items()}

        def pooled_prototype(features: torch.Tensor) -> torch.Tensor:
            """Mask-weighted average of support features [B*K, C, h, w] (label resolution), shot mean."""
            proto = masked_average_pool(features, support_fg, eps=PROTOTYPE_EPS, align_corners=True)
            return proto.view(b, k, -1).mean(dim=1)

        gpml_maps: list[torch.Tensor] = []  # [B, 1, h, w] each, at the stage's own resolution
        if p.gpml != "off":
            for name in p.stages:
                f = graph[name] if p.gpml == "graph" else feats[name]
                proto = pooled_prototype(f[b:])
                gpml_maps.append(minmax_normalise(cosine_map(f[:b], proto[:, None])))
        prior = None
        if p.prior == "on":
            with torch.no_grad():  # training-free, as in PFENet
                prev = feats[self.before_high]
                # the query's high-stage output is already there when the method also reads that stage
                known_query_high = feats[self.high_stage][:b] if self.high_stage in feats else None
                q_high, s_high = high_level_features(
                    getattr(self.backbone, self.high_stage),
                    prev[:b],
                    prev[b:],
                    support_fg if p.mask_before_high else None,
                    query_high=known_query_high,
                    needed_fg=support_fg,
                    run=partial(self.backbone.run_stage, self.high_stage),
                )
                prior = training_free_prior(
                    q_high, s_high.view(b, k, *s_high.shape[1:]), support_fg.view(b, k, *support_fg.shape[1:])
                )
                if self.active_probe == "prior_off":
                    prior = torch.zeros_like(prior)
        maps = gpml_maps + ([prior] if prior is not None else [])

        base = tuple(feats[p.stages[-1]].shape[-2:])
        levels = self.level_sizes(base)
        merged: list[torch.Tensor] = []
        aux: dict[str, torch.Tensor] = {}
        for name in self.sff_stages:
            f = graph[name] if p.sff != "no_graph" else feats[name]
            size = levels[name]
            reduced = self.reduce[name](_resample(f, size))
            proto = pooled_prototype(reduced[b:])
            parts = [
                reduced[:b],
                proto[:, :, None, None].expand(-1, -1, *size),
                *(resize(m, size) for m in maps),
            ]
            level = self.merge[name](torch.cat(parts, dim=1))
            merged.append(level)
            if self.training and self.aux_cls is not None:
                aux[f"aux_logits_{len(aux)}"] = self.aux_cls[name](level)

        fused = self._fuse(merged, base)
        x = self.head_in(torch.cat([fused, *(resize(m, base) for m in maps)], dim=1))
        x = self.head_res(x) + x
        out = {"logits": resize(self.cls(x), query_img.shape[-2:]), **aux}
        if prior is not None:
            out["prior"] = prior
        out.update({f"gpml_map_{i}": m for i, m in enumerate(gpml_maps)})
        return out

    def _fuse(self, levels: list[torch.Tensor], base: tuple[int, int]) -> torch.Tensor:
        """SFF: intermediate-scale merges of neighbouring levels, then resize to ``base`` and concatenate."""
        if self.params.sff == "off":
            return levels[0]
        parts = [levels[0]]
        for i in range(1, len(levels)):
            if len(self.neighbour_merge):
                fine, coarse = levels[i - 1], levels[i]
                # Intermediate scale: geometric mean of the two levels' sizes.
                size = tuple(
                    max(1, round(math.sqrt(a * c)))
                    for a, c in zip(fine.shape[-2:], coarse.shape[-2:], strict=True)
                )
                pair = torch.cat([_resample(fine, size), _resample(coarse, size)], dim=1)
                parts.append(self.neighbour_merge[i - 1](pair))
            parts.append(levels[i])
        return self.fuse(torch.cat([resize(part, base) for part in parts], dim=1))

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """CE on the main logits + ``aux_weight`` × mean CE of the per-level auxiliary heads (ignore 255)."""
        return deep_supervision_loss(
            outputs, batch["query_mask"], self.params.aux_weight, fg_weight=self.params.fg_weight
        )
