"""PANet: shapes and loss terms, logits against a hand computation, the official recipe and parameter
count, learning (plus the colour floor's one check)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fsseg.method import BackboneSpec
from fsseg.models.ops import masked_average_pool
from fsseg.registry import METHODS
from fsseg_methods.colour_floor.model import ColourFloor
from fsseg_methods.panet.model import PANet
from tests.method_checks import assert_a_few_steps_lower_the_loss, make_episode

SIZE = (32, 32)

# VGG-16 (configuration D) up to conv5_3: (in, out) channels of its 13 3×3 convolutions.
VGG16_CONVS = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512)]
VGG16_CONVS += [(512, 512)] * 5


def build(variant: str = "default", backbone: str = "resnet18") -> PANet:
    torch.manual_seed(0)
    return PANet(PANet.resolve_params(variant), BackboneSpec(name=backbone))


def official_params() -> int:
    """Parameters of the official PANet (kaixin96/PANet): its encoder is VGG-16's 13 convolutions with
    biases (models/vgg.py:22-32) and the few-shot model adds no layer (models/fewshot.py:32-33)."""
    return sum(c_in * c_out * 3 * 3 + c_out for c_in, c_out in VGG16_CONVS)


def test_registered_with_the_official_recipe() -> None:
    assert METHODS.get("panet") is PANet
    assert set(PANet.recipes) == {"official"}  # the CPU recipe is the benchmark's (config/recipes/)
    official = PANet.recipe("official")  # kaixin96/PANet config.py:36-39, 55-59
    assert (official.optimizer, official.momentum, official.weight_decay) == ("sgd", 0.9, 5e-4)
    assert official.lr == 1e-3
    assert (official.schedule, official.lr_steps, official.lr_gamma) == ("step", (10_000, 20_000), 0.1)
    assert (official.iterations, official.batch_size, official.augment) == (30_000, 1, "panet")


def test_parameter_count_equals_the_official_vgg16_encoder() -> None:
    model = build(backbone="vgg16")
    expected = official_params()
    assert expected == 14_714_688  # the number quoted in methods/panet/README.md
    assert sum(p.numel() for p in model.parameters()) == expected
    assert sum(p.numel() for p in model.backbone.parameters()) == expected  # nothing outside the encoder
    assert all(p.requires_grad for p in model.parameters())  # fine-tuned whole, as train.py:76
    # the synthetic default's backbone: ResNet-18 up to layer3, also trained whole
    assert sum(p.numel() for p in build().parameters() if p.requires_grad) == 2_782_784


@pytest.mark.parametrize("shot", [1, 5])
def test_panet_shapes_and_loss_terms(shot):
    model = build()
    model.train()
    batch = make_episode(batch=2, shots=shot, size=SIZE)
    out = model(batch)
    assert out["logits"].shape == (2, 2, 32, 32)
    losses = model.loss(out, batch)
    assert set(losses) == {"loss", "main", "align"}
    assert torch.isfinite(losses["loss"])
    model.eval()
    with torch.inference_mode():
        assert model(batch)["logits"].shape == (2, 2, 32, 32)


def test_panet_logits_are_scaled_cosines_of_masked_average_prototypes():
    model = build().eval()
    batch = make_episode(batch=1, shots=2, size=SIZE)
    with torch.inference_mode():
        logits = model(batch)["logits"]
        fs = model._features(batch["support_imgs"][0])
        fq = model._features(batch["query_img"])
        m = batch["support_masks"][0]
        fg = masked_average_pool(fs, (m == 1).float()).mean(0)
        bg = masked_average_pool(fs, (m == 0).float()).mean(0)
        # explicit: upsample first, then pool (what the adjoint trick avoids)
        up = F.interpolate(fs, size=m.shape[-2:], mode="bilinear", align_corners=False)
        fg_ref = ((up * (m == 1)[:, None]).sum((2, 3)) / ((m == 1).sum((1, 2))[:, None] + 1e-5)).mean(0)
        assert torch.allclose(fg, fg_ref, atol=1e-5)
        cos = torch.stack([F.cosine_similarity(fq[0], p[:, None, None], dim=0) for p in (bg, fg)])
        expected = F.interpolate(20 * cos[None], size=SIZE, mode="bilinear", align_corners=False)
    assert torch.allclose(logits, expected, atol=1e-4)


def test_panet_loss_falls_on_a_fixed_tiny_episode():
    """Training-mode loss (query CE + PAR) under the official optimizer type, SGD with momentum."""
    model = build()
    model.train()
    batch = make_episode(batch=2, shots=1, size=SIZE)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = model.loss(model(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_a_few_steps_lower_the_loss() -> None:
    assert_a_few_steps_lower_the_loss(build())


def test_no_align_variant_has_no_alignment_term():
    model = build("no_align").train()
    batch = make_episode(size=SIZE)
    assert set(model.loss(model(batch), batch)) == {"loss", "main"}


def test_colour_floor_prefers_support_colour():
    model = ColourFloor(ColourFloor.resolve_params("default"), BackboneSpec())
    assert not model.is_trainable
    size = 16
    red = torch.tensor([1.0, -1.0, -1.0]).view(3, 1, 1).expand(3, size, size)
    blue = torch.tensor([-1.0, -1.0, 1.0]).view(3, 1, 1).expand(3, size, size)
    support = blue.clone()
    support[:, :8] = red[:, :8]
    mask = torch.zeros(size, size, dtype=torch.long)
    mask[:8] = 1
    query = blue.clone()
    query[:, 8:] = red[:, 8:]
    batch = {"query_img": query[None], "support_imgs": support[None, None], "support_masks": mask[None, None]}
    prediction = model(batch)["logits"].argmax(1)[0]
    assert prediction[8:].eq(1).all() and prediction[:8].eq(0).all()
