"""The colour floor's declaration (torch-free): parameters and recipes; the network is in ``model.py``."""

from __future__ import annotations

from dataclasses import dataclass

from fsseg.declaration import MethodDeclaration, TrainRecipe
from fsseg.registry import METHODS
from fsseg.schema import opt


@dataclass
class ColourFloorParams:
    scale: float = opt(20.0, help="multiplier of the cosine similarity", gt=0)


@METHODS.declare("colour_floor")
class ColourFloorDeclaration(MethodDeclaration):
    Params = ColourFloorParams
    # Every recipe name other methods use exists here too, so one config drives all methods.
    recipes = dict.fromkeys(
        ("default", "synthetic", "official"), TrainRecipe(iterations=0, description="nothing to train")
    )
    trains_backbone = False
