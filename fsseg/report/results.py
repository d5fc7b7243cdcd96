"""The numbers of a report, computed from an aggregate's saved records and nothing else.

* A **run** is one method variant at one test shot: its records over folds, train seeds and episode
  seeds (:func:`select_run`).
* A **unit** is one (fold, train seed): one trained model. Its score is :func:`fsseg.stats.unit_scores`,
  the metric per episode seed averaged over episode seeds, so every trained model counts once.
* Table cells are mean ± sd over train seeds of unit scores (:func:`fold_cells`); the "mean" column first
  averages each train seed over the folds, then takes mean ± sd over seeds.
* Comparisons are :mod:`fsseg.stats` results; families are Holm-adjusted as the design declares.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from fsseg.aggregate import Aggregate
from fsseg.errors import FssegError
from fsseg.report.spec import MIN_UNITS_TO_MARK, ReportSpec, RunRef
from fsseg.stats import (
    Metric,
    PairedComparison,
    PairingError,
    compare_family,
    compare_records,
    holm,
    unit_scores,
)

MEAN = "mean"


@dataclass
class Run:
    """The records and evaluation rows of one method variant at one test shot."""

    ref: RunRef
    shot: int
    train_shot: int
    backbone: str
    records: pd.DataFrame
    evaluations: pd.DataFrame
    _units: dict[str, pd.Series] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return self.ref.display

    def units(self, metric: Metric = "miou") -> pd.Series:
        """Unit scores indexed by (fold, train_seed) (computed once per metric: every table and plot asks)."""
        if metric not in self._units:
            self._units[metric] = unit_scores(self.records, metric)
        return self._units[metric]


def select_run(agg: Aggregate, ref: RunRef, shot: int) -> Run | None:
    """The run of ``ref`` at test ``shot``, or None when the aggregate has none.

    When the variant was trained with several train shots, the models trained with the test shot are
    taken (the usual protocol: one model per shot); a single train shot is taken whatever it is.
    """
    ev = agg.evaluations
    chosen = ev[(ev["method"] == ref.method) & (ev["variant"] == ref.variant) & (ev["shot"] == shot)]
    if ref.backbone is not None:
        chosen = chosen[chosen["backbone"] == ref.backbone]
    if chosen.empty:
        return None
    backbones = sorted(chosen["backbone"].unique())
    if len(backbones) > 1:
        raise FssegError(
            f"{ref.key} was evaluated {shot}-shot with several backbones ({', '.join(backbones)}); "
            "name one with `backbone:` in the report spec"
        )
    train_shots = sorted(int(s) for s in chosen["train_shot"].unique())
    if shot in train_shots:
        train_shot = shot
    elif len(train_shots) == 1:
        train_shot = train_shots[0]
    else:
        raise FssegError(
            f"{ref.key} was evaluated {shot}-shot with models trained on {train_shots}-shot episodes and "
            f"none trained {shot}-shot; aggregate only the evaluations the report should show"
        )
    chosen = chosen[chosen["train_shot"] == train_shot]
    rec = agg.records
    records = rec[
        (rec["method"] == ref.method)
        & (rec["variant"] == ref.variant)
        & (rec["backbone"] == backbones[0])
        & (rec["shot"] == shot)
        & (rec["train_shot"] == train_shot)
    ].reset_index(drop=True)
    return Run(ref, shot, train_shot, backbones[0], records, chosen.reset_index(drop=True))


def select_runs(agg: Aggregate, refs: Sequence[RunRef], shots: Sequence[int]) -> dict[tuple[str, int], Run]:
    """Every available run of ``refs`` × ``shots``, keyed by (label, shot)."""
    runs = {}
    for ref in refs:
        for shot in shots:
            run = select_run(agg, ref, shot)
            if run is not None:
                runs[(ref.display, shot)] = run
    return runs


# ----------------------------------------------------------------------------------------------------------
# Cells: mean ± sd over train seeds


@dataclass(frozen=True)
class Cell:
    """Mean, sample sd (ddof 1; NaN with one seed) and t-based 95% CI half-width over train seeds."""

    mean: float
    sd: float
    n: int
    ci_half: float
    values: tuple[float, ...]

    @classmethod
    def of(cls, values: Sequence[float], confidence: float = 0.95) -> Cell:
        v = np.asarray(values, dtype=float)
        n = v.size
        if n == 0:
            return cls(math.nan, math.nan, 0, math.nan, ())
        mean = float(v.mean())
        sd = float(v.std(ddof=1)) if n > 1 else math.nan
        half = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n) if n > 1 else math.nan
        return cls(mean, sd, n, half, tuple(float(x) for x in v))


def seed_by_fold(units: pd.Series) -> pd.DataFrame:
    """Unit scores as a train seed × fold table."""
    return units.unstack("fold").sort_index()


def fold_cells(units: pd.Series, folds: Sequence[int]) -> dict[int | str, Cell]:
    """One cell per fold (over that fold's train seeds) and the ``"mean"`` cell.

    The mean cell averages each train seed over ``folds`` first; a seed missing a fold is left out (a mean
    over fewer folds would mean something else), and with no complete seed the cell is empty.
    """
    table = seed_by_fold(units)
    cells: dict[int | str, Cell] = {}
    for fold in folds:
        values = table[fold].dropna().to_numpy() if fold in table.columns else []
        cells[fold] = Cell.of(values)
    complete = table.reindex(columns=list(folds)).dropna()
    cells[MEAN] = Cell.of(complete.mean(axis=1).to_numpy() if not complete.empty else [])
    return cells


def n_episode_seeds(run: Run) -> int:
    """Episode seeds averaged within each unit (the largest count, should units differ)."""
    return int(run.records.groupby(["fold", "train_seed"])["episode_seed"].nunique().max())


def class_iou_means(run: Run, class_columns: Sequence[str]) -> pd.Series:
    """Per-class IoU averaged over the run's evaluations (train seeds × episode seeds); NaN off its folds."""
    return run.evaluations[list(class_columns)].mean(axis=0, skipna=True)


# ----------------------------------------------------------------------------------------------------------
# Comparisons


@dataclass
class FamilyResult:
    """One Holm family: its name, its comparisons (A − B, Holm-adjusted within) and what was left out."""

    kind: str  # "baselines" (flagship vs each baseline at one shot) or "ablations" (full model vs each)
    name: str
    comparisons: list[tuple[int, Run, Run, PairedComparison]]  # (shot, A, B, result)
    missing: list[str]


def _compare(a: Run, b: Run, spec: ReportSpec, metric: Metric) -> PairedComparison:
    try:
        return compare_records(
            a.records,
            b.records,
            metric=metric,
            n_boot=spec.bootstrap.iterations,
            seed=spec.bootstrap.seed,
            label_a=a.label,
            label_b=b.label,
        )
    except PairingError as err:
        raise FssegError(f"cannot compare {a.label} with {b.label} at {a.shot}-shot: {err}") from err


def baseline_family(
    runs: dict[tuple[str, int], Run], spec: ReportSpec, shot: int, metric: Metric = "miou"
) -> FamilyResult:
    """Flagship vs each baseline at one test shot (:func:`fsseg.stats.compare_family`)."""
    kind, name = "baselines", f"{spec.flagship.display} vs baselines, {shot}-shot"
    flagship = runs.get((spec.flagship.display, shot))
    others = {b.display: runs.get((b.display, shot)) for b in spec.baselines}
    missing = [f"{label} ({shot}-shot)" for label, run in others.items() if run is None]
    if flagship is None:
        return FamilyResult(kind, name, [], [f"{spec.flagship.display} ({shot}-shot)", *missing])
    present = {label: run for label, run in others.items() if run is not None}
    if not present:
        return FamilyResult(kind, name, [], missing)
    # A baseline run on fewer train seeds (grid.method_train_seeds) is compared on the units both have.
    flagship_units = run_units(flagship)
    pairs = {}
    for label, run in present.items():
        units = run_units(run)
        shared = flagship_units & units
        pairs[label] = (
            restrict_to_units(flagship, shared) if shared != flagship_units else flagship,
            restrict_to_units(run, shared) if shared != units else run,
        )
    present = {label: b for label, (_, b) in pairs.items()}
    try:
        results = compare_family(
            {label: a.records for label, (a, _) in pairs.items()},
            {label: run.records for label, run in present.items()},
            metric=metric,
            n_boot=spec.bootstrap.iterations,
            seed=spec.bootstrap.seed,
            reference_label=flagship.label,
        )
    except PairingError as err:
        raise FssegError(f"cannot compare {flagship.label} with its baselines at {shot}-shot: {err}") from err
    return FamilyResult(kind, name, [(shot, *pairs[k], results[k]) for k in present], missing)


def restrict_to_units(run: Run, units: set[tuple[int, int]]) -> Run:
    """``run`` limited to the given (fold, train_seed) units.

    Ablations usually run on fewer folds than the full model; the full model is compared, and shown,
    on exactly the ablation's units, so a difference never mixes in folds only one side has.
    """

    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        pairs = zip(frame["fold"].astype(int), frame["train_seed"].astype(int), strict=True)
        return frame[[pair in units for pair in pairs]]

    return replace(run, records=keep(run.records), evaluations=keep(run.evaluations), _units={})


def run_units(run: Run) -> set[tuple[int, int]]:
    frame = run.records[["fold", "train_seed"]].drop_duplicates().astype(int)
    return set(zip(frame["fold"], frame["train_seed"], strict=True))


def ablation_units(runs: dict[tuple[str, int], Run], spec: ReportSpec, shot: int) -> set[tuple[int, int]]:
    """Every unit any ablation of ``spec`` was evaluated on at ``shot``."""
    units: set[tuple[int, int]] = set()
    for ref in spec.ablations:
        if (ref.display, shot) in runs:
            units |= run_units(runs[(ref.display, shot)])
    return units


def ablation_family(
    runs: dict[tuple[str, int], Run], spec: ReportSpec, metric: Metric = "miou"
) -> FamilyResult:
    """Full model (A) vs each ablation (B) at every shot: one Holm family over all of them.

    Same tests and adjustment as :func:`fsseg.stats.compare_family` (each test adjusted on its own, NaN
    passing through), over comparisons that may span shots.
    """
    items: list[tuple[int, Run, Run, PairedComparison]] = []
    missing = []
    for shot in spec.shots:
        full = runs.get((spec.flagship.display, shot))
        for ref in spec.ablations:
            ablation = runs.get((ref.display, shot))
            if ablation is None or full is None:
                # Name what is absent; an ablation run at no shot at all is not listed for every shot.
                absent = ref if ablation is None else spec.flagship
                if (ablation, full) != (None, None) and f"{absent.display} ({shot}-shot)" not in missing:
                    missing.append(f"{absent.display} ({shot}-shot)")
                continue
            full_here = restrict_to_units(full, run_units(ablation))
            items.append((shot, full_here, ablation, _compare(full_here, ablation, spec, metric)))
    raw: dict[str, list[float]] = {
        "ttest": [c.ttest.p for *_, c in items],
        "bootstrap": [c.bootstrap.p if c.bootstrap else math.nan for *_, c in items],
        "wilcoxon": [c.wilcoxon.p for *_, c in items],
    }
    adjusted = {test: holm(p) for test, p in raw.items()}
    adjusted_items = [
        (shot, a, b, replace(c, holm={test: float(adjusted[test][i]) for test in adjusted}))
        for i, (shot, a, b, c) in enumerate(items)
    ]
    name = f"{spec.flagship.display} (full model) vs ablations, all shots"
    return FamilyResult("ablations", name, adjusted_items, missing)


def all_families(runs: dict[tuple[str, int], Run], spec: ReportSpec) -> list[FamilyResult]:
    """The families the design declares: flagship vs baselines per shot, then the ablation family."""
    families = [baseline_family(runs, spec, shot) for shot in spec.shots] if spec.baselines else []
    if spec.ablations:
        families.append(ablation_family(runs, spec))
    return families


def significant(comparison: PairedComparison, alpha: float) -> bool:
    """Holm-adjusted t-test p below ``alpha``, over at least :data:`MIN_UNITS_TO_MARK` units."""
    p = comparison.holm.get("ttest", math.nan)
    return comparison.ttest.n >= MIN_UNITS_TO_MARK and not math.isnan(p) and p < alpha


def describe_variant(params: dict[str, Any], default: dict[str, Any]) -> str:
    """What a variant changes relative to the full model, e.g. ``gpml: graph → conv``."""
    changes = []
    for key in sorted(set(params) | set(default)):
        a, b = default.get(key), params.get(key)
        if a != b:
            changes.append(f"{key}: {_short(a)} → {_short(b)}")
    return "; ".join(changes) if changes else "same parameters"


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


# --- training logs -------------------------------------------------------------------------------------


def read_train_log(path: Path) -> pd.DataFrame:
    """Rows of a ``train_log.jsonl`` that carry losses (validation rows are kept in ``val_miou``)."""
    if not path.is_file():
        return pd.DataFrame()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return pd.DataFrame(rows)


def run_loss_logs(
    runs: dict[tuple[str, int], Run], ref: RunRef, shots: Sequence[int], train_logs: Mapping[Path, Path]
) -> dict[tuple[int, int, int], pd.DataFrame]:
    """(fold, train shot, train seed) → the logged losses (``iteration``, ``loss``, in iteration order) of
    each trained run of ``ref`` the report evaluates. ``train_logs`` maps a run folder (resolved) to its
    ``train_log.jsonl``: the logs the report was given, matched to the aggregate's ``run_dir``s; a run
    whose log is missing or holds no loss is left out."""
    run_dirs: dict[tuple[int, int, int], str] = {}
    for shot in shots:
        run = runs.get((ref.display, shot))
        if run is None:
            continue
        for row in run.evaluations.itertuples(index=False):
            if row.run_dir:
                run_dirs[(int(row.fold), int(row.train_shot), int(row.train_seed))] = row.run_dir
    logs = {}
    for key, run_dir in sorted(run_dirs.items()):
        log_path = train_logs.get(Path(run_dir).resolve())
        log = read_train_log(log_path) if log_path is not None else pd.DataFrame()
        if not log.empty and "loss" in log.columns:
            logs[key] = log.dropna(subset=["loss"])[["iteration", "loss"]].sort_values("iteration")
    return logs
