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
from fsseg.models.onednn import PackedCache, run_packed_or_plain

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
        deep_stem = spec.name in DEEP_STEM_FILES
        file_name = DEEP_STEM_FILES[spec.name] if deep_stem else IMAGENET_FILES[spec.name]
        path = torch_hub_checkpoint_dir() / file_name
        if not path.is_file():
            source = (
                "PFENet's file (the official deep-stem ResNet, PFENet's initmodel/)"
                if deep_stem
                else "torchvision's file"
            )
            raise ConfigError(
                f"ImageNet weights for {spec.name} are not available offline: put {source} {file_name} at "
                f"{path} (or set TORCH_HOME, or backbone.weights to a file path); fsseg never downloads"
            )
        digest = sha256_file(path) if spec.sha256 or not deep_stem else ""
        # torchvision's file names carry the first hex digits of their sha256; PFENet's do not.
        expected = spec.sha256 or ("" if deep_stem else file_name.rsplit("-", 1)[1].split(".")[0])
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
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, c_in: int, width: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(c_in, width * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.pre_activation(x))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output before its final ReLU (residual branch + shortcut)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity  # in place: no second block-sized buffer (BatchNorm's backward needs no output)
        return out


class _Bottleneck(nn.Module):
    """1×1 → 3×3 (strided, dilated) → 1×1 ×4 (ResNet-50/101 block, stride on the 3×3 as torchvision)."""

    expansion = 4
    conv_bn_pairs = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))

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
        return self.relu(self.pre_activation(x))

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output before its final ReLU (residual branch + shortcut)."""
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity  # in place, as in _Basic
        return out


def _shortcut(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


# (block, blocks per stage) of each ResNet depth
_RESNETS: dict[str, tuple[type[_Basic] | type[_Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (_Basic, (2, 2, 2, 2)),
    "resnet50": (_Bottleneck, (3, 4, 6, 3)),
    "resnet101": (_Bottleneck, (3, 4, 23, 3)),
    "resnet50_deep": (_Bottleneck, (3, 4, 6, 3)),
    "resnet101_deep": (_Bottleneck, (3, 4, 23, 3)),
}

#: PSPNet's deep stem (PFENet's model/resnet.py): official key prefix → our ``layer0`` index.
DEEP_STEM_KEYS = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}
#: The official deep-stem ImageNet files, looked up like torchvision's under $TORCH_HOME/hub/checkpoints.
DEEP_STEM_FILES = {"resnet50_deep": "resnet50_v2.pth", "resnet101_deep": "resnet101_v2.pth"}


def _resnet_stage(
    block: type[_Basic] | type[_Bottleneck],
    c_in: int,
    width: int,
    blocks: int,
    stride: int,
    dilation: int,
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
    """torchvision's ResNet, or with ``*_deep`` names PSPNet's deep-stem ResNet that PFENet uses.

    The deep stem (PFENet ``model/resnet.py``) is three 3×3 convolutions 3→64 (stride 2) →64→128, each
    with BatchNorm and ReLU, then the max-pool; layer1 takes 128 channels. Dilated stages follow
    PSPNet (PFENet ``model/PFENet.py``): *every* block of a dilated stage, its first included, uses
    the stage's dilation, where torchvision's scheme keeps the previous dilation in the first block.
    """

    def __init__(self, name: str, output_stride: int) -> None:
        super().__init__()
        block, depths = _RESNETS[name]
        self.deep_stem = name.endswith("_deep")
        # strides of layer3/layer4 become dilations below output stride 32
        dilate = {8: (False, True, True), 16: (False, False, True), 32: (False, False, False)}[output_stride]
        if self.deep_stem:
            self.layer0 = nn.Sequential(
                nn.Conv2d(3, 64, 3, 2, 1, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.Conv2d(64, 64, 3, 1, 1, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.Conv2d(64, 128, 3, 1, 1, bias=False),
                nn.BatchNorm2d(128),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        else:
            self.layer0 = nn.Sequential(
                nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            )
        stem_channels = 128 if self.deep_stem else 64
        c_in, dilation = stem_channels, 1
        for index, (width, blocks) in enumerate(zip((64, 128, 256, 512), depths, strict=True)):
            stride, previous = (1 if index == 0 else 2), dilation
            if index > 0 and dilate[index - 1]:
                stride, dilation = 1, dilation * 2
                if self.deep_stem:
                    previous = dilation
            stage = _resnet_stage(block, c_in, width, blocks, stride, dilation, previous)
            setattr(self, f"layer{index + 1}", stage)
            c_in = width * block.expansion
        _init_resnet(self)
        expansion = block.expansion
        self.channels = {
            "layer0": stem_channels,
            "layer1": 64 * expansion,
            "layer2": 128 * expansion,
            "layer3": 256 * expansion,
            "layer4": 512 * expansion,
        }
        self.stages = list(self.channels)
        self._packed_stages = PackedCache()

    def forward(self, x: torch.Tensor, stages: tuple[str, ...] | None = None) -> dict[str, torch.Tensor]:
        """Run up to the last requested stage and return the requested ones."""
        wanted = set(stages or self.stages)
        last = max(self.stages.index(s) for s in wanted)
        out = {}
        for name in self.stages[: last + 1]:
            x = self.run_stage(name, x)
            if name in wanted:
                out[name] = x
        return out

    def run_stage(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Stage ``name`` on ``x``: in CPU fp32 inference of a frozen (eval-mode) stage, through its
        oneDNN-packed copy (:mod:`fsseg.models.onednn`; same numbers to fp32 rounding), else plainly."""
        return run_packed_or_plain(getattr(self, name), x, self._packed_stages, name)

    def block_features(
        self, x: torch.Tensor, stages: tuple[str, ...], before_relu: bool = False
    ) -> dict[str, list[torch.Tensor]]:
        """The output of *every* residual block of the requested stages, in block order.

        Stages before the first requested one run whole; the run stops after the last requested one.
        ``before_relu`` returns each block's sum of residual branch and shortcut before its final ReLU
        (what HSNet correlates); the next block still receives the ReLU'd output, so the network's
        computation is unchanged. ResNet-50 layer2–layer4 gives 4 + 6 + 3 = 13 features.
        """
        unknown = [s for s in stages if s not in self.stages or s == "layer0"]
        if not stages or unknown:
            raise ConfigError(
                f"backbone block features: stages {list(stages)} must be non-empty residual stages of "
                f"this backbone, {self.stages[1:]}"
            )
        wanted = set(stages)
        last = max(self.stages.index(s) for s in wanted)
        out: dict[str, list[torch.Tensor]] = {}
        for name in self.stages[: last + 1]:
            stage = getattr(self, name)
            if name not in wanted:
                x = stage(x)
                continue
            feats = []
            for block in stage:
                if before_relu:
                    pre = block.pre_activation(x)
                    feats.append(pre)
                    x = torch.relu(pre)
                else:
                    x = block(x)
                    feats.append(x)
            out[name] = feats
        return out

    def blocks_per_stage(self) -> dict[str, int]:
        """Number of residual blocks of each kept stage (``layer1`` … ``layer4``)."""
        return {name: len(getattr(self, name)) for name in self.stages if name != "layer0"}

    def truncate(self, last_stage: str) -> None:
        """Drop the stages after ``last_stage``: a method that never runs them should not carry them."""
        keep = self.stages.index(last_stage) + 1
        for name in self.stages[keep:]:
            delattr(self, name)
            del self.channels[name]
        self.stages = self.stages[:keep]

    def torchvision_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's ResNet state dict (or, for a deep stem, the official PSPNet/PFENet
        ``resnet*_v2.pth`` layout: ``conv1``/``bn1`` … ``conv3``/``bn3``) under this module's names."""
        stem = DEEP_STEM_KEYS if self.deep_stem else {"conv1": 0, "bn1": 1}
        mapped = OrderedDict()
        for key, value in state.items():
            if key.startswith("fc."):
                continue
            head, _, rest = key.partition(".")
            if head in stem:
                key = f"layer0.{stem[head]}.{rest}"
            elif head.startswith(("conv", "bn")):
                raise ConfigError(
                    f"backbone weights: key {key!r} does not belong to a "
                    f"{'deep-stem' if self.deep_stem else 'torchvision'} ResNet"
                )
            mapped[key] = value
        return mapped

    def official_state(self) -> dict[str, torch.Tensor]:
        """This backbone's weights under the layout :meth:`torchvision_state` reads (its inverse)."""
        stem = {
            index: head
            for head, index in (DEEP_STEM_KEYS if self.deep_stem else {"conv1": 0, "bn1": 1}).items()
        }
        out = OrderedDict()
        for key, value in self.state_dict().items():
            if key.startswith("layer0."):
                _, index, rest = key.split(".", 2)
                key = f"{stem[int(index)]}.{rest}"
            out[key] = value
        return out


def _vgg16_block(
    c_in: int, width: int, convs: int, dilation: int = 1, last_relu: bool = True
) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for index in range(convs):
        conv = nn.Conv2d(c_in, width, 3, padding=dilation, dilation=dilation)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers.append(conv)
        if index < convs - 1 or last_relu:
            layers.append(nn.ReLU(inplace=True))
        c_in = width
    return layers


class VGG16Backbone(nn.Module):
    """PANet's VGG-16 encoder (kaixin96/PANet ``models/vgg.py``), output stride 8.

    The 13 convolutions of VGG-16 (configuration D). Pools 1–3 are 3×3 max-pools with stride 2 and
    padding 1, pool4 is 3×3 with stride 1 and padding 1, conv5 is dilated by 2, there is **no** ReLU
    after conv5_3 and no pool5. A 417-px input gives 53×53 features (torchvision's 2×2 pools: 52×52).
    Stages: ``conv1`` … ``conv4`` end with their pool, ``conv5`` with conv5_3.
    """

    def __init__(self, output_stride: int) -> None:
        super().__init__()
        if output_stride != 8:
            raise ConfigError("backbone.output_stride: VGG-16 supports only 8")
        self.conv1 = nn.Sequential(*_vgg16_block(3, 64, 2), nn.MaxPool2d(3, 2, 1))
        self.conv2 = nn.Sequential(*_vgg16_block(64, 128, 2), nn.MaxPool2d(3, 2, 1))
        self.conv3 = nn.Sequential(*_vgg16_block(128, 256, 3), nn.MaxPool2d(3, 2, 1))
        self.conv4 = nn.Sequential(*_vgg16_block(256, 512, 3), nn.MaxPool2d(3, 1, 1))
        self.conv5 = nn.Sequential(*_vgg16_block(512, 512, 3, dilation=2, last_relu=False))
        self.channels = {"conv1": 64, "conv2": 128, "conv3": 256, "conv4": 512, "conv5": 512}
        self.stages = list(self.channels)
        self._packed_stages = PackedCache()

    forward = ResNetBackbone.forward
    run_stage = ResNetBackbone.run_stage
    truncate = ResNetBackbone.truncate

    def torchvision_state(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchvision's vgg16 ``features.*`` weights under this module's names, in layer order (as
        PANet loads its initial weights: the first 26 tensors, by position)."""
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
    elif spec.name in _RESNETS:
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
