"""Our ResNet/VGG-16 definitions against torchvision's: same checkpoint keys, same outputs."""

from __future__ import annotations

import pytest
import torch
import torchvision

from fsseg.errors import ConfigError
from fsseg.method import BackboneSpec
from fsseg.models.backbones import ResNetBackbone, VGG16Backbone, build_backbone


def _torchvision_stages(net: torchvision.models.ResNet, x: torch.Tensor) -> list[torch.Tensor]:
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    out = [x]
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = layer(x)
        out.append(x)
    return out


@pytest.mark.parametrize(
    ("name", "output_stride", "dilation"),
    [("resnet50", 8, [False, True, True]), ("resnet50", 16, [False, False, True]), ("resnet18", 32, None)],
)
def test_resnet_matches_torchvision(
    name: str, output_stride: int, dilation: list[bool] | None, monkeypatch
) -> None:
    # the architecture, computed the same way; the packed inference path has its own test (test_onednn.py)
    monkeypatch.setenv("FSSEG_ONEDNN", "plain")
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None, replace_stride_with_dilation=dilation).eval()
    ours = ResNetBackbone(name, output_stride).eval()
    state = ours.torchvision_state(theirs.state_dict())
    assert set(state) == set(ours.state_dict())  # every checkpoint key has a home, and nothing else
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = _torchvision_stages(theirs, x)
        got = ours(x)
    for stage, want in zip(ours.stages, expected, strict=True):
        assert got[stage].shape == want.shape, stage
        torch.testing.assert_close(got[stage], want, rtol=1e-4, atol=1e-4)
    assert got["layer4"].shape[-1] == 64 // output_stride


def test_resnet18_dilated_basic_blocks_keep_resolution() -> None:
    """torchvision refuses dilated BasicBlocks; ours dilates them like Bottlenecks (first block of a
    stage at the previous dilation)."""
    net = ResNetBackbone("resnet18", 8)
    assert net.layer3[0].conv1.dilation == (1, 1) and net.layer3[1].conv2.dilation == (2, 2)
    assert net.layer4[0].conv2.dilation == (2, 2) and net.layer4[1].conv1.dilation == (4, 4)
    assert net.layer3[0].downsample[0].stride == (1, 1)
    out = net(torch.randn(2, 3, 64, 64), ("layer2", "layer4"))
    assert out["layer2"].shape == (2, 128, 8, 8) and out["layer4"].shape == (2, 512, 8, 8)


def test_vgg16_loads_torchvision_weights_and_matches_panets_encoder() -> None:
    """torchvision's VGG-16 weights, rearranged the way PANet's models/vgg.py does (pools 1-3 3x3
    stride 2 padding 1, pool4 3x3 stride 1, conv5 dilated by 2, no ReLU after conv5_3, no pool5)."""
    torch.manual_seed(0)
    theirs = torchvision.models.vgg16(weights=None).eval()
    ours = VGG16Backbone(8).eval()
    ours.load_state_dict(ours.torchvision_state(theirs.state_dict()), strict=True)
    layers, pools = [], 0
    for module in list(theirs.features)[:-1]:  # no pool5
        if isinstance(module, torch.nn.MaxPool2d):
            pools += 1
            module = torch.nn.MaxPool2d(3, 2 if pools <= 3 else 1, 1)
        elif isinstance(module, torch.nn.Conv2d) and pools == 4:
            module.dilation, module.padding = (2, 2), (2, 2)
        layers.append(module)
    reference = torch.nn.Sequential(*layers[:-1])  # no ReLU after conv5_3
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["conv5"], reference(x), rtol=1e-4, atol=1e-4)
        assert ours(x)["conv5"].shape == (1, 512, 8, 8)


def test_imagenet_weights_missing_names_the_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    spec = BackboneSpec(name="resnet18", weights="imagenet", output_stride=8)
    with pytest.raises(ConfigError, match=r"resnet18-f37072fd\.pth"):
        build_backbone(spec)
