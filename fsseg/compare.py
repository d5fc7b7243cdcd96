"""``fsseg compare``: find two runs' saved ``records.csv`` files, pair them, print the paired statistics.

The statistics themselves live in :mod:`fsseg.stats`; this module only locates and reads record files and
renders the result as a table, CSV or JSON. Nothing is re-run: runs made on different days or machines
compare as long as they were scored on the same episode manifests.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd

from fsseg.errors import DataError, FssegError
from fsseg.keys import INT_COLUMNS, TEXT_COLUMNS
from fsseg.metrics import COUNT_COLUMNS
from fsseg.paths import RECORDS_FILE, SUMMARY_FILE
from fsseg.stats import METRIC_NAMES, REQUIRED_COLUMNS, Metric, PairedComparison, compare_records

FORMATS = ("table", "csv", "json")
_GLOB_CHARS = frozenset("*?[")
_INT_COLUMNS = (*INT_COLUMNS, "episode_id", "class_id", *COUNT_COLUMNS)
_TEXT_COLUMNS = ("run_id", *TEXT_COLUMNS, "manifest_hash", "class_name", "query_id")


def find_record_files(spec: str) -> list[Path]:
    """The ``records.csv`` files a RUN argument names, sorted and without repeats.

    ``spec`` is a folder (searched recursively), a records file, a glob (``**`` allowed; quote it so the
    shell leaves it alone), or a comma-separated list of any of these. A part that matches nothing is an
    error, so a typo cannot silently shrink a run.
    """
    files: set[Path] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        matches = sorted(glob.glob(part, recursive=True)) if _GLOB_CHARS & set(part) else [part]
        found: list[Path] = []
        for match in map(Path, matches):
            if match.is_dir():
                found.extend(match.rglob(RECORDS_FILE))
            elif match.is_file():
                found.append(match)
        if not found:
            raise DataError(
                f"no {RECORDS_FILE} found for {part!r} (a folder, a records file or a quoted glob)"
            )
        files.update(f.resolve() for f in found)
    if not files:
        raise DataError(f"no {RECORDS_FILE} files named by {spec!r}")
    return sorted(files)


def read_record_file(path: Path) -> pd.DataFrame:
    """One ``records.csv`` as a DataFrame with typed columns and a ``source`` column (its folder)."""
    dtypes: dict[str, Any] = {c: str for c in _TEXT_COLUMNS}
    try:
        # Text columns stay text (a hash or an id made of digits must not become a number, nor "NA" a NaN).
        frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"cannot read {path}: {err}") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(f"{path} is not a per-episode records file: no column {', '.join(missing)}")
    if frame.empty:
        raise DataError(f"{path} has no episode rows")
    for column in (c for c in _INT_COLUMNS if c in frame.columns):
        try:
            frame[column] = pd.to_numeric(frame[column], errors="raise").astype(np.int64)
        except (ValueError, TypeError) as err:
            raise DataError(f"{path}: column {column} must hold integers ({err})") from err
    frame["source"] = str(path.parent)
    return frame


def check_whole_manifest(path: Path, frame: pd.DataFrame) -> None:
    """Refuse a records file that does not hold every episode of the manifest it was scored on.

    The evaluation's ``summary.json`` next to it states the manifest hash and its number of episodes;
    the rows must carry that hash and be episodes 0..n-1, each once. A file cut short (on one side or
    both) would otherwise be compared on the episodes that happen to remain.
    """
    summary_path = path.parent / SUMMARY_FILE
    try:
        summary = json.loads(summary_path.read_text())
        n_expected = int(summary["metrics"]["n_episodes"])
        manifest_hash = str(summary["manifest_hash"])
    except FileNotFoundError:
        raise DataError(
            f"{path} has no {SUMMARY_FILE} next to it, so it cannot be checked to hold the whole episode "
            "manifest; compare evaluation folders as `fsseg evaluate` writes them"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{summary_path} is unreadable or incomplete ({err!r})") from None
    hashes = sorted(set(frame["manifest_hash"]))
    if hashes != [manifest_hash]:
        raise DataError(
            f"{path} holds records of manifest(s) {', '.join(h[:12] for h in hashes)} but {summary_path} "
            f"says it was scored on {manifest_hash[:12]} (records file edited or copied from elsewhere?)"
        )
    ids = frame["episode_id"]
    if len(frame) != n_expected or ids.duplicated().any() or set(ids) != set(range(n_expected)):
        raise DataError(
            f"{path} holds {len(frame)} episode rows ({ids.nunique()} distinct episode ids) but its manifest "
            f"has {n_expected} episodes (episodes 0..{n_expected - 1}, per {summary_path}): the file is "
            "truncated or edited; re-run `fsseg evaluate` for that folder"
        )


def load_run(spec: str) -> pd.DataFrame:
    """All records of the run named by ``spec`` (see :func:`find_record_files`), in one DataFrame.

    Every records file must hold its whole manifest (:func:`check_whole_manifest`).
    """
    frames = []
    for path in find_record_files(spec):
        frame = read_record_file(path)
        check_whole_manifest(path, frame)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def describe_run(records: pd.DataFrame) -> str:
    """Where a run's numbers come from: units, episode seeds, folders and episodes."""
    folds = sorted(records["fold"].unique())
    train_seeds = sorted(records["train_seed"].unique())
    episode_seeds = sorted(records["episode_seed"].unique())
    n_units = len(records[["fold", "train_seed"]].drop_duplicates())
    trained = f", trained {records['train_shot'].iloc[0]}-shot" if "train_shot" in records.columns else ""
    folders = records["source"].nunique() if "source" in records.columns else "?"
    return (
        f"{n_units} units (folds {_ints(folds)} × train seeds {_ints(train_seeds)}), "
        f"episode seeds {_ints(episode_seeds)}, {folders} evaluation folders, "
        f"{len(records)} episodes{trained}"
    )


def _ints(values: Sequence[Any]) -> str:
    return ",".join(str(int(v)) for v in values)


# ----------------------------------------------------------------------------------------------------------
# Rendering


def _score(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def _signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.4f}"


def _pvalue(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:.1e}" if value < 1e-4 else f"{value:.4f}"


def _ci(low: float, high: float) -> str:
    return "-" if math.isnan(low) else f"[{low:+.4f}, {high:+.4f}]"


def _grid(rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Rows padded into columns; ``right`` says which columns are right-aligned (the numbers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.rjust(w) if r else cell.ljust(w) for cell, w, r in zip(row, widths, right, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_table(comparison: PairedComparison, about_a: str = "", about_b: str = "") -> str:
    """The human-readable report: one row per test, then the per-unit scores the tests pair."""
    c = comparison
    tt, bs, wx = c.ttest, c.bootstrap, c.wilcoxon
    name = METRIC_NAMES[c.metric]
    lines = [
        f"{name}, paired over units (fold × train_seed); Δ = A − B",
        f"  A: {c.label_a}" + (f" — {about_a}" if about_a else ""),
        f"  B: {c.label_b}" + (f" — {about_b}" if about_b else ""),
        "",
    ]
    rows = [["test", "n", "mean A", "mean B", "Δ", f"{tt.confidence:.0%} CI", "p", "note"]]
    rows.append(
        [
            "paired t-test",
            str(tt.n),
            _score(tt.mean_a),
            _score(tt.mean_b),
            _signed(tt.mean_diff),
            _ci(tt.ci_low, tt.ci_high),
            _pvalue(tt.p),
            tt.note or f"d_z = {tt.d_z:.2f}",
        ]
    )
    if bs is None:
        rows.append(["paired bootstrap", "", "", "", "", "", "-", "not run (--bootstrap 0)"])
    else:
        note = (
            f"{bs.n_boot} resamples of {bs.n_episodes} episodes, seed {bs.seed}; "
            f"mean resampled Δ {_signed(bs.mean_diff)}"
        )
        rows.append(
            [
                "paired bootstrap",
                str(bs.n_units),
                "",
                "",
                _signed(bs.observed_diff),
                _ci(bs.ci_low, bs.ci_high),
                _pvalue(bs.p),
                note + (f"; {bs.note}" if bs.note else ""),
            ]
        )
    wx_note = wx.note if wx.skipped else f"W = {wx.statistic:g}"
    rows.append(["Wilcoxon signed-rank", str(wx.n), "", "", "", "", _pvalue(wx.p), wx_note])
    lines += _grid(rows, [False, True, True, True, True, False, True, False])

    lines.append("")
    unit_rows = [["fold", "train_seed", "A", "B", "Δ"]]
    for (fold, train_seed), row in c.scores.iterrows():
        unit_rows.append(
            [str(fold), str(train_seed), _score(row["a"]), _score(row["b"]), _signed(row["diff"])]
        )
    lines += _grid(unit_rows, [True, True, True, True, True])
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    """JSON-safe values: NaN becomes null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def format_csv(comparisons: Sequence[PairedComparison]) -> str:
    """One CSV row per comparison (:meth:`PairedComparison.to_row`); undefined values are empty cells."""
    rows = [{k: ("" if v is None else v) for k, v in _plain(c.to_row()).items()} for c in comparisons]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def format_json(comparisons: Sequence[PairedComparison]) -> str:
    return json.dumps([_plain(c.to_dict()) for c in comparisons], indent=2) + "\n"


def run_compare(
    run_specs: Sequence[str],
    *,
    metric: Metric = "miou",
    n_boot: int = 10_000,
    seed: int = 0,
    output_format: str = "table",
    stream: TextIO | None = None,
) -> PairedComparison:
    """The ``fsseg compare`` command: load RUN_A and RUN_B, compare them, print in ``output_format``.

    Raises :class:`~fsseg.errors.FssegError` (exit code 2 from the CLI) when the arguments name anything
    other than two runs, when no records are found, or when the runs cannot be paired.
    """
    if len(run_specs) != 2:
        raise FssegError(
            f"compare takes exactly two runs, RUN_A and RUN_B, got {len(run_specs)} arguments; if the shell "
            'expanded a glob, quote it ("results/.../**/records.csv") or join files with commas'
        )
    if n_boot < 0:
        raise FssegError(f"--bootstrap must be 0 (skip) or a positive number of resamples, got {n_boot}")
    if seed < 0:
        raise FssegError(f"--seed must be a non-negative integer, got {seed}")
    if output_format not in FORMATS:
        raise FssegError(f"unknown format {output_format!r}; choose one of {', '.join(FORMATS)}")
    records_a, records_b = (load_run(spec) for spec in run_specs)
    comparison = compare_records(records_a, records_b, metric=metric, n_boot=n_boot, seed=seed)
    out = stream or sys.stdout
    if output_format == "table":
        out.write(format_table(comparison, describe_run(records_a), describe_run(records_b)))
    elif output_format == "csv":
        out.write(format_csv([comparison]))
    else:
        out.write(format_json([comparison]))
    return comparison
