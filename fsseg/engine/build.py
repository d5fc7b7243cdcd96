"""Building what a config names: dataset adapter, method, optimizer and learning-rate schedule."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import torch

from fsseg.atomic import canonical_json
from fsseg.config import ExperimentConfig
from fsseg.data.adapter import DatasetAdapter, open_dataset
from fsseg.errors import ConfigError
from fsseg.method import BackboneSpec, FewShotMethod, TrainRecipe
from fsseg.registry import DATASETS, METHODS
from fsseg.schema import from_dict


def build_dataset(cfg: ExperimentConfig) -> DatasetAdapter:
    return open_dataset(cfg.dataset.name, cfg.dataset.root, cfg.dataset.options)


def build_method(cfg: ExperimentConfig) -> FewShotMethod:
    """The configured method, initialised from ``train.train_seed`` (same seed ⇒ same weights)."""
    method_cls = METHODS.get(cfg.method.name)
    params = method_cls.resolve_params(cfg.method.variant, cfg.method.params)
    backbone = dataclasses.asdict(cfg.backbone)
    backbone["frozen_bn"] = effective_recipe(cfg).frozen_bn
    spec = from_dict(BackboneSpec, backbone, "config.backbone")
    if spec.weights == "fold_pretrained":
        path = cfg.pretrained_backbone_path
        if not path.is_file():
            raise ConfigError(
                f"backbone.weights is 'fold_pretrained' but {path} does not exist; "
                "run `fsseg pretrain` with the same config first"
            )
        spec.weights = str(path)
    torch.manual_seed(cfg.train.train_seed)
    method = method_cls(params, spec)
    if method_cls.has_base_learner:
        method.build_base_learner(fold_base_classes(cfg))
    return method


def fold_base_classes(cfg: ExperimentConfig) -> tuple[int, ...]:
    """The base class ids of the config's fold, from the dataset's fold definition (no file is read)."""
    return tuple(DATASETS.get(cfg.dataset.name).fold_base_classes(cfg.dataset.options, cfg.fold))


def effective_recipe(cfg: ExperimentConfig) -> TrainRecipe:
    """The named recipe (the method's or the benchmark's) with every non-null ``train.*`` override applied."""
    recipe = METHODS.declaration(cfg.method.name).recipe(cfg.train.recipe, cfg.train.recipe_file)
    overrides = {
        f.name: getattr(cfg.train, f.name)
        for f in dataclasses.fields(TrainRecipe)
        if f.name != "description" and getattr(cfg.train, f.name, None) is not None
    }
    if "lr_steps" in overrides:
        overrides["lr_steps"] = tuple(overrides["lr_steps"])
    if cfg.train.iterations is not None and cfg.train.epochs is None:
        overrides["epochs"] = None  # explicit iterations replace the recipe's length in epochs
    if cfg.backbone.frozen_bn is not None:
        overrides["frozen_bn"] = cfg.backbone.frozen_bn
    return dataclasses.replace(recipe, **overrides)


def iterations_for_epochs(epochs: int, n_images: int, batch_size: int, section: str = "train") -> int:
    """Optimizer steps of ``epochs`` passes over ``n_images`` in batches, the last partial batch dropped.

    PFENet's ``train.py`` (and BAM's ``train_base.py``) build the loader with ``drop_last=True`` and set
    ``max_iter = epochs * len(train_loader)``, i.e. ``epochs * floor(n_images / batch_size)``. ``section``
    names the config section (``train``, ``base_learner``) in the error.
    """
    per_epoch = n_images // batch_size
    if per_epoch < 1:
        raise ConfigError(
            f"{section}.epochs: the filtered training list has {n_images} image(s), fewer than one batch of "
            f"{batch_size}; lower {section}.batch_size or give {section}.iterations"
        )
    return epochs * per_epoch


def build_optimizer(method: FewShotMethod, recipe: TrainRecipe) -> torch.optim.Optimizer:
    groups = [g for g in method.param_groups(recipe.lr) if g["params"]]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay
        )
    # The fused Adam kernel updates each tensor in one pass (3x faster than the per-tensor loop on a
    # CPU for PFENet's 10 M parameters); it is deterministic and exists for float32 on CPU and CUDA.
    fused = all(
        p.dtype == torch.float32 and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"]
    )
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=fused)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay, fused=fused)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def poly_factor(step: int, total: int, power: float) -> float:
    """The poly schedule's multiplier of the initial rate after ``step`` of ``total`` steps:
    (1 - step / total) ** power (the training recipes' and the pretraining's one formula)."""
    return (1.0 - step / max(total, 1)) ** power


def lr_factor(recipe: TrainRecipe, iteration: int) -> float:
    """Multiplier of every group's initial learning rate at ``iteration`` (0-based)."""
    warm = min(1.0, (iteration + 1) / recipe.warmup) if recipe.warmup else 1.0
    if recipe.schedule == "constant":
        return warm
    if recipe.schedule == "step":
        return warm * recipe.lr_gamma ** sum(iteration >= s for s in recipe.lr_steps)
    if recipe.schedule == "poly":
        return warm * poly_factor(iteration, recipe.iterations, recipe.poly_power)
    raise ValueError(f"unknown schedule {recipe.schedule!r}")


def build_scheduler(
    optimizer: torch.optim.Optimizer, recipe: TrainRecipe
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(recipe, it))


def config_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(data).encode()).hexdigest()


def pretraining_identity(cfg: ExperimentConfig) -> dict[str, Any]:
    """What decides a pretrained backbone's weights beyond its file name (dataset, backbone, scope,
    seed): ``pretrain.*`` but the device, and the stride, depth and image size it is trained at."""
    settings = {k: v for k, v in cfg.to_dict()["pretrain"].items() if k != "device"}
    return {
        "pretrain": settings,
        "output_stride": cfg.backbone.output_stride,
        "max_stage": cfg.backbone.max_stage,
        "image_size": cfg.dataset.image_size,
    }


def base_learner_identity(cfg: ExperimentConfig) -> dict[str, Any]:
    """What decides a base learner's weights beyond its file name (dataset, method, backbone, fold, seed):
    ``base_learner.*`` but the device, the backbone it starts from (with the pretraining of a
    ``fold_pretrained`` one), the training-image filter, the dataset options and the image size."""
    data = cfg.to_dict()
    identity = {
        "base_learner": {k: v for k, v in data["base_learner"].items() if k != "device"},
        "backbone": data["backbone"],
        "image_size": cfg.dataset.image_size,
        "train_filter": cfg.dataset.train_filter,
        "dataset_options": data["dataset"]["options"],
    }
    if cfg.backbone.weights == "fold_pretrained":
        identity["pretrain"] = pretraining_identity(cfg)
    return identity


def training_identity(cfg: ExperimentConfig) -> dict[str, Any]:
    """The parts of a config that determine the trained weights (not eval or logging settings)."""
    data = cfg.to_dict()
    train = dict(data["train"])
    # recipe_file says where the recipe's values are read from; the recipe's name stays in the identity
    for key in ("checkpoint_every", "log_every", "num_workers", "device", "recipe_file"):
        train.pop(key)
    # A length in epochs (the config's or the recipe's) decides the iterations from the data; the
    # resolved config written next to the run states both, the config given by the user maybe neither.
    train["epochs"] = effective_recipe(cfg).epochs
    if train["epochs"] is not None:
        train.pop("iterations")
    identity = {
        "fold": data["fold"],
        "method": data["method"],
        "dataset": {k: v for k, v in data["dataset"].items() if k not in ("label_resolution", "root")},
        "backbone": data["backbone"],
        "train": train,
    }
    # The recipe's values, wherever they are declared (a benchmark's recipe file can change under the
    # same recipe name); a length in epochs stands for the iterations, as above.
    recipe = {k: v for k, v in dataclasses.asdict(effective_recipe(cfg)).items() if k != "description"}
    if recipe["epochs"] is not None:
        recipe.pop("iterations")
    identity["recipe"] = recipe
    if cfg.backbone.weights == "fold_pretrained":  # the backbone file's weights come from these
        identity["pretrain"] = pretraining_identity(cfg)["pretrain"]
    if METHODS.declaration(cfg.method.name).has_base_learner:  # so do the frozen base learner's
        identity["base_learner"] = base_learner_identity(cfg)
    return identity


def run_id(cfg: ExperimentConfig) -> str:
    return f"{cfg.run_name}-{config_hash(training_identity(cfg))[:10]}"
