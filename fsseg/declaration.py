"""What a method declares about itself, without torch: parameters, variants, recipes.

Config validation (:func:`fsseg.config.load_config`) and the workflow's plan read only this, so neither
imports torch. A method's package holds it in a torch-free ``declaration`` module: a
:class:`MethodDeclaration` subclass registered with ``@METHODS.declare("name")``, which the method's
``nn.Module`` class (in ``model.py``, registered with ``@METHODS.register("name")``) lists first among its
bases, so the two cannot disagree. The registry imports ``model.py`` only when the network is built.

:class:`~fsseg.recipes.TrainRecipe` has one definition, in :mod:`fsseg.recipes` (torch-free as well);
it is re-exported here for declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fsseg.errors import ConfigError
from fsseg.recipes import TrainRecipe, resolve_recipe
from fsseg.registry import METHODS
from fsseg.schema import from_dict

__all__ = ["MethodDeclaration", "NoParams", "TrainRecipe"]


@dataclass
class NoParams:
    """For methods without hyper-parameters."""


class MethodDeclaration:
    """A method's declared configuration; subclasses set the class attributes."""

    Params: ClassVar[type] = NoParams
    """Dataclass of the hyper-parameters and ablation switches (validated from ``method.params``)."""
    variants: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}
    """Named parameter sets (ablations); ``"default"`` always present."""
    recipes: ClassVar[dict[str, TrainRecipe]] = {}
    """The recipes the method's paper prescribes (``"official"``); none for a method without a paper.
    A benchmark's own recipes live in its recipe file (``train.recipe_file``, :mod:`fsseg.recipes`)."""
    needs_training: ClassVar[bool] = True
    """``False`` for a method that learns nothing: it declares no recipe and trains for zero iterations."""
    trains_backbone: ClassVar[bool] = True
    """Whether the method's paper fine-tunes the backbone (PANet) or keeps it frozen (PFENet)."""
    probes: ClassVar[dict[str, str]] = {}
    """Inference-time probes the diagnostics run (name → what it switches off), e.g. ``{"prior_off":
    "the prior map is replaced by zeros"}``. Inside ``with method.probe(name):`` the method's forward
    honours ``self.active_probe == name``; the weights are untouched."""
    has_base_learner: ClassVar[bool] = False
    """Whether the method holds a *base learner* (BAM): a semantic-segmentation network of the fold's base
    classes that the harness trains before the method (``fsseg base-learner``, cached per dataset, fold,
    backbone and ``base_learner.seed``, shared by every variant and seed) and loads, frozen, into it. Such a
    method's network implements ``build_base_learner`` and ``base_learner`` (:mod:`fsseg.method`)."""
    model_module: ClassVar[str] = ".model"
    """Module (relative to the declaration's package) whose import registers the method's network."""
    registry_name: ClassVar[str] = ""

    @classmethod
    def resolve_params(cls, variant: str, overrides: dict[str, Any] | None = None) -> Any:
        """The variant's parameters with ``overrides`` applied, validated against ``Params``."""
        if variant not in cls.variants:
            known = ", ".join(sorted(cls.variants))
            raise ConfigError(
                f"config.method.variant: unknown variant {variant!r} of {cls.registry_name!r}; known: {known}"
            )
        merged = {**cls.variants[variant], **(overrides or {})}
        return from_dict(cls.Params, merged, "config.method.params")

    @classmethod
    def recipe(cls, name: str, recipe_file: str | None = None) -> TrainRecipe:
        """The recipe ``name``: declared by the method, else by the benchmark's ``recipe_file``."""
        return resolve_recipe(
            cls.registry_name, cls.recipes, cls.needs_training, name, recipe_file, METHODS.names()
        )
