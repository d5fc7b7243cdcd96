"""BAM's declaration (torch-free): parameters, variants, the paper's recipe, probes and the base learner it
holds; the network is in ``model.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fsseg.declaration import MethodDeclaration, TrainRecipe
from fsseg.errors import ConfigError
from fsseg.registry import METHODS
from fsseg.schema import opt


@dataclass
class BAMParams:
    """Hyper-parameters of BAM; defaults are the official code's (PASCAL-5i / COCO-20i configs)."""

    reduce_dim: int = opt(
        256, help="channels of the reduced mid-level features and of the meta learner", ge=1
    )
    mid_stages: tuple[str, ...] = opt(
        ("layer3", "layer2"), help="backbone stages concatenated into the mid-level features (official order)"
    )
    low_stage: str = opt("layer2", help="stage whose features give the Gram matrices (official low_fea)")
    high_stage: str = opt(
        "auto",
        help="stage read by the prior and by the base learner; auto = the deepest stage the backbone keeps",
    )
    mask_before_high: bool = opt(
        True, help="mask the support's features before the high stage, as the official code does"
    )
    dropout: float = opt(0.5, help="Dropout2d after the 1×1 reductions", ge=0.0, le=1.0)
    aux_weight: float = opt(1.0, help="weight of the meta learner's own CE (official aux_weight1)", ge=0.0)
    reweight_shots: int = opt(
        0,
        help="K of the learned K-shot re-weighting (official: the training shot when > 1, kshot_rw); "
        "0 = none; episodes with another shot count weigh their shots equally",
        ge=0,
    )
    reweight_dim: int = opt(
        2, help="hidden width of the K-shot re-weighting (official kshot_trans_dim)", ge=1
    )
    fg_weight: float = opt(1.0, help="weight of foreground pixels in the CE losses (1 = official)", gt=0.0)
    prior_gain: float = opt(
        1.0,
        help="factor on the prior map where it enters init_merge (1 = official); a reparametrisation of the "
        "merge's prior column (see PFENet's README)",
        gt=0.0,
    )

    def validate(self, path: str) -> None:
        if not self.mid_stages:
            raise ConfigError(f"{path}.mid_stages: needs at least one stage")
        if self.reweight_shots == 1:
            raise ConfigError(f"{path}.reweight_shots: 1 has nothing to re-weight; use 0 or a K > 1")


# 200 epochs of the filtered training list with a drop_last loader of 8 episodes (2 per GPU × 4 GPUs,
# train.sh, config batch_size: 2); the harness resolves epochs to iterations from the data.
_OFFICIAL_ITERATIONS = 200 * 1400

RECIPES = {
    "official": TrainRecipe(
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="poly",
        poly_power=0.9,
        iterations=_OFFICIAL_ITERATIONS,
        batch_size=8,
        epochs=200,
        augment="pfenet",
        frozen_bn="eval",
        description="BAM official meta-learner training (ResNet-50, 473 px): SGD momentum 0.9, wd 1e-4, poly "
        "0.9, 8 episodes per step, 200 epochs of the fold's filtered training list (protocol B removes the "
        "images holding novel classes); base_lr 0.005 in the config, but train.py's poly schedule with "
        "index_split -1 multiplies every group by 10, so 0.05 is the rate used (what we set); PFENet's "
        "augmentation; every BatchNorm frozen (fix_bn)",
    ),
}
PROBES = {
    "meta_only": "the meta learner's prediction alone, without the ensemble with the base learner",
    "base_off": "the base learner's base-class map replaced by zeros in the ensemble",
}


@METHODS.declare("bam")
class BAMDeclaration(MethodDeclaration):
    Params = BAMParams
    variants: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}
    recipes: ClassVar[dict[str, TrainRecipe]] = RECIPES
    trains_backbone = False
    has_base_learner = True
    probes: ClassVar[dict[str, str]] = PROBES
