"""Checking and preparing released datasets: collect every problem, then fail once; split helpers.

A prepare step checks the whole release before it writes anything. :class:`Problems` gathers what
is wrong (grouped by kind, each line naming the file) and raises one :class:`~fsseg.errors.DataError`
listing all of it, so a user fixes a broken copy in one pass instead of one error per run.

The other helpers are shared by the real-dataset adapters: a stable hash that places an item in a
split independently of every other item, a deterministic parallel map for per-file checks, and the
human-readable split lists written next to the index.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from fsseg.errors import DataError
from fsseg.workers import worker_pool

T = TypeVar("T")
R = TypeVar("R")

Problem = tuple[str, str]
"""(kind, message): kind groups the report ("missing image", "unreadable file", ...)."""


class Problems:
    """Every problem found in a release, reported together in one :class:`DataError`."""

    def __init__(self, max_per_kind: int = 50) -> None:
        self.max_per_kind = max_per_kind
        self._by_kind: dict[str, list[str]] = defaultdict(list)

    def add(self, kind: str, message: str) -> None:
        self._by_kind[kind].append(message)

    def extend(self, problems: Iterable[Problem]) -> None:
        for kind, message in problems:
            self.add(kind, message)

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_kind.values())

    def __bool__(self) -> bool:
        return len(self) > 0

    def kinds(self) -> dict[str, int]:
        """Number of problems of each kind."""
        return {kind: len(messages) for kind, messages in sorted(self._by_kind.items())}

    def report(self, context: str) -> str:
        """All problems, grouped by kind (sorted, so the same release gives the same report)."""
        lines = [f"{context}: {len(self)} problem(s) found; nothing was written."]
        for kind, messages in sorted(self._by_kind.items()):
            lines.append(f"  {kind} ({len(messages)}):")
            shown = sorted(messages)
            for message in shown[: self.max_per_kind]:
                lines.append(f"    - {message}")
            if len(shown) > self.max_per_kind:
                lines.append(f"    ... and {len(shown) - self.max_per_kind} more of this kind")
        return "\n".join(lines)

    def raise_if_any(self, context: str) -> None:
        if self:
            raise DataError(self.report(context))


def unit_hash(key: str) -> float:
    """A number in [0, 1) fixed by ``key`` alone (sha256), for splits that survive added/removed items."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def default_workers() -> int:
    """Worker processes for per-file checks: the machine's cores, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def parallel_map(fn: Callable[[T], R], items: Sequence[T], workers: int = 1) -> Iterator[R]:
    """``map(fn, items)`` in input order, in ``workers`` processes when more than one (``fn`` picklable)."""
    if workers <= 1 or len(items) < 2:
        yield from map(fn, items)
        return
    chunksize = max(1, min(64, len(items) // (4 * workers)))
    with worker_pool(workers) as pool:
        yield from pool.map(fn, items, chunksize=chunksize)


def few_images_warning(
    summary: dict[str, Any], class_ids: Iterable[int], names: Sequence[str], minimum: int
) -> str:
    """Warning text naming, per split, the classes with fewer than ``minimum`` episode images ("" if none)."""
    parts = []
    for split, info in sorted(summary.items()):
        short = [
            f"{names[c - 1]} {info['images_per_class'][names[c - 1]]}"
            for c in sorted(class_ids)
            if info["images_per_class"][names[c - 1]] < minimum
        ]
        if short:
            parts.append(f"{split}: {', '.join(short)}")
    if not parts:
        return ""
    return (
        f"some classes have fewer than {minimum} images usable for episodes ({'; '.join(parts)}); "
        f"{minimum - 1}-shot episodes need {minimum} (shot supports + 1 query)"
    )


def relative_path(path: Path, start: Path) -> str:
    """``path`` relative to ``start`` with forward slashes (the index stays valid when both move)."""
    return Path(os.path.relpath(path.resolve(), start.resolve())).as_posix()


def split_lists(
    rows_by_split: dict[str, list[dict[str, Any]]],
    folds: list[list[int]],
    episode_classes: Callable[[dict[str, Any]], Iterable[int]],
    train_split: str = "train",
) -> dict[str, str]:
    """Text lists ``<split>_fold<f>.txt``: one ``image_id class_id`` line per usable (image, class) pair.

    The training split lists the fold's base classes, every other split its novel classes; pairs
    are those the index offers for episodes before the harness's ``min_object_px`` filter.
    """
    used = sorted({c for fold in folds for c in fold})
    files = {}
    for split, rows in sorted(rows_by_split.items()):
        for f, novel in enumerate(folds):
            wanted = [c for c in used if c not in novel] if split == train_split else list(novel)
            pairs = sorted((c, row["id"]) for row in rows for c in episode_classes(row) if c in wanted)
            files[f"{split}_fold{f}.txt"] = "".join(f"{image_id} {c}\n" for c, image_id in pairs)
    return files


@contextlib.contextmanager
def staging_area(out: Path) -> Iterator[Path]:
    """A scratch folder inside ``out`` for files written while checking; gone afterwards.

    If the block fails, the scratch folder goes, and so does every folder this call created, so a
    failed prepare leaves the disk as it found it.
    """
    first_new = None
    for folder in [out, *out.parents]:
        if folder.exists():
            break
        first_new = folder
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".fsseg-staging-", dir=out))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if first_new is not None:
            shutil.rmtree(first_new, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)


def publish_prepared(
    out: Path,
    dataset: str,
    rows_by_split: dict[str, list[dict[str, Any]]],
    options: dict[str, Any],
    text_files: dict[str, str],
    staged_dirs: dict[str, Path] | None = None,
) -> None:
    """Move staged folders into ``out``, write the lists, then the index with its descriptor last.

    The old descriptor goes first, so a prepare killed half-way is never mistaken for a complete one;
    every file is written atomically (:mod:`fsseg.atomic`).
    """
    from fsseg.atomic import write_text
    from fsseg.data.index import DESCRIPTOR, write_index

    (out / DESCRIPTOR).unlink(missing_ok=True)
    for name, staged in sorted((staged_dirs or {}).items()):
        final = out / name
        old = out / f".old-{name}-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        staged.rename(final)
        if old.exists():
            shutil.rmtree(old)
    for folder in sorted({Path(rel).parts[0] for rel in text_files if len(Path(rel).parts) > 1}):
        if (out / folder).is_dir():
            shutil.rmtree(out / folder)  # lists of an earlier prepare must not linger
    for rel, text in sorted(text_files.items()):
        write_text(out / rel, text)
    write_index(out, dataset, rows_by_split, options)


def class_image_counts(
    rows_by_split: dict[str, list[dict[str, Any]]],
    class_names: Sequence[str],
    episode_classes: Callable[[dict[str, Any]], Iterable[int]],
) -> dict[str, Any]:
    """Per split: number of images and, per class name, images usable for that class in episodes."""
    summary: dict[str, Any] = {}
    for split, rows in sorted(rows_by_split.items()):
        per_class = {name: 0 for name in class_names}
        for row in rows:
            for c in episode_classes(row):
                per_class[class_names[c - 1]] += 1
        summary[split] = {"images": len(rows), "images_per_class": per_class}
    return summary
