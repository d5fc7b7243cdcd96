"""HSNet (Min, Lee, Cho, "Hypercorrelation Squeeze for Few-Shot Segmentation", ICCV 2021).

Written from the paper and a reading of the official implementation (juhongm999/hsnet, ``model/hsnet.py``,
``model/learner.py``, ``model/base/*.py``, ``train.py``). Module names follow the official ones
(``encoder_layer4``, ``encoder_layer4to3``, ``decoder1`` ...) so the two are easy to compare. Differences
that are ours, and why, are listed in ``methods/hsnet/README.md``.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from fsseg.errors import ConfigError
from fsseg.method import BackboneSpec, Batch, FewShotMethod
from fsseg.models.backbones import ResNetBackbone, build_backbone
from fsseg.models.hypercorrelation import CenterPivotConv4d, cosine_correlation_4d, resize_4d
from fsseg.models.ops import foreground, segmentation_ce
from fsseg.registry import METHODS
from fsseg_methods.hsnet.declaration import CORRELATED_STAGES, HSNetDeclaration, HSNetParams

# Squeezing block of each stage: (kernel size, support stride) of its three center-pivot 4D convolutions
# (official model/learner.py: encoder_layer4 / encoder_layer3 / encoder_layer2).
SQUEEZE_LAYOUT: dict[str, tuple[tuple[int, int], ...]] = {
    "layer4": ((3, 2), (3, 2), (3, 2)),
    "layer3": ((5, 4), (3, 2), (3, 2)),
    "layer2": ((5, 4), (5, 4), (3, 2)),
}
SQUEEZE_CHANNELS = (16, 64, 128)
GROUPS = 4
"""GroupNorm groups after every 4D convolution."""


def squeezing_block(
    in_channels: int, layout: tuple[tuple[int, int], ...], out_channels: tuple[int, ...]
) -> nn.Sequential:
    """Center-pivot 4D conv → GroupNorm → ReLU, once per (kernel, support stride) of ``layout``."""
    layers: list[nn.Module] = []
    for (kernel, stride), c_out in zip(layout, out_channels, strict=True):
        layers += [
            CenterPivotConv4d(in_channels, c_out, kernel, stride),
            nn.GroupNorm(GROUPS, c_out),
            nn.ReLU(),
        ]
        in_channels = c_out
    return nn.Sequential(*layers)


def _mixer_name(deep: str, shallow: str) -> str:
    """The official name of a mixing block, e.g. ``layer4to3``."""
    return f"{deep}to{shallow.removeprefix('layer')}"


@METHODS.register("hsnet")
class HSNet(HSNetDeclaration, FewShotMethod):
    """Frozen backbone → per-block 4D hypercorrelations → center-pivot 4D squeeze, top-down mix → decoder."""

    def __init__(self, params: HSNetParams, backbone: BackboneSpec) -> None:
        super().__init__(params, backbone)
        self.backbone = build_backbone(backbone)
        if not isinstance(self.backbone, ResNetBackbone):
            raise ConfigError(
                f"backbone.name: HSNet correlates the residual blocks of a ResNet; {backbone.name!r} has none"
            )
        kept = [s for s in CORRELATED_STAGES if s in self.backbone.stages]
        stages = tuple(params.stages) or tuple(kept)
        missing = [s for s in stages if s not in self.backbone.stages]
        if not stages or missing:
            raise ConfigError(
                f"config.method.params.stages: {list(stages)} are not all kept by the backbone "
                f"(stages {self.backbone.stages}; backbone.max_stage cuts the later ones)"
            )
        self.stages = tuple(sorted(stages, key=CORRELATED_STAGES.index))
        self.backbone.truncate(self.stages[-1])
        if self.wants_frozen_backbone():
            for p in self.backbone.parameters():
                p.requires_grad = False

        blocks = self.backbone.blocks_per_stage()
        top = SQUEEZE_CHANNELS[-1]
        # deepest stage first, as the official learner
        self.encoders = nn.ModuleDict(
            {
                s: squeezing_block(blocks[s], SQUEEZE_LAYOUT[s], SQUEEZE_CHANNELS)
                for s in reversed(self.stages)
            }
        )
        deep_to_shallow = list(reversed(self.stages))
        self.mixers = nn.ModuleDict(
            {
                _mixer_name(deep, shallow): squeezing_block(top, ((3, 1),) * 3, (top,) * 3)
                for deep, shallow in itertools.pairwise(deep_to_shallow)
            }
        )
        mid = SQUEEZE_CHANNELS[1]
        self.decoder1 = nn.Sequential(
            nn.Conv2d(top, top, 3, padding=1), nn.ReLU(), nn.Conv2d(top, mid, 3, padding=1), nn.ReLU()
        )
        self.decoder2 = nn.Sequential(
            nn.Conv2d(mid, mid, 3, padding=1), nn.ReLU(), nn.Conv2d(mid, 2, 3, padding=1)
        )

    def _backbone_trainable(self) -> bool:
        return any(p.requires_grad for p in self.backbone.parameters())

    # --- forward -----------------------------------------------------------------------------------
    def hypercorrelations(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Per stage, the stacked 4D correlations of its blocks: [B*K, blocks, Hq, Wq, Hs, Ws].

        Query and supports go through the frozen (eval-mode BatchNorm) backbone as one batch. Each support
        feature is multiplied by its foreground mask, bilinearly resized (``align_corners=True``) to the
        feature's size, before the cosine; ignored pixels (255) count as background there.
        """
        query_img, support_imgs = batch["query_img"], batch["support_imgs"]
        b, k = support_imgs.shape[:2]
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._backbone_trainable()):
            feats = self.backbone.block_features(
                torch.cat([query_img, support_imgs.flatten(0, 1)]),
                self.stages,
                before_relu=self.params.block_activation == "before_relu",
            )
            support_fg = foreground(batch["support_masks"]).flatten(0, 1)[:, None]  # [B*K, 1, H, W]
            masks: dict[tuple[int, int], torch.Tensor] = {}
            out = {}
            for stage in self.stages:
                maps = []
                for feat in feats[stage]:
                    size = (feat.shape[-2], feat.shape[-1])
                    if size not in masks:
                        masks[size] = F.interpolate(
                            support_fg, size=size, mode="bilinear", align_corners=True
                        )
                    support = (feat[b:] * masks[size]).view(b, k, *feat.shape[1:])
                    maps.append(cosine_correlation_4d(feat[:b], support))  # [B, K, Hq, Wq, Hs, Ws]
                out[stage] = torch.stack(maps, dim=2).flatten(0, 1)
        return out

    def learner(self, corr: dict[str, torch.Tensor]) -> torch.Tensor:
        """Squeeze each stage's correlations, mix them top-down, average the support dimensions, decode."""
        deep_to_shallow = list(reversed(self.stages))
        mixed = self.encoders[deep_to_shallow[0]](corr[deep_to_shallow[0]])
        for deep, shallow in itertools.pairwise(deep_to_shallow):
            squeezed = self.encoders[shallow](corr[shallow])
            # the deeper map takes the shallower one's query size (official: only the query dimensions
            # differ; the support ones are resized too when a backbone layout makes them differ)
            mixed = resize_4d(mixed, squeezed.shape[2:4], squeezed.shape[4:6]) + squeezed
            mixed = self.mixers[_mixer_name(deep, shallow)](mixed)
        encoded = mixed.flatten(4).mean(dim=-1)  # [N, C, Hq, Wq]
        decoded = self.decoder1(encoded)
        decoded = F.interpolate(
            decoded, size=(2 * decoded.shape[-2], 2 * decoded.shape[-1]), mode="bilinear", align_corners=True
        )
        return self.decoder2(decoded)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """``shot_logits`` [B, K, 2, H, W]: one 1-shot prediction per support; ``logits`` [B, 2, H, W]: their
        aggregation (see :meth:`aggregate`)."""
        b, k = batch["support_imgs"].shape[:2]
        size = batch["query_img"].shape[-2:]
        logits = self.learner(self.hypercorrelations(batch))
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        shot_logits = logits.view(b, k, 2, *size)
        return {"logits": self.aggregate(shot_logits), "shot_logits": shot_logits}

    def aggregate(self, shot_logits: torch.Tensor) -> torch.Tensor:
        """Combine K 1-shot logit maps [B, K, 2, H, W] into [B, 2, H, W].

        ``vote`` (official ``predict_mask_nshot``): each shot's argmax mask is a vote; a pixel is foreground
        when its votes reach half the largest vote count in its image (that maximum taken as at least 1).
        The result is returned as one-hot logits (background 1/0, foreground 0/1), whose argmax is the
        voted mask. With one shot the vote is that shot's argmax, so its logits are returned unchanged.
        ``mean_logits``: the mean of the K logit maps.
        """
        if shot_logits.shape[1] == 1:
            return shot_logits[:, 0]
        if self.params.shot_aggregation == "mean_logits":
            return shot_logits.mean(dim=1)
        votes = shot_logits.argmax(dim=2).sum(dim=1).float()  # [B, H, W]
        max_vote = votes.flatten(1).max(dim=1).values.clamp(min=1.0)
        fg = (votes / max_vote[:, None, None] >= 0.5).to(shot_logits.dtype)
        return torch.stack([1.0 - fg, fg], dim=1)

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Cross-entropy of the 2-class logits (official ``compute_objective``), ignore index 255. With K > 1
        shots in training, the mean CE of the K 1-shot predictions (the official code trains 1-shot only)."""
        shot_logits = outputs["shot_logits"]
        b, k = shot_logits.shape[:2]
        target = batch["query_mask"][:, None].expand(b, k, *batch["query_mask"].shape[-2:])
        ce = segmentation_ce(shot_logits.flatten(0, 1), target.flatten(0, 1), fg_weight=self.params.fg_weight)
        return {"loss": ce}
