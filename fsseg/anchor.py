"""The external latency anchor: the official code timed next to ours once (issue 14), read from a CSV.

The official PFENet and PANet code cannot be installed here, so their latency is known only from one
side-by-side run, recorded in ``reports/anchor/official_latency.csv`` (how it was measured:
``reports/anchor/official_latency.md``). For a configuration of that table, a new measurement of
ours gives an *estimate* of ours / official::

    estimate = (our ms now / our ms in the anchor run) × (our ms / official ms in the anchor run)
             = our ms now / official ms in the anchor run

It holds only on the anchor's machine under the anchor's conditions (fp32, batch 1 episode, the
anchor's thread count) and assumes the official code's time has not changed since; every printed
estimate says so and names the conditions that differ.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsseg.errors import ConfigError

DEFAULT_ANCHOR = Path(__file__).resolve().parents[1] / "reports" / "anchor" / "official_latency.csv"
"""The anchor table of a source checkout (not part of an installed wheel)."""

_REQUIRED = (
    "method",
    "variant",
    "backbone",
    "image_size",
    "shot",
    "official_code",
    "official_ms",
    "ours_ms",
    "threads",
    "batch_episodes",
    "precision",
    "cpu",
)


@dataclass(frozen=True)
class AnchorRow:
    """One configuration timed with the official code and ours in the same run."""

    method: str
    variant: str
    backbone: str
    image_size: int
    shot: int
    official_code: str
    official_ms: float
    ours_ms: float
    threads: int
    batch_episodes: int
    precision: str
    cpu: str

    def key(self) -> tuple[str, str, str, int, int]:
        return self.method, self.variant, self.backbone, self.image_size, self.shot


def load_anchor(path: str | Path = DEFAULT_ANCHOR) -> list[AnchorRow]:
    """The rows of an anchor CSV that have both an official and our time; clear errors for bad rows."""
    path = Path(path)
    try:
        with path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ConfigError(f"{path}: anchor table lacks the columns {', '.join(missing)}")
            records = list(reader)
    except OSError as err:
        raise ConfigError(f"cannot read the latency anchor {path}: {err.strerror or err}") from err
    rows = []
    for line, record in enumerate(records, start=2):
        if not record["official_ms"].strip():
            continue  # no official time, nothing to anchor to
        try:
            rows.append(
                AnchorRow(
                    method=record["method"],
                    variant=record["variant"],
                    backbone=record["backbone"],
                    image_size=int(record["image_size"]),
                    shot=int(record["shot"]),
                    official_code=record["official_code"],
                    official_ms=float(record["official_ms"]),
                    ours_ms=float(record["ours_ms"]),
                    threads=int(record["threads"]),
                    batch_episodes=int(record["batch_episodes"]),
                    precision=record["precision"],
                    cpu=record["cpu"],
                )
            )
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{path}, line {line}: bad anchor row {dict(record)} ({err})") from err
        if rows[-1].official_ms <= 0 or rows[-1].ours_ms <= 0:
            raise ConfigError(f"{path}, line {line}: anchor times must be positive")
    return rows


def implied_ratio(measured_ms: float, anchor: AnchorRow) -> float:
    """Estimated ours / official for a new measurement of ours (see the module docstring)."""
    return (measured_ms / anchor.ours_ms) * (anchor.ours_ms / anchor.official_ms)


def anchor_estimates(rows: Sequence[dict[str, Any]], anchors: Sequence[AnchorRow]) -> list[str]:
    """One comment line per measured row that matches an anchor configuration (fp32, contiguous, CPU).

    A row matches on method, variant, backbone, image size and shot; of several anchor rows for that
    configuration (side-by-side runs on different CPUs), the one measured on the row's CPU model is
    used, else the first. Conditions that differ from the anchor's (threads, batch size, CPU model) are
    named on the line.
    """
    by_key: dict[tuple[str, str, str, int, int], list[AnchorRow]] = {}
    for anchor in anchors:
        by_key.setdefault(anchor.key(), []).append(anchor)
    lines = []
    for row in rows:
        if row.get("amp_bf16") or row.get("channels_last") or row.get("device_type") != "cpu":
            continue
        key = (row["method"], row["variant"], row["backbone"], int(row["image_size"]), int(row["shot"]))
        candidates = by_key.get(key)
        if not candidates:
            continue
        anchor = next((a for a in candidates if a.cpu == str(row.get("cpu"))), candidates[0])
        measured = float(row["latency_ms_median"])
        differs = []
        if int(row["num_threads"]) != anchor.threads:
            differs.append(f"{row['num_threads']} threads (anchor {anchor.threads})")
        if int(row["batch_size"]) != anchor.batch_episodes:
            differs.append(f"batch {row['batch_size']} (anchor {anchor.batch_episodes})")
        if str(row.get("cpu")) != anchor.cpu:
            differs.append(f"CPU {row.get('cpu')!r} (anchor {anchor.cpu!r})")
        caveat = "; NOT COMPARABLE: " + ", ".join(differs) if differs else ""
        lines.append(
            f"# anchor estimate (not a measurement of the official code): {row['method']} {row['backbone']} "
            f"{row['image_size']}px {row['shot']}-shot: ours/official {anchor.official_code} ~ "
            f"{implied_ratio(measured, anchor):.2f} = ({measured:.0f} ms now / {anchor.ours_ms:.0f} ms ours "
            f"in the anchor run) x {anchor.ours_ms / anchor.official_ms:.3f} (anchor ours/official, "
            f"{anchor.official_ms:.0f} ms official){caveat}"
        )
    return lines
