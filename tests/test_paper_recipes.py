"""Issue 11: the official recipes' switches (augmentation, epochs, frozen BatchNorm, deep-stem ResNet,
PANet's VGG-16, test samplers, protocol presets)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from fsseg import IGNORE_INDEX
from fsseg.config import load_config
from fsseg.data.adapter import open_dataset
from fsseg.data.episodes import TrainEpisodeSampler, build_test_manifest
from fsseg.data.loading import AUGMENTATIONS, TrainEpisodes, augmented_tensors
from fsseg.engine.build import build_method, effective_recipe, iterations_for_epochs, training_identity
from fsseg.engine.train import resolve_length, train
from fsseg.errors import ConfigError, DataError
from fsseg.method import BackboneSpec
from fsseg.models.backbones import DEEP_STEM_KEYS, ResNetBackbone, VGG16Backbone, build_backbone
from fsseg.registry import METHODS

# --- augmentation pipelines ---------------------------------------------------------------------------


def _striped_pair(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """An image whose brightness *is* its label: foreground 250, background 5 (any misalignment of the
    two shows up as a bright background pixel or a dark foreground pixel)."""
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[h // 4 : h // 2, w // 5 : (3 * w) // 4] = 1
    mask[(2 * h) // 3 :, : w // 3] = 1
    image = np.where(mask[..., None] == 1, 250, 5).astype(np.uint8).repeat(3, axis=2)
    return image, mask


def _pixel_values(image: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation: [3, H, W] back to 0..255 brightness (mean over channels)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return ((image * std + mean) * 255).mean(0)


def _uniform(lab: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels whose (2·radius+1)² neighbourhood holds a single label value."""
    padded = torch.nn.functional.pad(lab[None, None].float(), (radius,) * 4, mode="replicate")
    lo = -torch.nn.functional.max_pool2d(-padded, 2 * radius + 1, 1)[0, 0]
    hi = torch.nn.functional.max_pool2d(padded, 2 * radius + 1, 1)[0, 0]
    out = lo == hi
    # next to the crop's edge the (blurred) image saw pixels the crop cut away: judge none there
    out[:radius], out[-radius:], out[:, :radius], out[:, -radius:] = False, False, False, False
    return out


@pytest.mark.parametrize("pipeline", AUGMENTATIONS)
@pytest.mark.parametrize("shape", [(40, 56), (96, 80)])
def test_augmentations_keep_image_and_label_aligned(pipeline: str, shape: tuple[int, int]) -> None:
    image, mask = _striped_pair(*shape)
    size = 64
    for index in range(12):
        rng = np.random.default_rng([7, index, 1])
        img, lab = augmented_tensors(image, mask, size, pipeline, rng)
        assert img.shape == (3, size, size) and lab.shape == (size, size) and lab.dtype == torch.long
        assert set(lab.unique().tolist()) <= {0, 1, IGNORE_INDEX}
        value = _pixel_values(img)
        # Interpolation blurs edges (PFENet's pipeline also blurs with a 5x5 kernel and resamples twice):
        # judge pixels whose neighbourhood has one label only.
        interior = _uniform(lab, radius=3 if pipeline == "pfenet" else 1)
        fg, bg = interior & (lab == 1), interior & (lab == 0)
        assert fg.any() and bg.any()
        assert value[fg].min() > 200, f"{pipeline}: a foreground pixel of the label is dark in the image"
        assert value[bg].max() < 60, f"{pipeline}: a background pixel of the label is bright in the image"


def test_pfenet_augmentation_pads_labels_with_255_and_images_with_the_mean() -> None:
    image, mask = _striped_pair(40, 48)  # smaller than the 64-px crop: padding is certain
    mean_px = torch.tensor([0.485, 0.456, 0.406]) * 255
    rotated = 0
    for index in range(20):
        rng = np.random.default_rng([3, index, 1])
        img, lab = augmented_tensors(image, mask, 64, "pfenet", rng)
        pad = lab == IGNORE_INDEX
        assert pad.float().mean() > 0.3  # at least the 64² − 44² border of a 0.9–1.1 scaled image
        # outside the image the input is the ImageNet mean, i.e. zero after normalisation
        corner = img[:, 0, 0]
        assert torch.allclose(corner, torch.zeros(3), atol=1e-4), corner
        values = _pixel_values(img)
        inside_pad = pad & _uniform(lab, radius=4)  # away from the bilinear seam and blur of a rotated border
        assert (values[inside_pad] - mean_px.mean()).abs().max() < 1e-3
        # rotations leave 255 inside the image's bounding box too (not only the crop border)
        rows = (~pad).any(1).nonzero()
        cols = (~pad).any(0).nonzero()
        box = lab[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        rotated += int((box == IGNORE_INDEX).any())
    assert rotated > 0


def test_pfenet_augmentation_is_a_pure_function_of_the_generator_and_varies() -> None:
    image, mask = _striped_pair(80, 80)
    a = augmented_tensors(image, mask, 64, "pfenet", np.random.default_rng([0, 5, 1]))
    b = augmented_tensors(image, mask, 64, "pfenet", np.random.default_rng([0, 5, 1]))
    c = augmented_tensors(image, mask, 64, "pfenet", np.random.default_rng([0, 6, 1]))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_training_episodes_with_each_pipeline_are_reproducible(toy_root) -> None:
    adapter = open_dataset("toy", toy_root)
    sampler = TrainEpisodeSampler(adapter, fold=0, shot=2, train_seed=4)
    for pipeline in AUGMENTATIONS:
        first = TrainEpisodes(sampler, 48, pipeline, 10)[7]
        again = TrainEpisodes(sampler, 48, pipeline, 10)[7]
        for key in ("query_img", "query_mask", "support_imgs", "support_masks"):
            assert torch.equal(first[key], again[key]), (pipeline, key)
    with pytest.raises(ValueError, match="unknown augmentation pipeline 'rot'"):
        TrainEpisodes(sampler, 48, "rot", 10)


def test_recipes_choose_the_pipelines_and_the_cpu_default_keeps_flip_rot90(toy_root) -> None:
    base = {"dataset": {"name": "toy", "root": str(toy_root)}}
    for method in ("panet", "pfenet", "dsmfnet"):
        cfg = load_config(base=base, overrides=[f"method.name={method}"])
        recipe = effective_recipe(cfg)
        assert (recipe.augment, recipe.frozen_bn, recipe.epochs) == ("flip_rot90", "eval", None)
    official = {
        m: effective_recipe(load_config(base=base, overrides=[f"method.name={m}", "train.recipe=official"]))
        for m in ("panet", "pfenet", "dsmfnet")
    }
    assert official["panet"].augment == "panet" and official["panet"].epochs is None
    assert (official["pfenet"].augment, official["pfenet"].frozen_bn, official["pfenet"].epochs) == (
        "pfenet",
        "batch_stats",
        200,
    )
    cfg = load_config(
        base=base,
        overrides=[
            "method.name=pfenet",
            "train.recipe=official",
            "train.augment=none",
            "backbone.frozen_bn=eval",
        ],
    )
    assert (effective_recipe(cfg).augment, effective_recipe(cfg).frozen_bn) == ("none", "eval")


# --- epochs → iterations -------------------------------------------------------------------------------


def test_epochs_to_iterations_drops_the_last_partial_batch() -> None:
    assert iterations_for_epochs(200, 5953, 4) == 200 * 1488
    assert iterations_for_epochs(3, 8, 4) == 6
    assert iterations_for_epochs(3, 11, 4) == 6
    with pytest.raises(ConfigError, match=r"train.epochs: the filtered training list has 3 image"):
        iterations_for_epochs(1, 3, 4)


def test_epochs_resolve_from_the_filtered_training_list(toy_root, tmp_path) -> None:
    adapter = open_dataset("toy", toy_root)
    base = {
        "dataset": {"name": "toy", "root": str(toy_root), "image_size": 32},
        "output_root": str(tmp_path),
        "method": {"name": "panet"},
        "train": {"epochs": 2, "batch_size": 4},
    }
    for train_filter in ("none", "remove_novel"):
        cfg = load_config(base=base, overrides=[f"dataset.train_filter={train_filter}"])
        sampler = TrainEpisodeSampler(adapter, 0, 1, 0, train_filter)
        # the list: every training image with a base-class pixel (and, with remove_novel, no novel one)
        novel, base_classes = set(adapter.novel_classes(0)), set(adapter.base_classes(0))
        expected = [
            i
            for i, e in adapter.entries("train").items()
            if set(e.class_pixels) & base_classes
            and not (train_filter == "remove_novel" and set(e.class_pixels) & novel)
        ]
        assert sampler.training_images == sorted(expected)
        resolved, facts = resolve_length(cfg, len(expected))
        assert resolved.train.iterations == 2 * (len(expected) // 4) and resolved.train.epochs == 2
        assert facts["train_images"] == len(expected)
        assert training_identity(resolved) == training_identity(cfg)  # a rerun finds the same run
    assert len(TrainEpisodeSampler(adapter, 0, 1, 0, "remove_novel").training_images) < len(
        TrainEpisodeSampler(adapter, 0, 1, 0, "none").training_images
    )
    cfg = load_config(base=base, overrides=["train.iterations=5"])
    with pytest.raises(ConfigError, match=r"train.iterations: 5 disagrees with train.epochs 2"):
        resolve_length(cfg, 36)


def test_training_in_epochs_writes_the_iterations_to_the_resolved_config_and_summary(toy_config) -> None:
    cfg = toy_config("train.iterations=null", "train.epochs=1", "train.batch_size=8")
    run_dir = train(cfg)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    n_images = summary["train_images"]
    assert summary["iterations"] == n_images // 8 and summary["epochs"] == 1
    stored = load_config([run_dir / "config.yaml"])
    assert (stored.train.epochs, stored.train.iterations) == (1, n_images // 8)
    train(cfg)  # the same run again: found finished, not refused as a different config


# --- frozen BatchNorm ------------------------------------------------------------------------------------


def _bn_buffers(module: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in module.named_buffers() if "running_" in n]


@pytest.mark.parametrize("frozen_bn", ["eval", "batch_stats"])
def test_frozen_backbone_batchnorm_statistics(toy_config, frozen_bn: str) -> None:
    cfg = toy_config("method.name=pfenet", f"backbone.frozen_bn={frozen_bn}")
    method = build_method(cfg)
    assert not any(p.requires_grad for p in method.backbone.parameters())
    before = _bn_buffers(method.backbone)
    weights = [p.clone() for p in method.backbone.parameters()]
    method.train()
    assert method.backbone.training == (frozen_bn == "batch_stats")
    batch = {
        "query_img": torch.randn(2, 3, 32, 32),
        "support_imgs": torch.randn(2, 1, 3, 32, 32),
        "support_masks": torch.randint(0, 2, (2, 1, 32, 32)),
        "query_mask": torch.randint(0, 2, (2, 32, 32)),
    }
    method.loss(method(batch), batch)["loss"].backward()
    after = _bn_buffers(method.backbone)
    changed = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    if frozen_bn == "eval":
        assert not any(changed)
    else:
        assert all(changed)  # every BatchNorm layer run saw a batch and moved its running statistics
    assert all(torch.equal(a, b) for a, b in zip(weights, method.backbone.parameters(), strict=True))
    assert all(p.grad is None for p in method.backbone.parameters())


# --- deep-stem ResNet -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet50_deep", "resnet101_deep"])
def test_deep_stem_checkpoint_round_trip_in_the_official_layout(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    ours = ResNetBackbone(name, 8)
    official = ours.official_state()
    # the official PSPNet/PFENet keys: conv1..3 / bn1..3 for the stem, torchvision's for the stages
    stem = {k.split(".")[0] for k in official if not k.startswith("layer")}
    assert stem == set(DEEP_STEM_KEYS)
    assert official["conv1.weight"].shape == (64, 3, 3, 3) and official["conv3.weight"].shape == (
        128,
        64,
        3,
        3,
    )
    assert official["layer1.0.conv1.weight"].shape == (64, 128, 1, 1)
    assert official["layer1.0.downsample.0.weight"].shape == (256, 128, 1, 1)
    official["fc.weight"], official["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)  # as in the file
    path = tmp_path / "resnet_v2.pth"
    torch.save(official, path)
    loaded = build_backbone(BackboneSpec(name=name, weights=str(path)))
    for key, value in ours.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(1, 3, 65, 65)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x)["layer4"], ours.eval()(x)["layer4"])


def test_deep_stem_follows_pspnet_dilation_and_pfenet_has_the_official_size() -> None:
    net = ResNetBackbone("resnet50_deep", 8)
    # every block of layer3 at dilation 2 and of layer4 at 4 (PFENet model/PFENet.py), stride 1
    assert all(block.conv2.dilation == (2, 2) for block in net.layer3)
    assert all(block.conv2.dilation == (4, 4) for block in net.layer4)
    assert net.layer3[0].downsample[0].stride == (1, 1) and net.layer4[0].conv2.stride == (1, 1)
    out = net(torch.randn(1, 3, 473, 473), ("layer0", "layer4"))
    assert out["layer0"].shape == (1, 128, 119, 119) and out["layer4"].shape == (1, 2048, 60, 60)
    counts = {}
    for name in ("resnet50_deep", "resnet50"):
        cls = METHODS.get("pfenet")
        model = cls(cls.resolve_params("default"), BackboneSpec(name=name))
        counts[name] = (
            sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad),
        )
    assert counts["resnet50_deep"] == (34_448_842, 10_817_034)  # the official PFENet's total
    assert counts["resnet50"] == (34_325_066, 10_817_034)


def test_deep_stem_imagenet_file_missing_names_pfenets_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"resnet50_v2\.pth"):
        build_backbone(BackboneSpec(name="resnet50_deep", weights="imagenet"))


# --- PANet's VGG-16 -----------------------------------------------------------------------------------------


def test_panet_vgg16_feature_size_and_no_final_relu() -> None:
    torch.manual_seed(0)
    net = VGG16Backbone(8).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 417, 417))
    assert out["conv5"].shape == (1, 512, 53, 53)
    assert out["conv3"].shape[-1] == 53 and out["conv1"].shape[-1] == 209
    assert (out["conv5"] < 0).any()  # no ReLU after conv5_3
    assert not isinstance(list(net.conv5)[-1], nn.ReLU | nn.MaxPool2d)  # and no pool5
    pools = [m for m in net.modules() if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride, p.padding) for p in pools] == [(3, 2, 1)] * 3 + [(3, 1, 1)]
    assert all(c.dilation == (2, 2) for c in net.conv5 if isinstance(c, nn.Conv2d))


# --- test samplers ---------------------------------------------------------------------------------------


@pytest.fixture
def toy(toy_root):
    return open_dataset("toy", toy_root)


def test_all_pairs_visits_every_image_class_pair_exactly_once(toy) -> None:
    for fold, shot in ((0, 1), (1, 3)):
        m = build_test_manifest(toy, fold, shot, episode_seed=2, n_episodes="all", sampler="all_pairs")
        novel = toy.novel_classes(fold)
        expected = Counter(
            (image_id, c)
            for image_id, e in toy.entries("test").items()
            for c in novel
            if e.class_pixels.get(c)
        )
        got = Counter((e.query_id, e.class_id) for e in m.episodes)
        assert got == expected and max(got.values()) == 1
        assert [e.episode_id for e in m.episodes] == list(range(len(expected)))
        for e in m.episodes:
            assert e.query_id not in e.support_ids and len(set(e.support_ids)) == shot
            assert all(toy.entries("test")[s].class_pixels.get(e.class_id) for s in e.support_ids)
        assert m.header["sampler"] == "all_pairs" and m.header["n_episodes"] == "all"
    other = build_test_manifest(toy, 0, 1, episode_seed=3, n_episodes="all", sampler="all_pairs")
    first = build_test_manifest(toy, 0, 1, episode_seed=2, n_episodes="all", sampler="all_pairs")
    assert [e.query_id for e in other.episodes] == [e.query_id for e in first.episodes]
    assert [e.support_ids for e in other.episodes] != [e.support_ids for e in first.episodes]


def test_pfenet_sampler_walks_the_query_list(toy) -> None:
    min_px = 60
    m = build_test_manifest(toy, 0, 1, episode_seed=0, n_episodes=50, min_object_px=min_px, sampler="pfenet")
    novel = toy.novel_classes(0)
    entries = toy.entries("test")
    queries = sorted(i for i, e in entries.items() if any(e.class_pixels.get(c, 0) >= min_px for c in novel))
    assert [e.query_id for e in m.episodes] == [queries[i % len(queries)] for i in range(50)]
    for e in m.episodes:
        assert entries[e.query_id].class_pixels.get(e.class_id, 0) > 0  # a class present in the query
        assert all(entries[s].class_pixels.get(e.class_id, 0) >= min_px for s in e.support_ids)
        assert e.query_id not in e.support_ids
    assert m.header["sampler"] == "pfenet"
    # images with two novel classes get either of them
    two = [i for i in queries if sum(entries[i].class_pixels.get(c, 0) > 0 for c in novel) == 2]
    long = build_test_manifest(toy, 0, 1, episode_seed=0, n_episodes=40 * len(queries), sampler="pfenet")
    if two:
        assert len({e.class_id for e in long.episodes if e.query_id == two[0]}) == 2


def test_sampler_mismatch_and_bad_counts_are_refused(toy, toy_config, tmp_path) -> None:
    from fsseg.engine.evaluate import ensure_manifest
    from fsseg.errors import ManifestError

    with pytest.raises(ValueError, match="does not take n_episodes"):
        build_test_manifest(toy, 0, 1, 0, 10, sampler="all_pairs")
    path = tmp_path / "m.json"
    build_test_manifest(toy, 0, 1, 0, 12).save(path)
    with pytest.raises(ManifestError, match=r"drawn by the 'balanced' sampler.*'pfenet'"):
        ensure_manifest(toy_config("eval.sampler=pfenet"), toy, path)
    with pytest.raises(DataError, match=r"needs at least 21"):
        build_test_manifest(toy, 0, 20, 0, "all", sampler="all_pairs")


# --- protocol presets ------------------------------------------------------------------------------------


def test_protocol_presets_set_filter_sampler_and_count(toy_root) -> None:
    base = {"dataset": {"name": "toy", "root": str(toy_root)}}
    h = load_config(base=base, overrides=["protocol=H"])
    assert (h.dataset.train_filter, h.eval.sampler, h.eval.n_episodes) == ("none", "all_pairs", "all")
    b = load_config(base=base, overrides=["protocol=B"])
    assert (b.dataset.train_filter, b.eval.sampler, b.eval.n_episodes) == ("remove_novel", "pfenet", 1000)
    assert load_config(base=h.to_dict()).to_dict() == h.to_dict()  # a resolved config reloads unchanged
    with pytest.raises(ConfigError, match=r"config.eval.n_episodes: 1000 contradicts protocol H"):
        load_config(base=base, overrides=["protocol=H", "eval.n_episodes=1000"])
    with pytest.raises(ConfigError, match=r"config.dataset.train_filter: 'none' contradicts protocol B"):
        load_config(base=base, overrides=["protocol=B", "dataset.train_filter=none"])
    none = load_config(base=base)
    assert (none.protocol, none.eval.sampler, none.eval.n_episodes) == (None, "balanced", 1000)


def test_dsmfnet_glore_nodes_follow_the_divisor() -> None:
    cls = METHODS.get("dsmfnet")
    for divisor, expected in ((8, [32, 64, 128]), (4, [64, 128, 256])):
        model = cls(cls.resolve_params("default", {"node_divisor": divisor}), BackboneSpec(name="resnet50"))
        assert [model.glore[s].num_node for s in ("layer1", "layer2", "layer3")] == expected
    assert cls.resolve_params("default").node_divisor == 8


def test_captions_name_the_protocol_the_sampler_and_each_methods_input_size() -> None:
    from fsseg.report.captions import protocol_text

    protocol = {
        "protocol": "H",
        "sampler": "all_pairs",
        "dataset": "isaid5i",
        "folds": [0, 1, 2],
        "n_episodes": "all",
        "eval_split": "test",
        "episode_seeds": [0],
        "train_seeds": [0],
        "image_size": 473,
        "image_sizes": {"panet-default": 417, "pfenet-default": 473, "dsmfnet-default": 473},
        "label_resolution": "original",
        "train_filter": "none",
        "min_object_px": 0,
        "checkpoint_selection": {"selection": "last"},
    }
    text = protocol_text(protocol)
    assert text.startswith("Protocol: protocol H (SDM/SCCNet/MGCL")
    assert (
        "every (image, novel class) pair once" in text
        and "input 473×473 px (panet-default 417×417 px)" in text
    )
    text_b = protocol_text({**protocol, "protocol": "B", "sampler": "pfenet", "n_episodes": 1000})
    assert (
        "protocol B (BAM/DMNet/R2Net" in text_b
        and "1000 test episodes" in text_b
        and "PFENet's sampler" in text_b
    )
    assert "protocol" not in protocol_text({**protocol, "protocol": None}).split(":", 1)[1][:12]
