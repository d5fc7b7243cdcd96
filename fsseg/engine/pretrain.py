"""Base-class pretraining of a backbone, shared frozen (or fine-tuned) by every method of a fold.

On the synthetic benchmark no ImageNet weights exist offline, so each fold gets a backbone trained
as a plain semantic-segmentation network on its *base* classes only (novel-class pixels are ignored,
so the backbone is never told that novel objects are background). Methods then load it through
``backbone.weights``. The output holds ``{"backbone": state_dict, "meta": {...}}``.
"""

from __future__ import annotations

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
from fsseg.engine.build import build_dataset
from fsseg.engine.progress import Progress, format_duration
from fsseg.errors import DataError, TrainingDiverged
from fsseg.method import BackboneSpec
from fsseg.models.backbones import build_backbone


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


def pretrain_backbone(cfg: ExperimentConfig, out: Path | None = None) -> Path:
    out = out or cfg.pretrained_backbone_path
    if out.is_file():
        print(f"fsseg: {out} exists; nothing to do", file=sys.stderr)
        return out
    settings = cfg.pretrain
    device = resolve_device(settings.device)
    adapter = build_dataset(cfg)
    base, novel = adapter.base_classes(cfg.fold), adapter.novel_classes(cfg.fold)
    split = adapter.train_split
    image_ids = adapter.image_ids(split)
    if cfg.dataset.train_filter == "remove_novel":
        image_ids = [i for i in image_ids if not adapter.contains_any(split, i, set(novel))]
    if not image_ids:
        raise DataError(f"no training images left in split {split!r} for fold {cfg.fold}")
    table = _label_map(adapter.num_classes, base, novel)

    torch.manual_seed(settings.seed)
    spec = BackboneSpec(
        name=cfg.backbone.name,
        weights=settings.init_weights,
        output_stride=cfg.backbone.output_stride,
        max_stage=cfg.backbone.max_stage,
    )
    backbone = build_backbone(spec).to(device)
    last_stage = backbone.stages[-1]
    head = nn.Conv2d(backbone.channels[last_stage], len(base) + 1, kernel_size=1).to(device)
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.iterations)
    size = cfg.dataset.image_size
    print(
        f"fsseg: pretraining {cfg.backbone.name} on {len(base)} base classes of {cfg.dataset.name} "
        f"fold {cfg.fold} "
        f"({len(image_ids)} images, {settings.iterations} steps) on {describe_device(device)}",
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
        logits = head(backbone(x, stages=(last_stage,))[last_stage])
        logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
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
        "fold": cfg.fold,
        "base_classes": base,
        "backbone": cfg.backbone.name,
        "init_weights": settings.init_weights,
        "image_size": size,
        "pretrain": cfg.to_dict()["pretrain"],
        "final_loss": float(loss.item()),
        "seconds": round(time.perf_counter() - started, 1),
    }
    save_torch(out, {"backbone": backbone.state_dict(), "meta": meta})
    write_json(out.with_suffix(".json"), meta)
    print(
        f"fsseg: pretrained backbone written to {out} in {format_duration(meta['seconds'])}", file=sys.stderr
    )
    return out
