"""PFENet: shapes, frozen backbone, gradients, parameter count against the official model, learning."""

from __future__ import annotations

import pytest
import torch

from fsseg.method import BackboneSpec
from fsseg.models.prior import high_level_features
from fsseg.registry import METHODS
from fsseg_methods.pfenet.model import PFENet
from tests.method_checks import (
    assert_a_few_steps_lower_the_loss,
    assert_prior_gain_reparametrises,
    make_episode,
)


def build(variant: str = "default", backbone: str = "resnet18", **overrides) -> PFENet:
    torch.manual_seed(0)
    return PFENet(PFENet.resolve_params(variant, overrides), BackboneSpec(name=backbone))


def official_trainable_params(fea_dim: int, reduce_dim: int, classes: int, n_bins: int) -> int:
    """Trainable parameters of the official PFENet, from its layer definitions (model/PFENet.py).

    Every conv has ``bias=False`` except the final 1×1 of ``cls`` / ``inner_cls``; the backbone is frozen.
    """
    conv = lambda c_in, c_out, k, bias=False: c_in * c_out * k * k + (c_out if bias else 0)  # noqa: E731
    classifier = conv(reduce_dim, reduce_dim, 3) + conv(reduce_dim, classes, 1, bias=True)
    down = conv(fea_dim, reduce_dim, 1)
    init_merge = conv(2 * reduce_dim + 1, reduce_dim, 1)
    beta = 2 * conv(reduce_dim, reduce_dim, 3)
    alpha = conv(512, 256, 1)  # hard-coded 512 → 256 in the official code
    res1 = conv(reduce_dim * n_bins, reduce_dim, 1)
    res2 = 2 * conv(reduce_dim, reduce_dim, 3)
    return (
        2 * down + n_bins * (init_merge + beta + classifier) + (n_bins - 1) * alpha + res1 + res2 + classifier
    )


def test_registered() -> None:
    assert METHODS.get("pfenet") is PFENet
    assert set(PFENet.recipes) == {"official"}  # the CPU recipe is the benchmark's (config/recipes/)


def test_trainable_parameter_count_equals_official_resnet50() -> None:
    model = build(backbone="resnet50")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    expected = official_trainable_params(fea_dim=1024 + 512, reduce_dim=256, classes=2, n_bins=4)
    assert expected == 10_817_034  # the number quoted in methods/pfenet/README.md
    assert trainable == expected


@pytest.mark.parametrize("shots", [1, 5])
def test_output_shapes(shots: int) -> None:
    model = build()
    episode = make_episode(batch=2, shots=shots, size=(64, 80))
    model.eval()
    with torch.no_grad():
        out = model(episode)
    assert out["logits"].shape == (2, 2, 64, 80)
    assert not any(k.startswith("aux_logits_") for k in out)
    assert out["prior"].shape == (2, 1, 8, 10) and out["prior"].min() >= 0 and out["prior"].max() <= 1
    model.train()
    out = model(episode)
    assert out["logits"].shape == (2, 2, 64, 80)
    assert sum(k.startswith("aux_logits_") for k in out) == 4


def test_pyramid_bins_reproduce_official_at_473() -> None:
    model = build()
    assert model.pyramid_bins(60, 60) == [(60, 60), (30, 30), (15, 15), (8, 8)]
    assert model.pyramid_bins(12, 12) == [(12, 12), (6, 6), (3, 3), (2, 2)]
    assert build(ppm_mode="absolute").pyramid_bins(12, 12)[0] == (60, 60)


def test_gradients_reach_every_head_parameter_and_not_the_backbone() -> None:
    model = build()
    model.train()
    assert not model.backbone.training  # frozen: BatchNorm statistics stay fixed
    running_mean = model.backbone.layer1[0].bn1.running_mean.clone()
    episode = make_episode(shots=2)
    model.loss(model(episode), episode)["loss"].backward()
    torch.testing.assert_close(model.backbone.layer1[0].bn1.running_mean, running_mean)
    for name, param in model.named_parameters():
        if name.startswith("backbone."):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_repeated_support_equals_one_shot() -> None:
    model = build().eval()
    one = make_episode(shots=1)
    five = dict(one, support_imgs=one["support_imgs"].repeat(1, 5, 1, 1, 1))
    five["support_masks"] = one["support_masks"].repeat(1, 5, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(five)["logits"], model(one)["logits"], rtol=1e-4, atol=1e-5)


def test_prior_off_variant_runs() -> None:
    model = build("prior_off").train()
    episode = make_episode()
    out = model(episode)
    assert "prior" not in out
    model.loss(out, episode)["loss"].backward()


def test_a_few_steps_lower_the_loss() -> None:
    assert_a_few_steps_lower_the_loss(build())


def test_prior_gain_is_a_reparametrisation_of_every_scales_merge() -> None:
    gained = build(prior_gain=30.0)
    merges = [merge[0] for merge in gained.init_merge]  # one per FEM scale, each reads the prior
    assert_prior_gain_reparametrises(build(), gained, 30.0, merges)


def test_backbone_cut_at_the_high_stage_reuses_the_query_features_with_the_same_prior(monkeypatch) -> None:
    """Cut at layer3 (the CPU default), the prior's stage is one the method reads anyway: the query's
    output is reused, and the prior equals the one computed by running the stage on the query again."""
    torch.manual_seed(0)
    spec = BackboneSpec(name="resnet18", max_stage="layer3")
    model = PFENet(PFENet.resolve_params("default", {}), spec).eval()
    assert model.high_stage == "layer3"
    episode = make_episode(shots=2)
    with torch.no_grad():
        reused = model(episode)
        def recompute(stage, query_prev, support_prev, support_fg, query_high=None, **kwargs):
            assert query_high is not None
            return high_level_features(stage, query_prev, support_prev, support_fg, **kwargs)

        monkeypatch.setattr("fsseg_methods.pfenet.model.high_level_features", recompute)
        recomputed = model(episode)
    torch.testing.assert_close(reused["prior"], recomputed["prior"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reused["logits"], recomputed["logits"], rtol=1e-4, atol=1e-4)
