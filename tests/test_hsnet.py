"""HSNet: per-block features, 4D correlation and center-pivot convolution, shapes, k-shot vote,
parameter counts against the official model, learning."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from fsseg.errors import ConfigError
from fsseg.method import BackboneSpec
from fsseg.models.backbones import ResNetBackbone
from fsseg.models.hypercorrelation import CenterPivotConv4d, cosine_correlation_4d
from fsseg.registry import METHODS
from fsseg_methods.hsnet.model import HSNet
from tests.method_checks import assert_a_few_steps_lower_the_loss, make_episode

REPO = Path(__file__).resolve().parents[1]


def build(backbone: BackboneSpec | None = None, **overrides) -> HSNet:
    torch.manual_seed(0)
    return HSNet(HSNet.resolve_params("default", overrides), backbone or BackboneSpec(name="resnet18"))


def test_registered_with_recipes() -> None:
    assert METHODS.get("hsnet") is HSNet
    cpu = HSNet.recipe("default", str(REPO / "config" / "recipes" / "synthetic.yaml"))
    assert (cpu.optimizer, cpu.lr, cpu.iterations) == ("adam", 1e-3, 300)  # the official optimiser, shorter
    official = HSNet.recipe("official")
    assert (official.optimizer, official.lr, official.batch_size) == ("adam", 1e-3, 20)
    sccnet = HSNet.recipe("sccnet_isaid")
    assert (sccnet.optimizer, sccnet.lr, sccnet.batch_size) == ("adam", 9e-4, 32)


# --- per-block backbone features ---------------------------------------------------------------------
def _unfused_blocks(
    net: torchvision.models.ResNet, x: torch.Tensor
) -> dict[str, list[tuple[torch.Tensor, ...]]]:
    """Every block of layer1-layer4 run by hand from torchvision's modules: (before ReLU, after ReLU)."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    out: dict[str, list[tuple[torch.Tensor, ...]]] = {}
    for name in ("layer1", "layer2", "layer3", "layer4"):
        out[name] = []
        for block in getattr(net, name):
            shortcut = x if block.downsample is None else block.downsample(x)
            y = torch.relu(block.bn1(block.conv1(x)))
            if isinstance(block, torchvision.models.resnet.Bottleneck):
                y = torch.relu(block.bn2(block.conv2(y)))
                y = block.bn3(block.conv3(y))
            else:
                y = block.bn2(block.conv2(y))
            pre = y + shortcut
            x = torch.relu(pre)
            out[name].append((pre, x))
    return out


@pytest.mark.parametrize(
    ("name", "output_stride", "dilation"), [("resnet50", 8, [False, True, True]), ("resnet18", 32, None)]
)
def test_block_features_match_unfused_torchvision_blocks(
    name: str, output_stride: int, dilation, monkeypatch
) -> None:
    # block_features runs the plain modules; so must the stage forward it is compared with at the end
    # (its packed CPU path agrees to fp32 rounding only, tests/test_onednn.py)
    monkeypatch.setenv("FSSEG_ONEDNN", "plain")
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None, replace_stride_with_dilation=dilation).eval()
    for module in theirs.modules():  # non-trivial BatchNorm statistics, so that a mix-up shows
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    ours = ResNetBackbone(name, output_stride).eval()
    ours.load_state_dict(ours.torchvision_state(theirs.state_dict()), strict=True)
    x = torch.randn(2, 3, 48, 48)
    stages = ("layer2", "layer3", "layer4")
    with torch.no_grad():
        expected = _unfused_blocks(theirs, x)
        before = ours.block_features(x, stages, before_relu=True)
        after = ours.block_features(x, stages)
    assert sorted(before) == sorted(stages)
    counts = [len(before[s]) for s in stages]
    assert counts == ([4, 6, 3] if name == "resnet50" else [2, 2, 2])
    for stage in stages:
        for (pre, post), got_pre, got_post in zip(expected[stage], before[stage], after[stage], strict=True):
            torch.testing.assert_close(got_pre, pre, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(got_post, post, rtol=1e-4, atol=1e-4)
            assert (got_pre < 0).any() and not (got_post < 0).any()  # the two options really differ
    # the last block's output is the stage's output
    with torch.no_grad():
        torch.testing.assert_close(after["layer4"][-1], ours(x, ("layer4",))["layer4"])


def test_block_features_reject_stages_the_backbone_lacks() -> None:
    net = ResNetBackbone("resnet18", 8)
    net.truncate("layer3")
    assert net.blocks_per_stage() == {"layer1": 2, "layer2": 2, "layer3": 2}
    with pytest.raises(ConfigError, match="layer4"):
        net.block_features(torch.zeros(1, 3, 32, 32), ("layer2", "layer4"))


# --- 4D correlation and center-pivot convolution --------------------------------------------------------
def test_cosine_correlation_4d_is_the_clamped_cosine_of_every_position_pair() -> None:
    torch.manual_seed(0)
    query, support = torch.randn(2, 5, 3, 4), torch.randn(2, 3, 5, 2, 3)
    support[1, 2] = 0.0  # a support masked out entirely
    corr = cosine_correlation_4d(query, support)
    assert corr.shape == (2, 3, 3, 4, 2, 3)
    for b, k, i, j, u, v in [(0, 0, 0, 0, 0, 0), (1, 1, 2, 3, 1, 2), (0, 2, 1, 2, 0, 1)]:
        cos = F.cosine_similarity(query[b, :, i, j], support[b, k, :, u, v], dim=0)
        torch.testing.assert_close(corr[b, k, i, j, u, v], cos.clamp(min=0), rtol=1e-4, atol=1e-5)
    assert corr.min() == 0 and corr.max() <= 1 and (corr == 0).float().mean() > 0.3
    assert not corr[1, 2].any()


def _dense_conv4d(
    x: torch.Tensor, kernel: torch.Tensor, bias: torch.Tensor, support_stride: int
) -> torch.Tensor:
    """Naive dense 4D convolution: padding k // 2 on all four dimensions, stride on the support ones."""
    n, _, hq, wq, hs, ws = x.shape
    k = kernel.shape[-1]
    pad = k // 2
    xp = F.pad(x, (pad,) * 8)
    out_s = [(size - 1) // support_stride + 1 for size in (hs, ws)]
    out = torch.zeros(n, kernel.shape[0], hq, wq, *out_s, dtype=x.dtype)
    for i, j, u, v in itertools.product(range(hq), range(wq), range(out_s[0]), range(out_s[1])):
        su, sv = u * support_stride, v * support_stride
        window = xp[:, :, i : i + k, j : j + k, su : su + k, sv : sv + k]
        out[:, :, i, j, u, v] = torch.einsum("ncabde,ocabde->no", window, kernel) + bias
    return out


@pytest.mark.parametrize(
    ("kernel_size", "stride", "support_shape"), [(3, 1, (4, 3)), (3, 2, (5, 4)), (5, 4, (7, 6))]
)
def test_center_pivot_conv4d_equals_a_dense_4d_conv_with_a_center_pivot_kernel(
    kernel_size: int, stride: int, support_shape: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    conv = CenterPivotConv4d(2, 3, kernel_size, stride).double()
    x = torch.randn(2, 2, 4, 3, *support_shape, dtype=torch.double)
    c = kernel_size // 2
    kernel = torch.zeros(3, 2, *(kernel_size,) * 4, dtype=torch.double)
    kernel[:, :, :, :, c, c] += conv.query_conv.weight.detach()  # query plane through the centre
    kernel[:, :, c, c, :, :] += conv.support_conv.weight.detach()  # support plane through the centre
    bias = (conv.query_conv.bias + conv.support_conv.bias).detach()
    with torch.no_grad():
        got = conv(x)
    torch.testing.assert_close(got, _dense_conv4d(x, kernel, bias, stride))


def test_center_pivot_conv4d_bf16_cpu_gradients_are_finite_on_tiny_support_maps() -> None:
    """The CPU default squeezes 2×2 and 1×1 support maps with strided kernels of 5 and 3: under CPU bf16
    autocast (torch 2.14, oneDNN) such a conv's weight gradient held NaNs in about half the calls, so the
    support conv runs in fp32 there (fsseg/models/hypercorrelation.py)."""
    torch.manual_seed(0)
    for kernel, stride, side in ((5, 4, 2), (5, 4, 1), (3, 2, 1)):
        for _ in range(6):
            conv = CenterPivotConv4d(16, 32, kernel, stride).to(memory_format=torch.channels_last)
            x = torch.relu(torch.randn(2, 16, 8, 8, side, side))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                y = conv(x)
            y.float().square().mean().backward()
            assert all(torch.isfinite(p.grad).all() for p in conv.parameters())


# --- the model ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shots", [1, 5])
def test_output_shapes(shots: int) -> None:
    model = build().eval()
    assert list(model.encoders) == ["layer4", "layer3", "layer2"]
    assert list(model.mixers) == ["layer4to3", "layer3to2"]
    episode = make_episode(batch=2, shots=shots, size=(48, 64))
    with torch.no_grad():
        out = model(episode)
    assert out["logits"].shape == (2, 2, 48, 64)
    assert out["shot_logits"].shape == (2, shots, 2, 48, 64)
    corr = model.hypercorrelations(episode)
    # ResNet-18, output stride 8: 2 blocks per stage, 6x8 query and support positions
    assert {s: tuple(c.shape) for s, c in corr.items()} == {
        s: (2 * shots, 2, 6, 8, 6, 8) for s in model.stages
    }
    model.train()
    out = model(episode)
    assert out["logits"].shape == (2, 2, 48, 64)
    model.loss(out, episode)["loss"].backward()


def test_synthetic_layout_adapts_to_the_stages_the_backbone_keeps() -> None:
    """The CPU default cuts ResNet-18 at layer3: layer2 and layer3 are correlated, one mixing block."""
    model = build(BackboneSpec(name="resnet18", max_stage="layer3"))
    assert model.stages == ("layer2", "layer3")
    assert list(model.encoders) == ["layer3", "layer2"] and list(model.mixers) == ["layer3to2"]
    episode = make_episode(batch=2, shots=1, size=(64, 64))
    out = model.eval()(episode)
    assert out["logits"].shape == (2, 2, 64, 64)
    with pytest.raises(ConfigError, match="not all kept"):
        build(BackboneSpec(name="resnet18", max_stage="layer3"), stages=("layer2", "layer4"))
    with pytest.raises(ConfigError, match="stages"):
        build(stages=("layer1",))
    with pytest.raises(ConfigError, match="ResNet"):
        build(BackboneSpec(name="vgg16"))


def test_support_mask_decides_the_correlation() -> None:
    """An empty support mask zeroes every correlation; the support's background never correlates."""
    model = build().eval()
    episode = make_episode(batch=1, shots=2)
    episode["support_masks"][0, 1] = 0
    with torch.no_grad():
        corr = model.hypercorrelations(episode)
    for c in corr.values():
        assert c[0].any() and not c[1].any()


def test_vote_is_the_official_normalised_majority() -> None:
    model = build()
    # 3 shots on a 1x6 image; per-pixel foreground votes 0, 1, 2, 3, 1, 2 -> max 3, threshold 1.5
    shot_fg = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 0, 1, 1, 1, 1], [0, 0, 0, 1, 0, 1]], dtype=torch.float)
    logits = torch.stack([1 - shot_fg, shot_fg], dim=1)[None, :, :, None, :]  # [1, 3, 2, 1, 6]
    voted = model.aggregate(logits).argmax(dim=1)[0, 0]
    assert voted.tolist() == [0, 0, 1, 1, 0, 1]
    # largest vote 1 (each pixel chosen by at most one shot): every chosen pixel reaches half of it
    shot_fg = torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=torch.float)
    logits = torch.stack([1 - shot_fg, shot_fg], dim=1)[None, :, :, None, :]
    assert model.aggregate(logits).argmax(dim=1)[0, 0].tolist() == [1, 1, 0, 0]
    # no shot votes foreground: the maximum is taken as 1 and nothing is foreground
    assert (
        model.aggregate(torch.stack([torch.ones(2, 1, 4), torch.zeros(2, 1, 4)], 1)[None]).argmax(1).sum()
        == 0
    )
    # mean of logits instead
    mean_model = build(shot_aggregation="mean_logits")
    raw = torch.randn(2, 3, 2, 4, 5)
    torch.testing.assert_close(mean_model.aggregate(raw), raw.mean(dim=1))


def test_repeated_support_votes_for_the_one_shot_mask() -> None:
    model = build().eval()
    one = make_episode(shots=1)
    five = dict(one, support_imgs=one["support_imgs"].repeat(1, 5, 1, 1, 1))
    five["support_masks"] = one["support_masks"].repeat(1, 5, 1, 1)
    with torch.no_grad():
        single, voted = model(one), model(five)
    torch.testing.assert_close(voted["shot_logits"][:, 3], single["logits"], rtol=1e-4, atol=1e-5)
    assert torch.equal(voted["logits"].argmax(1), single["logits"].argmax(1))


def test_gradients_reach_every_learner_parameter_and_not_the_backbone() -> None:
    model = build().train()
    assert not model.backbone.training
    episode = make_episode(shots=2)
    model.loss(model(episode), episode)["loss"].backward()
    for name, param in model.named_parameters():
        if name.startswith("backbone."):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_loss_is_the_mean_ce_of_the_shots_with_ignored_pixels_and_fg_weight() -> None:
    model = build(fg_weight=3.0)
    shot_logits = torch.randn(2, 3, 2, 4, 5)
    target = torch.randint(0, 2, (2, 4, 5))
    target[:, 0] = 255
    episode = {"query_mask": target}
    got = model.loss({"shot_logits": shot_logits, "logits": shot_logits[:, 0]}, episode)["loss"]
    weight = torch.tensor([1.0, 3.0])
    per_shot = [F.cross_entropy(shot_logits[:, i], target, weight=weight, ignore_index=255) for i in range(3)]
    torch.testing.assert_close(got, torch.stack(per_shot).mean())


def test_a_few_steps_lower_the_loss() -> None:
    assert_a_few_steps_lower_the_loss(build(BackboneSpec(name="resnet18", max_stage="layer3")))


# Counted on the official model (juhongm999/hsnet @ 6b1bc12, random weights) in a scratch folder: see
# methods/hsnet/README.md. "total" counts parameters without the backbone's unused fc layer (which HSNet's
# own Logger.log_params also skips); "state_dict" adds the BatchNorm buffers, as Logger.log_params counts.
OFFICIAL_COUNTS = {
    "resnet50": {"learnable": 2_573_794, "total": 26_081_826, "state_dict": 26_134_999},
    "resnet101": {"learnable": 2_587_394, "total": 45_087_554, "state_dict": 45_193_002},
}


@pytest.mark.parametrize("name", ["resnet50", "resnet101"])
def test_parameter_counts_equal_the_official_model(name: str) -> None:
    model = build(BackboneSpec(name=name, output_stride=32))
    counts = {
        "learnable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in model.parameters()),
        "state_dict": sum(v.numel() for v in model.state_dict().values()),
    }
    assert counts == OFFICIAL_COUNTS[name]
    assert sum(len(getattr(model.backbone, s)) for s in model.stages) == (13 if name == "resnet50" else 30)
