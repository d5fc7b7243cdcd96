"""Episode sampling: saved test manifests and index-addressed training episodes.

Every draw happens in the main process from seeds alone, so episodes never depend on the number of
data-loader workers:

* a **test manifest** is drawn once from (dataset, fold, shot, episode_seed, n_episodes, split,
  min_object_px) and saved with a content hash; every method evaluates the same file;
* a **training episode** is a pure function of (train_seed, episode index), so a resumed run sees
  exactly the episodes an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fsseg.atomic import canonical_json, write_json
from fsseg.data.adapter import DatasetAdapter
from fsseg.errors import DataError, ManifestError

MANIFEST_FORMAT_VERSION = 1


@dataclass(frozen=True)
class Episode:
    episode_id: int
    class_id: int
    query_id: str
    support_ids: tuple[str, ...]
    support_class_id: int | None = None
    """Class whose pixels are foreground in the supports when it differs from the query's ``class_id``
    (only in the derived support-swap manifests of :mod:`fsseg.engine.diagnose`; never saved)."""

    @property
    def support_class(self) -> int:
        return self.class_id if self.support_class_id is None else self.support_class_id


def _draw_images(rng: np.random.Generator, candidates: list[str], shot: int) -> tuple[str, tuple[str, ...]]:
    """A query and ``shot`` distinct supports, none equal to the query."""
    picks = rng.choice(len(candidates), size=shot + 1, replace=False)
    return candidates[picks[0]], tuple(candidates[i] for i in picks[1:])


def _candidates_per_class(
    adapter: DatasetAdapter,
    split: str,
    class_ids: list[int],
    shot: int,
    min_object_px: int,
    exclude_classes: set[int] | None = None,
) -> dict[int, list[str]]:
    """Images usable for each class; a class with fewer than shot+1 images is an error naming it."""
    result = {}
    problems = []
    for cid in class_ids:
        images = adapter.images_with_class(split, cid, min_object_px)
        if exclude_classes:
            images = [i for i in images if not adapter.contains_any(split, i, exclude_classes - {cid})]
        if len(images) < shot + 1:
            problems.append(
                f"class {cid} ({adapter.class_name(cid)}) has {len(images)} usable image(s) "
                f"in split {split!r}, "
                f"needs at least {shot + 1} for {shot}-shot episodes"
            )
        result[cid] = images
    if problems:
        raise DataError(f"dataset {adapter.registry_name!r} at {adapter.root}: " + "; ".join(problems))
    return result


@dataclass
class EpisodeManifest:
    header: dict[str, Any]
    episodes: list[Episode]

    @property
    def content_hash(self) -> str:
        body = {"header": self.header, "episodes": [_episode_row(e) for e in self.episodes]}
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()

    def save(self, path: str | Path) -> None:
        write_json(
            path,
            {
                "header": self.header,
                "content_hash": self.content_hash,
                "episodes": [_episode_row(e) for e in self.episodes],
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> EpisodeManifest:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
            manifest = cls(
                header=raw["header"],
                episodes=[
                    Episode(
                        int(e["episode_id"]), int(e["class_id"]), str(e["query_id"]), tuple(e["support_ids"])
                    )
                    for e in raw["episodes"]
                ],
            )
            stored = raw["content_hash"]
        except FileNotFoundError:
            raise ManifestError(
                f"episode manifest {path} does not exist; create it with `fsseg episodes`"
            ) from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ManifestError(f"episode manifest {path} is corrupt: {err!r}") from None
        if manifest.content_hash != stored:
            raise ManifestError(
                f"episode manifest {path} was modified: its content no longer matches its hash"
            )
        return manifest

    def check_matches(self, adapter: DatasetAdapter, fold: int, sampler: str | None = None) -> None:
        """Refuse a manifest drawn from another dataset, fold, sampler or a changed index."""
        head = self.header
        if head["dataset"] != adapter.registry_name or head["fold"] != fold:
            raise ManifestError(
                f"manifest is for dataset {head['dataset']!r} fold {head['fold']}, "
                f"not {adapter.registry_name!r} fold {fold}"
            )
        drawn_by = head.get("sampler", "balanced")  # manifests written before samplers were named
        if sampler is not None and drawn_by != sampler:
            raise ManifestError(
                f"manifest was drawn by the {drawn_by!r} sampler, the config's eval.sampler is {sampler!r}"
            )
        if head["index_sha256"] != adapter.fingerprint(head["split"]):
            raise ManifestError(
                f"manifest was drawn from a different index of split {head['split']!r} "
                f"(dataset re-prepared since?); draw it again"
            )


def _episode_row(e: Episode) -> dict[str, Any]:
    return {
        "episode_id": e.episode_id,
        "class_id": e.class_id,
        "query_id": e.query_id,
        "support_ids": list(e.support_ids),
    }


SAMPLERS = ("balanced", "pfenet", "all_pairs")
"""Test-episode samplers (``eval.sampler``)."""


def build_test_manifest(
    adapter: DatasetAdapter,
    fold: int,
    shot: int,
    episode_seed: int,
    n_episodes: int | str,
    split: str = "test",
    min_object_px: int = 0,
    sampler: str = "balanced",
    classes: list[int] | None = None,
) -> EpisodeManifest:
    """Draw the test (or validation) episodes of a fold's novel classes (or of ``classes``, e.g. the
    base classes for the diagnostics; the header's ``novel_classes`` then lists those) with one of
    three samplers.

    * ``balanced``: classes are visited in balanced rounds (each round a fresh permutation of the novel
      classes), so every class gets ``n_episodes / n_classes`` episodes (±1) and class-wise mIoU weighs
      them fairly; query and supports are random images of the class.
    * ``pfenet`` (PFENet's ``util/dataset.py``/``test.py``): walk the split's query list (images with a
      novel-class object of at least ``min_object_px`` px, in id order, wrapping round) for
      ``n_episodes`` episodes; the class is drawn uniformly among the novel classes present in the
      query, the supports among the images where that class covers ``min_object_px`` px.
    * ``all_pairs`` (HSNet, SCCNet): every (image, novel class) pair of the split once (class by class,
      images in id order; ``n_episodes`` must be ``"all"``), the supports drawn at random.

    Every draw comes from ``(episode_seed, fold, shot, n_episodes)`` alone.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown test sampler {sampler!r}; known: {', '.join(SAMPLERS)}")
    if (n_episodes == "all") != (sampler == "all_pairs"):
        raise ValueError(f"sampler {sampler!r} does not take n_episodes {n_episodes!r}")
    classes = list(classes) if classes is not None else adapter.novel_classes(fold)
    candidates = _candidates_per_class(adapter, split, classes, shot, min_object_px)
    episodes: list[Episode] = []
    if sampler == "balanced":
        rng = np.random.default_rng([episode_seed, fold, shot, n_episodes])
        order: list[int] = []
        for episode_id in range(int(n_episodes)):
            if not order:
                order = [classes[i] for i in rng.permutation(len(classes))]
            cid = order.pop(0)
            query, supports = _draw_images(rng, candidates[cid], shot)
            episodes.append(Episode(episode_id, cid, query, supports))
    elif sampler == "pfenet":
        rng = np.random.default_rng([episode_seed, fold, shot, int(n_episodes), SAMPLERS.index(sampler)])
        usable = {c: set(images) for c, images in candidates.items()}
        queries = [i for i in adapter.image_ids(split) if any(i in usable[c] for c in classes)]
        for episode_id in range(int(n_episodes)):
            query = queries[episode_id % len(queries)]
            present = [c for c in classes if adapter.entries(split)[query].class_pixels.get(c, 0) > 0]
            cid = present[int(rng.integers(len(present)))]
            supports = _draw_supports(rng, candidates[cid], query, shot, adapter, cid, split)
            episodes.append(Episode(episode_id, cid, query, supports))
    else:
        rng = np.random.default_rng([episode_seed, fold, shot, 0, SAMPLERS.index(sampler)])
        for cid in classes:
            for query in candidates[cid]:
                supports = _draw_supports(rng, candidates[cid], query, shot, adapter, cid, split)
                episodes.append(Episode(len(episodes), cid, query, supports))
    header = {
        "format_version": MANIFEST_FORMAT_VERSION,
        "dataset": adapter.registry_name,
        "dataset_options": _options_dict(adapter),
        "fold": fold,
        "shot": shot,
        "episode_seed": episode_seed,
        "n_episodes": n_episodes,
        "sampler": sampler,
        "split": split,
        "min_object_px": min_object_px,
        "index_sha256": adapter.fingerprint(split),
        "novel_classes": classes,
    }
    return EpisodeManifest(header, episodes)


def _draw_supports(
    rng: np.random.Generator,
    candidates: list[str],
    query: str,
    shot: int,
    adapter: DatasetAdapter,
    class_id: int,
    split: str,
) -> tuple[str, ...]:
    """``shot`` distinct supports of the class other than the query."""
    others = [i for i in candidates if i != query]
    if len(others) < shot:
        raise DataError(
            f"class {class_id} ({adapter.class_name(class_id)}) has {len(others)} support image(s) other "
            f"than query {query!r} in split {split!r}, needs {shot}"
        )
    picks = rng.choice(len(others), size=shot, replace=False)
    return tuple(others[i] for i in picks)


def _options_dict(adapter: DatasetAdapter) -> dict[str, Any]:
    from fsseg.schema import to_dict

    return to_dict(adapter.options)


class TrainEpisodeSampler:
    """Training episodes of a fold's base classes, each a pure function of (train_seed, index).

    Novel-class pixels become background when masks are binarised; with ``train_filter =
    "remove_novel"`` images containing any novel class are dropped instead.
    """

    def __init__(
        self,
        adapter: DatasetAdapter,
        fold: int,
        shot: int,
        train_seed: int,
        train_filter: str = "none",
        min_object_px: int = 0,
        split: str = "train",
    ) -> None:
        self.adapter = adapter
        self.shot = shot
        self.train_seed = train_seed
        self.split = split
        self.classes = adapter.base_classes(fold)
        exclude = set(adapter.novel_classes(fold)) if train_filter == "remove_novel" else None
        self.candidates = _candidates_per_class(adapter, split, self.classes, shot, min_object_px, exclude)

    @property
    def training_images(self) -> list[str]:
        """The fold's filtered training list: images serving at least one base class (PFENet's
        ``make_dataset`` list, whose length defines an epoch)."""
        return sorted(set().union(*self.candidates.values()))

    def episode(self, index: int) -> Episode:
        rng = np.random.default_rng([self.train_seed, index])
        cid = self.classes[int(rng.integers(len(self.classes)))]
        query, supports = _draw_images(rng, self.candidates[cid], self.shot)
        return Episode(index, cid, query, supports)

    def augmentation(self, index: int) -> np.random.Generator:
        """A generator for the episode's augmentations, independent of the sampling draws."""
        return np.random.default_rng([self.train_seed, index, 1])
