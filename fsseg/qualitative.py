"""``fsseg predict``: save a trained run's predictions on the first episodes of its test manifest.

The report's qualitative grid is drawn from these files (people judge segmentation by looking), so the
model is run here once and never by the report. One ``.npz`` file per run holds, for episodes
``0 .. N-1`` of the manifest the run is evaluated on:

==========================  ==========================  ==================================================
key                         shape / dtype               meaning
==========================  ==========================  ==================================================
``query_images``            [N, H, W, 3] uint8          query images, RGB, at their original resolution
``query_sizes``             [N, 2] int64                (height, width) of each query before padding
``support_images``          [N, K, Hs, Ws, 3] uint8     support images, RGB, original resolution
``support_masks``           [N, K, Hs, Ws] uint8        support masks: 1 class, 0 background, 255 ignore
``support_sizes``           [N, K, 2] int64             (height, width) of each support before padding
``query_labels``            [N, H, W] uint8             ground truth of the query: 0, 1, 255 (ignore)
``predictions``             [N, H, W] uint8             predicted mask: 0 background, 1 class
``fg_intersection``, ...    [N] int64                   the four per-episode counts of the prediction
``episode_ids``             [N] int64                   episode ids in the manifest
``class_ids``               [N] int64                   episode classes
``class_names``             [N] str                     their names
``support_ids``, ...        [N, K] str / [N] str        image ids of supports and queries
``method``, ``variant``...  0-d                         run identity (method, variant, backbone, dataset,
                                                        fold, shot, train_shot, train_seed, episode_seed,
                                                        manifest_hash, run_id)
==========================  ==========================  ==================================================

Images of one dataset may differ in size (a few UC Merced images are not 256×256), so every image is
padded at the bottom and right to the largest size in the file: images with 0, masks, labels and
predictions with 255 ("no pixel"); the ``*_sizes`` arrays give the part to keep (:func:`crop`).
Predictions are made at the original label resolution, as ``evaluate`` does with the default
``label_resolution: original``. The archive is written with fixed zip timestamps, so the same
predictions give the same bytes.
"""

from __future__ import annotations

import io
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from fsseg import IGNORE_INDEX
from fsseg.atomic import write_bytes
from fsseg.errors import DataError, FssegError
from fsseg.metrics import COUNT_COLUMNS
from fsseg.records import EVALUATION_KEYS, evaluation_identity

#: Scalar (0-d) entries that name the run the predictions come from.
IDENTITY_KEYS = (*EVALUATION_KEYS, "manifest_hash")


def _pad(arrays: list[np.ndarray], fill: int) -> np.ndarray:
    """Stack arrays of possibly different [H, W, ...] into one, padding bottom/right with ``fill``."""
    height = max(a.shape[0] for a in arrays)
    width = max(a.shape[1] for a in arrays)
    out = np.full((len(arrays), height, width, *arrays[0].shape[2:]), fill, dtype=arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0], : a.shape[1]] = a
    return out


def crop(array: np.ndarray, size: np.ndarray | tuple[int, int]) -> np.ndarray:
    """The unpadded part of one stored image or mask."""
    return array[: int(size[0]), : int(size[1])]


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed-member ``.npz`` with fixed timestamps, atomically.

    ``numpy.savez`` stamps each member with the current time; fixed stamps make reruns byte-identical.
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asanyarray(arrays[key]), allow_pickle=False)
            archive.writestr(info, member.getvalue())
    write_bytes(path, buffer.getvalue())


def predict(cfg: Any, n_episodes: int, out: str | Path, manifest_file: str | Path | None = None) -> Path:
    """Run the trained run of ``cfg`` on the first ``n_episodes`` episodes of its test manifest.

    Uses the same weights (:func:`~fsseg.engine.evaluate.load_trained`), manifest
    (:func:`~fsseg.engine.evaluate.ensure_manifest`), input tensors and inference loop
    (:func:`~fsseg.engine.infer.infer_episodes`) as ``fsseg evaluate``; returns the written file.
    """
    # Imported here: the report reads predictions files (load_predictions, crop) without torch.
    from fsseg.data.loading import binary_mask
    from fsseg.device import resolve_device
    from fsseg.engine.build import build_dataset, run_id
    from fsseg.engine.evaluate import ensure_manifest, evaluation_settings, load_trained
    from fsseg.engine.infer import infer_episodes

    if n_episodes < 1:
        raise FssegError(f"--episodes must be at least 1, got {n_episodes}")
    device = resolve_device(cfg.eval.device)
    adapter = build_dataset(cfg)
    manifest = ensure_manifest(cfg, adapter, Path(manifest_file) if manifest_file else None)
    if manifest.header["shot"] != cfg.eval.shot:
        raise FssegError(f"manifest has shot {manifest.header['shot']}, config eval.shot is {cfg.eval.shot}")
    episodes = manifest.episodes[:n_episodes]
    if len(episodes) < n_episodes:
        print(f"fsseg: the manifest has only {len(episodes)} episodes; saving all of them", file=sys.stderr)
    method = load_trained(cfg, device)
    # Original-resolution labels: what is shown next to the images is what the default protocol scores.
    # No loader workers for a handful of episodes (workers change no result).
    settings = replace(evaluation_settings(cfg), label_resolution="original", num_workers=0)
    results = infer_episodes(method, manifest, adapter, settings, device, first=n_episodes, keep_masks=True)
    predictions = [result.prediction for result in results]
    labels = [result.label for result in results]
    counts = {c: [getattr(result.counts, c) for result in results] for c in COUNT_COLUMNS}

    split = manifest.header["split"]
    query_images, support_images, support_masks = [], [], []
    for episode in episodes:
        query_images.append(adapter.load_image(split, episode.query_id))
        for support_id in episode.support_ids:
            support_images.append(adapter.load_image(split, support_id))
            support_masks.append(binary_mask(adapter.load_mask(split, support_id), episode.class_id))
    n, shot = len(episodes), len(episodes[0].support_ids)
    padded_support_images = _pad(support_images, 0)
    padded_support_masks = _pad(support_masks, IGNORE_INDEX)
    arrays: dict[str, np.ndarray] = {
        "query_images": _pad(query_images, 0),
        "query_sizes": np.array([img.shape[:2] for img in query_images], dtype=np.int64),
        "support_images": padded_support_images.reshape(n, shot, *padded_support_images.shape[1:]),
        "support_masks": padded_support_masks.reshape(n, shot, *padded_support_masks.shape[1:]),
        "support_sizes": np.array([img.shape[:2] for img in support_images], dtype=np.int64).reshape(
            n, shot, 2
        ),
        "query_labels": _pad(labels, IGNORE_INDEX),
        "predictions": _pad(predictions, IGNORE_INDEX),
        "episode_ids": np.array([e.episode_id for e in episodes], dtype=np.int64),
        "class_ids": np.array([e.class_id for e in episodes], dtype=np.int64),
        "class_names": np.array([adapter.class_name(e.class_id) for e in episodes], dtype=str),
        "query_ids": np.array([e.query_id for e in episodes], dtype=str),
        "support_ids": np.array([list(e.support_ids) for e in episodes], dtype=str),
        **{c: np.array(v, dtype=np.int64) for c, v in counts.items()},
    }
    identity = evaluation_identity(
        cfg, run_id(cfg), manifest.header["shot"], manifest.header["episode_seed"], manifest.content_hash
    )
    arrays.update({k: np.array(v) for k, v in identity.items()})
    save_npz(out, arrays)
    print(f"fsseg: {cfg.run_name}: predictions of {n} episodes → {out}", file=sys.stderr)
    return Path(out)


def load_predictions(path: str | Path) -> dict[str, Any]:
    """One predictions file as a dict: arrays as stored, identity entries as Python scalars."""
    try:
        with np.load(path, allow_pickle=False) as data:
            loaded = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DataError(f"cannot read predictions file {path}: {err}") from None
    missing = [k for k in ("predictions", "query_images", "query_labels", *IDENTITY_KEYS) if k not in loaded]
    if missing:
        raise DataError(f"{path} is not an `fsseg predict` file: no {', '.join(missing)}")
    for key in IDENTITY_KEYS:
        loaded[key] = loaded[key].item()
    loaded["path"] = str(path)
    return loaded
