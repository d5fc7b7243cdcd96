"""ResNet and VGG-16 backbones dilated to output stride 8 (or 16/32), returning named stages.

The networks are written here with torchvision's layouts and checkpoint keys, so torchvision's ImageNet
files load unchanged, but without importing torchvision (whose import costs each job over a second).

ResNets expose ``layer0`` (stem with max-pool, stride 4), ``layer1`` … ``layer4``; VGG-16 exposes
``conv1`` … ``conv5``. Pretrained weights load only from local files (see :func:`resolve_weights`).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from fsseg.atomic import sha256_file
from fsseg.errors import ConfigError
from fsseg.method import BackboneSpec

# torchvision's ImageNet checkpoints (file names carry the first hex digits of the file's sha256).
IMAGENET_FILES: dict[str, str] = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "vgg16": "vgg16-397923af.pth",
}


def torch_hub_checkpoint_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(spec: BackboneSpec) -> Path | None:
    """Path of the weights file to load, checked by sha256, or ``None`` for random initialisation."""
    if spec.weights == "none":
        return None
    if spec.weights == "imagenet":
        file_name = IMAGENET_FILES[spec.name]
        path = torch_hub_checkpoint_dir() / file_name
        if not path.is_file():
            raise ConfigError(
                f"ImageNet weights for {spec.name} are not available offline: put torchvision's file "
                f"{file_name} at {path} (or set TORCH_HOME, or backbone.weights to a file path); "
                "fsseg never downloads"
            )
        prefix = file_name.rsplit("-", 1)[1].split(".")[0]
        digest = sha256_file(path)
        expected = spec.sha256 or prefix
        if not digest.startswith(expected):
            raise ConfigError(
                f"weights file {path} has sha256 {digest}, expected {expected}…; the file is corrupt"
            )
        return path
    path = Path(os.path.expanduser(spec.weights))
    if not path.is_file():
        raise ConfigError(f"backbone.weights: file {path} does not exist")
    if spec.sha256:
        digest = sha256_file(path)
        if digest != spec.sha256:
            raise ConfigError(f"backbone.weights: {path} has sha256 {digest}, expected {spec.sha256}")
    return path


class _Basic(nn.Module):
    """Two 3×3 convolutions (ResNet-18/34 block)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(c_in, width * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class _Bottleneck(nn.Module):
    """1×1 → 3×3 (strided, dilated) → 1×1 ×4 (ResNet-50/101 block, stride on the 3×3 as torchvision)."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(c_in, width * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


# (block, blocks per stage) of each ResNet depth
_RESNETS: dict[str, tuple[type[_Basic] | type[_Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (_Basic, (2, 2, 2, 2)),
    "resnet50": (_Bottleneck, (3, 4, 6, 3)),
    "resnet101": (_Bottleneck, (3, 4, 23, 3)),
}


def _resnet_stage(
    block: type[_Basic] | type[_Bottleneck], c_in: int, width: int, blocks: int, stride: int, dilation: int,
    previous_dilation: int,
) -> nn.Sequential:
    """One ResNet stage; a dilated stage keeps stride 1 and its first block uses the previous dilation
    (the scheme of torchvision's ``replace_stride_with_dilation``, applied to BasicBlocks too)."""
    layers = [block(c_in, width, stride, previous_dilation)]
    layers += [block(width * block.expansion, width, 1, dilation) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _init_resnet(model: nn.Module) -> None:
    """He (fan-out) initialisation of convolutions, unit BatchNorm: torchvision's ResNet initialisation."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class ResNetBackbone(nn.Module):
    def __init__(self, name: str, output_stride: int) -> None:
        super().__init__()
        block, depths = _RESNETS[name]
        # strides of layer3/layer4 become dilations below output stride 32
        dilate = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}[output_stride]
        self.layer0 = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        c_in, dilation = 64, 1
        for index, (width, blocks) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            stride, previous = (1 if index == 0 else 2), dilation
            if index > 0 and dilate[index - 1]:
                stride, dilation = 1, dilation * 2
            stage = _resnet_stage(block, c_in, width, blocks, stride, dilation, previous)
            setattr(self, f"layer{index + 1}", stage)
            c_in = width * block.expansion
        _init_resnet(self)
        expansion = 4 if name in ("resnet50", "resnet101") else 1
        self.channels = {
            "layer0": 64,
            "layer1": 64 * expansion,
            "layer2": 128 * expansion,
            "layer3": 256 * expansion,
            "layer4": 512 * expansion,
        }
        self.stages = list(self.channels)

    def forward(self, x: torch.Tensor, stages: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """Run up to the last requested stage and return the requested ones."""
        wanted = set(stages or self.stages)
        last = max(self.stages.index(s) for s in wanted)
        out = {}
        for name in self.stages[: last + 1]:
            x = getattr(self, name)(x)
            if name in wanted:
                out[name] = x
        return out

    def truncate(self, last_stage: str) -> None:
        """Drop the stages after ``last_stage``: a method that never runs them should not carry them."""
        keep = self.stages.index(last_stage) + 1
        for name in self.stages[keep:]:
            delattr(self, name)
            del self.channels[name]
        self.stages = self.stages[:keep]

    def torchvision_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's ResNet state dict under this module's stage names."""
        mapped = OrderedDict()
        for key, value in state.items():
            if key.startswith("fc."):
                continue
            head, _, rest = key.partition(".")
            if head in ("conv1", "bn1"):
                key = f"layer0.{ {'conv1': 0, 'bn1': 1}[head] }.{rest}".replace(" ", "")
            mapped[key] = value
        return mapped


def _vgg16_features() -> list[nn.Module]:
    """VGG-16 (configuration D) convolutional layers, in torchvision's ``features`` order."""
    layers: list[nn.Module] = []
    c_in = 3
    for width, convs in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(convs):
            conv = nn.Conv2d(c_in, width, 3, padding=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
            c_in = width
        layers.append(nn.MaxPool2d(2, 2))
    return layers


class VGG16Backbone(nn.Module):
    """VGG-16 features, PANet-style: pool4 and pool5 keep stride 1 and conv5 is dilated by 2 (OS 8)."""

    def __init__(self, output_stride: int) -> None:
        super().__init__()
        if output_stride != 8:
            raise ConfigError("backbone.output_stride: VGG-16 supports only 8")
        layers = _vgg16_features()
        # indices of the max-pool layers in torchvision's vgg16.features
        pools = [4, 9, 16, 23, 30]
        layers[23] = nn.MaxPool2d(3, stride=1, padding=1)
        layers[30] = nn.MaxPool2d(3, stride=1, padding=1)
        for index in range(24, 29):
            if isinstance(layers[index], nn.Conv2d):
                layers[index].dilation = (2, 2)
                layers[index].padding = (2, 2)
        bounds = [0, *[p + 1 for p in pools[:3]], 30]
        self.conv1 = nn.Sequential(*layers[bounds[0] : bounds[1]])
        self.conv2 = nn.Sequential(*layers[bounds[1] : bounds[2]])
        self.conv3 = nn.Sequential(*layers[bounds[2] : bounds[3]])
        self.conv4 = nn.Sequential(*layers[bounds[3] : 24])
        self.conv5 = nn.Sequential(*layers[24:30])
        self.channels = {"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 512, "conv5": 512}
        self.stages = list(self.channels)

    forward = ResNetBackbone.forward
    truncate = ResNetBackbone.truncate

    def torchvision_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's vgg16 ``features.*`` weights under this module's names, in layer order."""
        own = list(self.state_dict())
        theirs = [k for k in state if k.startswith("features.")]
        if len(own) > len(theirs) or (len(own) == len(self.state_dict()) and len(theirs) != 26):
            raise ConfigError("VGG-16 weights file does not match torchvision's vgg16 layout")
        # a truncated model (max_stage) takes the first layers only
        return {o: state[t] for o, t in zip(own, theirs, strict=False)}


Backbone = ResNetBackbone | VGG16Backbone


def build_backbone(spec: BackboneSpec) -> Backbone:
    """Build the backbone and load its weights (ImageNet, an fsseg pretraining file, or none)."""
    if spec.name == "vgg16":
        model: Backbone = VGG16Backbone(spec.output_stride)
    elif spec.name in ("resnet18", "resnet50", "resnet101"):
        model = ResNetBackbone(spec.name, spec.output_stride)
    else:
        raise ConfigError(f"backbone.name: unknown backbone {spec.name!r}")
    if spec.max_stage is not None:
        if spec.max_stage not in model.stages:
            raise ConfigError(
                f"backbone.max_stage: {spec.max_stage!r} is not a stage of {spec.name}: {model.stages}"
            )
        model.truncate(spec.max_stage)
    path = resolve_weights(spec)
    if path is not None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ConfigError(f"backbone.weights: cannot load {path}: {err}") from None
        if isinstance(state, dict) and "backbone" in state:
            state = state["backbone"]  # written by `fsseg pretrain`
        else:
            state = model.torchvision_state(state)
        kept = set(model.stages)
        # stages cut by max_stage are absent from the model: their weights are not needed
        model.load_state_dict({k: v for k, v in state.items() if k.split(".")[0] in kept}, strict=True)
    return model


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
