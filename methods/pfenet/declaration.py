"""PFENet's declaration (torch-free): parameters, variants, the paper's recipe; the network is in
``model.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fsseg.declaration import MethodDeclaration, TrainRecipe
from fsseg.errors import ConfigError
from fsseg.registry import METHODS
from fsseg.schema import opt


@dataclass
class PFENetParams:
    """Hyper-parameters of PFENet; defaults are the paper's / official code's."""

    reduce_dim: int = opt(256, help="channels of the reduced mid-level features and of the FEM", ge=1)
    ppm_scales: tuple[float, ...] = opt(
        (60.0, 30.0, 15.0, 8.0), help="FEM pyramid bins (official: 60, 30, 15, 8 for 473-px input)"
    )
    ppm_mode: str = opt(
        "relative",
        help="relative: bin = round(scale × feature side / ppm_reference), so any input size gets the "
        "official bins' proportions (exactly the official bins at 473 px); absolute: bins as given",
        choices=("relative", "absolute"),
    )
    ppm_reference: float = opt(
        60.0,
        help="feature side the scales refer to in relative mode (60 = (473 - 1) / 8 + 1); "
        "1 makes the scales fractions of the side, like the official code's scales <= 1",
        gt=0,
    )
    prior: bool = opt(True, help="use the training-free prior (off = the paper's 'w/o prior' ablation)")
    mask_before_high: bool = opt(
        True, help="mask the support's layer3 output before layer4, as the official code does"
    )
    mid_stages: tuple[str, ...] = opt(
        ("layer3", "layer2"), help="backbone stages concatenated into the mid-level features (official order)"
    )
    high_stage: str = opt(
        "auto", help="backbone stage whose features give the prior; auto = the deepest stage kept"
    )
    dropout: float = opt(0.5, help="Dropout2d after the 1×1 reductions", ge=0.0, le=1.0)
    aux_weight: float = opt(1.0, help="weight of the mean auxiliary (per-scale) CE loss", ge=0.0)
    prior_gain: float = opt(
        1.0,
        help="factor on the prior map where it enters the FEM's merges (1 = official): the same network with "
        "the merges' prior weight column reparametrised, which trains faster by that factor (see the README)",
        gt=0.0,
    )
    fg_weight: float = opt(
        1.0,
        help="weight of foreground pixels in the CE losses (1 = official); a short schedule on small objects "
        "with distractors leaves the unweighted head under-confident (see the README)",
        gt=0.0,
    )

    def validate(self, path: str) -> None:
        if not self.ppm_scales or any(s <= 0 for s in self.ppm_scales):
            raise ConfigError(f"{path}.ppm_scales: needs at least one positive scale, got {self.ppm_scales}")
        if not self.mid_stages:
            raise ConfigError(f"{path}.mid_stages: needs at least one stage")


# The official length is 200 epochs of the fold's filtered training list (train.py:200, :249, with a
# drop_last loader of batch 4); the harness resolves it to iterations from the data (train.epochs).
# The iterations below only serve a run that overrides the epochs away.
_OFFICIAL_ITERATIONS = 200 * 1400

OFFICIAL_RECIPE = TrainRecipe(
    optimizer="sgd",
    lr=0.025,
    momentum=0.9,
    weight_decay=1e-4,
    schedule="poly",
    poly_power=0.9,
    iterations=_OFFICIAL_ITERATIONS,
    batch_size=4,
    epochs=200,
    augment="pfenet",
    frozen_bn="batch_stats",
    description="PFENet official (PASCAL-5i, ResNet-50, 473 px): SGD momentum 0.9, wd 1e-4, poly 0.9, "
    "batch 4, 200 epochs of the fold's filtered training list; base_lr 0.0025 in the config, but the "
    "official poly schedule multiplies every parameter group by 10, so the rate actually used is "
    "0.025 (what we set); PFENet's augmentation; the frozen backbone's BatchNorm in train mode "
    "(batch statistics, drifting running statistics), as train.py leaves it",
)


@METHODS.declare("pfenet")
class PFENetDeclaration(MethodDeclaration):
    Params = PFENetParams
    variants: ClassVar[dict[str, dict[str, Any]]] = {"default": {}, "prior_off": {"prior": False}}
    recipes: ClassVar[dict[str, TrainRecipe]] = {"official": OFFICIAL_RECIPE}
    trains_backbone = False
    probes: ClassVar[dict[str, str]] = {"prior_off": "the prior map replaced by zeros at inference"}
