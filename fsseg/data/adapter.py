"""The dataset adapter interface and the prepared-dataset index every adapter reads.

``fsseg prepare <dataset>`` writes, under the dataset root:

* ``fsseg_dataset.json``: ``{"dataset": name, "format_version": 1, "options": {...}, "splits": [..]}``;
* ``index/<split>.json``: ``{"split": s, "images": [{"id", "image", "mask", "size": [h, w],
  "class_pixels": {"<class id>": pixel count}, "image_sha256", "mask_sha256"}]}`` with image/mask
  paths relative to the root (or absolute, for releases that stay where the user unpacked them);
* masks as single-channel PNGs of dataset class ids (0 background, 1..C classes, 255 ignore).

Training and evaluation read only the index, so no label file is scanned at start-up. Each file's
sha256 is checked when it is read (it is read anyway, and hashing costs little next to decoding), so
an image or mask changed after ``prepare`` is an error naming it, never a score against a stale index.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from fsseg import IGNORE_INDEX
from fsseg.atomic import sha256_file
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


@dataclass
class NoOptions:
    """For datasets without options."""


def _read_checked(path: Path, expected_sha256: str | None, kind: str) -> io.BytesIO | Path:
    """The file's bytes when a sha256 is expected (and matches), else the path to open."""
    if expected_sha256 is None:
        return path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{kind} file is missing: {path}") from None
    except OSError as err:
        raise DataError(f"{kind} file is unreadable: {path} ({err.strerror})") from None
    if hashlib.sha256(data).hexdigest() != expected_sha256:
        raise DataError(f"{kind} file {path} changed after `fsseg prepare`: {CHANGED_HINT}")
    return io.BytesIO(data)


CHANGED_HINT = (
    "its sha256 differs from the one in the dataset index, so the index (class pixels, episodes) is "
    "stale; restore the file, or prepare the dataset again (a generated dataset: delete its folder first)"
)


def read_image_file(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """RGB uint8 [H, W, 3]; a missing, corrupt or changed file raises :class:`DataError` naming it."""
    source = _read_checked(path, expected_sha256, "image")
    try:
        with Image.open(source) as img:
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image file is missing: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"image file is corrupt or unreadable: {path} ({err})") from None


def read_label_file(path: Path, expected_sha256: str | None = None) -> np.ndarray:
    """Single-channel uint8 [H, W] label image; errors name the file."""
    source = _read_checked(path, expected_sha256, "label")
    try:
        with Image.open(source) as img:
            img.load()
            if img.mode not in ("L", "P", "I", "I;16"):
                raise DataError(f"label file {path} has mode {img.mode}; expected a single-channel PNG")
            arr = np.asarray(img)
    except FileNotFoundError:
        raise DataError(f"label file is missing: {path}") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"label file is corrupt or unreadable: {path} ({err})") from None
    if arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise DataError(f"label file {path} holds values outside 0..255")
        arr = arr.astype(np.uint8)
    return arr


class DatasetAdapter:
    """Base class of dataset adapters: class list, folds, and access to a prepared index.

    Subclasses set ``class_names`` (class id = position + 1) and implement ``fold_classes``; they may
    declare ``Options`` (validated from ``dataset.options``) and a ``prepare`` classmethod.
    """

    class_names: ClassVar[tuple[str, ...]] = ()
    Options: ClassVar[type] = NoOptions
    registry_name: ClassVar[str] = ""
    train_split: ClassVar[str] = "train"
    val_split: ClassVar[str] = "val"
    test_split: ClassVar[str] = "test"
    pretrain_split: ClassVar[str | None] = None
    """A split of auxiliary classes that belong to no fold, for backbone pretraining shared by every
    fold (``pretrain.classes: auxiliary``); its masks hold ids 1..``pretrain_num_classes``."""
    pretrain_num_classes: ClassVar[int] = 0

    def __init__(self, root: str | Path, options: dict[str, Any] | None = None) -> None:
        from fsseg.schema import from_dict

        self.root = Path(root)
        self.options = from_dict(self.Options, options or {}, "config.dataset.options")
        descriptor = self.root / DESCRIPTOR
        if not descriptor.is_file():
            raise DataError(
                f"{descriptor} not found: the dataset {self.registry_name!r} is not prepared at {self.root}; "
                f"run `fsseg prepare {self.registry_name} ...` first"
            )
        try:
            self.descriptor = json.loads(descriptor.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{descriptor} is not valid JSON: {err}") from None
        if self.descriptor.get("dataset") != self.registry_name:
            raise DataError(
                f"{descriptor} describes dataset {self.descriptor.get('dataset')!r}, "
                f"not {self.registry_name!r}"
            )
        if self.descriptor.get("format_version") != INDEX_FORMAT_VERSION:
            raise DataError(
                f"{descriptor} has index format {self.descriptor.get('format_version')!r}, this fsseg reads "
                f"format {INDEX_FORMAT_VERSION} (with per-file checksums); run `fsseg prepare "
                f"{self.registry_name} ...` again"
            )
        self._entries: dict[str, dict[str, ImageEntry]] = {}

    # --- preparation (subclasses override) -----------------------------------------------------
    @classmethod
    def add_prepare_arguments(cls, parser: Any) -> None:
        """Options of ``fsseg prepare <name>``; datasets without a prepare step add none."""

    @classmethod
    def prepare_from_args(cls, args: Any) -> None:
        raise DataError(f"dataset {cls.registry_name!r} has no prepare step")

    @classmethod
    def prepare_arguments(cls, dataset: Any) -> list[str]:
        """The ``fsseg prepare`` options an experiment config's ``dataset`` section fixes: where the prepared
        dataset goes (``dataset.root``) and what else of it the config states. The workflow passes these, so
        its ``prepare`` entry holds only the rest (where the release was unpacked, generation settings)."""
        return []

    @classmethod
    def prepare_output(cls, args: Any) -> Path:
        """The folder ``fsseg prepare`` writes for these arguments (locked while it runs)."""
        return Path(args.root)

    # --- classes and folds -----------------------------------------------------------------------
    @classmethod
    def fold_classes(cls, options: Any) -> list[list[int]]:
        """Novel class ids of each fold."""
        raise NotImplementedError

    @classmethod
    def num_folds(cls, options: dict[str, Any] | Any) -> int:
        from fsseg.schema import from_dict

        if isinstance(options, dict):
            options = from_dict(cls.Options, options, "config.dataset.options")
        return len(cls.fold_classes(options))

    @cached_property
    def folds(self) -> list[list[int]]:
        return self.fold_classes(self.options)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def class_name(self, class_id: int) -> str:
        return self.class_names[class_id - 1]

    @classmethod
    def split_num_classes(cls, split: str) -> int:
        """Label ids 1..N a split's masks may hold: the auxiliary classes in the pretraining split."""
        return cls.pretrain_num_classes if split == cls.pretrain_split else len(cls.class_names)

    def novel_classes(self, fold: int) -> list[int]:
        if not 0 <= fold < len(self.folds):
            raise DataError(
                f"fold {fold} is out of range for {self.registry_name!r} ({len(self.folds)} folds)"
            )
        return list(self.folds[fold])

    def base_classes(self, fold: int) -> list[int]:
        novel = set(self.novel_classes(fold))
        used = sorted({c for fold_ids in self.folds for c in fold_ids})
        return [c for c in used if c not in novel]

    # --- the index ---------------------------------------------------------------------------------
    def index_path(self, split: str) -> Path:
        return self.root / "index" / f"{split}.json"

    def entries(self, split: str) -> dict[str, ImageEntry]:
        if split not in self._entries:
            path = self.index_path(split)
            if not path.is_file():
                raise DataError(f"split {split!r} of {self.registry_name!r} has no index file {path}")
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

    # --- files ---------------------------------------------------------------------------------------
    def _resolve(self, rel: str) -> Path:
        path = Path(rel)
        return path if path.is_absolute() else self.root / path

    def load_image(self, split: str, image_id: str) -> np.ndarray:
        entry = self._entry(split, image_id)
        image = read_image_file(self._resolve(entry.image), entry.image_sha256)
        if image.shape[:2] != entry.size:
            raise DataError(
                f"image {self._resolve(entry.image)} is {image.shape[1]}x{image.shape[0]} but the index says "
                f"{entry.size[1]}x{entry.size[0]}; re-run `fsseg prepare {self.registry_name}`"
            )
        return image

    def load_mask(self, split: str, image_id: str) -> np.ndarray:
        """Class-id mask [H, W] uint8, checked against the image size and the class list."""
        entry = self._entry(split, image_id)
        path = self._resolve(entry.mask)
        mask = read_label_file(path, entry.mask_sha256)
        if mask.shape != entry.size:
            raise DataError(
                f"mask {path} is {mask.shape[1]}x{mask.shape[0]} "
                f"but its image is {entry.size[1]}x{entry.size[0]}"
            )
        n_classes = self.split_num_classes(split)
        bad = np.setdiff1d(np.unique(mask), [*range(n_classes + 1), IGNORE_INDEX])
        if bad.size:
            raise DataError(
                f"mask {path} holds label value(s) {bad.tolist()} outside the {n_classes} classes of "
                f"split {split!r} of {self.registry_name!r} (allowed: 0..{n_classes}, {IGNORE_INDEX})"
            )
        return mask

    def _entry(self, split: str, image_id: str) -> ImageEntry:
        try:
            return self.entries(split)[image_id]
        except KeyError:
            raise DataError(
                f"image id {image_id!r} is not in split {split!r} of {self.registry_name!r}"
            ) from None


def open_dataset(name: str, root: str | Path, options: dict[str, Any] | None = None) -> DatasetAdapter:
    from fsseg.registry import DATASETS

    return DATASETS.get(name)(root, options)


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
    from fsseg.atomic import write_json

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
