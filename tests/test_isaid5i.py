"""iSAID-5i: prepare a fabricated miniature release in the released layout, then use it.

The miniature release mirrors the SDM layout (``{train,val}/images/<patch>.png`` and
``{train,val}/semantic_png/<patch>_instance_color_RGB.png``) with 16x16 patches whose colour masks
use the exact iSAID palette; every patch holds one class of each fold.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fsseg.data.index import DESCRIPTOR, INDEX_FORMAT_VERSION
from fsseg.errors import DataError
from fsseg.registry import DATASETS
from fsseg_datasets.isaid5i.adapter import MASK_SUFFIX, Isaid5i, decode_colour_mask, source_image
from fsseg_datasets.isaid5i.classes import PALETTE

SIZE = 16
BANDS = ((0, 5), (5, 10), (10, 14))  # rows of the three class bands; rows 14-15 stay background


def patch_classes(k: int) -> tuple[int, int, int]:
    """One class of each fold, cycling so every class appears equally often."""
    return (k % 15 + 1, (k + 5) % 15 + 1, (k + 10) % 15 + 1)


def expected_ids(k: int) -> np.ndarray:
    ids = np.zeros((SIZE, SIZE), np.uint8)
    for (top, bottom), c in zip(BANDS, patch_classes(k), strict=True):
        ids[top:bottom] = c
    return ids


def make_release(
    root: Path, sources: dict[str, int] | None = None, patches_per_source: int = 3
) -> dict[str, list[str]]:
    """Write a miniature iSAID-5i release; returns the patch names per released split."""
    sources = sources or {"train": 15, "val": 5}
    names: dict[str, list[str]] = {}
    for released, n_sources in sources.items():
        (root / released / "images").mkdir(parents=True, exist_ok=True)
        (root / released / "semantic_png").mkdir(parents=True, exist_ok=True)
        names[released] = []
        k = 0
        first = 0 if released == "train" else 1000
        for s in range(n_sources):
            for p in range(patches_per_source):
                name = f"P{first + s:04d}_{p * SIZE}_{(p + 1) * SIZE}_0_{SIZE}"
                rng = np.random.default_rng([first + s, p])
                image = rng.integers(0, 256, size=(SIZE, SIZE, 3), dtype=np.uint8)
                colours = np.array(PALETTE, dtype=np.uint8)[expected_ids(k)]
                Image.fromarray(image).save(root / released / "images" / f"{name}.png")
                Image.fromarray(colours).save(root / released / "semantic_png" / f"{name}{MASK_SUFFIX}")
                names[released].append(name)
                k += 1
    return names


def prepare_quietly(root: Path, out: Path | None = None, **kwargs) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Isaid5i.prepare(root, out, **kwargs)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path / "iSAID_patches"
    return root, make_release(root)


def test_palette_decoding_is_exact():
    rgb = np.array([[PALETTE[i] for i in range(16)]], dtype=np.uint8)
    ids, unknown = decode_colour_mask(rgb)
    assert ids.tolist() == [list(range(16))] and unknown == []
    ids, unknown = decode_colour_mask(np.array([[[0, 0, 64], [0, 0, 64], [0, 0, 63]]], dtype=np.uint8))
    assert unknown == [((0, 0, 64), 2)] and ids[0, 2] == 1


def test_prepare_writes_index_masks_and_lists(release, tmp_path):
    root, names = release
    with pytest.warns(UserWarning, match=r"train/ has 45 image-mask pairs.*18,076 \(difference -18,031\)"):
        out = Isaid5i.prepare(root)
    assert out == root / "fsseg_prepared"
    descriptor = json.loads((out / DESCRIPTOR).read_text())
    assert descriptor == {
        "dataset": "isaid5i",
        "format_version": INDEX_FORMAT_VERSION,
        "options": {},
        "splits": ["test", "train", "val"],
    }

    adapter = DATASETS.get("isaid5i")(out)
    assert adapter.image_ids("test") == sorted(names["val"])  # released val → our test
    train_ids, val_ids = set(adapter.image_ids("train")), set(adapter.image_ids("val"))
    assert train_ids | val_ids == set(names["train"]) and not train_ids & val_ids
    assert val_ids, "a validation split must be held out of released train"
    # whole source images go to validation: no source has patches on both sides
    assert not {source_image(i) for i in train_ids} & {source_image(i) for i in val_ids}
    # every class has validation patches for checkpoint selection
    assert all(adapter.images_with_class("val", c) for c in range(1, 16))

    for split in ("train", "val", "test"):
        for image_id in adapter.image_ids(split):
            k = (names["train"] if split != "test" else names["val"]).index(image_id)
            mask = adapter.load_mask(split, image_id)
            assert np.array_equal(mask, expected_ids(k))
            assert adapter.entries(split)[image_id].class_pixels == {
                c: (bottom - top) * SIZE for (top, bottom), c in zip(BANDS, patch_classes(k), strict=True)
            }
            image = adapter.load_image(split, image_id)
            released = "val" if split == "test" else "train"
            assert np.array_equal(
                image, np.asarray(Image.open(root / released / "images" / f"{image_id}.png"))
            )
    # class → images
    first = names["val"][0]
    for c in patch_classes(0):
        assert first in adapter.images_with_class("test", c)
    assert adapter.novel_classes(1) == [6, 7, 8, 9, 10]
    assert adapter.base_classes(1) == [1, 2, 3, 4, 5, 11, 12, 13, 14, 15]
    # human-readable lists: test/val list novel classes of the fold, train the base classes
    lines = (out / "lists" / "test_fold0.txt").read_text().splitlines()
    assert {int(line.split()[1]) for line in lines} == {1, 2, 3, 4, 5}
    assert len(lines) == sum(len(adapter.images_with_class("test", c)) for c in range(1, 6))
    train_lines = (out / "lists" / "train_fold0.txt").read_text().splitlines()
    assert {int(line.split()[1]) for line in train_lines} == set(range(6, 16))
    summary = json.loads((out / "lists" / "summary.json").read_text())
    assert summary["released_patches"] == {"train": 45, "val": 15}
    assert not list(out.glob(".fsseg-staging-*"))


def test_same_release_gives_byte_identical_output(release, tmp_path):
    root, _ = release
    first = snapshot(prepare_quietly(root, root / "a"))
    second = snapshot(prepare_quietly(root, root / "b", workers=2))
    assert first == second and any(k.startswith("index/") for k in first)
    again = snapshot(prepare_quietly(root, root / "a"))  # re-preparing in place rewrites the same bytes
    assert again == first


def test_non_square_patches_are_kept_at_their_size(tmp_path):
    root = tmp_path / "rel"
    names = make_release(root, {"train": 15, "val": 5})
    victim = names["val"][0]
    image = np.asarray(Image.open(root / "val" / "images" / f"{victim}.png"))[:, :11]
    mask = np.asarray(Image.open(root / "val" / "semantic_png" / f"{victim}{MASK_SUFFIX}"))[:, :11]
    Image.fromarray(image).save(root / "val" / "images" / f"{victim}.png")
    Image.fromarray(mask).save(root / "val" / "semantic_png" / f"{victim}{MASK_SUFFIX}")
    adapter = Isaid5i(prepare_quietly(root))
    assert adapter.entries("test")[victim].size == (16, 11)
    assert adapter.load_mask("test", victim).shape == (16, 11)


def _damage(root: Path, names: dict[str, list[str]], kind: str) -> str:
    """Apply one corruption; returns text the error must contain."""
    train = names["train"]
    if kind == "unknown_colour":
        path = root / "train" / "semantic_png" / f"{train[1]}{MASK_SUFFIX}"
        arr = np.array(Image.open(path))
        arr[3, 4] = (1, 2, 3)
        Image.fromarray(arr).save(path)
        return f"{path}: colour(s) RGB(1, 2, 3) (1 px) not in the iSAID-5i palette"
    if kind == "missing_image":
        path = root / "train" / "images" / f"{train[2]}.png"
        path.unlink()
        return f"has no image {path}"
    if kind == "missing_mask":
        path = root / "val" / "semantic_png" / f"{names['val'][0]}{MASK_SUFFIX}"
        path.unlink()
        return f"has no mask {path}"
    if kind == "corrupt_image":
        path = root / "train" / "images" / f"{train[3]}.png"
        path.write_bytes(b"\x89PNG this is not really a png")
        return f"corrupt or unreadable: {path}"
    if kind == "truncated_mask":
        path = root / "val" / "semantic_png" / f"{names['val'][1]}{MASK_SUFFIX}"
        path.write_bytes(path.read_bytes()[:60])
        return f"mask file is corrupt or unreadable: {path}"
    if kind == "wrong_size":
        path = root / "train" / "semantic_png" / f"{train[4]}{MASK_SUFFIX}"
        Image.fromarray(np.zeros((12, SIZE, 3), np.uint8)).save(path)
        return f"mask {path} is 16x12 but its image"
    raise AssertionError(kind)


KINDS = ("unknown_colour", "missing_image", "missing_mask", "corrupt_image", "truncated_mask", "wrong_size")


@pytest.mark.parametrize("kind", KINDS)
def test_each_corruption_is_reported_and_nothing_is_written(tmp_path, kind):
    root = tmp_path / "rel"
    names = make_release(root)
    expected = _damage(root, names, kind)
    with pytest.raises(DataError) as info:
        prepare_quietly(root)
    assert expected in str(info.value)
    assert "nothing was written" in str(info.value)
    assert not (root / "fsseg_prepared").exists()


def test_all_problems_are_reported_at_once(tmp_path):
    root = tmp_path / "rel"
    names = make_release(root)
    expected = [_damage(root, names, kind) for kind in KINDS]
    with pytest.raises(DataError) as info:
        prepare_quietly(root, tmp_path / "out")
    message = str(info.value)
    assert "6 problem(s) found" in message
    for text in expected:
        assert text in message
    assert not (tmp_path / "out").exists()


def test_failed_prepare_leaves_an_earlier_prepare_untouched(tmp_path):
    root = tmp_path / "rel"
    names = make_release(root)
    out = prepare_quietly(root)
    before = snapshot(out)
    _damage(root, names, "unknown_colour")
    with pytest.raises(DataError, match="unknown colour"):
        prepare_quietly(root)
    assert snapshot(out) == before


def test_missing_folders_are_named(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        Isaid5i.prepare(tmp_path / "nowhere")
    (tmp_path / "rel" / "train" / "images").mkdir(parents=True)
    with pytest.raises(DataError) as info:
        Isaid5i.prepare(tmp_path / "rel")
    assert "semantic_png does not exist" in str(info.value) and "val/images does not exist" in str(info.value)


def test_cli_arguments(release, tmp_path, capsys):
    import argparse

    root, _ = release
    parser = argparse.ArgumentParser()
    Isaid5i.add_prepare_arguments(parser)
    args = parser.parse_args(["--root", str(root), "--out", str(tmp_path / "prepared"), "--workers", "1"])
    assert Isaid5i.prepare_from_args(args) == tmp_path / "prepared"
    captured = capsys.readouterr()
    assert "fsseg: warning:" in captured.err and "18,076" in captured.err
    assert str(tmp_path / "prepared") in captured.out
    assert "iSAID-5i" in Isaid5i.protocol_caption()


def test_prepare_then_train_episodes_and_evaluate(release, tmp_path):
    """prepare → training episodes → test manifest → one evaluation, through the harness."""
    from fsseg.config import load_config
    from fsseg.engine.evaluate import evaluate
    from fsseg.engine.train import train
    from fsseg.records import read_records

    root, names = release
    out = prepare_quietly(root)
    cfg = load_config(
        base={
            "dataset": {"name": "isaid5i", "root": str(out), "image_size": 32},
            "output_root": str(tmp_path / "results"),
            "fold": 2,
            "method": {"name": "panet"},
            "train": {"iterations": 2, "batch_size": 2, "checkpoint_every": 2, "log_every": 1},
            "eval": {"n_episodes": 6, "batch_size": 3},
        }
    )
    train(cfg)
    records = read_records(evaluate(cfg) / "records.csv")
    assert len(records) == 6
    assert {int(r["class_id"]) for r in records} <= {11, 12, 13, 14, 15}
    assert {r["query_id"] for r in records} <= set(names["val"])  # tested on the released val set


def test_problem_report_groups_kinds_and_caps_long_lists():
    from fsseg.data.validation import Problems

    problems = Problems(max_per_kind=2)
    for name in ("c", "a", "b"):
        problems.add("missing image", f"mask {name} has no image")
    problems.add("unknown colour", "m: colour(s) RGB(1, 2, 3)")
    report = problems.report("release X")
    assert report.splitlines() == [
        "release X: 4 problem(s) found; nothing was written.",
        "  missing image (3):",
        "    - mask a has no image",
        "    - mask b has no image",
        "    ... and 1 more of this kind",
        "  unknown colour (1):",
        "    - m: colour(s) RGB(1, 2, 3)",
    ]
    with pytest.raises(DataError, match="4 problem"):
        problems.raise_if_any("release X")
