"""A tiny dataset written in the prepared-index format, for fast harness tests."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from fsseg.atomic import write_bytes
from fsseg.data.adapter import DatasetAdapter
from fsseg.data.index import build_index_entry, write_index
from fsseg.registry import DATASETS


@DATASETS.register("toy")
class ToyDataset(DatasetAdapter):
    """Six classes in two folds; each image shows one or two squares of class-specific brightness."""

    class_names = ("a", "b", "c", "d", "e", "f")

    @classmethod
    def fold_classes(cls, options) -> list[list[int]]:
        return [[1, 2, 3], [4, 5, 6]]


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def make_toy_dataset(
    root: Path, size: int = 32, per_split: dict[str, int] | None = None, seed: int = 0
) -> Path:
    per_split = per_split or {"train": 36, "val": 12, "test": 40}
    splits = {}
    for split_index, (split, count) in enumerate(per_split.items()):
        rows = []
        for i in range(count):
            rng = np.random.default_rng([seed, split_index, i])
            image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
            mask = np.zeros((size, size), dtype=np.uint8)
            classes = [1 + i % 6] + ([1 + (i * 5 + 3) % 6] if i % 4 == 0 else [])
            for cid in classes:
                side = int(rng.integers(size // 4, size // 2))
                y, x = rng.integers(0, size - side, size=2)
                image[y : y + side, x : x + side] = 40 * cid
                mask[y : y + side, x : x + side] = cid
            image_id = f"{split}_{i:03d}"
            write_bytes(root / "images" / split / f"{image_id}.png", _png(image))
            write_bytes(root / "masks" / split / f"{image_id}.png", _png(mask))
            rows.append(
                build_index_entry(
                    image_id, f"images/{split}/{image_id}.png", f"masks/{split}/{image_id}.png", mask, 6
                )
            )
        splits[split] = rows
    write_index(root, "toy", splits, {"seed": seed, "size": size})
    return root


def toy_config_maker(toy_root: Path, results: Path):
    """``make(*overrides)``: an untrained (0-iteration) run config on the toy dataset, 12 test episodes."""
    from fsseg.config import load_config

    def make(*overrides: str):
        base = {
            "dataset": {"name": "toy", "root": str(toy_root), "image_size": 32},
            "output_root": str(results),
            "train": {"iterations": 0},
            "eval": {"n_episodes": 12, "batch_size": 12},
        }
        return load_config(base=base, overrides=list(overrides))

    return make
