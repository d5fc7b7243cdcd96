"""The embedded synthetic aerial benchmark: classes and folds, generation, prepare, reading it back."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsseg.data.adapter import open_dataset
from fsseg.data.index import DESCRIPTOR
from fsseg.errors import DataError
from fsseg.registry import DATASETS
from fsseg_datasets.synthetic import SyntheticAerial
from fsseg_datasets.synthetic.classes import CLASS_NAMES, FOLDS, NUM_CLASSES
from fsseg_datasets.synthetic.generator import (
    AUXILIARY_CLASSES,
    PRETRAIN_SPLIT,
    SHAPES,
    SPLITS,
    TEXTURES,
    encode_png,
    generate_sample,
)

# Tiny but complete: every split has at least 2 images of each class as main class.
SMALL = {"image_size": 40, "n_train": 45, "n_val": 30, "n_test": 30, "n_pretrain": 30}


def _prepare(root: Path, **params: object) -> Path:
    SyntheticAerial.prepare(root, **{**SMALL, "progress": False, "workers": 1, **params})
    return root


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _prepare(tmp_path_factory.mktemp("synthetic") / "data", seed=0)


# --- classes and folds ---------------------------------------------------------------------------------


def test_registered_with_fifteen_classes_in_three_disjoint_folds() -> None:
    assert DATASETS.get("synthetic") is SyntheticAerial
    assert len(CLASS_NAMES) == len(set(CLASS_NAMES)) == NUM_CLASSES == 15
    folds = SyntheticAerial.fold_classes(SyntheticAerial.Options())
    assert [len(f) for f in folds] == [5, 5, 5]
    assert sorted(c for f in folds for c in f) == list(range(1, 16))
    assert folds == [list(f) for f in FOLDS]


def test_every_class_has_its_own_nonempty_shape_and_texture() -> None:
    grid = np.linspace(-1, 1, 64, dtype=np.float32)
    v, u = np.meshgrid(grid, grid, indexing="ij")
    masks = [shape(u, v) for shape in SHAPES]
    assert all(m.sum() > 0.1 * m.size for m in masks)
    # No two classes share a shape outline or a texture setting, so both carry class information.
    assert len({m.tobytes() for m in masks}) == NUM_CLASSES
    assert len(set(TEXTURES)) == NUM_CLASSES


# --- generation ------------------------------------------------------------------------------------------


def test_sample_depends_only_on_its_own_seed() -> None:
    first = generate_sample(3, 1, 7, 48)
    for i in range(5):  # generating other images in between must not change it
        generate_sample(3, 1, i, 48)
    again = generate_sample(3, 1, 7, 48)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    other_split = generate_sample(3, 2, 7, 48)
    assert not np.array_equal(first[0], other_split[0])


def test_sample_shapes_and_label_values() -> None:
    n_classes = []
    for index in range(60):
        image, mask = generate_sample(0, 0, index, 48)
        assert image.shape == (48, 48, 3) and image.dtype == np.uint8
        assert mask.shape == (48, 48) and mask.dtype == np.uint8
        values = set(np.unique(mask).tolist())
        assert values <= set(range(NUM_CLASSES + 1))
        # The main class is round-robin and always visible; at most three classes per image.
        assert index % NUM_CLASSES + 1 in values
        assert 1 <= len(values - {0}) <= 3
        n_classes.append(len(values - {0}))
    # Most images hold distractors: objects of other classes besides the episode's (85 % expected).
    assert sum(n >= 2 for n in n_classes) >= 0.7 * len(n_classes)


def test_pretraining_split_shows_only_auxiliary_classes() -> None:
    """The pretraining split's labels are auxiliary classes, each a (shape, texture) pairing that no
    benchmark class uses: the shared backbone never sees a benchmark class."""
    split_index = SPLITS.index(PRETRAIN_SPLIT)
    benchmark_looks = {(c, c) for c in range(NUM_CLASSES)}
    assert not benchmark_looks & set(AUXILIARY_CLASSES)
    assert len(set(AUXILIARY_CLASSES)) == len(AUXILIARY_CLASSES)
    seen = set()
    for index in range(40):
        _, mask = generate_sample(0, split_index, index, 48)
        values = set(np.unique(mask).tolist()) - {0}
        assert values and values <= set(range(1, len(AUXILIARY_CLASSES) + 1))
        seen |= values
    assert len(seen) > 15  # many auxiliary classes, not a few


def test_generating_300_small_images_is_fast() -> None:
    start = time.perf_counter()
    for index in range(300):
        image, mask = generate_sample(0, 0, index, 48)
        encode_png(image)
        encode_png(mask)
    # About 0.5 s on a 2-core CPU; the bound leaves room for a loaded machine.
    assert time.perf_counter() - start < 10


# --- prepare ---------------------------------------------------------------------------------------------


def test_prepare_is_byte_identical_for_a_seed_whatever_the_workers(prepared: Path, tmp_path: Path) -> None:
    again = _prepare(tmp_path / "again", seed=0, workers=2)
    assert _tree_hashes(again) == _tree_hashes(prepared)
    other = _prepare(tmp_path / "other", seed=1)
    hashes, other_hashes = _tree_hashes(prepared), _tree_hashes(other)
    assert hashes.keys() == other_hashes.keys()
    changed = [k for k in hashes if k.startswith("images/") and hashes[k] != other_hashes[k]]
    assert len(changed) == SMALL["n_train"] + SMALL["n_val"] + SMALL["n_test"] + SMALL["n_pretrain"]


def test_layout_formats_and_descriptor(prepared: Path) -> None:
    descriptor = json.loads((prepared / DESCRIPTOR).read_text())
    assert descriptor["dataset"] == "synthetic"
    assert descriptor["splits"] == ["pretrain", "test", "train", "val"]
    assert descriptor["options"]["image_size"] == SMALL["image_size"]
    with Image.open(prepared / "images" / "val" / "val_00000.png") as img:
        assert img.mode == "RGB" and img.size == (40, 40)
    with Image.open(prepared / "masks" / "val" / "val_00000.png") as mask:
        assert mask.mode == "L" and mask.size == (40, 40)
    assert not list(prepared.rglob("*.tmp"))


def test_index_matches_masks_and_adapter_reads_them(prepared: Path) -> None:
    ds = open_dataset("synthetic", prepared)
    for split in ("train", "val", "test"):
        ids = ds.image_ids(split)
        assert len(ids) == SMALL[f"n_{split}"]
        for image_id in ids:
            image = ds.load_image(split, image_id)
            mask = ds.load_mask(split, image_id)
            assert image.shape == (40, 40, 3) and image.dtype == np.uint8
            assert mask.shape == (40, 40)
            assert mask.max() <= NUM_CLASSES
            values, counts = np.unique(mask, return_counts=True)
            expected = {int(v): int(n) for v, n in zip(values, counts, strict=True) if v != 0}
            assert ds.entries(split)[image_id].class_pixels == expected


def test_every_class_appears_in_every_split(prepared: Path) -> None:
    ds = open_dataset("synthetic", prepared)
    for split in ("train", "val", "test"):
        for class_id in range(1, NUM_CLASSES + 1):
            # Round-robin main classes guarantee n / 15 images per class.
            assert len(ds.images_with_class(split, class_id)) >= SMALL[f"n_{split}"] // NUM_CLASSES


def test_rerun_is_a_noop_and_other_params_raise(prepared: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = {p: p.stat().st_mtime_ns for p in prepared.rglob("*") if p.is_file()}
    SyntheticAerial.prepare(prepared, seed=0, **SMALL)
    assert "nothing to do" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in prepared.rglob("*") if p.is_file()} == before
    with pytest.raises(DataError, match="overwrite"):
        SyntheticAerial.prepare(prepared, seed=5, **SMALL)


def test_overwrite_replaces_a_dataset_made_with_other_params(tmp_path: Path) -> None:
    tiny = {"n_val": 15, "n_test": 15}
    root = _prepare(tmp_path / "data", seed=0, n_train=30, **tiny)
    _prepare(root, seed=0, n_train=15, overwrite=True, **tiny)
    descriptor = json.loads((root / DESCRIPTOR).read_text())
    assert descriptor["options"]["n_train"] == 15
    # Images of the larger earlier run are gone, not left behind unindexed.
    assert len(list((root / "images" / "train").glob("*.png"))) == 15


def test_refuses_a_folder_prepared_for_another_dataset(tmp_path: Path) -> None:
    (tmp_path / DESCRIPTOR).write_text(json.dumps({"dataset": "dlrsd", "options": {}}))
    with pytest.raises(DataError, match="dlrsd"):
        _prepare(tmp_path, overwrite=True)


def test_interrupted_prepare_leaves_no_partial_files_and_reruns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fsseg_datasets.synthetic.adapter as adapter_module

    real = adapter_module.generate_sample

    def failing(
        seed: int, split_index: int, image_index: int, image_size: int
    ) -> tuple[np.ndarray, np.ndarray]:
        if image_index == 5:
            raise KeyboardInterrupt
        return real(seed, split_index, image_index, image_size)

    monkeypatch.setattr(adapter_module, "generate_sample", failing)
    with pytest.raises(KeyboardInterrupt):
        _prepare(tmp_path)
    assert not (tmp_path / DESCRIPTOR).exists()
    assert not list(tmp_path.rglob("*.tmp"))
    with pytest.raises(DataError, match="not prepared"):
        open_dataset("synthetic", tmp_path)
    monkeypatch.setattr(adapter_module, "generate_sample", real)
    _prepare(tmp_path)
    assert len(open_dataset("synthetic", tmp_path).image_ids("train")) == SMALL["n_train"]


def test_invalid_params_raise(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="image_size"):
        _prepare(tmp_path, image_size=8)
    with pytest.raises(DataError, match="n_val"):
        _prepare(tmp_path, n_val=3)


def test_cli_arguments_reach_prepare(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    SyntheticAerial.add_prepare_arguments(parser)
    args = parser.parse_args(
        ["--root", str(tmp_path), "--seed", "2", "--image-size", "32", "--n-train", "15", "--n-val", "15",
         "--n-test", "15", "--no-progress", "--workers", "1"]
    )  # fmt: skip
    SyntheticAerial.prepare_from_args(args)
    options = json.loads((tmp_path / DESCRIPTOR).read_text())["options"]
    assert options["seed"] == 2 and options["image_size"] == 32 and options["n_test"] == 15


# --- the benchmark property ------------------------------------------------------------------------------


@pytest.mark.slow
def test_colour_alone_does_not_separate_the_classes(tmp_path: Path) -> None:
    """A colour-only prototype baseline scores at the 'everything foreground' level on novel classes."""
    root = _prepare(tmp_path / "data", image_size=96, n_train=15, n_val=15, n_test=450, workers=None)
    ds = open_dataset("synthetic", root)
    rng = np.random.default_rng(0)
    cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def load(image_id: str) -> tuple[np.ndarray, np.ndarray]:
        if image_id not in cache:
            cache[image_id] = (
                ds.load_image("test", image_id).astype(np.float64),
                ds.load_mask("test", image_id),
            )
        return cache[image_id]

    colour_ious, all_foreground_ious = [], []
    for fold in range(3):
        inter = dict.fromkeys(ds.novel_classes(fold), 0)
        union, fg_area, area = dict(inter), dict(inter), dict(inter)
        for _ in range(300):
            class_id = int(rng.choice(ds.novel_classes(fold)))
            candidates = ds.images_with_class("test", class_id)
            query_id, support_id = (candidates[i] for i in rng.choice(len(candidates), 2, replace=False))
            support, support_mask = load(support_id)
            prototypes = np.stack(
                [support[support_mask != class_id].mean(0), support[support_mask == class_id].mean(0)]
            )
            query, query_mask = load(query_id)
            pixels = query.reshape(-1, 3)
            cosine = (pixels @ prototypes.T) / (
                np.linalg.norm(pixels, axis=1, keepdims=True) * np.linalg.norm(prototypes, axis=1) + 1e-9
            )
            pred = (cosine.argmax(1) == 1).reshape(query_mask.shape)
            truth = query_mask == class_id
            inter[class_id] += int((pred & truth).sum())
            union[class_id] += int((pred | truth).sum())
            fg_area[class_id] += int(truth.sum())
            area[class_id] += truth.size
        colour_ious.append(np.mean([inter[c] / union[c] for c in inter]))
        all_foreground_ious.append(np.mean([fg_area[c] / area[c] for c in inter]))
    # Measured: 0.070 for colour, 0.075 for predicting everything as foreground (1-shot, 96 px).
    assert np.mean(colour_ious) < 0.12
    assert np.mean(colour_ious) < np.mean(all_foreground_ious) + 0.02


def test_every_adapter_has_a_protocol_caption_the_default_naming_classes_and_folds() -> None:
    assert SyntheticAerial.protocol_caption() == "synthetic (15 classes, 3 folds of novel classes)"
    for name in DATASETS.names():
        caption = DATASETS.get(name).protocol_caption()
        assert caption and "\n" not in caption, name
    # a dataset with a published protocol names it instead (its options may change the folds)
    assert DATASETS.get("isaid5i").protocol_caption().startswith("iSAID-5i (SDM protocol")
    assert DATASETS.get("dlrsd").protocol_caption({"variant": "A"}).startswith("DLRSD variant A")


def test_progress_lines_of_prepare_use_the_shared_progress(tmp_path: Path, capsys) -> None:
    SyntheticAerial.prepare(tmp_path / "p", **{**SMALL, "progress": True, "workers": 1})
    err = capsys.readouterr().err
    total = sum(SMALL[k] for k in ("n_train", "n_val", "n_test", "n_pretrain"))
    assert f"synthetic: images written {total}/{total}" in err  # fsseg.progress.Progress's line
    assert f"synthetic: {total} images written to {tmp_path / 'p'} in " in err
