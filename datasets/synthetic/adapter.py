"""Adapter and prepare step of the embedded synthetic aerial benchmark (registered as ``synthetic``).

``SyntheticAerial.prepare(root, ...)`` writes ordinary files, so training and evaluation read the
synthetic data through exactly the code paths real datasets use::

    root/images/<split>/<id>.png   RGB
    root/masks/<split>/<id>.png    mode L, class ids 0..15
    root/index/<split>.json        written by fsseg.data.index.write_index
    root/fsseg_dataset.json        written last: its presence marks a complete prepare
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import as_completed
from pathlib import Path
from typing import Any, ClassVar

from fsseg.atomic import remove_stale_temporaries, write_bytes
from fsseg.data.adapter import DatasetAdapter
from fsseg.data.index import DESCRIPTOR, INDEX_FORMAT_VERSION, build_index_entry, write_index
from fsseg.data.validation import default_workers
from fsseg.errors import DataError
from fsseg.progress import Progress
from fsseg.registry import DATASETS
from fsseg.workers import worker_pool
from fsseg_datasets.synthetic.classes import CLASS_NAMES, FOLDS, NUM_CLASSES
from fsseg_datasets.synthetic.generator import (
    AUXILIARY_CLASSES,
    PRETRAIN_SPLIT,
    SPLITS,
    GenerationParams,
    encode_png,
    generate_sample,
)

_DEFAULTS = GenerationParams()


@DATASETS.register("synthetic")
class SyntheticAerial(DatasetAdapter):
    """Procedurally generated aerial-like scenes: 15 shape-and-texture classes in 3 folds of 5.

    Reading needs no options; everything that shapes the data is a ``prepare`` parameter and is
    recorded in the dataset descriptor.
    """

    class_names: ClassVar[tuple[str, ...]] = CLASS_NAMES
    pretrain_split: ClassVar[str | None] = PRETRAIN_SPLIT
    pretrain_num_classes: ClassVar[int] = len(AUXILIARY_CLASSES)

    @classmethod
    def fold_classes(cls, options: Any) -> list[list[int]]:
        """Novel class ids of each fold (see :mod:`fsseg_datasets.synthetic.classes`)."""
        return [list(fold) for fold in FOLDS]

    # --- prepare -------------------------------------------------------------------------------------
    @classmethod
    def prepare(
        cls,
        root: str | Path,
        *,
        seed: int = _DEFAULTS.seed,
        image_size: int = _DEFAULTS.image_size,
        n_train: int = _DEFAULTS.n_train,
        n_val: int = _DEFAULTS.n_val,
        n_test: int = _DEFAULTS.n_test,
        n_pretrain: int = _DEFAULTS.n_pretrain,
        overwrite: bool = False,
        progress: bool = True,
        workers: int | None = None,
    ) -> None:
        """Generate the benchmark under ``root`` (a no-op when it is already there with these parameters).

        Every file is written atomically and the descriptor last, so a killed run leaves no
        half-written file and is simply redone by the next call. A complete copy generated with other
        parameters raises :class:`DataError` unless ``overwrite`` is set. ``workers`` processes share
        the work (default: one per CPU core, at most 8); the files do not depend on it.
        """
        params = GenerationParams(
            seed=seed,
            image_size=image_size,
            n_train=n_train,
            n_val=n_val,
            n_test=n_test,
            n_pretrain=n_pretrain,
        )
        _check_params(params)
        root = Path(root)
        wanted = params.as_dict()
        existing = _read_existing_options(root)
        if existing is not None:
            if existing == wanted:
                print(
                    f"synthetic: {root} already holds this dataset ({_describe(wanted)}); nothing to do",
                    file=sys.stderr,
                )
                return
            if not overwrite:
                raise DataError(
                    f"{root} already holds a synthetic dataset generated with {_describe(existing)}, not "
                    f"{_describe(wanted)}; choose another root, or pass overwrite=True (--overwrite) to "
                    "replace it"
                )
            # Drop the descriptor first, so an interrupted overwrite is not mistaken for a complete
            # dataset; then the old files, so no image of a larger earlier run lingers.
            (root / DESCRIPTOR).unlink()
            for sub in ("images", "masks", "index"):
                shutil.rmtree(root / sub, ignore_errors=True)

        remove_stale_temporaries(root, recursive=True)  # of a killed earlier prepare (we hold the lock)
        jobs = [
            (split_index, start, min(start + _CHUNK, count))
            for split_index, count in enumerate(params.counts().values())
            for start in range(0, count, _CHUNK)
        ]
        total = sum(params.counts().values())
        reporter = Progress("synthetic: images written", total) if progress else None
        started, written = time.perf_counter(), 0
        rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
        n_workers = min(default_workers() if workers is None else workers, len(jobs))
        if n_workers <= 1:
            for job in jobs:
                rows[SPLITS[job[0]]] += _write_images(root, params, *job)
                written += job[2] - job[1]
                if reporter is not None:
                    reporter.update(written)
        else:
            # Every image depends only on its own seed, so the files are the same whichever process
            # writes them and in whatever order.
            with worker_pool(n_workers) as pool:
                futures = {pool.submit(_write_images, root, params, *job): job for job in jobs}
                for future in as_completed(futures):
                    split_index, start, stop = futures[future]
                    rows[SPLITS[split_index]] += future.result()
                    written += stop - start
                    if reporter is not None:
                        reporter.update(written)
        os.sync()
        write_index(root, cls.registry_name, rows, options=wanted)
        if progress:
            elapsed = time.perf_counter() - started
            print(f"synthetic: {total} images written to {root} in {elapsed:.1f} s", file=sys.stderr)

    @classmethod
    def prepare_arguments(cls, dataset: Any) -> list[str]:
        """``--root`` is ``dataset.root``; ``--image-size`` is ``dataset.image_size``."""
        return ["--root", str(dataset.root), "--image-size", str(dataset.image_size)]

    @classmethod
    def add_prepare_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add the options of ``fsseg prepare synthetic``: where to write, and the generation parameters."""
        parser.add_argument(
            "--root",
            required=True,
            help="folder to write the dataset to; point config dataset.root here (e.g. data/synthetic)",
        )
        parser.add_argument(
            "--seed", type=int, default=_DEFAULTS.seed, help="generation seed (default: %(default)s)"
        )
        parser.add_argument(
            "--image-size",
            type=int,
            default=_DEFAULTS.image_size,
            help="side of the square images in pixels; object sizes scale with it (default: %(default)s)",
        )
        for split in SPLITS:
            parser.add_argument(
                f"--n-{split}",
                type=int,
                default=getattr(_DEFAULTS, f"n_{split}"),
                help=f"number of {split} images (default: %(default)s)",
            )
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="replace a dataset at --root that was generated with other parameters",
        )
        parser.add_argument(
            "--no-progress", dest="progress", action="store_false", help="do not print progress"
        )
        parser.add_argument(
            "--workers",
            type=int,
            default=None,
            help="worker processes (default: one per CPU core, at most 8); the output does not depend on it",
        )

    @classmethod
    def prepare_from_args(cls, args: argparse.Namespace) -> None:
        """Run :meth:`prepare` with parsed ``fsseg prepare synthetic`` arguments."""
        cls.prepare(
            Path(args.root),
            seed=args.seed,
            image_size=args.image_size,
            n_train=args.n_train,
            n_val=args.n_val,
            n_test=args.n_test,
            n_pretrain=args.n_pretrain,
            overwrite=args.overwrite,
            progress=args.progress,
            workers=args.workers,
        )


# Images per task handed to a worker: large enough to amortise the inter-process traffic, small
# enough to balance the load and report progress often.
_CHUNK = 100


def _write_images(
    root: Path, params: GenerationParams, split_index: int, start: int, stop: int
) -> list[dict]:
    """Generate and write images ``start..stop-1`` of one split; their index rows."""
    split = SPLITS[split_index]
    rows = []
    for image_index in range(start, stop):
        image, mask = generate_sample(params.seed, split_index, image_index, params.image_size)
        image_id = f"{split}_{image_index:05d}"
        image_rel = f"images/{split}/{image_id}.png"
        mask_rel = f"masks/{split}/{image_id}.png"
        image_png, mask_png = encode_png(image), encode_png(mask)
        # no per-file fsync: the renames keep files whole, and prepare syncs once before the index
        write_bytes(root / image_rel, image_png, fsync=False)
        write_bytes(root / mask_rel, mask_png, fsync=False)
        row = build_index_entry(image_id, image_rel, mask_rel, mask, SyntheticAerial.split_num_classes(split))
        # the checksums of the bytes just written, so write_index need not read the files back
        row["image_sha256"] = hashlib.sha256(image_png).hexdigest()
        row["mask_sha256"] = hashlib.sha256(mask_png).hexdigest()
        rows.append(row)
    return rows


def _check_params(params: GenerationParams) -> None:
    # The smallest object is 20/96 of the image side; below 24 px it would be a few pixels wide.
    if params.image_size < 24:
        raise DataError(f"synthetic: image_size must be at least 24 pixels, got {params.image_size}")
    if params.seed < 0:
        raise DataError(f"synthetic: seed must be non-negative, got {params.seed}")
    for split, count in params.counts().items():
        # Main classes go round-robin, so this many images make every class appear in every split.
        if count < NUM_CLASSES:
            raise DataError(
                f"synthetic: n_{split} must be at least {NUM_CLASSES} (one image per class), got {count}"
            )


def _read_existing_options(root: Path) -> dict[str, Any] | None:
    """Generation options of a complete prepared copy at ``root``; ``None`` when there is none."""
    path = root / DESCRIPTOR
    if not path.is_file():
        return None
    try:
        descriptor = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path} is not valid JSON ({err}); delete it to regenerate the dataset") from None
    if descriptor.get("dataset") != "synthetic":
        # Never delete files of another dataset, even with overwrite.
        raise DataError(
            f"{root} holds the prepared dataset {descriptor.get('dataset')!r}; choose an empty folder or one "
            "prepared for 'synthetic'"
        )
    if descriptor.get("format_version") != INDEX_FORMAT_VERSION:
        # An index of an older format (no file checksums) is rewritten: regenerating the same seed
        # gives the same files. The descriptor goes first, so a killed rerun is not taken as complete.
        print(f"synthetic: {root} has an index of an older format; regenerating it", file=sys.stderr)
        path.unlink()
        return None
    return dict(descriptor.get("options", {}))


def _describe(options: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(options.items()))
