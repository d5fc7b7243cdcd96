"""The dataset adapter interface: class list, folds, protocol caption, and loading checked files.

An adapter is a :class:`DatasetAdapter` subclass registered with ``@DATASETS.register("name")`` in its
package under ``datasets/``. Its prepared index (:mod:`fsseg.data.index`) is what training and
evaluation read; ``fsseg prepare`` runs its hooks (:mod:`fsseg.data.prepare`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from fsseg import IGNORE_INDEX
from fsseg.data.files import read_image_file, read_label_file
from fsseg.data.index import PreparedIndex
from fsseg.data.prepare import PrepareCommand
from fsseg.errors import DataError
from fsseg.registry import DATASETS
from fsseg.schema import from_dict


@dataclass
class NoOptions:
    """For datasets without options."""


class DatasetAdapter(PreparedIndex, PrepareCommand):
    """Base class of dataset adapters: class list, folds, and access to a prepared index.

    Subclasses set ``class_names`` (class id = position + 1) and implement ``fold_classes``; they may
    declare ``Options`` (validated from ``dataset.options``), override ``protocol_caption`` and the
    ``fsseg prepare`` hooks (:class:`~fsseg.data.prepare.PrepareCommand`). The prepared index is read
    through :class:`~fsseg.data.index.PreparedIndex`, image and label files through
    :mod:`fsseg.data.files`.
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
        self.options = from_dict(self.Options, options or {}, "config.dataset.options")
        super().__init__(root, self.registry_name)

    # --- classes and folds -----------------------------------------------------------------------
    @classmethod
    def fold_classes(cls, options: Any) -> list[list[int]]:
        """Novel class ids of each fold."""
        raise NotImplementedError

    @classmethod
    def num_folds(cls, options: dict[str, Any] | Any) -> int:
        if isinstance(options, dict):
            options = from_dict(cls.Options, options, "config.dataset.options")
        return len(cls.fold_classes(options))

    @classmethod
    def protocol_caption(cls, options: dict[str, Any] | Any | None = None) -> str:
        """One line for table captions: the dataset and the protocol its numbers follow. This default
        states the class list and folds; a dataset with a published protocol names it."""
        n_folds = cls.num_folds({} if options is None else options)
        return f"{cls.registry_name} ({len(cls.class_names)} classes, {n_folds} folds of novel classes)"

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

    # --- files ---------------------------------------------------------------------------------------
    def load_image(self, split: str, image_id: str) -> np.ndarray:
        entry = self.entry(split, image_id)
        image = read_image_file(self.resolve(entry.image), entry.image_sha256)
        if image.shape[:2] != entry.size:
            raise DataError(
                f"image {self.resolve(entry.image)} is {image.shape[1]}x{image.shape[0]} but the index says "
                f"{entry.size[1]}x{entry.size[0]}; re-run `fsseg prepare {self.registry_name}`"
            )
        return image

    def load_mask(self, split: str, image_id: str) -> np.ndarray:
        """Class-id mask [H, W] uint8, checked against the image size and the class list."""
        entry = self.entry(split, image_id)
        path = self.resolve(entry.mask)
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



def open_dataset(name: str, root: str | Path, options: dict[str, Any] | None = None) -> DatasetAdapter:
    return DATASETS.get(name)(root, options)
