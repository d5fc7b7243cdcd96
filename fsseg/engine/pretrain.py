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
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fsseg import IGNORE_INDEX
from fsseg.atomic import save_torch, write_json
from fsseg.config import ExperimentConfig
from fsseg.data.loading import augment_pair, image_tensor, mask_tensor
from fsseg.device import describe_device, resolve_device
from fsseg.engine.build import build_dataset, pretraining_identity
from fsseg.engine.run_state import differing_keys
from fsseg.errors import ConfigError, DataError, TrainingDiverged
from fsseg.method import BackboneSpec
from fsseg.models.backbones import build_backbone
from fsseg.numerics import Numerics
from fsseg.progress import Progress, format_duration


def _label_map(num_classes: int, base: list[int], novel: list[int]) -> np.ndarray:
    """Lookup table: background 0, base classes 1..n_base, novel and unused classes ignored."""
    table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    table[0] = 0
    for new_id, cid in enumerate(base, start=1):
        table[cid] = new_id
    for cid in range(1, num_classes + 1):
        if cid not in base and cid not in novel:
            table[cid] = 0  # classes outside every fold are background, as in episodes
    return table


def _check_same_pretraining(cfg: ExperimentConfig, out: Path) -> None:
    """Refuse to reuse a backbone file pretrained with other settings (an older file without the record
    of them is reused as before)."""
    meta_path = out.with_suffix(".json")
    if not meta_path.is_file():
        return
    stored = json.loads(meta_path.read_text()).get("identity")
    if stored is None:
        return
    wanted = json.loads(json.dumps(pretraining_identity(cfg)))
    if stored != wanted:
        differing = ", ".join(differing_keys(stored, wanted))
        raise ConfigError(
            f"{out} was pretrained with other settings (differing: {differing}; see {meta_path}); "
            "delete it to pretrain again, or set output_root elsewhere"
        )


def pretrain_backbone(cfg: ExperimentConfig, out: Path | None = None) -> Path:
    out = out or cfg.pretrained_backbone_path
    if out.is_file():
        _check_same_pretraining(cfg, out)
        print(f"fsseg: {out} exists; nothing to do", file=sys.stderr)
        return out
    settings = cfg.pretrain
    device = resolve_device(settings.device)
    numerics = Numerics(settings.precision, settings.channels_last)
    note = numerics.check(device, "pretrain.precision")
    if note:
        print(f"fsseg: {note}", file=sys.stderr)
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
        base, novel = adapter.base_classes(cfg.fold), adapter.novel_classes(cfg.fold)
        split = adapter.train_split
        image_ids = adapter.image_ids(split)
        if cfg.dataset.train_filter == "remove_novel":
            image_ids = [i for i in image_ids if not adapter.contains_any(split, i, set(novel))]
        n_classes = len(base)
        table = _label_map(adapter.num_classes, base, novel)
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
    backbone = numerics.apply(build_backbone(spec).to(device))
    last_stage = backbone.stages[-1]
    head = numerics.apply(nn.Conv2d(backbone.channels[last_stage], n_classes + 1, kernel_size=1).to(device))
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.iterations)
    size = cfg.dataset.image_size
    print(
        f"fsseg: pretraining {cfg.backbone.name} on {what} of {cfg.dataset.name} "
        f"({len(image_ids)} images, {settings.iterations} steps) on {describe_device(device)}, "
        f"{numerics.describe()}",
        file=sys.stderr,
    )
    progress = Progress("pretrain", settings.iterations)
    started = time.perf_counter()
    backbone.train()
    for it in range(settings.iterations):
        rng = np.random.default_rng([settings.seed, it])
        picks = rng.choice(
            len(image_ids), size=settings.batch_size, replace=len(image_ids) < settings.batch_size
        )
        images, labels = [], []
        for index in picks:
            image = adapter.load_image(split, image_ids[index])
            label = table[adapter.load_mask(split, image_ids[index])]
            image, label = augment_pair(image, label, rng)
            images.append(image_tensor(image, size))
            labels.append(mask_tensor(label, size))
        x, y = torch.stack(images).to(device), torch.stack(labels).to(device)
        with numerics.autocast(device):
            logits = head(backbone(x, stages=(last_stage,))[last_stage])
        logits = F.interpolate(logits.float(), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y, ignore_index=IGNORE_INDEX)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"backbone pretraining diverged at step {it + 1}; lower pretrain.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        progress.update(it + 1, f"loss {loss.item():.4f}")
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
        "final_loss": float(loss.item()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_torch(out, {"backbone": backbone.state_dict(), "meta": meta})
    write_json(out.with_suffix(".json"), meta)
    print(
        f"fsseg: pretrained backbone written to {out} in {format_duration(meta['seconds'])}", file=sys.stderr
    )
    return out
