"""Per-episode records: the columns of ``records.csv`` and its reading and (atomic) writing.

Kept free of torch so that statistics and reports load fast.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from fsseg.atomic import write_text
from fsseg.metrics import COUNT_COLUMNS

RECORD_COLUMNS = (
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
    "manifest_hash",
    "episode_id",
    "class_id",
    "class_name",
    "query_id",
    "support_ids",
    *COUNT_COLUMNS,
)


def write_records(path: Path, records: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=RECORD_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    write_text(path, buffer.getvalue())


def read_records(path: str | Path) -> list[dict[str, Any]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))
