"""Pretraining of a backbone shared frozen (or fine-tuned) by every method, as ImageNet weights are.

On the synthetic benchmark no ImageNet weights exist offline, so a backbone is trained as a plain
semantic-segmentation network (``pretrain.classes``):

* ``auxiliary``: on the dataset's pretraining split, whose classes belong to no fold; one backbone
  serves every fold, and no novel (or base) class is ever seen, exactly like ImageNet for the real
  benchmarks;
* ``base``: on one fold's *base* classes only (novel-class pixels are ignored, so the backbone is
  never told that novel objects are background); one backbone per fold.

Methods then load it through ``backbone.weights: fold_pretrained``. The output holds
``{"backbone": state_dict, "meta": {...}}``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fsseg import IGNORE_INDEX
from fsseg.atomic import save_torch, write_json
from fsseg.config import BaseLearnerConfig, ExperimentConfig, PretrainConfig
from fsseg.data.adapter import DatasetAdapter
from fsseg.data.loading import augment_pair, image_tensor, mask_tensor
from fsseg.device import describe_device, resolve_device
from fsseg.engine.build import build_dataset, iterations_for_epochs, poly_factor, pretraining_identity
from fsseg.engine.run_state import differing_keys
from fsseg.errors import ConfigError, DataError, TrainingDiverged
from fsseg.method import BackboneSpec
from fsseg.models.backbones import build_backbone
from fsseg.numerics import Numerics
from fsseg.progress import Progress, format_duration


def _label_map(
    num_classes: int, base: list[int], novel: list[int], novel_as_background: bool = False
) -> np.ndarray:
    """Lookup table: background 0, base classes 1..n_base, unused classes background, novel classes
    ignored (or background with ``novel_as_background``)."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    table[0] = 0
    for new_id, cid in enumerate(base, start=1):
        table[cid] = new_id
    for cid in range(1, num_classes + 1):
        if cid not in base and (novel_as_background or cid not in novel):
            table[cid] = 0  # classes outside every fold are background, as in episodes
    return table


class StageClassifier(nn.Module):
    """A backbone read at one stage, followed by a 1×1 classifier: the network a backbone is pretrained in."""

    def __init__(self, backbone: nn.Module, stage: str, classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.stage = stage
        self.head = nn.Conv2d(backbone.channels[stage], classes, kernel_size=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(images, stages=(self.stage,))[self.stage])


@dataclass(frozen=True)
class SegmentationFit:
    """How :func:`fit_semantic_segmentation` steps: length, batch, seed of the image draws and optimiser.

    The pretraining always uses Adam with a cosine decay to zero (:meth:`of_pretraining`); a base learner
    may instead use BAM's ``train_base.py`` optimiser: SGD with momentum, a poly decay and a larger rate
    for the head (:meth:`of_base_learner`).
    """

    iterations: int
    batch_size: int
    seed: int
    lr: float
    weight_decay: float
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "cosine"
    poly_power: float = 0.9
    head_lr_scale: float = 1.0

    @classmethod
    def of_pretraining(cls, settings: PretrainConfig) -> SegmentationFit:
        """``pretrain.*``: its length, batch, seed, rate and weight decay; Adam with a cosine decay."""
        return cls(
            iterations=settings.iterations,
            batch_size=settings.batch_size,
            seed=settings.seed,
            lr=settings.lr,
            weight_decay=settings.weight_decay,
        )

    @classmethod
    def of_base_learner(cls, settings: BaseLearnerConfig, n_images: int) -> SegmentationFit:
        """``base_learner.*`` (every field of this class is one of them), the length from
        ``base_learner.epochs`` over ``n_images`` when set."""
        values = {f.name: getattr(settings, f.name) for f in fields(cls)}
        if settings.epochs is not None:
            values["iterations"] = iterations_for_epochs(
                settings.epochs, n_images, settings.batch_size, "base_learner"
            )
        return cls(**values)

    def lr_factor(self, step: int) -> float:
        """Multiplier of every group's initial rate after ``step`` optimizer steps (poly schedule)."""
        return poly_factor(step, self.iterations, self.poly_power)

    def build(self, model: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        """Optimizer and per-step scheduler over ``model``'s parameters. With ``head_lr_scale`` ≠ 1 the
        parameters of ``model.backbone`` keep ``lr`` and every other one gets ``lr × head_lr_scale``."""
        params = list(model.parameters())
        if self.head_lr_scale == 1.0:
            groups: list[dict] = [{"params": params, "lr": self.lr}]
        else:
            encoder = {id(p) for p in model.backbone.parameters()}
            groups = [
                {"params": [p for p in params if id(p) in encoder], "lr": self.lr},
                {"params": [p for p in params if id(p) not in encoder], "lr": self.lr * self.head_lr_scale},
            ]
        if self.optimizer == "sgd":
            optimizer: torch.optim.Optimizer = torch.optim.SGD(
                groups, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
            )
        else:
            optimizer = torch.optim.Adam(groups, lr=self.lr, weight_decay=self.weight_decay)
        if self.schedule == "poly":
            return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, self.iterations)


def fit_semantic_segmentation(
    model: nn.Module,
    adapter: DatasetAdapter,
    split: str,
    image_ids: list[str],
    table: np.ndarray,
    fit: SegmentationFit,
    numerics: Numerics,
    device: torch.device,
    size: int,
    label: str,
) -> float:
    # ``label`` names the config section the settings come from in the progress line and in errors
    """Train ``model`` (images → logits [N, classes, h, w]) in place as plain semantic segmentation.

    Every parameter of ``model`` is trained (``requires_grad`` switched on); labels are ``table`` applied to
    the masks (255 ignored). ``fit`` gives steps, batch, optimiser and the seed of the image draws.
    Returns the last step's loss.
    """
    model = numerics.apply(model.to(device))
    for p in model.parameters():
        p.requires_grad = True
    optimizer, scheduler = fit.build(model)
    progress = Progress(label, fit.iterations)
    model.train()
    loss = torch.tensor(float("nan"))
    for it in range(fit.iterations):
        rng = np.random.default_rng([fit.seed, it])
        picks = rng.choice(len(image_ids), size=fit.batch_size, replace=len(image_ids) < fit.batch_size)
        images, labels = [], []
        for index in picks:
            image = adapter.load_image(split, image_ids[index])
            target = table[adapter.load_mask(split, image_ids[index])]
            image, target = augment_pair(image, target, rng)
            images.append(image_tensor(image, size))
            labels.append(mask_tensor(target, size))
        x, y = torch.stack(images).to(device), torch.stack(labels).to(device)
        with numerics.autocast(device):
            logits = model(x)
        logits = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"{label} diverged at step {it + 1}; lower {label}.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        progress.update(it + 1, f"loss {loss.item():.4f}")
    return float(loss.item())


def base_class_table(adapter: DatasetAdapter, fold: int, novel_as_background: bool = False) -> np.ndarray:
    """Label table of a fold's base-class segmentation (see :func:`_label_map`)."""
    return _label_map(
        adapter.num_classes, adapter.base_classes(fold), adapter.novel_classes(fold), novel_as_background
    )


def base_training_images(cfg: ExperimentConfig, adapter: DatasetAdapter) -> list[str]:
    """The training split's images, less those holding a novel class under ``train_filter: remove_novel``."""
    split = adapter.train_split
    image_ids = adapter.image_ids(split)
    if cfg.dataset.train_filter == "remove_novel":
        novel = set(adapter.novel_classes(cfg.fold))
        image_ids = [i for i in image_ids if not adapter.contains_any(split, i, novel)]
    return image_ids


def check_same_identity(out: Path, wanted: dict) -> None:
    """Refuse to reuse a file trained with other settings, as recorded in its ``.json`` (an older file
    without the record is reused as before)."""
    meta_path = out.with_suffix(".json")
    if not meta_path.is_file():
        return
    stored = json.loads(meta_path.read_text()).get("identity")
    if stored is None:
        return
    wanted = json.loads(json.dumps(wanted))
    if stored != wanted:
        differing = ", ".join(differing_keys(stored, wanted))
        raise ConfigError(
            f"{out} was trained with other settings (differing: {differing}; see {meta_path}); "
            "delete it to train it again, or set output_root elsewhere"
        )


def pretrain_backbone(cfg: ExperimentConfig, out: Path | None = None) -> Path:
    out = out or cfg.pretrained_backbone_path
    if out.is_file():
        check_same_identity(out, pretraining_identity(cfg))
        print(f"fsseg: {out} exists; nothing to do", file=sys.stderr)
        return out
    settings = cfg.pretrain
    device = resolve_device(settings.device)
    numerics = Numerics.of(settings)
    numerics.prepare(device, "pretrain.precision")
    adapter = build_dataset(cfg)
    if settings.classes == "auxiliary":
        if adapter.pretrain_split is None:
            raise ConfigError(
                f"config.pretrain.classes: dataset {cfg.dataset.name!r} has no auxiliary pretraining split; "
                "use 'base'"
            )
        split = adapter.pretrain_split
        image_ids = adapter.image_ids(split)
        n_classes = adapter.pretrain_num_classes
        table = np.arange(256, dtype=np.uint8)  # label ids are the auxiliary classes themselves
        what = f"{n_classes} auxiliary classes (no fold's)"
    else:
        split = adapter.train_split
        image_ids = base_training_images(cfg, adapter)
        n_classes = len(adapter.base_classes(cfg.fold))
        table = base_class_table(adapter, cfg.fold)
        what = f"{n_classes} base classes of fold {cfg.fold}"
    if not image_ids:
        raise DataError(f"no pretraining images in split {split!r} of {cfg.dataset.name!r}")

    torch.manual_seed(settings.seed)
    spec = BackboneSpec(
        name=cfg.backbone.name,
        weights=settings.init_weights,
        output_stride=cfg.backbone.output_stride,
        max_stage=cfg.backbone.max_stage,
    )
    backbone = build_backbone(spec)
    last_stage = backbone.stages[-1]
    model = StageClassifier(backbone, last_stage, n_classes + 1)
    print(
        f"fsseg: pretraining {cfg.backbone.name} on {what} of {cfg.dataset.name} "
        f"({len(image_ids)} images, {settings.iterations} steps) on {describe_device(device)}, "
        f"{numerics.describe()}",
        file=sys.stderr,
    )
    started = time.perf_counter()
    size = cfg.dataset.image_size
    fit = SegmentationFit.of_pretraining(settings)
    final_loss = fit_semantic_segmentation(
        model, adapter, split, image_ids, table, fit, numerics, device, size, "pretrain"
    )
    meta = {
        "dataset": cfg.dataset.name,
        "scope": cfg.pretrain_scope,
        "classes": settings.classes,
        "n_classes": n_classes,
        "backbone": cfg.backbone.name,
        "init_weights": settings.init_weights,
        "image_size": size,
        "pretrain": cfg.to_dict()["pretrain"],
        "identity": pretraining_identity(cfg),
        "final_loss": final_loss,
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_torch(out, {"backbone": model.backbone.state_dict(), "meta": meta})
    write_json(out.with_suffix(".json"), meta)
    print(
        f"fsseg: pretrained backbone written to {out} in {format_duration(meta['seconds'])}", file=sys.stderr
    )
    return out
