"""The contract between the harness and a few-shot segmentation method.

A method is an ``nn.Module`` subclass of :class:`FewShotMethod`, registered with
``@METHODS.register("name")`` in its own package under ``methods/``. Its torch-free declaration
(:class:`~fsseg.declaration.MethodDeclaration`, in the package's ``declaration`` module, registered with
``@METHODS.declare("name")``) states

* ``Params``: a dataclass of its hyper-parameters and ablation switches (validated from config);
* ``variants``: named parameter sets (ablations), ``"default"`` always present;
* ``recipes``: what its paper prescribes, ``{"official": TrainRecipe(...)}`` (a benchmark's own
  recipes, e.g. the synthetic benchmark's CPU recipes, live in its recipe file: ``fsseg.recipes``);
* ``needs_training``: ``False`` for a method that learns nothing (it then needs no recipe);

and the network class, which lists the declaration first among its bases, implements ``forward``
(episode batch → dict with ``"logits"`` [B, 2, H, W] at input size, plus anything its loss needs) and
``loss``. Everything else (episodes, image size, metrics, seeds,
checkpoints, output paths) belongs to the harness.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fsseg.declaration import MethodDeclaration, NoParams
from fsseg.errors import ConfigError
from fsseg.recipes import TrainRecipe
from fsseg.schema import opt

__all__ = ["BackboneSpec", "Batch", "FewShotMethod", "MethodDeclaration", "NoParams", "TrainRecipe"]


@dataclass
class BackboneSpec:
    """What the harness tells a method about the backbone it must build (from ``backbone.*`` config)."""

    name: str = opt("resnet18")
    weights: str = opt("none")
    sha256: str | None = opt(None)
    output_stride: int = opt(8)
    max_stage: str | None = opt(None)
    train_mode: str = opt("method")
    frozen_bn: str = opt("eval", choices=("eval", "batch_stats"))


Batch = dict[str, torch.Tensor]
"""An episode batch: ``query_img`` [B,3,H,W] float (normalised), ``query_mask`` [B,H,W] long
(0 background, 1 foreground, 255 ignore; absent at test time), ``support_imgs`` [B,K,3,H,W],
``support_masks`` [B,K,H,W] long (same coding), ``class_id`` [B] long."""


class FewShotMethod(MethodDeclaration, nn.Module):
    """Base class of every method: its declaration (:class:`~fsseg.declaration.MethodDeclaration`, torch-free,
    usually a class of the method's ``declaration`` module listed first among the bases) and the two hooks."""

    def __init__(self, params: Any, backbone: BackboneSpec) -> None:
        super().__init__()
        self.params = params
        self.backbone_spec = backbone
        self.active_probe: str | None = None

    @contextmanager
    def probe(self, name: str) -> Iterator[None]:
        """Run the enclosed forward passes with the declared probe ``name`` switched on."""
        if name not in self.probes:
            known = ", ".join(sorted(self.probes)) or "none"
            raise ConfigError(f"method {self.registry_name!r} declares no probe {name!r}; known: {known}")
        previous, self.active_probe = self.active_probe, name
        try:
            yield
        finally:
            self.active_probe = previous

    # --- hooks ---------------------------------------------------------------------------------
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, outputs: dict[str, torch.Tensor], batch: Batch) -> dict[str, torch.Tensor]:
        """Loss terms; ``"loss"`` is the total that is minimised, the others are logged."""
        raise NotImplementedError

    def build_base_learner(self, base_class_ids: tuple[int, ...]) -> None:
        """Build the base learner's own layers for the fold's base classes (dataset label ids, in order);
        the harness calls it right after construction when ``has_base_learner`` is set."""
        raise ConfigError(f"method {self.registry_name!r} declares no base learner")

    def base_learner(self) -> nn.Module:
        """The base learner as one module (its layers shared with the method, not copied): images
        [N, 3, H, W] → logits [N, 1 + n_base, h, w], channel 0 background, channel i the i-th base class.
        The harness trains it as plain semantic segmentation, caches its ``state_dict`` and loads it back,
        frozen, before the method's own training. Its encoder is its ``backbone`` attribute:
        ``base_learner.head_lr_scale`` multiplies the learning rate of every other parameter."""
        raise ConfigError(f"method {self.registry_name!r} declares no base learner")

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; override for per-module learning rates."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def train(self, mode: bool = True) -> FewShotMethod:
        """Switch to training mode, keeping frozen sub-modules (``requires_grad`` all off) in eval mode.

        With ``backbone.frozen_bn: batch_stats`` they stay in training mode instead, as in PFENet's
        official ``train.py``: their BatchNorm normalises with batch statistics and its running
        statistics drift (and are saved), though no weight of theirs is trained.
        """
        super().train(mode)
        if mode and self.backbone_spec.frozen_bn == "eval":
            for module in self.frozen_modules():
                module.eval()
        return self

    def frozen_modules(self) -> list[nn.Module]:
        """Sub-modules whose parameters are all frozen: their BatchNorm statistics stay fixed."""
        frozen = []
        for child in self.children():
            params = list(child.parameters())
            if params and not any(p.requires_grad for p in params):
                frozen.append(child)
        return frozen

    @property
    def is_trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def wants_frozen_backbone(self) -> bool:
        """Combine the method's own choice with the ``backbone.train_mode`` override."""
        mode = self.backbone_spec.train_mode
        if mode == "frozen":
            return True
        if mode == "finetune":
            return False
        return not self.trains_backbone
