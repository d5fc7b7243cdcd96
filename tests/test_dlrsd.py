"""DLRSD: prepare a fabricated miniature release in the released layout, in both variants, then use it.

The miniature release mirrors what users unpack: ``UCMerced_LandUse/Images/<scene>/<scene>NN.tif``
(RGB) and ``DLRSD/Images/<scene>/<scene>NN.png`` (label value = class id 1..17), 16x16 images with
four classes each, one of them not square (as a few UC Merced images are not 256x256).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsseg.data.index import DESCRIPTOR
from fsseg.errors import ConfigError, DataError
from fsseg_datasets.dlrsd.adapter import TEST_PAIR_FRACTION, Dlrsd, divide_pairs
from fsseg_datasets.dlrsd.classes import VARIANT_FOLDS

SIZE = 16
SCENES = ("agricultural", "airplane", "beach", "harbor")
PER_SCENE = 12
ODD = "beach05"  # 16 wide, 13 high


def image_classes(k: int) -> tuple[int, ...]:
    return (k % 17 + 1, (k + 4) % 17 + 1, (k + 8) % 17 + 1, (k + 12) % 17 + 1)


def expected_label(k: int, height: int = SIZE) -> np.ndarray:
    label = np.zeros((height, SIZE), np.uint8)
    for band, c in enumerate(image_classes(k)):
        label[band * 4 : (band + 1) * 4] = c
    return label[:height]


def make_release(root: Path) -> dict[str, int]:
    """Write a miniature DLRSD release; returns the global index k of each image id."""
    index = {}
    k = 0
    for scene in SCENES:
        (root / "UCMerced_LandUse" / "Images" / scene).mkdir(parents=True, exist_ok=True)
        (root / "DLRSD" / "Images" / scene).mkdir(parents=True, exist_ok=True)
        for n in range(PER_SCENE):
            name = f"{scene}{n:02d}"
            height = 13 if name == ODD else SIZE
            rng = np.random.default_rng(k)
            image = rng.integers(0, 256, size=(height, SIZE, 3), dtype=np.uint8)
            Image.fromarray(image).save(root / "UCMerced_LandUse" / "Images" / scene / f"{name}.tif")
            Image.fromarray(expected_label(k, height)).save(root / "DLRSD" / "Images" / scene / f"{name}.png")
            index[name] = k
            k += 1
    return index


def prepare_quietly(root: Path, out: Path | None = None, **kwargs) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Dlrsd.prepare(root, out, **kwargs)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    root = tmp_path / "dlrsd_release"
    return root, make_release(root)


def pairs_of(adapter: Dlrsd, split: str) -> set[tuple[str, int]]:
    return {(i, c) for c in range(1, 18) for i in adapter.images_with_class(split, c)}


def test_variant_a_divides_image_class_pairs(release):
    root, index = release
    with pytest.warns(
        UserWarning, match=r"48 image-label pairs, the published release has 2,100 \(difference -2,052\)"
    ):
        out = Dlrsd.prepare(root, variant="A")
    assert out == root / "fsseg_prepared" / "variant_A"
    assert json.loads((out / DESCRIPTOR).read_text())["options"] == {"variant": "A"}
    adapter = Dlrsd(out, {"variant": "A"})
    assert adapter.folds == [[1, 2, 3, 4, 5], [6, 7, 9, 10, 11], [12, 14, 15, 16, 17]]
    # field (8) and sea (13) are neither novel nor base in any fold
    for fold in range(3):
        assert 8 not in adapter.base_classes(fold) + adapter.novel_classes(fold)
        assert 13 not in adapter.base_classes(fold) + adapter.novel_classes(fold)
    train, val, test = (pairs_of(adapter, s) for s in ("train", "val", "test"))
    all_pairs = {(i, c) for i, k in index.items() for c in image_classes(k) if c not in (8, 13)}
    assert train | test == all_pairs and not train & test  # every pair is train or test, never both
    assert not {c for _, c in train | val | test} & {8, 13}
    for c in {c for _, c in all_pairs}:
        n = sum(1 for _, cc in all_pairs if cc == c)
        assert sum(1 for _, cc in test if cc == c) == int(TEST_PAIR_FRACTION * n + 0.5)
    # validation images never hold test pairs, and offer all their classes
    val_images = {i for i, _ in val}
    assert val_images and not val_images & {i for i, _ in test}
    assert val == {(i, c) for i in val_images for c in image_classes(index[i]) if c not in (8, 13)}
    # class_pixels stay truthful: the dropped classes and other splits' classes are still counted
    some = next(iter(adapter.image_ids("test")))
    assert set(adapter.entries("test")[some].class_pixels) == set(image_classes(index[some]))
    assert adapter.contains_any("train", next(iter(adapter.image_ids("train"))), set(range(1, 18)))


def test_variant_b_divides_by_class_and_holds_out_validation_images(release):
    root, index = release
    out = prepare_quietly(root, variant="B")
    assert out == root / "fsseg_prepared" / "variant_B"
    adapter = Dlrsd(out, {"variant": "B"})
    assert adapter.folds == [list(f) for f in VARIANT_FOLDS["B"]]
    kept = {c for f in VARIANT_FOLDS["B"] for c in f}
    all_pairs = {(i, c) for i, k in index.items() for c in image_classes(k) if c in kept}
    train, val, test = (pairs_of(adapter, s) for s in ("train", "val", "test"))
    assert train == all_pairs  # training offers every image (for the fold's base classes)
    val_images = {i for i, _ in val}
    assert val_images and test == {(i, c) for i, c in all_pairs if i not in val_images}
    assert not {c for _, c in train} & {16, 17}  # trees, water dropped


def test_adapter_loads_images_and_labels_at_their_own_size(release):
    root, index = release
    adapter = Dlrsd(prepare_quietly(root, variant="A"), {"variant": "A"})
    for split in ("train", "val", "test"):
        for image_id in adapter.image_ids(split):
            height = 13 if image_id == ODD else SIZE
            assert adapter.entries(split)[image_id].size == (height, SIZE)
            assert np.array_equal(adapter.load_mask(split, image_id), expected_label(index[image_id], height))
            assert adapter.load_image(split, image_id).shape == (height, SIZE, 3)
    summary = json.loads((adapter.root / "lists" / "summary.json").read_text())
    assert summary["non_square_images"] == [ODD]


def test_variant_mismatch_and_bad_options_are_refused(release):
    root, _ = release
    out = prepare_quietly(root, variant="A")
    with pytest.raises(DataError, match="prepared for variant 'A', but the config asks for variant 'B'"):
        Dlrsd(out, {"variant": "B"})
    with pytest.raises(ConfigError, match="variant"):
        Dlrsd(out, {"variant": "C"})
    with pytest.raises(DataError, match="variant 'C' is unknown"):
        Dlrsd.prepare(root, variant="C")


def test_same_release_gives_byte_identical_output(release):
    root, _ = release
    for variant in ("A", "B"):
        first = snapshot(prepare_quietly(root, root / f"a{variant}", variant=variant))
        second = snapshot(prepare_quietly(root, root / f"b{variant}", variant=variant, workers=2))
        assert first == second
        assert "lists/test_fold0.txt" in first and "index/train.json" in first


def test_lists_name_pairs_per_split_and_fold(release):
    root, _ = release
    adapter = Dlrsd(prepare_quietly(root, variant="A"), {"variant": "A"})
    for split in ("train", "val", "test"):
        for fold in range(3):
            lines = (adapter.root / "lists" / f"{split}_fold{fold}.txt").read_text().splitlines()
            classes = adapter.base_classes(fold) if split == "train" else adapter.novel_classes(fold)
            expected = sorted((c, i) for c in classes for i in adapter.images_with_class(split, c))
            assert [tuple(line.split()) for line in lines] == [(i, str(c)) for c, i in expected]


def test_divide_pairs_is_independent_of_dict_order():
    present = {f"img{i:02d}": [1 + i % 5, 6 + i % 3] for i in range(30)}
    shuffled = dict(reversed(list(present.items())))
    assert divide_pairs(present, "A", {"img03"}) == divide_pairs(shuffled, "A", {"img03"})


def _damage(root: Path, kind: str) -> str:
    images, labels = root / "UCMerced_LandUse" / "Images", root / "DLRSD" / "Images"
    if kind == "missing_image":
        path = images / "airplane" / "airplane03.tif"
        path.unlink()
        return f"has no image {path}"
    if kind == "missing_label":
        path = labels / "harbor" / "harbor07.png"
        path.unlink()
        return f"has no label {path}"
    if kind == "corrupt_image":
        path = images / "beach" / "beach01.tif"
        path.write_bytes(b"II*\x00 broken tiff")
        return f"image file is corrupt or unreadable: {path}"
    if kind == "wrong_size":
        path = labels / "agricultural" / "agricultural04.png"
        Image.fromarray(np.ones((SIZE, 12), np.uint8)).save(path)
        return f"label {path} is 12x16 but its image"
    if kind == "out_of_range":
        path = labels / "harbor" / "harbor02.png"
        label = np.array(Image.open(path))
        label[0, :3] = 40
        Image.fromarray(label).save(path)
        return f"label {path} holds value(s) [40]"
    if kind == "colour_label":
        path = labels / "airplane" / "airplane08.png"
        Image.fromarray(np.zeros((SIZE, SIZE, 3), np.uint8)).save(path)
        return f"label file {path} has mode RGB"
    raise AssertionError(kind)


KINDS = ("missing_image", "missing_label", "corrupt_image", "wrong_size", "out_of_range", "colour_label")


@pytest.mark.parametrize("kind", KINDS)
def test_each_corruption_is_reported_and_nothing_is_written(tmp_path, kind):
    root = tmp_path / "rel"
    make_release(root)
    expected = _damage(root, kind)
    with pytest.raises(DataError) as info:
        prepare_quietly(root, variant="B")
    assert expected in str(info.value) and "nothing was written" in str(info.value)
    assert not (root / "fsseg_prepared").exists()


def test_all_problems_are_reported_at_once_and_an_earlier_prepare_survives(tmp_path):
    root = tmp_path / "rel"
    make_release(root)
    out = prepare_quietly(root, tmp_path / "prepared", variant="A")
    before = snapshot(out)
    expected = [_damage(root, kind) for kind in KINDS]
    with pytest.raises(DataError) as info:
        prepare_quietly(root, out, variant="A")
    message = str(info.value)
    assert f"{len(KINDS)} problem(s) found" in message
    for text in expected:
        assert text in message
    assert snapshot(out) == before


def test_missing_folders_are_named(tmp_path):
    (tmp_path / "rel" / "UCMerced_LandUse" / "Images").mkdir(parents=True)
    with pytest.raises(DataError, match=r"DLRSD/Images does not exist"):
        Dlrsd.prepare(tmp_path / "rel")


def test_cli_arguments_and_caption(release, tmp_path, capsys):
    import argparse

    root, _ = release
    parser = argparse.ArgumentParser()
    Dlrsd.add_prepare_arguments(parser)
    args = parser.parse_args(["--root", str(root), "--variant", "B", "--workers", "1"])
    out = Dlrsd.prepare_from_args(args)
    assert out == root / "fsseg_prepared" / "variant_B"
    captured = capsys.readouterr()
    assert "2,100" in captured.err and "variant: B" in captured.out
    assert Dlrsd.protocol_caption({"variant": "B"}).startswith(
        "DLRSD variant B (SCCNet, HRL; trees and water"
    )


@pytest.mark.parametrize("variant", ["A", "B"])
def test_prepare_then_episodes_and_one_evaluation(release, tmp_path, variant):
    """prepare → test manifest (pairs of the variant's test split) → one evaluation through the harness."""
    from fsseg.config import load_config
    from fsseg.data.episodes import build_test_manifest
    from fsseg.engine.evaluate import evaluate
    from fsseg.engine.train import train
    from fsseg.records import read_records

    root, _ = release
    out = prepare_quietly(root, variant=variant)
    cfg = load_config(
        base={
            "dataset": {"name": "dlrsd", "root": str(out), "image_size": 32, "options": {"variant": variant}},
            "output_root": str(tmp_path / "results"),
            "fold": 2,
            "method": {"name": "colour_floor"},
            "eval": {"n_episodes": 8, "batch_size": 4},
        }
    )
    train(cfg)
    records = read_records(evaluate(cfg) / "records.csv")
    adapter = Dlrsd(out, {"variant": variant})
    test_pairs = pairs_of(adapter, "test")
    assert len(records) == 8
    for r in records:
        assert (r["query_id"], int(r["class_id"])) in test_pairs
        assert all((s, int(r["class_id"])) in test_pairs for s in r["support_ids"].split(";"))
    # min_object_px works from class_pixels: a class band covers 4 rows x 16 = 64 pixels
    assert build_test_manifest(adapter, 2, 1, 0, 4, min_object_px=64).episodes
    with pytest.raises(DataError, match="usable image"):
        build_test_manifest(adapter, 2, 1, 0, 4, min_object_px=65)
