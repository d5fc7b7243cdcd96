"""Per-episode records: the columns of ``records.csv`` and its reading and (atomic) writing.

Kept free of torch so that statistics and reports load fast.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsseg.atomic import write_text
from fsseg.keys import EVAL_KEY, key_values
from fsseg.metrics import COUNT_COLUMNS

if TYPE_CHECKING:  # records stay importable without torch
    from fsseg.config import ExperimentConfig

#: Which run was evaluated on which test episodes: the columns that name an evaluation (the key of
#: :mod:`fsseg.keys`), shared by the per-episode records, the aggregate's evaluation table and the saved
#: predictions.
EVALUATION_KEYS = ("run_id", *EVAL_KEY)

#: The identity block of an evaluation's ``summary.json``: the evaluation key without the backbone, which
#: summaries have never held (readers take it from the folder's ``config.yaml``).
SUMMARY_KEYS = tuple(name for name in EVALUATION_KEYS if name != "backbone")

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
    values = key_values(cfg)
    values.update(shot=shot, episode_seed=episode_seed)
    return {"run_id": run_id, **values, "manifest_hash": manifest_hash}


def summary_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """The :data:`SUMMARY_KEYS` part of an :func:`evaluation_identity`, in that order."""
    return {name: identity[name] for name in SUMMARY_KEYS}


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RECORD_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    write_text(path, buffer.getvalue())


def read_records(path: str | Path) -> list[dict[str, Any]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
