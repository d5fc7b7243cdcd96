"""DSMF-Net: every ablation variant builds and trains, shapes, gradients, shot averaging."""

from __future__ import annotations

import pytest
import torch

from fsseg.errors import ConfigError
from fsseg.method import BackboneSpec
from fsseg.registry import METHODS
from methods.dsmfnet import DSMFNet


def make_episode(batch: int = 2, shots: int = 1, size: tuple[int, int] = (64, 64), seed: int = 0) -> dict:
    """A random episode; masks have a foreground rectangle, background and ignored pixels."""
    g = torch.Generator().manual_seed(seed)
    h, w = size

    def mask(*shape: int) -> torch.Tensor:
        # one random rectangle of foreground per image, two rows of ignored pixels
        m = torch.zeros(*shape, h, w, dtype=torch.long).view(-1, h, w)
        for i in range(m.shape[0]):
            y0, x0 = (int(v) for v in torch.randint(0, h // 2, (2,), generator=g))
            dy, dx = (int(v) for v in torch.randint(h // 4, h // 2, (2,), generator=g))
            m[i, y0 : y0 + dy, x0 : x0 + dx] = 1
        m[:, :2, :] = 255
        return m.view(*shape, h, w)

    return {
        "query_img": torch.randn(batch, 3, h, w, generator=g),
        "query_mask": mask(batch),
        "support_imgs": torch.randn(batch, shots, 3, h, w, generator=g),
        "support_masks": mask(batch, shots),
        "class_id": torch.zeros(batch, dtype=torch.long),
    }


def build(variant: str = "default", **overrides) -> DSMFNet:
    torch.manual_seed(0)
    return DSMFNet(DSMFNet.resolve_params(variant, overrides), BackboneSpec(name="resnet18"))


def test_registered_with_recipes_and_ablation_variants() -> None:
    assert METHODS.get("dsmfnet") is DSMFNet
    assert DSMFNet.recipe("default") == DSMFNet.recipe("synthetic")
    expected = {
        "default",
        "gpml_conv",
        "gpml_off",
        "prior_off",
        "sff_no_merge",
        "sff_no_graph",
        "sff_off",
        "no_aux",
    }
    assert expected <= set(DSMFNet.variants)


def test_bad_params_are_config_errors() -> None:
    with pytest.raises(ConfigError):
        DSMFNet.resolve_params("default", {"gpml": "attention"})
    with pytest.raises(ConfigError):
        DSMFNet.resolve_params("default", {"stages": ["layer3"]})
    with pytest.raises(ConfigError):
        DSMFNet(
            DSMFNet.resolve_params("default", {"stages": ["layer1", "conv5"]}), BackboneSpec(name="resnet18")
        )


@pytest.mark.parametrize("variant", sorted(DSMFNet.variants))
def test_every_variant_trains_head_only(variant: str) -> None:
    model = build(variant)
    model.train()
    episode = make_episode(shots=2)
    out = model(episode)
    assert out["logits"].shape == (2, 2, 64, 64)
    terms = model.loss(out, episode)
    assert {"loss", "main", "aux"} <= set(terms) and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    for name, param in model.named_parameters():
        if name.startswith("backbone."):
            assert not param.requires_grad and param.grad is None, name
        else:
            # GloRe's inner weights get exactly zero gradient at init (the zero-initialised BN
            # gates the branch), so for them only the presence of a gradient is checked.
            assert param.grad is not None, name
            gated = name.startswith("glore.") and ".blocker." not in name
            if not gated:
                assert param.grad.abs().sum() > 0, name


@pytest.mark.parametrize("shots", [1, 5])
def test_output_shapes(shots: int) -> None:
    model = build().eval()
    with torch.no_grad():
        out = model(make_episode(batch=2, shots=shots, size=(64, 96)))
    assert out["logits"].shape == (2, 2, 64, 96)
    assert out["prior"].shape == (2, 1, 8, 12)
    assert [out[f"gpml_map_{i}"].shape[-2:] for i in range(3)] == [(16, 24), (8, 12), (8, 12)]
    assert not any(k.startswith("aux_logits_") for k in out)


def test_graph_and_conv_prototypes_agree_at_init() -> None:
    """GloRe is the identity at initialisation, so graph and conv GPML maps start equal."""
    episode = make_episode()
    with torch.no_grad():
        graph = build().eval()(episode)
        conv = build("gpml_conv").eval()(episode)
    for i in range(3):
        torch.testing.assert_close(graph[f"gpml_map_{i}"], conv[f"gpml_map_{i}"])


def test_repeated_support_equals_one_shot() -> None:
    model = build().eval()
    one = make_episode(shots=1)
    five = dict(one, support_imgs=one["support_imgs"].repeat(1, 5, 1, 1, 1))
    five["support_masks"] = one["support_masks"].repeat(1, 5, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(five)["logits"], model(one)["logits"], rtol=1e-4, atol=1e-5)


def test_a_few_steps_lower_the_loss() -> None:
    model = build()
    episode = make_episode(batch=2, shots=1, seed=3)
    # Learnable in a few steps: foreground pixels are brighter in query and support alike.
    episode["query_img"] = 0.3 * episode["query_img"] + 2.0 * (episode["query_mask"] == 1)[:, None]
    episode["support_imgs"] = (
        0.3 * episode["support_imgs"] + 2.0 * (episode["support_masks"] == 1)[:, :, None]
    )
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def eval_loss() -> float:
        model.eval()
        with torch.no_grad():
            return model.loss(model(episode), episode)["loss"].item()

    before = eval_loss()
    model.train()
    for _ in range(8):
        optimizer.zero_grad()
        model.loss(model(episode), episode)["loss"].backward()
        optimizer.step()
    assert eval_loss() < 0.8 * before
