"""BAM: shapes, the Gram-matrix difference, the ensemble, K-shot weights, parameter counts against the
official model, learning, and the harness's base-learner stage on the toy dataset."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from fsseg.engine.base_learner import load_base_learner, train_base_learner
from fsseg.engine.build import build_method, run_id
from fsseg.engine.run_state import MODEL
from fsseg.engine.train import train
from fsseg.errors import ConfigError
from fsseg.method import BackboneSpec
from fsseg.registry import METHODS
from fsseg_methods.bam.model import BAM, gram_difference, normalised_gram
from tests.method_checks import (
    assert_a_few_steps_lower_the_loss,
    assert_prior_gain_reparametrises,
    make_episode,
)

CPU_BACKBONE = BackboneSpec(name="resnet18", max_stage="layer3")  # the synthetic default's cut
SYNTHETIC_RECIPES = str(Path(__file__).resolve().parents[1] / "config" / "recipes" / "synthetic.yaml")


def build(backbone: BackboneSpec = CPU_BACKBONE, base=(1, 2, 3), **overrides) -> BAM:
    torch.manual_seed(0)
    model = BAM(BAM.resolve_params("default", overrides), backbone)
    model.build_base_learner(tuple(base))
    return model


def test_registered_with_recipes() -> None:
    assert METHODS.get("bam") is BAM and BAM.has_base_learner
    official = BAM.recipe("official")
    assert (official.optimizer, official.lr, official.momentum, official.weight_decay) == (
        "sgd",
        0.05,
        0.9,
        1e-4,
    )
    assert (official.schedule, official.poly_power, official.epochs, official.batch_size) == (
        "poly",
        0.9,
        200,
        8,
    )
    assert official.frozen_bn == "eval"
    assert set(BAM.recipes) == {"official"}  # the CPU recipe is the benchmark's (config/recipes/)
    cpu = BAM.recipe("default", SYNTHETIC_RECIPES)  # PFENet's CPU recipe: the meta learner is PFENet-like
    pfenet = METHODS.get("pfenet").recipe("default", SYNTHETIC_RECIPES)
    assert replace(cpu, description="") == replace(pfenet, description="")


@pytest.mark.parametrize("shots", [1, 5])
def test_shapes(shots: int) -> None:
    model = build(reweight_shots=5 if shots == 5 else 0).eval()
    episode = make_episode(batch=2, shots=shots, size=(64, 64))
    with torch.no_grad():
        out = model(episode)
    assert out["logits"].shape == (2, 2, 64, 64)
    assert out["meta_logits"].shape == (2, 2, 8, 8)
    assert out["base_logits"].shape == (2, 4, 8, 8)  # background + 3 base classes
    assert out["gram_difference"].shape == (2, shots)
    assert torch.isfinite(out["logits"]).all()


def test_forward_without_a_base_learner_fails_clearly() -> None:
    model = BAM(BAM.resolve_params("default"), CPU_BACKBONE)
    with pytest.raises(ConfigError, match="base learner is not built"):
        model(make_episode())


# --- the Gram-matrix difference ----------------------------------------------------------------------
def _naive_difference(query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """Entry by entry: G_ij = <f_i, f_j> / (|f_i| |f_j| + 1e-7) over pixels; ‖Gq − Gs‖_F / ‖ones(C, C)‖_F."""
    b, k, c = support.shape[:3]
    out = torch.zeros(b, k, dtype=torch.float64)

    def gram(f: torch.Tensor) -> list[list[float]]:
        rows = f.reshape(c, -1).double()
        return [
            [float(rows[i] @ rows[j] / (rows[i].norm() * rows[j].norm() + 1e-7)) for j in range(c)]
            for i in range(c)
        ]

    for n in range(b):
        gq = gram(query[n])
        for s in range(k):
            gs = gram(support[n, s])
            total = sum((gq[i][j] - gs[i][j]) ** 2 for i in range(c) for j in range(c))
            out[n, s] = total**0.5 / torch.ones(c, c, dtype=torch.float64).norm()
    return out


def test_gram_difference_against_a_naive_reference() -> None:
    g = torch.Generator().manual_seed(0)
    query = torch.rand(2, 5, 4, 3, generator=g)
    support = torch.rand(2, 3, 5, 4, 3, generator=g)
    support[1, 2, 0] = 0.0  # an all-zero channel: its normalised Gram entries are 0, not NaN
    ours = gram_difference(query, support)
    assert torch.allclose(ours.double(), _naive_difference(query, support), atol=1e-6)
    assert torch.allclose(torch.diagonal(normalised_gram(query), dim1=1, dim2=2), torch.ones(2, 5), atol=1e-6)


def test_gram_difference_is_zero_for_the_same_scene_in_any_pixel_order() -> None:
    g = torch.Generator().manual_seed(1)
    query = torch.rand(1, 6, 5, 5, generator=g)
    shuffled = query.flatten(2)[:, :, torch.randperm(25, generator=g)].view(1, 6, 5, 5)
    other = torch.rand(1, 6, 5, 5, generator=g) ** 4
    diff = gram_difference(query, torch.stack([query, shuffled, other], dim=1))
    assert diff[0, 0].item() == pytest.approx(0.0, abs=1e-6)
    assert diff[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert diff[0, 2].item() > 0.01


# --- the ensemble ------------------------------------------------------------------------------------
def _ensemble_inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(2, 2, 4, 4, generator=g),
        torch.randn(2, 4, 4, 4, generator=g),
        torch.rand(2, generator=g),
    )


def test_ensemble_starts_as_the_meta_learner() -> None:
    """Official init: gram_merge and cls_merge weigh (1, 0), so the ensemble passes the meta probabilities
    whatever the scene difference and the base map."""
    model = build().eval()
    meta, base, est = _ensemble_inputs()
    assert torch.allclose(model.ensemble(meta, base, est, None), meta.softmax(dim=1), atol=1e-6)


def test_ensemble_formula_with_learned_weights() -> None:
    model = build().eval()
    with torch.no_grad():
        model.gram_merge.weight.copy_(torch.tensor([0.7, -2.0]).view(1, 2, 1, 1))
        model.cls_merge.weight.copy_(torch.tensor([1.3, 0.5]).view(1, 2, 1, 1))
    meta, base, est = _ensemble_inputs(1)
    p = meta.softmax(dim=1)
    base_map = base.softmax(dim=1)[:, 1:].sum(1, keepdim=True)
    e = est.view(2, 1, 1, 1)
    expected_fg = 0.7 * p[:, 1:] - 2.0 * e
    expected_bg = 1.3 * (0.7 * p[:, :1] - 2.0 * e) + 0.5 * base_map
    out = model.ensemble(meta, base, est, None)
    assert torch.allclose(out, torch.cat([expected_bg, expected_fg], 1), atol=1e-6)
    # identical low-level features give a zero difference: the Gram term drops out, only 0.7 × meta stays
    out = model.ensemble(meta, base, torch.zeros(2), None)
    assert torch.allclose(out[:, 1:], 0.7 * p[:, 1:], atol=1e-6)
    # a base map of zeros leaves the background mixed only with the scene difference
    with model.probe("base_off"):
        out = model.ensemble(meta, base, est, None)
    assert torch.allclose(out[:, :1], 1.3 * (0.7 * p[:, :1] - 2.0 * e), atol=1e-6)


def test_training_leaves_the_episode_class_out_of_the_base_map() -> None:
    model = build(base=(4, 5, 6))
    base = torch.full((2, 4, 3, 3), -30.0)
    base[0, 2] = 30.0  # query 0: the base learner sees class 5 (channel 2) everywhere
    base[1, 3] = 30.0  # query 1: class 6 (channel 3)
    class_id = torch.tensor([5, 4])
    model.train()
    train_map = model.base_map(base, class_id)
    assert torch.allclose(train_map[0], torch.zeros(1, 3, 3), atol=1e-6)  # its own class: not "base"
    assert torch.allclose(train_map[1], torch.ones(1, 3, 3), atol=1e-6)  # another base class
    model.eval()
    assert torch.allclose(model.base_map(base, class_id), torch.ones(2, 1, 3, 3), atol=1e-6)


def test_prior_gain_is_a_reparametrisation_of_the_merge() -> None:
    gained = build(prior_gain=30.0)
    assert_prior_gain_reparametrises(build(), gained, 30.0, [gained.init_merge[0]])


def test_shot_weights() -> None:
    plain = build()
    diff = torch.tensor([[0.3, 0.1, 0.2, 0.5, 0.4]])
    assert torch.equal(plain.shot_weights(diff[:, :1]), torch.ones(1, 1))
    assert torch.allclose(plain.shot_weights(diff), torch.full((1, 5), 0.2))  # no learned re-weighting
    learned = build(reweight_shots=5)
    with torch.no_grad():
        for p in learned.kshot_rw.parameters():
            p.normal_()
    weights = learned.shot_weights(diff)
    assert weights.sum().item() == pytest.approx(1.0)
    perm = torch.tensor([4, 2, 0, 1, 3])  # the weights follow their shots, whatever the order
    assert torch.allclose(learned.shot_weights(diff[:, perm]), weights[:, perm], atol=1e-6)


def test_a_few_steps_lower_the_loss() -> None:
    assert_a_few_steps_lower_the_loss(build())


# --- parameter counts against the official model -----------------------------------------------------
@pytest.mark.parametrize(
    ("reweight", "total", "learnable"), [(0, 51_631_062, 4_917_254), (5, 51_631_089, 4_917_281)]
)
def test_parameter_counts_equal_the_official_model(reweight: int, total: int, learnable: int) -> None:
    """Official chunbolang/BAM ``model/BAM.py`` + ``model/PSPNet.py``, ResNet-50 (deep stem), PASCAL-5i
    (15 base classes), 1-shot and 5-shot (kshot_trans_dim 2), instantiated with random weights and counted
    after ``freeze_modules`` (see methods/bam/README.md)."""
    model = build(BackboneSpec(name="resnet50_deep"), base=range(1, 16), reweight_shots=reweight)
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == learnable


# --- the harness's base-learner stage ----------------------------------------------------------------
def test_base_learner_is_trained_cached_and_loaded_frozen(toy_config, tmp_path) -> None:
    common = (
        "method.name=bam",
        "backbone.weights=none",
        "base_learner.iterations=2",
        "base_learner.batch_size=2",
        "train.iterations=1",
        "train.checkpoint_every=1",
        "method.params={reduce_dim: 8}",
    )
    cfg = toy_config(*common)
    with pytest.raises(ConfigError, match="fsseg base-learner"):
        train(cfg)
    assert not cfg.run_dir.exists()  # refused before the run folder is written
    untrained = build_method(cfg).base_learner().state_dict()
    path = train_base_learner(cfg)
    assert path == cfg.base_learner_path and path.is_file()
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["base_classes"] == [4, 5, 6]  # fold 0 of the toy dataset: novel 1-3
    cached = torch.load(path, weights_only=True)["base_learner"]
    assert any(not torch.equal(cached[k], untrained[k]) for k in cached if cached[k].is_floating_point())
    assert cached["head.cls.4.weight"].shape[0] == 1 + len(meta["base_classes"])
    assert train_base_learner(cfg) == path  # same settings: reused
    with pytest.raises(ConfigError, match="other settings"):
        train_base_learner(toy_config(*common, "base_learner.lr=0.01"))
    # one file for every train seed; the run's identity carries the base learner's settings
    assert toy_config(*common, "train.train_seed=3").base_learner_path == path
    assert run_id(cfg) != run_id(toy_config(*common, "base_learner.lr=0.01"))

    method = build_method(cfg)
    load_base_learner(cfg, method)
    loaded = method.base_learner().state_dict()
    assert all(torch.equal(loaded[k], cached[k]) for k in cached)
    assert not any(p.requires_grad for p in method.base_learner().parameters())

    run_dir = train(cfg)
    weights = torch.load(run_dir / MODEL, weights_only=True)
    assert torch.equal(weights["learner_base.cls.4.weight"], cached["head.cls.4.weight"])
    assert torch.equal(weights["backbone.layer1.0.conv1.weight"], cached["backbone.layer1.0.conv1.weight"])


def test_novel_pixels_of_the_base_learner_are_ignored_or_background() -> None:
    """``base_learner.novel_pixels``: ignored (ours, default) or background (BAM's official base training)."""
    from fsseg.engine.pretrain import _label_map

    ignored = _label_map(6, base=[4, 5, 6], novel=[1, 2, 3])
    background = _label_map(6, base=[4, 5, 6], novel=[1, 2, 3], novel_as_background=True)
    assert ignored[[0, 4, 5, 6]].tolist() == background[[0, 4, 5, 6]].tolist() == [0, 1, 2, 3]
    assert ignored[[1, 2, 3]].tolist() == [255] * 3
    assert background[[1, 2, 3]].tolist() == [0] * 3


def test_base_learner_sgd_poly_schedule_gives_the_head_its_larger_rate() -> None:
    """``base_learner.optimizer: sgd`` + ``schedule: poly`` + ``head_lr_scale``: BAM's ``train_base.py``
    optimiser (PSPNet ``get_optim`` groups, ``util/util.py`` poly with ``index_split`` 0)."""
    from fsseg.config import BaseLearnerConfig
    from fsseg.engine.pretrain import SegmentationFit
    from fsseg.models.pspnet import PSPHead, PSPNet

    learner = build().base_learner()
    assert isinstance(learner, PSPNet)
    settings = BaseLearnerConfig(
        optimizer="sgd",
        lr=0.01,
        momentum=0.8,
        weight_decay=1e-4,
        schedule="poly",
        poly_power=0.9,
        head_lr_scale=10.0,
        epochs=3,
        batch_size=4,
    )
    fit = SegmentationFit.of_base_learner(settings, n_images=10)
    assert fit.iterations == 3 * (10 // 4)  # epochs over the images, the last partial batch dropped
    optimizer, scheduler = fit.build(learner)
    assert isinstance(optimizer, torch.optim.SGD)
    encoder, head = optimizer.param_groups
    assert {id(p) for p in encoder["params"]} == {id(p) for p in learner.backbone.parameters()}
    assert isinstance(learner.head, PSPHead)
    assert {id(p) for p in head["params"]} == {id(p) for p in learner.head.parameters()}
    assert encoder["momentum"] == 0.8 and encoder["weight_decay"] == 1e-4
    rates = []
    for _ in range(fit.iterations):
        rates.append((encoder["lr"], head["lr"]))
        optimizer.step()
        scheduler.step()
    for step, (enc, hd) in enumerate(rates):
        factor = (1 - step / fit.iterations) ** 0.9
        assert enc == pytest.approx(0.01 * factor) and hd == pytest.approx(0.1 * factor)
    assert rates[0] == pytest.approx((0.01, 0.1)) and rates[-1][0] < rates[-2][0] < rates[0][0]


def test_base_learner_default_optimiser_is_the_pretraining_one() -> None:
    """The default ``base_learner.*``: one Adam group at ``lr`` with a cosine decay, like the pretraining."""
    from fsseg.config import BaseLearnerConfig, PretrainConfig
    from fsseg.engine.pretrain import SegmentationFit

    fit = SegmentationFit.of_base_learner(BaseLearnerConfig(iterations=7), n_images=3)
    assert fit == SegmentationFit.of_pretraining(PretrainConfig(iterations=7))
    optimizer, scheduler = fit.build(build().base_learner())
    assert isinstance(optimizer, torch.optim.Adam) and len(optimizer.param_groups) == 1
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    with pytest.raises(ConfigError, match=r"base_learner\.epochs.*2 image"):
        SegmentationFit.of_base_learner(BaseLearnerConfig(epochs=1, batch_size=4), n_images=2)
