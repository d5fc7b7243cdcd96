"""DLRSD: read UC Merced images and DLRSD labels as users unpack them, check them, write the index.

Layout under ``--root``::

    UCMerced_LandUse/Images/<scene>/<scene>NN.tif    RGB image (a few are not 256x256)
    DLRSD/Images/<scene>/<scene>NN.png               label image, pixel value = class id 1..17

The labels are already single-channel class-id PNGs, so the index points at them (nothing is
rewritten). Which (image, class) pairs each split offers for episodes depends on the variant
(see README.md): every index row carries ``episode_classes``, and :meth:`Dlrsd.images_with_class`
honours it, while ``class_pixels`` always counts every class in the label (so ``train_filter`` and
``min_object_px`` see the true content of an image).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from fsseg import IGNORE_INDEX
from fsseg.data.adapter import DatasetAdapter
from fsseg.data.files import read_image_file, read_label_file
from fsseg.data.index import build_index_entry
from fsseg.data.validation import (
    Problem,
    Problems,
    class_image_counts,
    default_workers,
    few_images_warning,
    parallel_map,
    publish_prepared,
    relative_path,
    split_lists,
    unit_hash,
)
from fsseg.errors import DataError
from fsseg.registry import DATASETS
from fsseg.schema import opt
from fsseg_datasets.dlrsd.classes import (
    CLASS_NAMES,
    RELEASED_IMAGES,
    VARIANT_FOLDS,
    VARIANT_PAPERS,
    dropped_classes,
)

IMAGE_DIR = ("UCMerced_LandUse", "Images")
LABEL_DIR = ("DLRSD", "Images")
IMAGE_SUFFIXES = (".tif", ".tiff")
LABEL_SUFFIX = ".png"

VAL_FRACTION = 0.10
"""Share of images held out (by a fixed hash of the image name) for checkpoint-selection episodes."""
TEST_PAIR_FRACTION = 0.30
"""Variant A: share of each class's (image, class) pairs that are test pairs (as in PCFNet's lists)."""
FEW_IMAGES = 6
"""Below this many images of a class in a split, 5-shot episodes (5 supports + 1 query) are impossible."""

DEFAULT_OUT = "fsseg_prepared"


@dataclass
class DlrsdOptions:
    """Reading options of DLRSD (``dataset.options`` in a config)."""

    variant: Literal["A", "B"] = opt(
        "A",
        help="few-shot split: 'A' (TBRNet, PCFNet: no field, sea) or 'B' (SCCNet, HRL: no trees, water)",
    )


def _variant_of(options: Any) -> str:
    if options is None:
        return "A"
    if isinstance(options, dict):
        return str(options.get("variant", "A"))
    return str(options.variant)


@dataclass(frozen=True)
class _ImageJob:
    image_id: str
    image_path: str
    label_path: str


@dataclass(frozen=True)
class _ImageResult:
    image_id: str
    size: tuple[int, int] | None
    class_pixels: dict[int, int] | None
    problems: tuple[Problem, ...]


def _check_image(job: _ImageJob) -> _ImageResult:
    """Read one image and its label; check readability, size and label values."""
    problems: list[Problem] = []
    image = label = None
    try:
        image = read_image_file(Path(job.image_path))
    except DataError as err:
        problems.append(("unreadable file", str(err)))
    try:
        label = read_label_file(Path(job.label_path))
    except DataError as err:
        problems.append(("unreadable file", str(err)))
    if image is None or label is None:
        return _ImageResult(job.image_id, None, None, tuple(problems))
    if image.shape[:2] != label.shape:
        problems.append(
            (
                "wrong size",
                f"label {job.label_path} is {label.shape[1]}x{label.shape[0]} but its image "
                f"{job.image_path} is {image.shape[1]}x{image.shape[0]}",
            )
        )
    bad = np.setdiff1d(np.unique(label), [*range(len(CLASS_NAMES) + 1), IGNORE_INDEX])
    if bad.size:
        problems.append(
            (
                "label out of range",
                f"label {job.label_path} holds value(s) {bad.tolist()}; "
                f"DLRSD labels are 1..{len(CLASS_NAMES)}",
            )
        )
    if problems:
        return _ImageResult(job.image_id, None, None, tuple(problems))
    row = build_index_entry(job.image_id, "", "", label, len(CLASS_NAMES))
    class_pixels = {int(k): v for k, v in row["class_pixels"].items()}
    return _ImageResult(job.image_id, (int(label.shape[0]), int(label.shape[1])), class_pixels, ())


def _scan_release(root: Path, problems: Problems) -> dict[str, tuple[Path, Path]]:
    """(image, label) paths per image id (file stem, e.g. ``airplane00``); unmatched files are problems."""
    image_dir, label_dir = root.joinpath(*IMAGE_DIR), root.joinpath(*LABEL_DIR)
    missing = [d for d in (image_dir, label_dir) if not d.is_dir()]
    for folder in missing:
        problems.add("missing folder", f"{folder} does not exist")
    if missing:
        return {}

    def collect(folder: Path, suffixes: tuple[str, ...], what: str) -> dict[str, Path]:
        found: dict[str, Path] = {}
        for path in sorted(folder.glob("*/*")):
            if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in suffixes:
                continue
            if path.stem in found:
                problems.add("duplicate name", f"{what} {path} has the same name as {found[path.stem]}")
                continue
            found[path.stem] = path
        return found

    images = collect(image_dir, IMAGE_SUFFIXES, "image")
    labels = collect(label_dir, (LABEL_SUFFIX,), "label")
    for image_id in sorted(labels.keys() - images.keys()):
        scene = labels[image_id].parent.name
        problems.add(
            "missing image",
            f"label {labels[image_id]} has no image {image_dir / scene / (image_id + '.tif')}",
        )
    for image_id in sorted(images.keys() - labels.keys()):
        scene = images[image_id].parent.name
        problems.add(
            "missing label",
            f"image {images[image_id]} has no label {label_dir / scene / (image_id + '.png')}",
        )
    return {i: (images[i], labels[i]) for i in sorted(images.keys() & labels.keys())}


def validation_images(image_ids: list[str]) -> set[str]:
    """Images held out for validation episodes: ``sha256("dlrsd/val/<id>")`` in the lowest 10%."""
    return {i for i in image_ids if unit_hash(f"dlrsd/val/{i}") < VAL_FRACTION}


def divide_pairs(
    present: dict[str, list[int]], variant: str, val_ids: set[str]
) -> dict[str, dict[str, list[int]]]:
    """Per split, the classes each image offers for episodes (images offering none are left out).

    * ``val``: the held-out images, all their classes.
    * variant A: of each class's pairs, ``round(30%)`` become test pairs, taken from non-validation
      images in the order of ``sha256("dlrsd/A/test/<class>/<id>")``; every other pair is a training pair.
    * variant B: ``test`` offers every class of every non-validation image; ``train`` every class of
      every image (as in SCCNet's lists, training and test differ by class, not by image).
    """
    ids = sorted(present)
    splits: dict[str, dict[str, list[int]]] = {"train": {}, "val": {}, "test": {}}
    if variant == "A":
        test_pairs: set[tuple[str, int]] = set()
        for c in sorted({c for classes in present.values() for c in classes}):
            with_c = [i for i in ids if c in present[i]]
            n_test = math.floor(TEST_PAIR_FRACTION * len(with_c) + 0.5)
            candidates = sorted(
                (i for i in with_c if i not in val_ids),
                key=lambda i, c=c: (unit_hash(f"dlrsd/A/test/{c}/{i}"), i),
            )
            test_pairs.update((i, c) for i in candidates[:n_test])
        for i in ids:
            splits["train"][i] = [c for c in present[i] if (i, c) not in test_pairs]
            splits["test"][i] = [c for c in present[i] if (i, c) in test_pairs]
    else:
        for i in ids:
            splits["train"][i] = list(present[i])
            splits["test"][i] = [] if i in val_ids else list(present[i])
    for i in ids:
        splits["val"][i] = list(present[i]) if i in val_ids else []
    return {split: {i: cs for i, cs in per.items() if cs} for split, per in splits.items()}


def _episode_classes(row: dict[str, Any]) -> list[int]:
    return list(row["episode_classes"])


@DATASETS.register("dlrsd")
class Dlrsd(DatasetAdapter):
    """DLRSD (UC Merced, 17 labels) in the 15-class few-shot variants A (TBRNet/PCFNet) or B (SCCNet/HRL)."""

    class_names = CLASS_NAMES
    Options: ClassVar[type] = DlrsdOptions

    def __init__(self, root: str | Path, options: dict[str, Any] | None = None) -> None:
        super().__init__(root, options)
        prepared = (self.descriptor.get("options") or {}).get("variant")
        if prepared != self.options.variant:
            raise DataError(
                f"{self.root} holds DLRSD prepared for variant {prepared!r}, but the config asks for variant "
                f"{self.options.variant!r}; prepare it with `fsseg prepare dlrsd --variant "
                f"{self.options.variant} --out OTHER_FOLDER` and point dataset.root there"
            )
        self._episode_cache: dict[str, dict[str, frozenset[int]]] = {}

    @classmethod
    def fold_classes(cls, options: Any = None) -> list[list[int]]:
        return [list(fold) for fold in VARIANT_FOLDS[_variant_of(options)]]

    @classmethod
    def protocol_caption(cls, options: Any = None) -> str:
        """One line for table captions: the variant, whose protocol it is and what it drops."""
        variant = _variant_of(options)
        return (
            f"DLRSD variant {variant} ({VARIANT_PAPERS[variant]}; {' and '.join(dropped_classes(variant))} "
            "excluded, treated as background)"
        )

    # --- episodes ----------------------------------------------------------------------------------
    def episode_classes(self, split: str) -> dict[str, frozenset[int]]:
        """Classes each image of ``split`` may be used for in episodes (the variant's pair division)."""
        if split not in self._episode_cache:
            path = self.index_path(split)
            try:
                raw = json.loads(path.read_text())
                self._episode_cache[split] = {
                    row["id"]: frozenset(int(c) for c in row["episode_classes"]) for row in raw["images"]
                }
            except FileNotFoundError:
                raise DataError(f"split {split!r} of 'dlrsd' has no index file {path}") from None
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise DataError(
                    f"index file {path} is corrupt or from an older fsseg ({err!r}); "
                    "run `fsseg prepare dlrsd` again"
                ) from None
        return self._episode_cache[split]

    def images_with_class(self, split: str, class_id: int, min_object_px: int = 0) -> list[str]:
        """Sorted ids of images whose (image, class) pair is in ``split`` and passes ``min_object_px``."""
        allowed = self.episode_classes(split)
        return [
            image_id
            for image_id in super().images_with_class(split, class_id, min_object_px)
            if class_id in allowed.get(image_id, ())
        ]

    # --- prepare -----------------------------------------------------------------------------------
    @classmethod
    def prepare_arguments(cls, dataset: Any) -> list[str]:
        """``--variant`` is ``dataset.options.variant``; ``--out`` is ``dataset.root``."""
        return ["--variant", str(dataset.options["variant"]), "--out", str(dataset.root)]

    @classmethod
    def add_prepare_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--root",
            required=True,
            help="folder holding UCMerced_LandUse/Images/<scene>/*.tif and DLRSD/Images/<scene>/*.png "
            "as unpacked",
        )
        parser.add_argument(
            "--variant",
            choices=sorted(VARIANT_FOLDS),
            default="A",
            help="few-shot split: A = TBRNet/PCFNet (drops field, sea), B = SCCNet/HRL (drops trees, water); "
            "the config's dataset.options.variant must match (default: A)",
        )
        parser.add_argument(
            "--out",
            help="folder for the prepared index; point config dataset.root here "
            f"(default: ROOT/{DEFAULT_OUT}/variant_<VARIANT>)",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=default_workers(),
            help="processes that check files in parallel (default: the machine's cores, at most 8)",
        )

    @classmethod
    def prepare_output(cls, args: argparse.Namespace) -> Path:
        """The prepared folder (``--out``, default under the release root), locked while preparing."""
        return (
            Path(args.out)
            if args.out is not None
            else Path(args.root) / DEFAULT_OUT / f"variant_{args.variant}"
        )

    @classmethod
    def prepare_from_args(cls, args: argparse.Namespace) -> Path:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = cls.prepare(
                    args.root, args.out, variant=args.variant, workers=args.workers, verbose=True
                )
            finally:  # warnings (e.g. a count that differs from the release) also matter when it fails
                for warning in caught:
                    print(f"fsseg: warning: {warning.message}", file=sys.stderr)
        print(
            f"fsseg: prepared dlrsd variant {args.variant} at {out}; set dataset.root: {out} and "
            f"dataset.options.variant: {args.variant}"
        )
        return out

    @classmethod
    def prepare(
        cls,
        root: str | Path,
        out: str | Path | None = None,
        variant: str = "A",
        workers: int = 1,
        verbose: bool = False,
    ) -> Path:
        """Check every image and label, then write the split lists and the index under ``out``.

        Every problem (missing image or label, unreadable file, wrong size, label out of range) is
        reported in one :class:`DataError`, and then nothing is written. Returns the prepared folder.
        """
        if variant not in VARIANT_FOLDS:
            raise DataError(
                f"DLRSD variant {variant!r} is unknown; choose one of {', '.join(sorted(VARIANT_FOLDS))}"
            )
        root = Path(root)
        out = Path(out) if out is not None else root / DEFAULT_OUT / f"variant_{variant}"
        if not root.is_dir():
            raise DataError(f"DLRSD release folder {root} does not exist")
        problems = Problems()
        pairs = _scan_release(root, problems)
        context = f"DLRSD release at {root}"
        if not pairs:
            if not problems:
                problems.add("empty release", f"no image-label pairs found under {root}")
            problems.raise_if_any(context)
        if len(pairs) != RELEASED_IMAGES:
            warnings.warn(
                f"{context}: {len(pairs)} image-label pairs, the published release has {RELEASED_IMAGES:,} "
                f"(difference {len(pairs) - RELEASED_IMAGES:+,}); results on this copy are not comparable "
                "with published numbers",
                UserWarning,
                stacklevel=2,
            )

        jobs = [_ImageJob(i, str(image), str(label)) for i, (image, label) in pairs.items()]
        results: dict[str, _ImageResult] = {}
        step = max(1, len(jobs) // 10)
        for done, result in enumerate(parallel_map(_check_image, jobs, workers), start=1):
            problems.extend(result.problems)
            results[result.image_id] = result
            if verbose and (done % step == 0 or done == len(jobs)):
                print(f"fsseg: checked {done}/{len(jobs)} images", file=sys.stderr)
        problems.raise_if_any(context)

        folds = cls.fold_classes({"variant": variant})
        kept = {c for fold in folds for c in fold}
        present = {
            i: sorted(c for c in r.class_pixels if c in kept)
            for i, r in results.items()
            if r.class_pixels is not None
        }
        val_ids = validation_images(sorted(present))
        division = divide_pairs(present, variant, val_ids)
        rows: dict[str, list[dict[str, Any]]] = {}
        for split, per_image in division.items():
            rows[split] = []
            for image_id, classes in sorted(per_image.items()):
                image_path, label_path = pairs[image_id]
                result = results[image_id]
                assert result.size is not None and result.class_pixels is not None
                rows[split].append(
                    {
                        "id": image_id,
                        "image": relative_path(image_path, out),
                        "mask": relative_path(label_path, out),
                        "size": list(result.size),
                        "class_pixels": {str(c): n for c, n in sorted(result.class_pixels.items())},
                        "episode_classes": classes,
                    }
                )

        summary = class_image_counts(rows, CLASS_NAMES, _episode_classes)
        few = few_images_warning(summary, kept, CLASS_NAMES, FEW_IMAGES)
        if few:
            warnings.warn(few, UserWarning, stacklevel=2)
        files = {f"lists/{name}": text for name, text in split_lists(rows, folds, _episode_classes).items()}
        files["lists/summary.json"] = (
            json.dumps(
                {
                    "dataset": "dlrsd",
                    "variant": variant,
                    "protocol": cls.protocol_caption({"variant": variant}),
                    "images": len(pairs),
                    "published_images": RELEASED_IMAGES,
                    "non_square_images": sorted(
                        i for i, r in results.items() if r.size and r.size[0] != r.size[1]
                    ),
                    "validation_images": sorted(val_ids),
                    "splits": summary,
                },
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
        publish_prepared(out, "dlrsd", rows, {"variant": variant}, files)
        return out
