"""The packed (oneDNN) inference path of frozen backbone stages, receptive reaches, and the prior's
support crops: the same numbers as the plain computation, used only where it applies."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from fsseg.errors import ConfigError
from fsseg.models import prior as prior_module
from fsseg.models.backbones import ResNetBackbone, VGG16Backbone
from fsseg.models.onednn import ENV, onednn_setting, packable
from fsseg.models.prior import high_level_features, resize_mask, training_free_prior
from fsseg.models.receptive import same_size_radius

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="no oneDNN in this torch")


def _randomise_batchnorm(model: nn.Module) -> None:
    """Non-trivial running statistics and affine terms, so folding BatchNorm is really exercised."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.rand(n, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(n, generator=generator) * 0.1)


def _stages(backbone: nn.Module, x: torch.Tensor, setting: str, monkeypatch) -> dict[str, torch.Tensor]:
    monkeypatch.setenv(ENV, setting)
    with torch.no_grad():
        return backbone(x)


@pytest.mark.parametrize(("name", "size"), [("resnet18", 40), ("resnet50", 33)])
def test_packed_resnet_stages_equal_the_plain_ones(name: str, size: int, monkeypatch) -> None:
    torch.manual_seed(0)
    backbone = ResNetBackbone(name, 8).eval()
    _randomise_batchnorm(backbone)
    x = torch.randn(2, 3, size, size)
    plain = _stages(backbone, x, "plain", monkeypatch)
    assert not backbone._packed_stages  # the plain setting builds nothing
    packed = _stages(backbone, x, "packed", monkeypatch)
    assert set(backbone._packed_stages) == set(backbone.stages)
    for stage in backbone.stages:
        assert packed[stage].layout == torch.strided and packed[stage].is_contiguous()
        torch.testing.assert_close(
            packed[stage], plain[stage], rtol=1e-4, atol=1e-4 * plain[stage].abs().max().item()
        )


def test_packed_vgg_stages_equal_the_plain_ones(monkeypatch) -> None:
    torch.manual_seed(0)
    backbone = VGG16Backbone(8).eval()
    x = torch.randn(1, 3, 41, 41)
    plain = _stages(backbone, x, "plain", monkeypatch)
    packed = _stages(backbone, x, "packed", monkeypatch)
    for stage in backbone.stages:
        torch.testing.assert_close(
            packed[stage], plain[stage], rtol=1e-4, atol=1e-4 * plain[stage].abs().max().item()
        )


def test_packing_applies_only_to_fp32_cpu_inference_in_eval_mode(monkeypatch) -> None:
    monkeypatch.setenv(ENV, "packed")
    backbone = ResNetBackbone("resnet18", 8)
    x = torch.randn(1, 3, 32, 32)
    backbone.train()
    with torch.no_grad():
        backbone(x)  # BatchNorm on batch statistics
    backbone.eval()
    assert backbone(x)["layer4"].requires_grad  # autograd on
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        backbone(x)
    assert not backbone._packed_stages
    with torch.no_grad():
        backbone(x)
    assert set(backbone._packed_stages) == set(backbone.stages)
    backbone._packed_stages.clear()
    backbone.layer3[0].bn1.train()  # one module in training mode is enough to refuse
    with torch.no_grad():
        backbone(x)
    assert "layer3" not in backbone._packed_stages and "layer2" in backbone._packed_stages


def test_packed_copy_follows_weight_changes(monkeypatch) -> None:
    monkeypatch.setenv(ENV, "packed")
    torch.manual_seed(0)
    backbone = ResNetBackbone("resnet18", 8).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        before = backbone(x)["layer4"]
        first = backbone._packed_stages["layer4"]
        backbone(x)
        assert backbone._packed_stages["layer4"] is first  # unchanged weights: reused
        backbone.layer4[1].conv2.weight.mul_(2.0)  # as an optimiser step or load_state_dict would
        after = backbone(x)["layer4"]
        monkeypatch.setenv(ENV, "plain")
        expected = backbone(x)["layer4"]
    assert backbone._packed_stages["layer4"] is not first
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_copies_and_pickles_of_a_backbone_carry_no_packed_weights(monkeypatch) -> None:
    monkeypatch.setenv(ENV, "packed")
    backbone = ResNetBackbone("resnet18", 8).eval()
    with torch.no_grad():
        backbone(torch.randn(1, 3, 32, 32))
    assert backbone._packed_stages
    assert not copy.deepcopy(backbone)._packed_stages
    assert not pickle.loads(pickle.dumps(backbone))._packed_stages
    assert not any("packed" in key for key in backbone.state_dict())


def test_unknown_setting_and_unknown_modules(monkeypatch) -> None:
    monkeypatch.setenv(ENV, "fast")
    with pytest.raises(ConfigError, match="FSSEG_ONEDNN='fast'"):
        onednn_setting()
    assert packable(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU()))
    assert not packable(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.GELU()))
    assert not packable(nn.Sequential(nn.Sequential(nn.Upsample(scale_factor=2))))


# --- receptive reach ----------------------------------------------------------------------------------
def test_same_size_radius_of_modules_and_resnet_stages() -> None:
    assert same_size_radius(nn.Conv2d(4, 4, 3, padding=2, dilation=2)) == 2
    assert same_size_radius(nn.Conv2d(4, 4, 1)) == 0
    assert same_size_radius(nn.Conv2d(4, 4, 3, padding=1, stride=2)) is None
    assert same_size_radius(nn.Conv2d(4, 4, 3, padding=0)) is None  # shrinks the map
    assert same_size_radius(nn.MaxPool2d(3, 1, 1)) == 1
    assert same_size_radius(nn.MaxPool2d(3, 2, 1)) is None
    assert (
        same_size_radius(
            nn.Sequential(nn.Conv2d(4, 4, 5, padding=2), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
        )
        == 3
    )
    assert same_size_radius(nn.Upsample(scale_factor=2)) is None
    resnet50 = ResNetBackbone("resnet50", 8)
    # torchvision's dilation scheme: the first block of a dilated stage keeps the previous dilation
    assert same_size_radius(resnet50.layer4) == 2 + 4 + 4
    assert same_size_radius(resnet50.layer3) == 1 + 5 * 2
    assert same_size_radius(resnet50.layer2) is None  # strided
    assert same_size_radius(ResNetBackbone("resnet50_deep", 8).layer4) == 3 * 4
    assert same_size_radius(ResNetBackbone("resnet18", 8).layer4) == 2 * 2 + 2 * 4  # two 3×3 per block
    assert same_size_radius(VGG16Backbone(8).conv5) == 3 * 2
    assert same_size_radius(VGG16Backbone(8).conv4) == 3 + 1  # three 3×3 convolutions and a stride-1 pool
    assert same_size_radius(VGG16Backbone(8).conv3) is None  # its pool has stride 2


# --- the prior's support crops ------------------------------------------------------------------------
def _stage() -> nn.Module:
    torch.manual_seed(0)
    stage = ResNetBackbone("resnet18", 8).layer4.eval()  # reach 12, size-preserving
    _randomise_batchnorm(stage)
    return stage


def _masks(size: int) -> torch.Tensor:
    """Four support masks [4, size, size]: a corner blob, empty, whole, a thin bar at the border."""
    fg = torch.zeros(4, size, size)
    fg[0, 2:9, 3:11] = 1
    fg[2] = 1
    fg[3, -4:, :] = 1
    return fg


@pytest.mark.parametrize("setting", ["plain", "packed"])
@pytest.mark.parametrize("known_query", [False, True])
def test_support_crops_keep_what_the_prior_reads(setting, known_query, monkeypatch) -> None:
    monkeypatch.setenv(ENV, setting)
    stage = _stage()
    generator = torch.Generator().manual_seed(2)
    query_prev = torch.randn(1, 256, 40, 40, generator=generator)
    support_prev = torch.randn(4, 256, 40, 40, generator=generator)
    fg = _masks(80)  # label resolution: twice the feature map's
    shapes: list[tuple[int, ...]] = []

    def run(x: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(x.shape))
        return stage(x)

    with torch.no_grad():
        q_full, s_full = high_level_features(stage, query_prev, support_prev, fg)
        known = q_full if known_query else None
        q, s = high_level_features(stage, query_prev, support_prev, fg, known, needed_fg=fg, run=run)
    needed = resize_mask(fg, (40, 40))[:, 0] != 0
    for n in range(4):
        inside = needed[n]
        torch.testing.assert_close(s[n][:, inside], s_full[n][:, inside], rtol=1e-5, atol=1e-5)
        assert (s[n][:, ~inside] == 0).all() or inside.all()
    torch.testing.assert_close(q, q_full, rtol=1e-5, atol=1e-5)
    # the empty mask ran nothing; the whole one ran in the batch; the two others on their boxes + reach 12
    batch = 1 if known_query else 2
    assert shapes[0] == (batch, 256, 40, 40)
    expected = []
    for n in (0, 3):  # box of the needed pixels grown by the reach 12, cut at the map's border
        rows, cols = needed[n].any(1).nonzero()[:, 0], needed[n].any(0).nonzero()[:, 0]
        height = min(40, int(rows[-1]) + 13) - max(0, int(rows[0]) - 12)
        width = min(40, int(cols[-1]) + 13) - max(0, int(cols[0]) - 12)
        expected.append((1, 256, height, width))
    assert expected[0][2:] == (17, 18) and expected[1][2] < 40  # the crops are smaller than the map
    assert sorted(shapes[1:]) == sorted(expected)
    prior = training_free_prior(q, s.view(1, 4, *s.shape[1:]), fg.view(1, 4, 80, 80))
    expected = training_free_prior(q_full, s_full.view(1, 4, *s.shape[1:]), fg.view(1, 4, 80, 80))
    torch.testing.assert_close(prior, expected, rtol=1e-5, atol=1e-5)


def test_support_crops_are_not_used_where_they_would_change_the_numbers(monkeypatch) -> None:
    """A stage in training mode (batch statistics), a strided stage, or boxes covering the map: one batch."""
    fg = _masks(80)
    fg[1, 30:50, 30:50] = 1  # no empty mask here: an empty one is never run
    for stage, prev in [
        (_stage().train(), torch.randn(4, 256, 40, 40)),
        (ResNetBackbone("resnet18", 8).layer2.eval(), torch.randn(4, 64, 40, 40)),
        (_stage(), torch.randn(4, 256, 10, 10)),  # reach 12 covers a 10 × 10 map from any pixel
    ]:
        calls: list[int] = []

        def run(x: torch.Tensor, stage=stage, calls=calls) -> torch.Tensor:
            calls.append(x.shape[0])
            return stage(x)

        with torch.no_grad():
            high_level_features(stage, prev[:1], prev, fg, needed_fg=fg, run=run)
        assert calls == [5]


def test_pfenet_prior_is_the_same_with_and_without_support_crops(monkeypatch) -> None:
    """End to end through the method: layer4 prior of a ResNet-18 PFENet at a size where crops apply."""
    from fsseg.method import BackboneSpec
    from fsseg_methods.pfenet.model import PFENet
    from tests.method_checks import make_episode

    monkeypatch.setenv(ENV, "plain")
    torch.manual_seed(0)
    model = PFENet(PFENet.resolve_params("default", {}), BackboneSpec(name="resnet18")).eval()
    assert model.high_stage == "layer4"
    episode = make_episode(shots=2, size=(257, 257))
    episode["support_masks"].zero_()
    episode["support_masks"][0, 0, 10:50, 20:60] = 1  # small objects: the boxes + reach leave the map
    episode["support_masks"][1, :, 200:240, 150:250] = 1
    with torch.no_grad():
        cropped = model(episode)
        monkeypatch.setattr(prior_module, "_support_boxes", lambda *args: None)
        whole = model(episode)
    torch.testing.assert_close(cropped["prior"], whole["prior"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cropped["logits"], whole["logits"], rtol=1e-5, atol=1e-6)


def test_flops_and_used_parameters_are_counted_on_the_plain_modules(monkeypatch) -> None:
    """The packed copy hides the modules from forward hooks and its oneDNN calls from the FLOP counter,
    so counting runs the plain stages: the same count under either setting."""
    from fsseg.efficiency import count_flops, synthetic_episode
    from fsseg.method import BackboneSpec
    from fsseg_methods.pfenet.model import PFENet

    model = PFENet(PFENet.resolve_params("default", {}), BackboneSpec(name="resnet18")).eval()
    episode = synthetic_episode(96, 1)
    counts = {}
    for setting in ("plain", "packed"):
        monkeypatch.setenv(ENV, setting)
        counts[setting] = count_flops(model, episode)
    assert counts["packed"] == counts["plain"]
    total, _, used = counts["packed"]
    assert total > 0 and used > sum(p.numel() for p in model.backbone.parameters()) // 2
