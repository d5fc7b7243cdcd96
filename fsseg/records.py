"""Per-episode records: the columns of ``records.csv`` and its reading and (atomic) writing.

Kept free of torch so that statistics and reports load fast.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsseg.atomic import write_text
from fsseg.metrics import COUNT_COLUMNS

if TYPE_CHECKING:  # records stay importable without torch
    from fsseg.config import ExperimentConfig

#: Which run was evaluated on which test episodes: the columns that name an evaluation, shared by the
#: per-episode records, the aggregate's evaluation table and the saved predictions.
EVALUATION_KEYS = (
    "run_id",
    "method",
    "variant",
    "backbone",
    "dataset",
    "fold",
    "train_shot",
    "shot",
    "train_seed",
    "episode_seed",
)

RECORD_COLUMNS = (
    *EVALUATION_KEYS,
    "manifest_hash",
    "episode_id",
    "class_id",
    "class_name",
    "query_id",
    "support_ids",
    *COUNT_COLUMNS,
)


def evaluation_identity(
    cfg: ExperimentConfig, run_id: str, shot: int, episode_seed: int, manifest_hash: str
) -> dict[str, Any]:
    """The :data:`EVALUATION_KEYS` values and the manifest hash of a run tested on a manifest."""
    return {
        "run_id": run_id,
        "method": cfg.method.name,
        "variant": cfg.method.variant,
        "backbone": cfg.backbone.name,
        "dataset": cfg.dataset.name,
        "fold": cfg.fold,
        "train_shot": cfg.train.shot,
        "shot": shot,
        "train_seed": cfg.train.train_seed,
        "episode_seed": episode_seed,
        "manifest_hash": manifest_hash,
    }


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RECORD_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    write_text(path, buffer.getvalue())


def read_records(path: str | Path) -> list[dict[str, Any]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
