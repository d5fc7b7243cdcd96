"""HSNet's declaration (torch-free): parameters, the correlated stages, the papers' recipes; the network is
in ``model.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fsseg.declaration import MethodDeclaration, TrainRecipe
from fsseg.errors import ConfigError
from fsseg.registry import METHODS
from fsseg.schema import opt

CORRELATED_STAGES = ("layer2", "layer3", "layer4")
"""Stages whose blocks HSNet correlates (official ``feat_ids``: every block of layer2–layer4)."""


@dataclass
class HSNetParams:
    """Hyper-parameters of HSNet; defaults are the official code's."""

    stages: tuple[str, ...] = opt(
        (),
        help="backbone stages whose every block is correlated, shallowest first (subset of layer2, layer3, "
        "layer4); empty = layer2 up to the deepest stage the backbone keeps (official: layer2-layer4)",
    )
    block_activation: str = opt(
        "before_relu",
        help="block features taken before the block's final ReLU (official feature.py) or after it",
        choices=("before_relu", "after_relu"),
    )
    shot_aggregation: str = opt(
        "vote",
        help="k-shot: vote = k 1-shot predictions whose masks vote, normalised by the image's largest vote "
        "and thresholded at 0.5 (official predict_mask_nshot); mean_logits = mean of the k logit maps",
        choices=("vote", "mean_logits"),
    )
    fg_weight: float = opt(
        1.0,
        help="weight of foreground pixels in the CE (1 = official); the CPU default's 300 steps leave the "
        "unweighted head predicting background everywhere, as PFENet's (see the README)",
        gt=0.0,
    )

    def validate(self, path: str) -> None:
        bad = [s for s in self.stages if s not in CORRELATED_STAGES]
        if bad or len(set(self.stages)) != len(self.stages):
            raise ConfigError(
                f"{path}.stages: {list(self.stages)} must be distinct stages among {list(CORRELATED_STAGES)}"
            )


# Official length: train.py loops niter = 2000 epochs (train.py:59) over the training list and keeps the
# checkpoint with the best validation mIoU; the paper trains "until convergence". The iterations below only
# serve a run that overrides the epochs away.
_OFFICIAL_EPOCHS = 2000

RECIPES = {
    "official": TrainRecipe(
        optimizer="adam",
        lr=1e-3,
        momentum=0.9,
        weight_decay=0.0,
        schedule="constant",
        iterations=100_000,
        batch_size=20,
        epochs=_OFFICIAL_EPOCHS,
        augment="none",
        description="HSNet official (PASCAL-5i, 400 px): Adam lr 1e-3 constant, no weight decay, batch 20, "
        "frozen backbone (BatchNorm in eval mode), no augmentation, at most 2000 epochs (train.py niter; the "
        "paper trains until convergence)",
    ),
    "sccnet_isaid": TrainRecipe(
        optimizer="adam",
        lr=9e-4,
        momentum=0.9,
        weight_decay=0.0,
        schedule="constant",
        iterations=100_000,
        batch_size=32,
        epochs=_OFFICIAL_EPOCHS,
        augment="none",
        description="HSNet-type models on iSAID-5i as SCCNet trains them (256 px): Adam lr 9e-4, batch 32; "
        "the length is HSNet's bound (2000 epochs), not a number taken from SCCNet",
    ),
}


@METHODS.declare("hsnet")
class HSNetDeclaration(MethodDeclaration):
    Params = HSNetParams
    variants: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}
    recipes: ClassVar[dict[str, TrainRecipe]] = RECIPES
    trains_backbone = False
