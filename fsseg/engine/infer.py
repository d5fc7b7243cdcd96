"""The one inference loop: a method run on the episodes of a manifest, each prediction scored.

Evaluation (``records.csv``), checkpoint selection on validation episodes, the diagnostics and
``fsseg predict`` all call :func:`infer_episodes`, so a prediction is made one way everywhere: the
method's logits for a batch of episodes, each resized (bilinear) to its query label, the arg-max over
the two classes, and the four counts of :func:`fsseg.metrics.episode_counts`. The method never sees
the query's label.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from fsseg.data.adapter import DatasetAdapter
from fsseg.data.episodes import EpisodeManifest
from fsseg.data.loading import ManifestEpisodes, collate_episodes
from fsseg.method import FewShotMethod
from fsseg.metrics import EpisodeCounts, episode_counts, summarize
from fsseg.progress import Progress


@dataclass(frozen=True)
class InferenceSettings:
    """How episodes reach the method: model input side, label resolution scored against, episodes per
    forward pass and data-loader workers (the workers never change a result)."""

    image_size: int
    label_resolution: str
    batch_size: int
    num_workers: int


@dataclass(frozen=True)
class EpisodeResult:
    """One episode's outcome; ``prediction`` (0/1) and ``label`` (0/1/255) are [H, W] uint8 at the label's
    resolution, kept only when asked for (:func:`infer_episodes` ``keep_masks``)."""

    episode_id: int
    counts: EpisodeCounts
    prediction: np.ndarray | None = None
    label: np.ndarray | None = None


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The batch with every tensor moved to ``device`` (other values as they are)."""
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


def infer_episodes(
    method: FewShotMethod,
    manifest: EpisodeManifest,
    adapter: DatasetAdapter,
    settings: InferenceSettings,
    device: torch.device,
    *,
    first: int | None = None,
    keep_masks: bool = False,
    progress_label: str | None = None,
    timing: dict[str, float] | None = None,
) -> list[EpisodeResult]:
    """Run ``method`` (in eval mode, without gradients) on the manifest's episodes, in manifest order.

    ``first`` limits the run to the first episodes; ``keep_masks`` keeps each prediction and label;
    ``timing``, when given, receives ``model_seconds``, the time spent in the method's forward passes
    (synchronised on CUDA).
    """
    dataset = ManifestEpisodes(manifest, adapter, settings.image_size, settings.label_resolution)
    episodes = dataset if first is None else Subset(dataset, range(min(first, len(dataset))))
    loader = DataLoader(
        episodes,
        batch_size=settings.batch_size,
        shuffle=False,
        num_workers=settings.num_workers,
        collate_fn=collate_episodes,
        pin_memory=device.type == "cuda",
    )
    synchronize = timing is not None and device.type == "cuda"
    progress = Progress(progress_label, len(episodes)) if progress_label else None
    results: list[EpisodeResult] = []
    model_seconds = 0.0
    method.eval()
    with torch.inference_mode():
        for batch in loader:
            labels = batch.pop("query_label")
            batch.pop("query_mask")  # a method never sees the query label at test time
            episode_ids = batch["episode_id"].tolist()
            batch = to_device(batch, device)
            if synchronize:
                torch.cuda.synchronize(device)
            tick = time.perf_counter()
            logits = method(batch)["logits"]
            if synchronize:
                torch.cuda.synchronize(device)
            model_seconds += time.perf_counter() - tick
            for b, label in enumerate(labels):
                item_logits = logits[b : b + 1]
                if item_logits.shape[-2:] != label.shape:
                    item_logits = F.interpolate(
                        item_logits, size=label.shape, mode="bilinear", align_corners=False
                    )
                prediction = item_logits[0].argmax(dim=0).cpu()
                results.append(
                    EpisodeResult(
                        episode_ids[b],
                        episode_counts(prediction, label),
                        prediction.numpy().astype(np.uint8) if keep_masks else None,
                        label.numpy().astype(np.uint8) if keep_masks else None,
                    )
                )
            if progress:
                progress.update(len(results))
    if timing is not None:
        timing["model_seconds"] = model_seconds
    return results


def count_records(manifest: EpisodeManifest, results: list[EpisodeResult]) -> list[dict[str, Any]]:
    """Rows of ``class_id`` and the four counts per episode, what :func:`fsseg.metrics.summarize` reads."""
    return [
        {"class_id": episode.class_id, **asdict(result.counts)}
        for episode, result in zip(manifest.episodes, results, strict=True)
    ]


def class_miou(
    method: FewShotMethod,
    manifest: EpisodeManifest,
    adapter: DatasetAdapter,
    settings: InferenceSettings,
    device: torch.device,
) -> float:
    """Class-wise mIoU of ``method`` on ``manifest`` over the classes its header lists."""
    results = infer_episodes(method, manifest, adapter, settings, device)
    return float(summarize(count_records(manifest, results), manifest.header["novel_classes"])["miou"])
