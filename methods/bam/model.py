"""BAM (Lang, Cheng, Tu, Han, "Learning What Not to Segment", CVPR 2022).

Written from the paper and a reading of the official implementation (chunbolang/BAM, MIT licence:
``model/BAM.py``, ``model/PSPNet.py``, ``model/ASPP.py``, ``train.py``, ``train_base.py``); module names
follow the official ones where they name the same thing. Two learners and an ensemble:

* the **base learner**, a PSPNet over the fold's base classes + background, trained first by the harness
  (``fsseg base-learner``) and frozen; its backbone is the method's backbone;
* the **meta learner**, PFENet-like: reduced mid-level features, a masked-average prototype, the
  training-free prior, then ASPP and a residual classifier → query background / foreground;
* the **ensemble**: the Gram-matrix difference of the query's and the support's low-level features
  scales a learned mix, and the base learner's "any base class here" probability is fused into the
  meta learner's background, so base-class regions are not segmented as the novel class.

What differs from the official code, and why: ``methods/bam/README.md``.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from fsseg.errors import ConfigError
from fsseg.method import BackboneSpec, Batch, FewShotMethod
from fsseg.models.aspp import ASPP
from fsseg.models.backbones import build_backbone
from fsseg.models.heads import PROTOTYPE_EPS, classifier, conv_relu
from fsseg.models.ops import foreground, masked_average_pool, resize, segmentation_ce
from fsseg.models.prior import high_level_features, prior_stages, resize_mask, training_free_prior
from fsseg.models.pspnet import PSPHead, PSPNet
from fsseg.registry import METHODS
from fsseg_methods.bam.declaration import BAMDeclaration, BAMParams

GRAM_EPS = 1e-7
"""Added to the product of the channel norms in the normalised Gram matrix (official ``:27-34``)."""


def normalised_gram(features: torch.Tensor, eps: float = GRAM_EPS) -> torch.Tensor:
    """[N, C, C] Gram matrix of ``features`` [N, C, h, w] over the pixels, each entry divided by the
    product of the two channels' norms (+ ``eps``): a channel-by-channel cosine similarity."""
    flat = features.flatten(2)  # [N, C, P]
    norms = flat.norm(dim=2, keepdim=True)  # [N, C, 1]
    return (flat @ flat.transpose(1, 2)) / (norms @ norms.transpose(1, 2) + eps)


def gram_difference(query_low: torch.Tensor, support_low: torch.Tensor) -> torch.Tensor:
    """BAM's scene difference [B, K]: ‖G(query) − G(support_k)‖_F / C, for ``query_low`` [B, C, h, w] and
    ``support_low`` [B, K, C, h, w]. C = ‖ones(C, C)‖_F, the official normaliser (``norm_max``)."""
    b, k, c = support_low.shape[:3]
    query_gram = normalised_gram(query_low)  # [B, C, C]
    support_gram = normalised_gram(support_low.flatten(0, 1)).view(b, k, c, c)
    return (query_gram[:, None] - support_gram).flatten(2).norm(dim=2) / c


def _mix(first: float = 1.0) -> nn.Conv2d:
    """A 1×1 conv 2 → 1 without bias starting at weights (first, 0): initially it passes its first input."""
    conv = nn.Conv2d(2, 1, kernel_size=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([first, 0.0]).view(1, 2, 1, 1))
    return conv




@METHODS.register("bam")
class BAM(BAMDeclaration, FewShotMethod):
    """Frozen PSPNet base learner + PFENet-like meta learner + Gram-weighted ensemble."""

    def __init__(self, params: BAMParams, backbone: BackboneSpec) -> None:
        super().__init__(params, backbone)
        self.backbone = build_backbone(backbone)
        used = (*params.mid_stages, params.low_stage)
        self.high_stage, self.before_high = prior_stages(
            self.backbone, used, params.high_stage, "config.method.params"
        )
        if self.wants_frozen_backbone():
            for p in self.backbone.parameters():
                p.requires_grad = False

        dim = params.reduce_dim
        fea_dim = sum(self.backbone.channels[s] for s in params.mid_stages)
        self.down_query = nn.Sequential(*conv_relu(fea_dim, dim, 1), nn.Dropout2d(p=params.dropout))
        self.down_supp = nn.Sequential(*conv_relu(fea_dim, dim, 1), nn.Dropout2d(p=params.dropout))
        self.init_merge = nn.Sequential(*conv_relu(2 * dim + 1, dim, 1))
        self.ASPP_meta = ASPP(dim)
        self.res1_meta = nn.Sequential(*conv_relu(self.ASPP_meta.out_channels, dim, 1))
        self.res2_meta = nn.Sequential(*conv_relu(dim, dim, 3), *conv_relu(dim, dim, 3))
        self.cls_meta = classifier(dim)
        self.gram_merge = _mix()
        self.cls_merge = _mix()
        k = params.reweight_shots
        self.kshot_rw = (
            nn.Sequential(
                nn.Conv2d(k, params.reweight_dim, kernel_size=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(params.reweight_dim, k, kernel_size=1),
            )
            if k > 1
            else None
        )
        self.learner_base: PSPHead | None = None
        self.register_buffer("base_class_ids", torch.zeros(0, dtype=torch.long), persistent=False)

    # --- the base learner --------------------------------------------------------------------------
    def build_base_learner(self, base_class_ids: tuple[int, ...]) -> None:
        if not base_class_ids:
            raise ConfigError("BAM's base learner needs at least one base class")
        head = PSPHead(self.backbone.channels[self.high_stage], len(base_class_ids) + 1)
        if self.wants_frozen_backbone():
            for p in head.parameters():
                p.requires_grad = False
        self.learner_base = head.to(self.base_class_ids.device)
        self.base_class_ids = torch.tensor(
            base_class_ids, dtype=torch.long, device=self.base_class_ids.device
        )

    def base_learner(self) -> nn.Module:
        if self.learner_base is None:
            raise ConfigError("BAM's base learner is not built; the harness calls build_base_learner first")
        return PSPNet(self.backbone, self.high_stage, self.learner_base)

    # --- forward -----------------------------------------------------------------------------------
    def _backbone_trainable(self) -> bool:
        return any(p.requires_grad for p in self.backbone.parameters())

    def _features(self, query_img: torch.Tensor, support_imgs: torch.Tensor, wanted: tuple[str, ...]):
        """Backbone features of the query [B] followed by the supports [B*K] (batch-major)."""
        k = support_imgs.shape[1]
        with torch.set_grad_enabled(torch.is_grad_enabled() and self._backbone_trainable()):
            if self.backbone.training:  # batch statistics: query batch and each shot's batch pass alone
                parts = [self.backbone(query_img, stages=wanted)]
                parts += [self.backbone(support_imgs[:, i], stages=wanted) for i in range(k)]
                return {
                    s: torch.cat([parts[0][s], torch.stack([q[s] for q in parts[1:]], 1).flatten(0, 1)])
                    for s in wanted
                }
            return self.backbone(torch.cat([query_img, support_imgs.flatten(0, 1)]), stages=wanted)

    def shot_weights(self, difference: torch.Tensor) -> torch.Tensor:
        """Weights [B, K] of the shots from their Gram differences [B, K] (official ``:223-239``).

        One shot: weight 1. K shots with the learned re-weighting built for K: the differences sorted in
        ascending order pass through ``kshot_rw`` (shots as channels), go back to the shots' order and are
        soft-maxed. Otherwise every shot weighs 1/K.
        """
        b, k = difference.shape
        if k == 1:
            return torch.ones_like(difference)
        if self.kshot_rw is None or k != self.params.reweight_shots:
            return torch.full_like(difference, 1.0 / k)
        ordered, order = difference.sort(dim=1)
        scores = self.kshot_rw(ordered.view(b, k, 1, 1)).view(b, k)
        restored = torch.empty_like(scores).scatter_(1, order, scores)
        return restored.softmax(dim=1)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        if self.learner_base is None:
            raise ConfigError("BAM's base learner is not built; the harness calls build_base_learner first")
        p = self.params
        query_img, support_imgs = batch["query_img"], batch["support_imgs"]
        b, k = support_imgs.shape[:2]
        support_fg = foreground(batch["support_masks"])  # [B, K, H, W]
        flat_fg = support_fg.flatten(0, 1)
        wanted = tuple(dict.fromkeys((*p.mid_stages, p.low_stage, self.before_high)))
        feats = self._features(query_img, support_imgs, wanted)

        size = feats[p.mid_stages[0]].shape[-2:]
        mid = torch.cat([resize(feats[s], size) for s in p.mid_stages], dim=1)
        query_feat = self.down_query(mid[:b])
        supp_feat = self.down_supp(mid[b:])
        mask_small = resize_mask(flat_fg, size)[:, 0]
        prototypes = masked_average_pool(supp_feat, mask_small, eps=PROTOTYPE_EPS).view(b, k, -1)

        with torch.no_grad():  # the prior, the Gram difference and the base learner use frozen features only
            low = feats[p.low_stage]
            difference = gram_difference(low[:b], low[b:].view(b, k, *low.shape[1:]))  # [B, K]
            prev = feats[self.before_high]
            query_high, supp_high = high_level_features(
                getattr(self.backbone, self.high_stage),
                prev[:b],
                prev[b:],
                flat_fg if p.mask_before_high else None,
                query_high=feats[self.high_stage][:b] if self.high_stage in feats else None,
                needed_fg=flat_fg,
                run=partial(self.backbone.run_stage, self.high_stage),
            )
            supp_high = supp_high.view(b, k, *supp_high.shape[1:])
            # one prior per shot [B, K, h, w], weighed below like the prototypes (official :241-269)
            priors = torch.cat(
                [
                    training_free_prior(query_high, supp_high[:, i : i + 1], support_fg[:, i : i + 1])
                    for i in range(k)
                ],
                dim=1,
            )
            base_logits = self.learner_base(query_high)

        weights = self.shot_weights(difference)  # [B, K]
        prior = resize((weights[:, :, None, None] * priors).sum(1, keepdim=True), size)
        prototype = (weights[:, :, None] * prototypes).sum(1)
        estimate = (weights * difference).sum(1)  # [B]

        merged = self.init_merge(
            torch.cat(
                [query_feat, prototype[:, :, None, None].expand(-1, -1, *size), prior * p.prior_gain], dim=1
            )
        )
        meta = self.res1_meta(self.ASPP_meta(merged))
        meta = self.res2_meta(meta) + meta
        meta_logits = self.cls_meta(meta)

        final = self.ensemble(meta_logits, resize(base_logits, size), estimate, batch.get("class_id"))
        if self.active_probe == "meta_only":
            final = meta_logits
        out = {
            "logits": resize(final, query_img.shape[-2:]),
            "meta_logits": meta_logits,
            "base_logits": base_logits,
            "gram_difference": difference,
        }
        return out

    def base_map(self, base_logits: torch.Tensor, class_id: torch.Tensor | None) -> torch.Tensor:
        """[B, 1, h, w]: the base learner's probability that a pixel shows any base class.

        In training the episode's own class (a base class then) is left out, as the official code does
        (``:294-305``); at inference every base class counts.
        """
        probs = base_logits.softmax(dim=1)[:, 1:]  # [B, n_base, h, w]
        if self.training and class_id is not None:
            keep = (self.base_class_ids[None, :] != class_id[:, None]).to(probs.dtype)
            probs = probs * keep[:, :, None, None]
        if self.active_probe == "base_off":
            probs = torch.zeros_like(probs)
        return probs.sum(dim=1, keepdim=True)

    def ensemble(
        self,
        meta_logits: torch.Tensor,
        base_logits: torch.Tensor,
        estimate: torch.Tensor,
        class_id: torch.Tensor | None,
    ) -> torch.Tensor:
        """The learner ensemble (official ``:288-317``), returning [B, 2, h, w] scores fed to the CE.

        meta probabilities (bg, fg) → each mixed with the scene difference by ``gram_merge``; the mixed
        background is mixed with the base map by ``cls_merge``; output (merged bg, mixed fg). As in the
        official code these are probabilities used as logits.
        """
        meta = meta_logits.softmax(dim=1)
        est = estimate.view(-1, 1, 1, 1).expand_as(meta[:, :1])
        bg = self.gram_merge(torch.cat([meta[:, :1], est], dim=1))
        fg = self.gram_merge(torch.cat([meta[:, 1:], est], dim=1))
        bg = self.cls_merge(torch.cat([bg, self.base_map(base_logits, class_id)], dim=1))
        return torch.cat([bg, fg], dim=1)

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Main CE on the ensemble + ``aux_weight`` × CE of the meta learner (ignore index 255).

        The official third term, the base learner's CE on base-class labels (``aux_weight2``), has no
        gradient (the base learner is frozen) and is left out.
        """
        target = batch["query_mask"]
        main = segmentation_ce(outputs["logits"], target, fg_weight=self.params.fg_weight)
        aux = segmentation_ce(outputs["meta_logits"], target, fg_weight=self.params.fg_weight)
        return {"loss": main + self.params.aux_weight * aux, "main": main.detach(), "aux": aux.detach()}
