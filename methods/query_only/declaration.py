"""The query-only control's declaration (torch-free): parameters and recipes; the network is in
``model.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from fsseg.declaration import MethodDeclaration, TrainRecipe
from fsseg.registry import METHODS
from fsseg.schema import opt


@dataclass
class QueryOnlyParams:
    """The head's size and the stages it reads (PFENet's mid-level stages by default)."""

    dim: int = opt(64, help="channels of the head", ge=1)
    stages: tuple[str, ...] = opt(("layer3", "layer2"), help="backbone stages concatenated as the features")
    fg_weight: float = opt(
        3.0,
        help="weight of foreground pixels in the CE loss; 3, as the default grid gives PFENet and DSMF-Net "
        "(at 1 the head stays under 0.5 on small objects and predicts nothing: class mIoU 0.0)",
        gt=0.0,
    )


_SYNTHETIC = TrainRecipe(
    optimizer="adam",
    lr=3e-3,
    weight_decay=1e-4,
    schedule="poly",
    poly_power=0.9,
    iterations=150,
    batch_size=8,
    warmup=30,
    description="the prior-based methods' CPU optimiser settings (Adam 3e-3, 30-step warm-up, wd 1e-4, "
    "poly 0.9), 150 iterations of 8 episodes",
)


@METHODS.declare("query_only")
class QueryOnlyDeclaration(MethodDeclaration):
    Params = QueryOnlyParams
    # A control has no official recipe; it runs where the CPU recipes do (the synthetic benchmark).
    recipes: ClassVar[dict[str, TrainRecipe]] = {"default": _SYNTHETIC, "synthetic": _SYNTHETIC}
    trains_backbone = False
