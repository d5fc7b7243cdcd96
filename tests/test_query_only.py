"""The support-blind control: it learns from the query alone and never reads the support."""

from __future__ import annotations

import torch

from fsseg.method import BackboneSpec
from fsseg.registry import METHODS
from fsseg_methods.query_only.model import QueryOnly
from tests.method_checks import assert_a_few_steps_lower_the_loss, make_episode


def _model() -> QueryOnly:
    torch.manual_seed(0)
    spec = BackboneSpec(name="resnet18", output_stride=8, max_stage="layer3")
    return QueryOnly(QueryOnly.resolve_params("default"), spec)


def test_registered_with_cpu_recipes_and_a_frozen_backbone() -> None:
    assert METHODS.get("query_only") is QueryOnly
    model = _model()
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert any(p.requires_grad for p in model.head.parameters())


def test_logits_do_not_depend_on_the_support() -> None:
    model = _model().eval()
    episode = make_episode(batch=2, shots=1, size=(48, 48), seed=0)
    other = make_episode(batch=2, shots=1, size=(48, 48), seed=1)
    swapped = dict(episode, support_imgs=other["support_imgs"], support_masks=other["support_masks"])
    with torch.no_grad():
        logits = model(episode)["logits"]
        assert logits.shape == (2, 2, 48, 48)
        assert torch.equal(logits, model(swapped)["logits"])


def test_a_few_steps_lower_the_loss() -> None:
    assert_a_few_steps_lower_the_loss(_model())
