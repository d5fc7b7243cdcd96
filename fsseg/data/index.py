"""The prepared-dataset index: its format, its reader and its writer.

``fsseg prepare <dataset>`` writes, under the dataset root:

* ``fsseg_dataset.json``: ``{"dataset": name, "format_version": 2, "options": {...}, "splits": [..]}``;
* ``index/<split>.json``: ``{"split": s, "images": [{"id", "image", "mask", "size": [h, w],
  "class_pixels": {"<class id>": pixel count}, "image_sha256", "mask_sha256"}]}`` with image/mask
  paths relative to the root (or absolute, for releases that stay where the user unpacked them);
* masks as single-channel PNGs of dataset class ids (0 background, 1..C classes, 255 ignore).

Training and evaluation read only the index, so no label file is scanned at start-up.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsseg.atomic import sha256_file, write_json
from fsseg.errors import DataError

#: 2: index rows carry ``image_sha256`` and ``mask_sha256``.
INDEX_FORMAT_VERSION = 2
DESCRIPTOR = "fsseg_dataset.json"


@dataclass(frozen=True)
class ImageEntry:
    id: str
    image: str
    mask: str
    size: tuple[int, int]
    class_pixels: dict[int, int]
    image_sha256: str
    mask_sha256: str


class PreparedIndex:
    """Read access to the index of one prepared dataset (``name``) at ``root``; nothing else is scanned."""

    def __init__(self, root: str | Path, name: str) -> None:
        self.root = Path(root)
        self.name = name
        descriptor = self.root / DESCRIPTOR
        if not descriptor.is_file():
            raise DataError(
                f"{descriptor} not found: the dataset {name!r} is not prepared at {self.root}; "
                f"run `fsseg prepare {name} ...` first"
            )
        try:
            self.descriptor = json.loads(descriptor.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{descriptor} is not valid JSON: {err}") from None
        if self.descriptor.get("dataset") != name:
            raise DataError(
                f"{descriptor} describes dataset {self.descriptor.get('dataset')!r}, not {name!r}"
            )
        if self.descriptor.get("format_version") != INDEX_FORMAT_VERSION:
            raise DataError(
                f"{descriptor} has index format {self.descriptor.get('format_version')!r}, this fsseg reads "
                f"format {INDEX_FORMAT_VERSION} (with per-file checksums); run `fsseg prepare "
                f"{name} ...` again"
            )
        self._entries: dict[str, dict[str, ImageEntry]] = {}

    def index_path(self, split: str) -> Path:
        return self.root / "index" / f"{split}.json"

    def entries(self, split: str) -> dict[str, ImageEntry]:
        if split not in self._entries:
            path = self.index_path(split)
            if not path.is_file():
                raise DataError(f"split {split!r} of {self.name!r} has no index file {path}")
            try:
                raw = json.loads(path.read_text())
                entries = {
                    item["id"]: ImageEntry(
                        id=item["id"],
                        image=item["image"],
                        mask=item["mask"],
                        size=(int(item["size"][0]), int(item["size"][1])),
                        class_pixels={int(k): int(v) for k, v in item["class_pixels"].items()},
                        image_sha256=str(item["image_sha256"]),
                        mask_sha256=str(item["mask_sha256"]),
                    )
                    for item in raw["images"]
                }
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise DataError(f"index file {path} is corrupt: {err!r}") from None
            self._entries[split] = entries
        return self._entries[split]

    def entry(self, split: str, image_id: str) -> ImageEntry:
        try:
            return self.entries(split)[image_id]
        except KeyError:
            raise DataError(f"image id {image_id!r} is not in split {split!r} of {self.name!r}") from None

    def image_ids(self, split: str) -> list[str]:
        return sorted(self.entries(split))

    def fingerprint(self, split: str) -> str:
        """sha256 of the split's index file: manifests record it so stale data is detected."""
        return sha256_file(self.index_path(split))

    def images_with_class(self, split: str, class_id: int, min_object_px: int = 0) -> list[str]:
        """Sorted ids of images where ``class_id`` covers more than ``max(min_object_px, 0)`` pixels."""
        return sorted(
            image_id
            for image_id, entry in self.entries(split).items()
            if entry.class_pixels.get(class_id, 0) > 0
            and entry.class_pixels.get(class_id, 0) >= min_object_px
        )

    def contains_any(self, split: str, image_id: str, class_ids: set[int]) -> bool:
        return any(c in class_ids for c in self.entries(split)[image_id].class_pixels)

    def resolve(self, rel: str) -> Path:
        """A path of the index: relative to the root, or absolute (a release left where it was unpacked)."""
        path = Path(rel)
        return path if path.is_absolute() else self.root / path


def build_index_entry(
    image_id: str, image_rel: str, mask_rel: str, mask: np.ndarray, num_classes: int
) -> dict[str, Any]:
    """Index row for one image, counting the pixels of every class present in its mask."""
    values, counts = np.unique(mask, return_counts=True)
    class_pixels = {str(int(v)): int(n) for v, n in zip(values, counts, strict=True) if 1 <= v <= num_classes}
    return {
        "id": image_id,
        "image": image_rel,
        "mask": mask_rel,
        "size": [int(mask.shape[0]), int(mask.shape[1])],
        "class_pixels": class_pixels,
    }


def with_checksums(root: Path, row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with ``image_sha256`` and ``mask_sha256`` (computed from the files where missing)."""
    row = dict(row)
    for kind in ("image", "mask"):
        if f"{kind}_sha256" not in row:
            path = Path(row[kind]) if Path(row[kind]).is_absolute() else root / row[kind]
            row[f"{kind}_sha256"] = sha256_file(path)
    return row


def write_index(root: Path, dataset: str, splits: dict[str, list[dict[str, Any]]], options: dict) -> None:
    """Write every split index, then the descriptor last (its presence marks a complete prepare).

    Rows without file checksums get them here, from the files as they are now.
    """
    for split, rows in splits.items():
        rows = sorted((with_checksums(root, r) for r in rows), key=lambda r: r["id"])
        write_json(root / "index" / f"{split}.json", {"split": split, "images": rows})
    write_json(
        root / DESCRIPTOR,
        {
            "dataset": dataset,
            "format_version": INDEX_FORMAT_VERSION,
            "options": options,
            "splits": sorted(splits),
        },
    )
