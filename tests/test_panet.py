import pytest
import torch
import torch.nn.functional as F

from fsseg.method import BackboneSpec
from fsseg.models.ops import masked_average_pool
from methods.colour_floor import ColourFloor
from methods.panet import PANet


def _episode(b=2, k=1, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(b, k, size, size, dtype=torch.long)
    masks[..., 8:20, 10:24] = 1
    masks[..., 0, 0] = 255
    query_mask = torch.zeros(b, size, size, dtype=torch.long)
    query_mask[:, 12:26, 4:18] = 1
    return {
        "query_img": torch.randn(b, 3, size, size, generator=g),
        "support_imgs": torch.randn(b, k, 3, size, size, generator=g),
        "support_masks": masks,
        "query_mask": query_mask,
    }


@pytest.mark.parametrize("shot", [1, 5])
def test_panet_shapes_and_loss_terms(shot):
    torch.manual_seed(0)
    model = PANet(PANet.resolve_params("default"), BackboneSpec(name="resnet18"))
    model.train()
    batch = _episode(k=shot)
    out = model(batch)
    assert out["logits"].shape == (2, 2, 32, 32)
    losses = model.loss(out, batch)
    assert set(losses) == {"loss", "main", "align"}
    assert torch.isfinite(losses["loss"])
    model.eval()
    with torch.inference_mode():
        assert model(batch)["logits"].shape == (2, 2, 32, 32)


def test_panet_logits_are_scaled_cosines_of_masked_average_prototypes():
    torch.manual_seed(0)
    model = PANet(PANet.resolve_params("default"), BackboneSpec(name="resnet18")).eval()
    batch = _episode(b=1, k=2)
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
        expected = F.interpolate(20 * cos[None], size=(32, 32), mode="bilinear", align_corners=False)
    assert torch.allclose(logits, expected, atol=1e-4)


def test_panet_loss_falls_on_a_fixed_tiny_episode():
    torch.manual_seed(0)
    model = PANet(PANet.resolve_params("default"), BackboneSpec(name="resnet18"))
    model.train()
    batch = _episode(b=2, k=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = model.loss(model(batch), batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_no_align_variant_has_no_alignment_term():
    model = PANet(PANet.resolve_params("no_align"), BackboneSpec(name="resnet18")).train()
    batch = _episode()
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
