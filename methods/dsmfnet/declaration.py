"""DSMF-Net's declaration (torch-free): parameters, ablation variants, the official recipe; the network is in
``model.py``."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, ClassVar

from fsseg.declaration import MethodDeclaration, TrainRecipe
from fsseg.errors import ConfigError
from fsseg.registry import METHODS
from fsseg.schema import opt
from fsseg_methods.pfenet.declaration import OFFICIAL_RECIPE as PFENET_OFFICIAL_RECIPE


@dataclass
class DSMFNetParams:
    """Hyper-parameters and ablation switches of DSMF-Net (see the README for the choices)."""

    gpml: str = opt(
        "graph",
        help="graph: GloRe graph prototypes per stage; conv: plain masked-average prototypes of the "
        "same stages' backbone features; off: no per-stage probability maps",
        choices=("graph", "conv", "off"),
    )
    prior: str = opt("on", help="PFENet's training-free prior on the high-level stage", choices=("on", "off"))
    sff: str = opt(
        "full",
        help="full: pyramid with neighbour merges on graph features; no_merge: pyramid without the "
        "intermediate-scale merges; no_graph: full pyramid on the backbone (grid) features instead of "
        "the GloRe features; off: no pyramid, the last stage alone feeds the classifier",
        choices=("full", "no_merge", "no_graph", "off"),
    )
    aux_weight: float = opt(
        1.0, help="λ, weight of the mean auxiliary CE (0 drops the auxiliary heads)", ge=0.0
    )
    stages: tuple[str, ...] = opt(
        ("layer1", "layer2", "layer3"), help="intermediate backbone stages for GPML and SFF, shallow to deep"
    )
    high_stage: str = opt(
        "auto", help="high-level stage for the prior; auto = the deepest stage the backbone keeps"
    )
    num_node: int = opt(
        0, help="GloRe nodes per stage (states = 2 × nodes); 0 = stage channels // node_divisor", ge=0
    )
    node_divisor: int = opt(
        8,
        help="with num_node 0: nodes = stage channels // node_divisor; 4 is GloRe's own ResNet-50 ratio "
        "(128 nodes on 512 channels, 256 on 1,024; config/paper.yaml uses it), 8 the CPU default's",
        choices=(4, 8),
    )
    fg_weight: float = opt(
        1.0, help="weight of foreground pixels in the CE losses (1 = unweighted, as PFENet)", gt=0.0
    )
    reduce_dim: int = opt(256, help="channels of the reduced per-level features and the classifier", ge=1)
    dropout: float = opt(
        0.5, help="Dropout2d after the per-level 1×1 reductions (PFENet's value)", ge=0.0, le=1.0
    )
    mask_before_high: bool = opt(
        True, help="mask the support's input to the high-level stage (official PFENet)"
    )

    def validate(self, path: str) -> None:
        if len(self.stages) < 2:
            raise ConfigError(f"{path}.stages: SFF needs at least two stages, got {list(self.stages)}")
        if len(set(self.stages)) != len(self.stages):
            raise ConfigError(f"{path}.stages: stages repeat: {list(self.stages)}")


# The paper gives no recipe we can reproduce; DSMF-Net builds on PFENet's prior, so its paper-scale recipe
# is PFENet's official one (effective lr 0.025, see methods/pfenet/README.md), which also keeps the
# comparison with the PFENet baseline like for like. Taken from PFENet's declaration (torch-free, no
# network code), so the two cannot drift apart.
OFFICIAL_RECIPE = replace(
    PFENET_OFFICIAL_RECIPE,
    description="our paper-scale choice (the paper gives none): PFENet's official recipe, SGD momentum "
    "0.9, lr 0.025, wd 1e-4, poly 0.9, batch 4, 200 epochs of the fold's filtered training list, "
    "PFENet's augmentation, frozen backbone BatchNorm on batch statistics",
)


@METHODS.declare("dsmfnet")
class DSMFNetDeclaration(MethodDeclaration):
    Params = DSMFNetParams
    variants: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {},
        "gpml_conv": {"gpml": "conv"},
        "gpml_off": {"gpml": "off"},
        "prior_off": {"prior": "off"},
        "sff_no_merge": {"sff": "no_merge"},
        "sff_no_graph": {"sff": "no_graph"},
        "sff_off": {"sff": "off"},
        "no_aux": {"aux_weight": 0.0},
    }
    recipes: ClassVar[dict[str, TrainRecipe]] = {"official": OFFICIAL_RECIPE}
    trains_backbone = False
    probes: ClassVar[dict[str, str]] = {"prior_off": "the prior map replaced by zeros at inference"}
