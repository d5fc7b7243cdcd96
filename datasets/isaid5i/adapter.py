"""iSAID-5i: read the SDM release as users unpack it, decode its colour masks, write the index.

Release layout (``--root``)::

    train/images/P2700_1854_2110_2472_2728.png
    train/semantic_png/P2700_1854_2110_2472_2728_instance_color_RGB.png
    val/images/...                       val/semantic_png/...

Splits of the prepared index (see README.md for the reasoning):

* ``test`` = the released ``val/`` patches (what every iSAID-5i paper tests on);
* ``val``  = about 10% of the released ``train/`` patches, chosen by whole *source image* (the
  ``P2700`` prefix: patches of one source image overlap, so they must stay on one side), in the
  order of a fixed hash of the source name, topped up so that each class has validation images;
* ``train`` = the other released ``train/`` patches.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fsseg.data.adapter import DatasetAdapter
from fsseg.data.files import read_image_file
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
    staging_area,
    unit_hash,
)
from fsseg.errors import DataError
from fsseg.registry import DATASETS
from fsseg_datasets.isaid5i.classes import CLASS_NAMES, FOLDS, PALETTE, RELEASED_COUNTS

IMAGE_DIR = "images"
MASK_DIR = "semantic_png"
MASK_SUFFIX = "_instance_color_RGB.png"
RELEASED_SPLITS = ("train", "val")
OUR_SPLIT_OF_RELEASED_VAL = "test"

VAL_FRACTION = 0.10
"""Share of released-train patches held out (by whole source image) for checkpoint selection."""
VAL_MIN_IMAGES_PER_CLASS = 20
"""Top-up target: source images are added until a class has this many validation patches..."""
VAL_MAX_CLASS_SHARE = 0.20
"""... or until this share of the class's released-train patches is held out, whichever comes first."""
FEW_IMAGES = 6
"""Below this many images of a class in a split, 5-shot episodes (5 supports + 1 query) are impossible."""

DEFAULT_OUT = "fsseg_prepared"

# Sorted 24-bit colour codes and the label id of each, for a vectorised palette lookup.
_CODES = np.array([(r << 16) | (g << 8) | b for r, g, b in PALETTE], dtype=np.int64)
_ORDER = np.argsort(_CODES)
_SORTED_CODES = _CODES[_ORDER]
_SORTED_IDS = _ORDER.astype(np.uint8)


def decode_colour_mask(rgb: np.ndarray) -> tuple[np.ndarray, list[tuple[tuple[int, int, int], int]]]:
    """Label ids [H, W] of an RGB colour mask, and every colour not in the palette with its pixel count.

    Pixels of unknown colours get id 0 in the returned array; callers must treat any unknown colour
    as an error (a colour is never guessed).
    """
    rgb = rgb.astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pos = np.minimum(np.searchsorted(_SORTED_CODES, codes), len(_SORTED_CODES) - 1)
    known = _SORTED_CODES[pos] == codes
    ids = np.where(known, _SORTED_IDS[pos], 0).astype(np.uint8)
    unknown: list[tuple[tuple[int, int, int], int]] = []
    if not known.all():
        values, counts = np.unique(codes[~known], return_counts=True)
        unknown = [
            (((int(v) >> 16) & 255, (int(v) >> 8) & 255, int(v) & 255), int(n))
            for v, n in zip(values, counts, strict=True)
        ]
    return ids, unknown


def source_image(patch_id: str) -> str:
    """The iSAID source image a patch was cut from (``P2700_1854_2110_2472_2728`` → ``P2700``)."""
    return patch_id.split("_", 1)[0]


@dataclass(frozen=True)
class _PatchJob:
    patch_id: str
    image_path: str
    mask_path: str
    staged_mask: str


@dataclass(frozen=True)
class _PatchResult:
    patch_id: str
    size: tuple[int, int] | None
    class_pixels: dict[int, int] | None
    problems: tuple[Problem, ...]


def _check_patch(job: _PatchJob) -> _PatchResult:
    """Read one image and its colour mask, check them, and stage the decoded index PNG."""
    problems: list[Problem] = []
    image = rgb = None
    try:
        image = read_image_file(Path(job.image_path))
    except DataError as err:
        problems.append(("unreadable file", str(err)))
    try:
        rgb = read_image_file(Path(job.mask_path))
    except DataError as err:
        problems.append(("unreadable file", str(err).replace("image file", "mask file")))
    if image is None or rgb is None:
        return _PatchResult(job.patch_id, None, None, tuple(problems))
    if image.shape[:2] != rgb.shape[:2]:
        problems.append(
            (
                "wrong size",
                f"mask {job.mask_path} is {rgb.shape[1]}x{rgb.shape[0]} but its image {job.image_path} is "
                f"{image.shape[1]}x{image.shape[0]}",
            )
        )
    ids, unknown = decode_colour_mask(rgb)
    if unknown:
        listed = ", ".join(f"RGB{colour} ({count} px)" for colour, count in unknown[:8])
        more = f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""
        problems.append(
            ("unknown colour", f"{job.mask_path}: colour(s) {listed}{more} not in the iSAID-5i palette")
        )
    if problems:
        return _PatchResult(job.patch_id, None, None, tuple(problems))
    staged = Path(job.staged_mask)
    staged.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids).save(staged, format="PNG")
    row = build_index_entry(job.patch_id, "", "", ids, len(CLASS_NAMES))
    class_pixels = {int(k): v for k, v in row["class_pixels"].items()}
    return _PatchResult(job.patch_id, (int(ids.shape[0]), int(ids.shape[1])), class_pixels, ())


def _scan_release(root: Path, problems: Problems) -> dict[str, dict[str, tuple[Path, Path]]]:
    """(image, mask) paths per released split and patch id; unmatched files become problems."""
    pairs: dict[str, dict[str, tuple[Path, Path]]] = {}
    for released in RELEASED_SPLITS:
        image_dir, mask_dir = root / released / IMAGE_DIR, root / released / MASK_DIR
        missing = [d for d in (image_dir, mask_dir) if not d.is_dir()]
        for folder in missing:
            problems.add("missing folder", f"{folder} does not exist")
        if missing:
            continue
        images = {
            p.stem: p
            for p in image_dir.iterdir()
            if p.is_file()
            and p.suffix.lower() == ".png"
            and "_instance_" not in p.name
            and not p.name.startswith(".")
        }
        masks = {
            p.name[: -len(MASK_SUFFIX)]: p
            for p in mask_dir.iterdir()
            if p.is_file() and p.name.endswith(MASK_SUFFIX) and not p.name.startswith(".")
        }
        for patch_id in sorted(masks.keys() - images.keys()):
            problems.add(
                "missing image", f"mask {masks[patch_id]} has no image {image_dir / (patch_id + '.png')}"
            )
        for patch_id in sorted(images.keys() - masks.keys()):
            problems.add(
                "missing mask", f"image {images[patch_id]} has no mask {mask_dir / (patch_id + MASK_SUFFIX)}"
            )
        pairs[released] = {pid: (images[pid], masks[pid]) for pid in sorted(images.keys() & masks.keys())}
    return pairs


def select_validation_sources(class_pixels: dict[str, dict[int, int]]) -> set[str]:
    """Source images of released-train patches held out for validation (deterministic).

    Sources are taken in the order of ``sha256("isaid5i/val/<source>")`` until they hold
    :data:`VAL_FRACTION` of the patches; then, class by class, further sources containing the class
    are added (same order) while it has fewer than :data:`VAL_MIN_IMAGES_PER_CLASS` validation
    patches and less than :data:`VAL_MAX_CLASS_SHARE` of its patches are held out.
    """
    by_source: dict[str, list[str]] = defaultdict(list)
    for patch_id in sorted(class_pixels):
        by_source[source_image(patch_id)].append(patch_id)
    order = sorted(by_source, key=lambda s: (unit_hash(f"isaid5i/val/{s}"), s))
    chosen: set[str] = set()
    held = 0
    for source in order:
        if held >= VAL_FRACTION * len(class_pixels):
            break
        chosen.add(source)
        held += len(by_source[source])

    def patches_with(c: int, sources: set[str] | list[str]) -> int:
        return sum(1 for s in sources for p in by_source[s] if class_pixels[p].get(c, 0) > 0)

    for c in range(1, len(CLASS_NAMES) + 1):
        total = patches_with(c, order)
        wanted = min(VAL_MIN_IMAGES_PER_CLASS, math.ceil(VAL_MAX_CLASS_SHARE * total))
        have = patches_with(c, chosen)
        for source in order:
            if have >= wanted:
                break
            if source in chosen:
                continue
            gained = patches_with(c, [source])
            if gained:
                chosen.add(source)
                have += gained
    return chosen


def _warn_counts(pairs: dict[str, dict[str, tuple[Path, Path]]], root: Path) -> None:
    for released, expected in RELEASED_COUNTS.items():
        found = len(pairs.get(released, {}))
        if found != expected:
            warnings.warn(
                f"iSAID-5i release at {root}: {released}/ has {found} image-mask pairs, the published "
                f"release has {expected:,} (difference {found - expected:+,}); results on this copy are "
                "not comparable with published numbers",
                UserWarning,
                stacklevel=3,
            )


def _all_classes(row: dict[str, Any]) -> list[int]:
    return sorted(int(c) for c in row["class_pixels"])


@DATASETS.register("isaid5i")
class Isaid5i(DatasetAdapter):
    """iSAID-5i (SDM, TGRS 2021): 256x256 iSAID patches, 15 classes in 3 folds; colour masks decoded once."""

    class_names = CLASS_NAMES

    @classmethod
    def fold_classes(cls, options: Any = None) -> list[list[int]]:
        return [list(fold) for fold in FOLDS]

    @classmethod
    def protocol_caption(cls, options: Any = None) -> str:
        """One line for table captions: which protocol the numbers follow."""
        return (
            "iSAID-5i (SDM protocol: 15 classes, 3 folds; test = released val set; checkpoint validation on "
            f"{VAL_FRACTION:.0%} of released-train source images, held out from training)"
        )

    # --- prepare ---------------------------------------------------------------------------------
    @classmethod
    def prepare_arguments(cls, dataset: Any) -> list[str]:
        """``--out`` is ``dataset.root``."""
        return ["--out", str(dataset.root)]

    @classmethod
    def add_prepare_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--root",
            required=True,
            help="folder of the iSAID-5i release as unpacked: train/{images,semantic_png}/, "
            "val/{images,semantic_png}/",
        )
        parser.add_argument(
            "--out",
            help=f"folder for the prepared index and index masks; point config dataset.root here "
            f"(default: ROOT/{DEFAULT_OUT})",
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=default_workers(),
            help="processes that check and decode files in parallel (default: the cores, at most 8)",
        )

    @classmethod
    def prepare_output(cls, args: argparse.Namespace) -> Path:
        """The prepared folder (``--out``, default under the release root), locked while preparing."""
        return Path(args.out) if args.out is not None else Path(args.root) / DEFAULT_OUT

    @classmethod
    def prepare_from_args(cls, args: argparse.Namespace) -> Path:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                out = cls.prepare(args.root, args.out, workers=args.workers, verbose=True)
            finally:  # warnings (e.g. a count that differs from the release) also matter when it fails
                for warning in caught:
                    print(f"fsseg: warning: {warning.message}", file=sys.stderr)
        print(f"fsseg: prepared isaid5i at {out}; set dataset.root: {out}")
        return out

    @classmethod
    def prepare(
        cls, root: str | Path, out: str | Path | None = None, workers: int = 1, verbose: bool = False
    ) -> Path:
        """Check the whole release, then write index masks, split lists and the index under ``out``.

        Every problem (missing image or mask, unreadable file, wrong size, unknown colour) is reported
        in one :class:`DataError`, and then nothing is written. Returns the prepared folder.
        """
        root = Path(root)
        out = Path(out) if out is not None else root / DEFAULT_OUT
        if not root.is_dir():
            raise DataError(f"iSAID-5i release folder {root} does not exist")
        problems = Problems()
        pairs = _scan_release(root, problems)
        if not pairs:
            problems.raise_if_any(
                f"iSAID-5i release at {root} (expected train/ and val/ with images/, semantic_png/)"
            )
        if not any(pairs.values()):
            problems.add("empty release", f"no image-mask pairs found under {root}")
            problems.raise_if_any(f"iSAID-5i release at {root}")
        _warn_counts(pairs, root)

        with staging_area(out) as staging:
            jobs = [
                _PatchJob(pid, str(image), str(mask), str(staging / "masks" / released / f"{pid}.png"))
                for released in sorted(pairs)
                for pid, (image, mask) in pairs[released].items()
            ]
            (staging / "masks").mkdir()
            results: dict[str, dict[str, _PatchResult]] = defaultdict(dict)
            job_split = [released for released in sorted(pairs) for _ in pairs[released]]
            step = max(1, len(jobs) // 10)
            for done, (released, result) in enumerate(
                zip(job_split, parallel_map(_check_patch, jobs, workers), strict=True), start=1
            ):
                problems.extend(result.problems)
                results[released][result.patch_id] = result
                if verbose and (done % step == 0 or done == len(jobs)):
                    print(f"fsseg: checked {done}/{len(jobs)} patches", file=sys.stderr)
            problems.raise_if_any(f"iSAID-5i release at {root}")

            train_pixels = {
                pid: r.class_pixels
                for pid, r in results.get("train", {}).items()
                if r.class_pixels is not None
            }
            val_sources = select_validation_sources(train_pixels)
            rows: dict[str, list[dict[str, Any]]] = {"train": [], "val": [], OUR_SPLIT_OF_RELEASED_VAL: []}
            for released in sorted(results):
                for pid, result in results[released].items():
                    image_path, _ = pairs[released][pid]
                    assert result.size is not None and result.class_pixels is not None
                    row = {
                        "id": pid,
                        "image": relative_path(image_path, out),
                        "mask": f"masks/{released}/{pid}.png",
                        "size": list(result.size),
                        "class_pixels": {str(c): n for c, n in sorted(result.class_pixels.items())},
                    }
                    if released == "val":
                        rows[OUR_SPLIT_OF_RELEASED_VAL].append(row)
                    elif source_image(pid) in val_sources:
                        rows["val"].append(row)
                    else:
                        rows["train"].append(row)

            folds = cls.fold_classes()
            summary = class_image_counts(rows, CLASS_NAMES, _all_classes)
            few = few_images_warning(summary, range(1, len(CLASS_NAMES) + 1), CLASS_NAMES, FEW_IMAGES)
            if few:
                warnings.warn(few, UserWarning, stacklevel=2)
            files = {f"lists/{name}": text for name, text in split_lists(rows, folds, _all_classes).items()}
            files["lists/summary.json"] = _summary_json(
                {
                    "dataset": "isaid5i",
                    "protocol": cls.protocol_caption(),
                    "released_patches": {r: len(pairs.get(r, {})) for r in RELEASED_SPLITS},
                    "published_patches": RELEASED_COUNTS,
                    "validation_source_images": sorted(val_sources),
                    "splits": summary,
                }
            )
            publish_prepared(out, "isaid5i", rows, {}, files, {"masks": staging / "masks"})
        return out


def _summary_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
