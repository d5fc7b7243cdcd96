"""PANet's declaration (torch-free): parameters, variants, the paper's recipe; the network is in
``model.py``."""

from __future__ import annotations

from dataclasses import dataclass

from fsseg.declaration import MethodDeclaration, TrainRecipe
from fsseg.registry import METHODS
from fsseg.schema import opt


@dataclass
class PANetParams:
    feature_stage: str = opt(
        "auto", help="backbone stage used as features; auto = conv5 for VGG-16, layer3 for ResNets"
    )
    align: bool = opt(True, help="prototype alignment regularisation (PAR) during training")
    align_weight: float = opt(1.0, help="weight of the PAR loss", ge=0)
    scale: float = opt(20.0, help="multiplier of the cosine similarity (the paper's alpha)", gt=0)
    eps: float = opt(1e-5, help="masked-average-pooling denominator epsilon", gt=0)


@METHODS.declare("panet")
class PANetDeclaration(MethodDeclaration):
    Params = PANetParams
    variants = {"default": {}, "no_align": {"align": False}}
    recipes = {
        "official": TrainRecipe(
            optimizer="sgd",
            lr=1e-3,
            momentum=0.9,
            weight_decay=5e-4,
            schedule="step",
            lr_steps=(10_000, 20_000),
            lr_gamma=0.1,
            iterations=30_000,
            batch_size=1,
            augment="panet",
            description="official PANet: SGD 1e-3, momentum 0.9, wd 5e-4, 30k steps, "
            "×0.1 at 10k and 20k, batch 1; resize to the input + random mirror",
        ),
    }
    trains_backbone = True
