"""Does a trained method use its support? Diagnostic scores next to an evaluation.

A few-shot method that segments "the object" whatever its support shows is not doing few-shot
segmentation, and a benchmark whose queries can be scored without the support cannot rank methods.
So every diagnosed evaluation also reports, on the same test episodes:

* ``support_swap``: each episode's supports (images and masks) replaced by those of another episode
  of another novel class, the query and its label unchanged. A method that uses its support must
  drop clearly; one that ignores it scores the same;
* ``base_classes``: episodes of the fold's *base* classes drawn from the validation split (the
  classes the method was trained on, on images it never saw): how much of the gap to the novel
  classes is generalisation;
* one score per probe the method declares (``FewShotMethod.probes``), e.g. ``prior_off`` for the
  prior-based methods: the prior map replaced by zeros at inference.

Scores are class-wise mIoU over the episodes' classes, as in the evaluation itself.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from fsseg.config import ExperimentConfig
from fsseg.data.adapter import DatasetAdapter
from fsseg.data.episodes import EpisodeManifest, build_test_manifest
from fsseg.data.loading import ImageSource
from fsseg.engine.infer import InferenceSettings, class_miou
from fsseg.errors import FssegError
from fsseg.method import FewShotMethod

SUPPORT_SWAP = "support_swap"
BASE_CLASSES = "base_classes"


def swapped_support_manifest(manifest: EpisodeManifest) -> EpisodeManifest:
    """The same episodes with every support set taken from the next episode of another class.

    The donor is the next episode in manifest order (cyclically) whose class differs and whose
    supports do not include the query image, so the swap is deterministic and never shows the query
    its own image. The supports' masks then mark the donor's class (``support_class_id``).
    """
    episodes = manifest.episodes
    swapped = []
    for i, episode in enumerate(episodes):
        donor = None
        for step in range(1, len(episodes)):
            candidate = episodes[(i + step) % len(episodes)]
            if candidate.class_id != episode.class_id and episode.query_id not in candidate.support_ids:
                donor = candidate
                break
        if donor is None:
            raise FssegError(
                "support swap needs test episodes of at least two classes; the manifest has only "
                f"class {episode.class_id}"
            )
        swapped.append(replace(episode, support_ids=donor.support_ids, support_class_id=donor.class_id))
    header = {**manifest.header, "derived": SUPPORT_SWAP}
    return EpisodeManifest(header, swapped)


def base_class_manifest(
    adapter: DatasetAdapter, cfg: ExperimentConfig, shot: int, episode_seed: int, n_episodes: int
) -> EpisodeManifest:
    """Episodes of the fold's base classes on the validation split (never the test split)."""
    return build_test_manifest(
        adapter,
        cfg.fold,
        shot,
        episode_seed,
        n_episodes,
        split=adapter.val_split,
        min_object_px=cfg.dataset.min_object_px,
        classes=adapter.base_classes(cfg.fold),
    )


def diagnose(
    method: FewShotMethod,
    manifest: EpisodeManifest,
    adapter: DatasetAdapter,
    cfg: ExperimentConfig,
    settings: InferenceSettings,
    device: torch.device,
    miou: float,
    images: ImageSource | None = None,
) -> dict[str, Any]:
    """Diagnostic scores of ``method`` on ``manifest`` (whose plain class mIoU is ``miou``), each episode
    fed and scored with the evaluation's ``settings`` (files read through ``images``, default the adapter)."""

    def score(m: EpisodeManifest) -> float:
        return class_miou(method, m, adapter, settings, device, images)

    header = manifest.header
    scores: dict[str, float] = {"miou": miou, SUPPORT_SWAP: score(swapped_support_manifest(manifest))}
    scores[BASE_CLASSES] = score(
        base_class_manifest(adapter, cfg, header["shot"], header["episode_seed"], len(manifest.episodes))
    )
    probes = {}
    for name, what in method.probes.items():
        with method.probe(name):
            scores[name] = score(manifest)
        probes[name] = what
    return {
        "scores": scores,
        "probes": probes,
        "base_class_ids": adapter.base_classes(cfg.fold),
        "n_episodes": len(manifest.episodes),
    }
