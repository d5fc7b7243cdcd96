"""The colour floor's declaration (torch-free): parameters, and that it learns nothing; the network is in
``model.py``."""

from __future__ import annotations

from dataclasses import dataclass

from fsseg.declaration import MethodDeclaration
from fsseg.registry import METHODS
from fsseg.schema import opt


@dataclass
class ColourFloorParams:
    scale: float = opt(20.0, help="multiplier of the cosine similarity", gt=0)


@METHODS.declare("colour_floor")
class ColourFloorDeclaration(MethodDeclaration):
    Params = ColourFloorParams
    needs_training = False  # no parameters: any train.recipe is accepted and nothing is trained
    trains_backbone = False
