"""Training, caching and loading of a method's *base learner* (BAM's PSPNet over the fold's base classes).

A method that sets ``has_base_learner`` exposes it through ``base_learner()`` (images → logits over
background + the fold's base classes, its layers shared with the method). ``fsseg base-learner`` trains
that module as plain semantic segmentation of the fold's base classes, with the ``base_learner.*``
settings and the loop that pretrains backbones (Adam and a cosine decay as there, or BAM's
``train_base.py`` optimiser: SGD, poly decay, the head at ``head_lr_scale`` × the rate), and writes it
to ``paths.BASE_LEARNER``: one file per dataset, method, backbone, fold and ``base_learner.seed``,
shared by every variant, shot and train seed. ``fsseg train`` loads it, frozen, before the method's
own training. Nothing here names a method.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from fsseg.atomic import save_torch, write_json
from fsseg.config import ExperimentConfig
from fsseg.device import describe_device, resolve_device
from fsseg.engine.build import base_learner_identity, build_dataset, build_method
from fsseg.engine.pretrain import (
    SegmentationFit,
    base_class_table,
    base_training_images,
    check_same_identity,
    fit_semantic_segmentation,
)
from fsseg.engine.run_state import check_finite_state, load_state_file
from fsseg.errors import ConfigError, DataError
from fsseg.method import FewShotMethod
from fsseg.numerics import Numerics
from fsseg.progress import format_duration
from fsseg.registry import METHODS


def _require_base_learner(cfg: ExperimentConfig) -> None:
    if not METHODS.declaration(cfg.method.name).has_base_learner:
        raise ConfigError(f"config.method.name: method {cfg.method.name!r} has no base learner to train")


def train_base_learner(cfg: ExperimentConfig, out: Path | None = None) -> Path:
    """Train the base learner of ``cfg``'s method on the fold's base classes and write it to ``out``."""
    _require_base_learner(cfg)
    out = out or cfg.base_learner_path
    if out.is_file():
        check_same_identity(out, base_learner_identity(cfg))
        print(f"fsseg: {out} exists; nothing to do", file=sys.stderr)
        return out
    settings = cfg.base_learner
    device = resolve_device(settings.device)
    numerics = Numerics.of(settings)
    numerics.prepare(device, "base_learner.precision")
    adapter = build_dataset(cfg)
    split = adapter.train_split
    image_ids = base_training_images(cfg, adapter)
    if not image_ids:
        raise DataError(f"no training images for the base learner in split {split!r} of {cfg.dataset.name!r}")
    torch.manual_seed(settings.seed)
    method = build_method(cfg)  # the backbone starts from backbone.weights, as the method's would
    learner = method.base_learner()
    n_base = len(adapter.base_classes(cfg.fold))
    fit = SegmentationFit.of_base_learner(settings, len(image_ids))
    print(
        f"fsseg: training the base learner of {cfg.method.name} ({cfg.backbone.name}) on the {n_base} base "
        f"classes of fold {cfg.fold} of {cfg.dataset.name} ({len(image_ids)} images, {fit.iterations} "
        f"steps, {fit.optimizer}, {fit.schedule}) on {describe_device(device)}, {numerics.describe()}",
        file=sys.stderr,
    )
    started = time.perf_counter()
    size = cfg.dataset.image_size
    table = base_class_table(adapter, cfg.fold, settings.novel_pixels == "background")
    final_loss = fit_semantic_segmentation(
        learner, adapter, split, image_ids, table, fit, numerics, device, size, "base_learner"
    )
    meta = {
        "dataset": cfg.dataset.name,
        "method": cfg.method.name,
        "fold": cfg.fold,
        "base_classes": list(adapter.base_classes(cfg.fold)),
        "backbone": cfg.backbone.name,
        "image_size": size,
        "n_images": len(image_ids),
        "iterations": fit.iterations,
        "identity": base_learner_identity(cfg),
        "final_loss": final_loss,
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_torch(out, {"base_learner": learner.state_dict(), "meta": meta})
    write_json(out.with_suffix(".json"), meta)
    print(f"fsseg: base learner written to {out} in {format_duration(meta['seconds'])}", file=sys.stderr)
    return out


def check_base_learner_file(cfg: ExperimentConfig) -> Path:
    """The cached base learner of ``cfg``, refused when missing or trained with other settings."""
    path = cfg.base_learner_path
    if not path.is_file():
        raise ConfigError(
            f"method {cfg.method.name!r} needs its base learner at {path}, which does not exist; "
            "run `fsseg base-learner` with the same config first"
        )
    check_same_identity(path, base_learner_identity(cfg))
    return path


def load_base_learner(cfg: ExperimentConfig, method: FewShotMethod) -> None:
    """Load the cached base learner of ``cfg`` into ``method`` and freeze it."""
    path = check_base_learner_file(cfg)
    state = load_state_file(path)["base_learner"]
    check_finite_state(state, path)
    learner = method.base_learner()
    learner.load_state_dict(state)
    for p in learner.parameters():
        p.requires_grad = False
