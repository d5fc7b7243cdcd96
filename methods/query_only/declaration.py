"""The query-only control's declaration (torch-free): parameters (no recipe of its own); the network is in
``model.py``."""

from __future__ import annotations

from dataclasses import dataclass

from fsseg.declaration import MethodDeclaration
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


@METHODS.declare("query_only")
class QueryOnlyDeclaration(MethodDeclaration):
    Params = QueryOnlyParams
    # A control has no paper, so no official recipe: it runs where a benchmark's recipe file gives it one
    # (config/recipes/synthetic.yaml trains it as DSMF-Net's head).
    trains_backbone = False
