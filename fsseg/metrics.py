"""The one metric accumulator: per-episode fg/bg intersection and union, reduced to three numbers.

* ``miou`` (class-wise, the standard FSS metric): for each novel class, sum of foreground
  intersections over sum of foreground unions over all its episodes; mean over the classes.
* ``fbiou``: background IoU and foreground IoU, each summed over all episodes, averaged.
* ``episode_miou``: mean over episodes of the foreground IoU of each episode.

Pixels labelled 255 are excluded before counting. An IoU whose union is zero (empty prediction and
empty ground truth) is undefined and left out of the means (reported as NaN where it stands alone).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fsseg import IGNORE_INDEX

if TYPE_CHECKING:  # torch is imported lazily: `fsseg compare` works on records alone
    import torch

COUNT_COLUMNS = ("fg_intersection", "fg_union", "bg_intersection", "bg_union")


@dataclass(frozen=True)
class EpisodeCounts:
    fg_intersection: int
    fg_union: int
    bg_intersection: int
    bg_union: int

    @property
    def fg_iou(self) -> float:
        return _ratio(self.fg_intersection, self.fg_union)


def _ratio(intersection: float, union: float) -> float:
    return intersection / union if union > 0 else math.nan


def episode_counts(prediction: torch.Tensor, label: torch.Tensor) -> EpisodeCounts:
    """Counts for one episode; ``prediction`` and ``label`` are [H, W] with 1 = foreground.

    ``label`` holds 0, 1 or 255 (ignored). ``prediction`` holds 0/1.
    """
    if prediction.shape != label.shape:
        raise ValueError(
            f"prediction {tuple(prediction.shape)} and label {tuple(label.shape)} differ in size"
        )
    valid = label != IGNORE_INDEX
    pred_fg = (prediction == 1) & valid
    true_fg = (label == 1) & valid
    pred_bg = (prediction != 1) & valid
    true_bg = (label == 0) & valid
    return EpisodeCounts(
        fg_intersection=int((pred_fg & true_fg).sum()),
        fg_union=int((pred_fg | true_fg).sum()),
        bg_intersection=int((pred_bg & true_bg).sum()),
        bg_union=int((pred_bg | true_bg).sum()),
    )


def summarize(records: Iterable[Mapping[str, Any]], class_ids: Iterable[int] | None = None) -> dict[str, Any]:
    """The three named metrics and per-class IoU from per-episode records.

    ``records`` are mappings with ``class_id`` and the four count columns (rows of ``records.csv``
    or dicts). ``class_ids`` fixes the classes averaged over (default: those present); a listed
    class with no episode is an error, since the mean would silently change meaning.
    """
    per_class_i: dict[int, float] = {}
    per_class_u: dict[int, float] = {}
    fg_i = fg_u = bg_i = bg_u = 0.0
    episode_ious: list[float] = []
    n = 0
    for row in records:
        cid = int(row["class_id"])
        counts = [float(row[c]) for c in COUNT_COLUMNS]
        per_class_i[cid] = per_class_i.get(cid, 0.0) + counts[0]
        per_class_u[cid] = per_class_u.get(cid, 0.0) + counts[1]
        fg_i += counts[0]
        fg_u += counts[1]
        bg_i += counts[2]
        bg_u += counts[3]
        episode_ious.append(_ratio(counts[0], counts[1]))
        n += 1
    if n == 0:
        raise ValueError("no episode records to summarise")
    classes = sorted(per_class_i) if class_ids is None else sorted(class_ids)
    missing = [c for c in classes if c not in per_class_i]
    if missing:
        raise ValueError(f"classes {missing} have no episode records")
    class_iou = {c: _ratio(per_class_i[c], per_class_u[c]) for c in classes}
    defined = [v for v in class_iou.values() if not math.isnan(v)]
    fg_iou, bg_iou = _ratio(fg_i, fg_u), _ratio(bg_i, bg_u)
    fb_parts = [v for v in (fg_iou, bg_iou) if not math.isnan(v)]
    episode_defined = [v for v in episode_ious if not math.isnan(v)]
    return {
        "miou": float(np.mean(defined)) if defined else math.nan,
        "fbiou": float(np.mean(fb_parts)) if fb_parts else math.nan,
        "episode_miou": float(np.mean(episode_defined)) if episode_defined else math.nan,
        "fg_iou": fg_iou,
        "bg_iou": bg_iou,
        "class_iou": {str(c): v for c, v in class_iou.items()},
        "n_episodes": n,
    }
