"""The support-use diagnostics: the swap manifest, and a check that separates support users from
methods that segment every object whatever the support shows (so the check can fail)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from fsseg.data.episodes import EpisodeManifest, build_test_manifest
from fsseg.engine.build import build_dataset
from fsseg.engine.diagnose import (
    BASE_CLASSES,
    SUPPORT_SWAP,
    base_class_manifest,
    swapped_support_manifest,
)
from fsseg.engine.evaluate import evaluate
from fsseg.errors import FssegError
from fsseg.method import Batch, FewShotMethod
from fsseg.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from fsseg.models.ops import foreground, masked_average_pool
from fsseg.registry import METHODS


@dataclass
class _NoParams:
    pass


class _ToyBrightness(FewShotMethod):
    """No weights: the toy dataset's classes are squares of class-specific brightness on dark noise."""

    Params = _NoParams
    needs_training = False
    trains_backbone = False

    def _grey(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return (images * std + mean).mean(dim=1, keepdim=True) * 255  # [N, 1, H, W] in 0..255

    def loss(self, outputs, batch):  # pragma: no cover - never trained
        raise NotImplementedError


@METHODS.register("test_support_oracle")
class SupportOracle(_ToyBrightness):
    """Foreground = query pixels as bright as the support's foreground: uses its support."""

    probes: ClassVar[dict[str, str]] = {"blind": "the support's brightness replaced by 0"}

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        supports = batch["support_imgs"].flatten(0, 1)
        fg = foreground(batch["support_masks"].flatten(0, 1))
        target = masked_average_pool(self._grey(supports), fg).view(supports.shape[0] // 1, -1)
        target = target.view(batch["query_img"].shape[0], -1).mean(dim=1)
        if self.active_probe == "blind":
            target = torch.zeros_like(target)
        distance = (self._grey(batch["query_img"]) - target.view(-1, 1, 1, 1)).abs()
        fg_logit = 20.0 - distance
        return {"logits": torch.cat([torch.zeros_like(fg_logit), fg_logit], dim=1)}


@METHODS.register("test_every_object")
class EveryObject(_ToyBrightness):
    """Foreground = every bright square, whatever the support shows: ignores its support."""

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        fg_logit = self._grey(batch["query_img"]) - 70.0
        return {"logits": torch.cat([torch.zeros_like(fg_logit), fg_logit], dim=1)}


def _manifest(toy_config) -> tuple[EpisodeManifest, object]:
    cfg = toy_config("method.name=panet")
    adapter = build_dataset(cfg)
    return build_test_manifest(adapter, 0, 1, 0, 12), adapter


def test_swap_takes_supports_of_another_class_and_keeps_the_query(toy_config) -> None:
    manifest, _ = _manifest(toy_config)
    swapped = swapped_support_manifest(manifest)
    assert len(swapped.episodes) == len(manifest.episodes)
    for before, after in zip(manifest.episodes, swapped.episodes, strict=True):
        assert (after.query_id, after.class_id) == (before.query_id, before.class_id)
        assert after.support_class != before.class_id
        assert after.query_id not in after.support_ids
        assert any(
            e.support_ids == after.support_ids and e.class_id == after.support_class
            for e in manifest.episodes
        )
    # the swap is derived in memory; the saved manifest's rows (and hash) are untouched
    assert manifest.content_hash == build_test_manifest(_manifest(toy_config)[1], 0, 1, 0, 12).content_hash


def test_swap_needs_two_classes(toy_config) -> None:
    manifest, _ = _manifest(toy_config)
    one_class = EpisodeManifest(manifest.header, [e for e in manifest.episodes if e.class_id == 1])
    with pytest.raises(FssegError, match="at least two classes"):
        swapped_support_manifest(one_class)


def test_base_class_episodes_come_from_the_val_split(toy_config) -> None:
    cfg = toy_config("method.name=panet")
    adapter = build_dataset(cfg)
    manifest = base_class_manifest(adapter, cfg, 1, 0, 9)
    assert manifest.header["split"] == adapter.val_split
    assert {e.class_id for e in manifest.episodes} == set(adapter.base_classes(0))
    assert manifest.header["novel_classes"] == adapter.base_classes(0)


def _diagnose(toy_config, method: str) -> dict:
    cfg = toy_config(f"method.name={method}", "eval.n_episodes=30", "backbone.weights=none")
    out = evaluate(cfg, untrained=True, diagnose=True)
    return json.loads((out / "diagnostics.json").read_text())


def test_the_swap_check_separates_support_users_from_support_ignorers(toy_config) -> None:
    """A method that reads its support collapses under the swap; one that marks every object does not.

    This is what makes the check able to fail: the every-object method scores as well as the oracle on
    images with one square, and only the swap (and the two-square images) tell them apart.
    """
    oracle = _diagnose(toy_config, "test_support_oracle")["scores"]
    every = _diagnose(toy_config, "test_every_object")["scores"]
    assert oracle["miou"] > 0.6
    assert oracle["miou"] - oracle[SUPPORT_SWAP] > 0.4
    assert oracle["blind"] < 0.2  # the declared probe ran, with the probe switched on
    assert every["miou"] - every[SUPPORT_SWAP] == pytest.approx(0.0, abs=1e-12)
    assert 0 < every["miou"] < oracle["miou"]  # distractors cost it the squares of other classes
    assert 0 <= every[BASE_CLASSES] <= 1 and "blind" not in every
