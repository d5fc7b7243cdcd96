"""What a method declares about itself, without torch: parameters, variants, recipes.

Config validation (:func:`fsseg.config.load_config`) and the workflow's plan read only this, so neither
imports torch. A method's package holds it in a torch-free ``declaration`` module: a
:class:`MethodDeclaration` subclass registered with ``@METHODS.declare("name")``, which the method's
``nn.Module`` class (in ``model.py``, registered with ``@METHODS.register("name")``) lists first among its
bases, so the two cannot disagree. The registry imports ``model.py`` only when the network is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from fsseg.errors import ConfigError
from fsseg.schema import from_dict


@dataclass(frozen=True)
class TrainRecipe:
    """How a method is trained by default; every field can be overridden from ``train.*`` config."""

    optimizer: str = "sgd"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    lr_steps: tuple[int, ...] = ()
    lr_gamma: float = 0.1
    poly_power: float = 0.9
    warmup: int = 0
    iterations: int = 1000
    batch_size: int = 4
    epochs: int | None = None
    """Length in epochs of the fold's filtered training list; when set it decides the iterations."""
    augment: str = "flip_rot90"
    """Training augmentation pipeline (``train.augment``): flip_rot90, pfenet, panet or none."""
    frozen_bn: str = "eval"
    """BatchNorm of a frozen backbone in training (``backbone.frozen_bn``): eval or batch_stats."""
    description: str = ""


@dataclass
class NoParams:
    """For methods without hyper-parameters."""


class MethodDeclaration:
    """A method's declared configuration; subclasses set the class attributes."""

    Params: ClassVar[type] = NoParams
    """Dataclass of the hyper-parameters and ablation switches (validated from ``method.params``)."""
    variants: ClassVar[dict[str, dict[str, Any]]] = {"default": {}}
    """Named parameter sets (ablations); ``"default"`` always present."""
    recipes: ClassVar[dict[str, TrainRecipe]] = {"default": TrainRecipe()}
    """Named training recipes (``train.recipe``)."""
    trains_backbone: ClassVar[bool] = True
    """Whether the method's paper fine-tunes the backbone (PANet) or keeps it frozen (PFENet)."""
    probes: ClassVar[dict[str, str]] = {}
    """Inference-time probes the diagnostics run (name → what it switches off), e.g. ``{"prior_off":
    "the prior map is replaced by zeros"}``. Inside ``with method.probe(name):`` the method's forward
    honours ``self.active_probe == name``; the weights are untouched."""
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
    def recipe(cls, name: str) -> TrainRecipe:
        if name not in cls.recipes:
            known = ", ".join(sorted(cls.recipes))
            raise ConfigError(
                f"config.train.recipe: unknown recipe {name!r} of {cls.registry_name!r}; known: {known}"
            )
        return cls.recipes[name]
