"""The one inference loop: a method run on the episodes of a manifest, each prediction scored.

Evaluation (``records.csv``), checkpoint selection on validation episodes, the diagnostics and
``fsseg predict`` all call :func:`infer_episodes`, so a prediction is made one way everywhere: the
method's logits for a batch of episodes, each resized (bilinear) to its query label, the arg-max over
the two classes, and the four counts of :func:`fsseg.metrics.episode_counts`. The method never sees
the query's label.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from queue import Empty, Queue
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from fsseg.data.adapter import DatasetAdapter
from fsseg.data.episodes import EpisodeManifest
from fsseg.data.loading import ImageSource, ManifestEpisodes, collate_episodes
from fsseg.method import FewShotMethod
from fsseg.metrics import EpisodeCounts, episode_counts, summarize
from fsseg.numerics import Numerics
from fsseg.progress import Progress


@dataclass(frozen=True)
class InferenceSettings:
    """How episodes reach the method: model input side, label resolution scored against, episodes per
    forward pass, data-loader workers (the workers never change a result) and the numerics of the
    forward pass (precision, memory layout)."""

    image_size: int
    label_resolution: str
    batch_size: int
    num_workers: int
    numerics: Numerics = field(default_factory=Numerics)


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
    images: ImageSource | None = None,
) -> list[EpisodeResult]:
    """Run ``method`` (in eval mode, without gradients) on the manifest's episodes, in manifest order.

    ``first`` limits the run to the first episodes; ``keep_masks`` keeps each prediction and label;
    ``timing``, when given, receives ``model_seconds``, the time spent in the method's forward passes
    (synchronised on CUDA); ``images`` is where the files are read (default: the adapter; the
    evaluations of one process share a :class:`~fsseg.data.decoded.DecodedImages`). The next batch is
    read and decoded while the method runs on this one (a thread, or the loader's workers).
    """
    dataset = ManifestEpisodes(manifest, images or adapter, settings.image_size, settings.label_resolution)
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
    settings.numerics.apply(method)
    batches = loader if settings.num_workers > 0 else prefetched(loader)
    with torch.inference_mode():
        for batch in batches:
            labels = batch.pop("query_label")
            batch.pop("query_mask")  # a method never sees the query label at test time
            episode_ids = batch["episode_id"].tolist()
            batch = to_device(batch, device)
            if synchronize:
                torch.cuda.synchronize(device)
            tick = time.perf_counter()
            with settings.numerics.autocast(device):
                logits = method(batch)["logits"]
            if synchronize:
                torch.cuda.synchronize(device)
            model_seconds += time.perf_counter() - tick
            predictions = predict_at_labels(logits.float(), [label.shape for label in labels])
            for episode_id, prediction, label in zip(episode_ids, predictions, labels, strict=True):
                results.append(
                    EpisodeResult(
                        episode_id,
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


def predict_at_labels(logits: torch.Tensor, label_sizes: list[torch.Size]) -> list[torch.Tensor]:
    """Each episode's 0/1 prediction [H, W] (CPU) at its label's size: its logits resized (bilinear) to
    the label, the arg-max over the two classes. Episodes whose labels share a size are resized and
    arg-maxed as one batch (the same numbers as one at a time: both work per sample and channel)."""
    out: list[torch.Tensor | None] = [None] * len(label_sizes)
    for size in dict.fromkeys(label_sizes):
        index = [i for i, s in enumerate(label_sizes) if s == size]
        group = logits[index]
        if group.shape[-2:] != size:
            group = F.interpolate(group, size=size, mode="bilinear", align_corners=False)
        for i, prediction in zip(index, _class_argmax(group).cpu(), strict=True):
            out[i] = prediction
    return out


def _class_argmax(logits: torch.Tensor) -> torch.Tensor:
    """``logits.argmax(dim=1)`` [N, H, W] (int64). With two classes, ``logits[:, 1] > logits[:, 0]``:
    the same values (a tie goes to class 0, the first maximum, as in ``argmax``) without a reduction
    over a 2-long strided dimension, which took 11 ms for 16 episodes at 64 px against 0.06 ms."""
    if logits.shape[1] == 2 and not logits.isnan().any():
        return (logits[:, 1] > logits[:, 0]).long()
    return logits.argmax(dim=1)


def prefetched(batches: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """The items of ``batches`` in order, produced by a background thread up to ``depth`` ahead (file
    reads, PNG decoding and resizing release the GIL, so they overlap the model's forward). An
    exception in the thread is raised here, at the item where it happened."""
    queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in batches:
                if stop.is_set():
                    return
                queue.put(("item", item))
            queue.put(("end", None))
        except BaseException as err:  # handed to the consumer, which raises it
            queue.put(("error", err))

    thread = threading.Thread(target=produce, name="fsseg-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(Empty):
                queue.get_nowait()
            thread.join(timeout=0.05)


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
    images: ImageSource | None = None,
) -> float:
    """Class-wise mIoU of ``method`` on ``manifest`` over the classes its header lists."""
    results = infer_episodes(method, manifest, adapter, settings, device, images=images)
    return float(summarize(count_records(manifest, results), manifest.header["novel_classes"])["miou"])
