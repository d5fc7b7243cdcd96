"""Paired statistics over saved per-episode records: is run A better than run B?

Everything here works on the rows of ``records.csv`` written by ``fsseg evaluate`` (as pandas DataFrames),
never on models, so any comparison can be redone later, on another machine, from the saved files.

Vocabulary used throughout:

* **run**: the records of one method/variant/backbone at one test shot, over several folds, training seeds
  and episode seeds (one evaluation folder per fold × train_seed × episode_seed).
* **unit**: one (fold, train_seed) pair, i.e. one trained model. The t-test and the Wilcoxon test pair
  runs unit by unit.
* **manifest**: one (fold, episode_seed) pair, i.e. one saved episode list. Every train seed and every method
  is scored on the same manifest, which is what makes the episodes pairable.
* **Δ = A − B**: every difference is run A minus run B (positive: A scores higher).

Scores come from :func:`fsseg.metrics.summarize`, the one metric definition. The bootstrap recomputes the
same formula with array operations for speed; the tests check it against ``summarize`` bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as sps

from fsseg import keys
from fsseg.errors import FssegError
from fsseg.keys import EPISODE_KEY, MANIFEST, UNIT
from fsseg.metrics import COUNT_COLUMNS, summarize

Metric = Literal["miou", "fbiou"]
#: Unit scores in matched order, or two Series indexed by unit (matched on the index).
Scores = Sequence[float] | np.ndarray | pd.Series
#: Printable names; FB-IoU is never called "mIoU".
METRIC_NAMES: dict[str, str] = {"miou": "class mIoU", "fbiou": "FB-IoU"}

#: Columns the statistics need; the other record columns are optional here.
REQUIRED_COLUMNS = (
    "dataset",
    "shot",
    *dict.fromkeys((*UNIT, *MANIFEST)),
    "manifest_hash",
    "episode_id",
    "class_id",
    *COUNT_COLUMNS,
)
#: Columns that must hold a single value within one run when present.
RUN_IDENTITY = keys.RUN_IDENTITY
#: With n pairs the smallest two-sided exact Wilcoxon p is 2 / 2**n: 0.0625 for n = 5, 0.03125 for n = 6.
WILCOXON_MIN_PAIRS = 6

# Differences of scores in [0, 1] that agree to 1e-12 are equal up to float rounding; a t statistic built on
# such a spread would be rounding noise, not evidence.
_ZERO_SD = 1e-12
# Cells of one resampling-weight block (iterations × episodes): 2**21 float64 = 16 MiB, whatever the run size.
_BLOCK_CELLS = 1 << 21
_MAX_LISTED = 8


class PairingError(FssegError, ValueError):
    """Two runs cannot be paired (different episodes, units, shot or dataset), or one run is inconsistent."""


# ----------------------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class TTestResult:
    """Paired t-test over units; ``p`` is ``scipy.stats.ttest_rel``'s, ``d_z`` = mean Δ / sd of Δ."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    confidence: float
    t: float
    df: int
    p: float
    d_z: float
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WilcoxonResult:
    """Wilcoxon signed-rank test over units, or the reason it was skipped."""

    n: int
    statistic: float
    p: float
    skipped: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap over shared episodes; ``distribution`` holds every resampled Δ."""

    metric: str
    n_units: int
    n_manifests: int
    n_episodes: int
    n_boot: int
    seed: int
    observed_diff: float
    mean_diff: float
    ci_low: float
    ci_high: float
    confidence: float
    p: float
    n_undefined: int
    note: str = ""
    distribution: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["distribution"]
        return out


@dataclass(frozen=True)
class PairedComparison:
    """Every test of one A-versus-B comparison, with the per-unit scores they were computed from.

    ``scores`` is indexed by (fold, train_seed) with columns ``a``, ``b`` and ``diff`` (= a − b).
    ``holm`` holds Holm-adjusted p-values keyed by test name once the comparison belongs to a family.
    """

    metric: str
    label_a: str
    label_b: str
    scores: pd.DataFrame
    ttest: TTestResult
    wilcoxon: WilcoxonResult
    bootstrap: BootstrapResult | None
    holm: Mapping[str, float] = field(default_factory=dict)

    def to_row(self) -> dict[str, Any]:
        """One flat row (for CSV tables); missing values are NaN."""
        tt, wx, bs = self.ttest, self.wilcoxon, self.bootstrap
        row: dict[str, Any] = {
            "metric": self.metric,
            "a": self.label_a,
            "b": self.label_b,
            "n_units": tt.n,
            "mean_a": tt.mean_a,
            "mean_b": tt.mean_b,
            "diff": tt.mean_diff,
            "ci_low": tt.ci_low,
            "ci_high": tt.ci_high,
            "t": tt.t,
            "df": tt.df,
            "p_ttest": tt.p,
            "d_z": tt.d_z,
            "ttest_note": tt.note,
            "boot_mean_diff": bs.mean_diff if bs else math.nan,
            "boot_ci_low": bs.ci_low if bs else math.nan,
            "boot_ci_high": bs.ci_high if bs else math.nan,
            "p_bootstrap": bs.p if bs else math.nan,
            "n_boot": bs.n_boot if bs else 0,
            "boot_seed": bs.seed if bs else None,
            "boot_note": bs.note if bs else "not run",
            "wilcoxon_stat": wx.statistic,
            "p_wilcoxon": wx.p,
            "wilcoxon_note": wx.note,
        }
        for test, p in self.holm.items():
            row[f"p_{test}_holm"] = p
        return row

    def to_dict(self) -> dict[str, Any]:
        """Nested form (for JSON), with the per-unit scores."""
        units = [
            {
                "fold": int(f),
                "train_seed": int(s),
                "a": float(r["a"]),
                "b": float(r["b"]),
                "diff": float(r["diff"]),
            }
            for (f, s), r in self.scores.iterrows()
        ]
        return {
            "metric": self.metric,
            "a": self.label_a,
            "b": self.label_b,
            "ttest": self.ttest.to_dict(),
            "bootstrap": self.bootstrap.to_dict() if self.bootstrap else None,
            "wilcoxon": self.wilcoxon.to_dict(),
            "holm": dict(self.holm),
            "units": units,
        }


# ----------------------------------------------------------------------------------------------------------
# Checks


def _check_metric(metric: str) -> None:
    if metric not in METRIC_NAMES:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRIC_NAMES)}")


def _listing(items: Sequence[str]) -> str:
    shown = list(items[:_MAX_LISTED])
    if len(items) > _MAX_LISTED:
        shown.append(f"... ({len(items) - _MAX_LISTED} more)")
    return "; ".join(shown)


def _origin_column(records: pd.DataFrame) -> str | None:
    """The column naming where a row came from: the file (``source``, added by the loader) or the run id."""
    for column in ("source", "run_id"):
        if column in records.columns:
            return column
    return None


def check_run(records: pd.DataFrame, name: str = "") -> None:
    """Raise :class:`PairingError` unless ``records`` form one consistent run.

    One run has a single method/variant/backbone/dataset/train shot/test shot (where those columns exist),
    each (fold, train_seed, episode_seed) evaluated once, and one manifest per (fold, episode_seed) with the
    same episodes for every train seed.
    """
    run = f"run {name}" if name else "run"
    missing = [c for c in REQUIRED_COLUMNS if c not in records.columns]
    if missing:
        raise PairingError(f"{run} lacks record columns {', '.join(missing)}")
    if records.empty:
        raise PairingError(f"{run} has no episode records")
    for column in RUN_IDENTITY:
        if column in records.columns:
            values = sorted(records[column].astype(str).unique())
            if len(values) > 1:
                raise PairingError(
                    f"{run} mixes {column} values {', '.join(values)}: a run is one method/variant/backbone "
                    "at one test shot; select only its evaluation folders"
                )

    origin = _origin_column(records)
    if origin is not None:
        origins = records.groupby(list(EPISODE_KEY[:3]))[origin].unique()
        repeated = [
            f"fold {f} train_seed {t} episode_seed {e}: {', '.join(map(str, o))}"
            for (f, t, e), o in origins.items()
            if len(o) > 1
        ]
        if repeated:
            raise PairingError(
                f"{run} evaluates the same fold × train_seed × episode_seed more than once "
                f"(keep one evaluation folder each): {_listing(repeated)}"
            )
    duplicated = records.duplicated(list(EPISODE_KEY), keep=False)
    if duplicated.any():
        f, t, e, i = records.loc[duplicated, list(EPISODE_KEY)].iloc[0]
        raise PairingError(
            f"{run}: episode {i} of fold {f} train_seed {t} episode_seed {e} appears more than once"
        )

    manifests = records.groupby(list(MANIFEST))["manifest_hash"].unique()
    mixed = [
        f"fold {f} episode_seed {e}: {', '.join(str(h)[:12] for h in hashes)}"
        for (f, e), hashes in manifests.items()
        if len(hashes) > 1
    ]
    if mixed:
        raise PairingError(
            f"{run} scores train seeds of one fold on different episode manifests "
            f"(every train seed must use the same episodes): {_listing(mixed)}"
        )
    # Same manifest ⇒ same episodes; a mismatch here means a truncated or hand-edited records.csv.
    per_episode = records.groupby([*MANIFEST, "episode_id"]).agg(
        n_seeds=("train_seed", "size"), n_classes=("class_id", "nunique")
    )
    seeds_per_manifest = records.groupby(list(MANIFEST))["train_seed"].nunique()
    expected = seeds_per_manifest.reindex(per_episode.index.droplevel("episode_id")).to_numpy()
    broken = per_episode[(per_episode["n_seeds"].to_numpy() != expected) | (per_episode["n_classes"] > 1)]
    if not broken.empty:
        listed = [f"fold {f} episode_seed {e} episode {i}" for f, e, i in broken.index]
        raise PairingError(
            f"{run} has episodes missing for some train seeds or with different classes across train seeds "
            f"of the same manifest (truncated records.csv?): {_listing(listed)}"
        )


def _units(records: pd.DataFrame) -> list[tuple[int, int]]:
    return sorted(
        {(int(f), int(t)) for f, t in records[list(UNIT)].drop_duplicates().itertuples(index=False)}
    )


def _describe_units(units: Sequence[tuple[int, int]]) -> str:
    return ", ".join(f"fold {f} train_seed {t}" for f, t in units) or "none"


def check_pairable(records_a: pd.DataFrame, records_b: pd.DataFrame) -> None:
    """Raise :class:`PairingError` unless runs A and B can be compared episode by episode.

    Both must be consistent runs (:func:`check_run`) on the same dataset and test shot, with the same units
    (fold, train_seed), the same episode seeds per unit, the same manifest hash per (fold, episode_seed) and
    the same episodes (ids and classes) in each manifest. Where they were run (day, machine) does not matter.
    The message names every fold/seed that differs and why.
    """
    check_run(records_a, "A")
    check_run(records_b, "B")
    for column in ("dataset", "shot"):
        va, vb = records_a[column].iloc[0], records_b[column].iloc[0]
        if str(va) != str(vb):
            raise PairingError(f"cannot pair runs on different {column}: A has {va}, B has {vb}")

    units_a, units_b = _units(records_a), _units(records_b)
    if units_a != units_b:
        only_a = sorted(set(units_a) - set(units_b))
        only_b = sorted(set(units_b) - set(units_a))
        raise PairingError(
            "cannot pair runs with different units (fold × train_seed): "
            f"only in A: {_describe_units(only_a)}; only in B: {_describe_units(only_b)}"
        )

    seeds_a = records_a.groupby(list(UNIT))["episode_seed"].unique()
    seeds_b = records_b.groupby(list(UNIT))["episode_seed"].unique()
    differing = [
        f"fold {f} train_seed {t}: A {sorted(map(int, seeds_a[(f, t)]))}, "
        f"B {sorted(map(int, seeds_b[(f, t)]))}"
        for f, t in units_a
        if set(seeds_a[(f, t)]) != set(seeds_b[(f, t)])
    ]
    if differing:
        raise PairingError(f"cannot pair runs evaluated on different episode seeds: {_listing(differing)}")

    hash_a = records_a.groupby(list(MANIFEST))["manifest_hash"].first()
    hash_b = records_b.groupby(list(MANIFEST))["manifest_hash"].first()
    shot = records_a["shot"].iloc[0]
    differing = [
        f"fold {f} episode_seed {e} (shot {shot}): "
        f"A {str(hash_a[(f, e)])[:12]} ≠ B {str(hash_b[(f, e)])[:12]}"
        for f, e in hash_a.index
        if str(hash_a[(f, e)]) != str(hash_b[(f, e)])
    ]
    if differing:
        raise PairingError(
            "cannot pair runs scored on different episode manifests (different n_episodes, min_object_px, "
            "split or dataset files); evaluate both on the same manifest (`fsseg evaluate --manifest`): "
            + _listing(differing)
        )

    # Equal hashes should mean equal episodes; compare anyway so a truncated file is caught here.
    episodes_a = records_a.drop_duplicates([*MANIFEST, "episode_id"])[[*MANIFEST, "episode_id", "class_id"]]
    episodes_b = records_b.drop_duplicates([*MANIFEST, "episode_id"])[[*MANIFEST, "episode_id", "class_id"]]
    # The indicator column gets a plain name: itertuples renames fields that start with "_".
    joined = episodes_a.merge(episodes_b, on=[*MANIFEST, "episode_id"], how="outer", indicator="side")
    bad = joined[(joined["side"] != "both") | (joined["class_id_x"] != joined["class_id_y"])]
    if not bad.empty:
        listed = []
        for row in bad.itertuples(index=False):
            where = {"left_only": "only in A", "right_only": "only in B"}.get(str(row.side), "class differs")
            listed.append(
                f"fold {row.fold} episode_seed {row.episode_seed} episode {row.episode_id}: {where}"
            )
        raise PairingError(f"cannot pair runs whose episode records differ: {_listing(listed)}")


def run_label(records: pd.DataFrame) -> str:
    """A short name for a run, e.g. ``panet-default resnet50 isaid5i 1-shot``."""
    first = records.iloc[0]
    parts = []
    if "method" in records.columns:
        parts.append(
            f"{first['method']}-{first['variant']}" if "variant" in records.columns else str(first["method"])
        )
    if "backbone" in records.columns:
        parts.append(str(first["backbone"]))
    parts.append(f"{first['dataset']} {first['shot']}-shot")
    return " ".join(parts)


# ----------------------------------------------------------------------------------------------------------
# Scores per unit


def episode_seed_scores(records: pd.DataFrame, metric: Metric = "miou") -> pd.Series:
    """``metric`` per (fold, train_seed, episode_seed), from :func:`fsseg.metrics.summarize`.

    Class-wise mIoU averages over the classes present in that evaluation (the fold's novel classes).
    """
    _check_metric(metric)
    keys: list[tuple[int, int, int]] = []
    values: list[float] = []
    for (fold, train_seed, episode_seed), group in records.groupby(list(EPISODE_KEY[:3]), sort=True):
        keys.append((int(fold), int(train_seed), int(episode_seed)))
        values.append(float(summarize(group[["class_id", *COUNT_COLUMNS]].to_dict("records"))[metric]))
    index = pd.MultiIndex.from_tuples(keys, names=list(EPISODE_KEY[:3]))
    return pd.Series(values, index=index, name=metric, dtype=float)


def unit_scores(records: pd.DataFrame, metric: Metric = "miou") -> pd.Series:
    """``metric`` per unit (fold, train_seed), the numbers the t-test and Wilcoxon test pair.

    A unit evaluated on several episode seeds gets the plain mean of its per-episode-seed scores (each
    computed class-wise over that seed's episodes), so every unit is one trained model, counted once.
    """
    per_seed = episode_seed_scores(records, metric)
    keys: list[tuple[int, int]] = []
    values: list[float] = []
    for (fold, train_seed), group in per_seed.groupby(level=list(UNIT), sort=True):
        keys.append((int(fold), int(train_seed)))
        # np.mean of the seed scores in seed order: the bootstrap reproduces exactly this arithmetic.
        values.append(float(np.mean(group.to_numpy())))
    return pd.Series(
        values, index=pd.MultiIndex.from_tuples(keys, names=list(UNIT)), name=metric, dtype=float
    )


# ----------------------------------------------------------------------------------------------------------
# Tests over units


def _paired_arrays(a_scores: Scores, b_scores: Scores) -> tuple[np.ndarray, np.ndarray]:
    """Two equally long float vectors; two Series are matched on their index (units), not on position."""
    if isinstance(a_scores, pd.Series) and isinstance(b_scores, pd.Series):
        if set(a_scores.index) != set(b_scores.index) or a_scores.index.has_duplicates:
            raise ValueError("score series must have the same unique unit index to be paired")
        b_scores = b_scores.reindex(a_scores.index)
    a = np.asarray(a_scores, dtype=float).ravel()
    b = np.asarray(b_scores, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths, got {a.size} and {b.size}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError("a unit score is undefined (NaN: no class had a non-empty union); cannot test it")
    return a, b


def paired_ttest(a_scores: Scores, b_scores: Scores, confidence: float = 0.95) -> TTestResult:
    """Paired t-test of Δ = A − B over matched units (``scipy.stats.ttest_rel``).

    Reports the mean difference, its ``confidence`` interval from the t distribution with n − 1 degrees of
    freedom, the two-sided p and the effect size d_z = mean Δ / sd(Δ). With fewer than 2 units, or when all
    differences are equal (zero variance), the test is undefined: p, t, CI and d_z are NaN and ``note``
    says why.
    """
    a, b = _paired_arrays(a_scores, b_scores)
    n = a.size
    diffs = a - b
    mean_a = float(a.mean()) if n else math.nan
    mean_b = float(b.mean()) if n else math.nan
    mean_diff = float(diffs.mean()) if n else math.nan
    undefined = {"ci_low": math.nan, "ci_high": math.nan, "t": math.nan, "p": math.nan, "d_z": math.nan}
    common = {"n": n, "mean_a": mean_a, "mean_b": mean_b, "mean_diff": mean_diff, "confidence": confidence}
    if n < 2:
        return TTestResult(
            **common, **undefined, df=max(n - 1, 0), note=f"n = {n} unit: a t-test needs at least 2"
        )
    sd = float(diffs.std(ddof=1))
    if sd <= _ZERO_SD:
        return TTestResult(
            **common,
            **undefined,
            df=n - 1,
            note=f"all {n} unit differences equal {mean_diff:+.4f} (zero variance): the t-test is undefined",
        )
    result = sps.ttest_rel(a, b)
    half_width = float(sps.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return TTestResult(
        **common,
        ci_low=mean_diff - half_width,
        ci_high=mean_diff + half_width,
        t=float(result.statistic),
        df=n - 1,
        p=float(result.pvalue),
        d_z=mean_diff / sd,
    )


def wilcoxon(a_scores: Scores, b_scores: Scores, min_pairs: int = WILCOXON_MIN_PAIRS) -> WilcoxonResult:
    """Wilcoxon signed-rank test of A − B over matched units, only with at least ``min_pairs`` pairs.

    Below 6 pairs the smallest attainable two-sided p is 2 / 2**n ≥ 0.0625, so the test could never
    reject at 0.05; it is skipped and ``note`` says so rather than reporting a p that cannot be small.
    """
    a, b = _paired_arrays(a_scores, b_scores)
    n = a.size
    if n < min_pairs:
        floor = 2.0 / 2**n if n else 1.0
        return WilcoxonResult(
            n=n,
            statistic=math.nan,
            p=math.nan,
            skipped=True,
            note=f"skipped (n<{min_pairs}): with {n} pairs the smallest two-sided p is {min(floor, 1.0):.4g}",
        )
    if np.all(np.abs(a - b) <= _ZERO_SD):
        return WilcoxonResult(
            n=n, statistic=math.nan, p=math.nan, skipped=True, note="skipped: all differences are 0"
        )
    result = sps.wilcoxon(a, b)
    return WilcoxonResult(n=n, statistic=float(result.statistic), p=float(result.pvalue), skipped=False)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm–Bonferroni step-down adjusted p-values, in the input order.

    The i-th smallest of m p-values becomes max over j ≤ i of (m − j + 1)·p_(j), capped at 1, so adjusted
    values keep the order of the raw ones. NaN (a test that was not run) passes through as NaN and does not
    count towards m.
    """
    p = np.asarray(pvalues, dtype=float)
    if p.ndim != 1:
        raise ValueError("holm expects a flat sequence of p-values")
    tested = np.flatnonzero(~np.isnan(p))
    if np.any((p[tested] < 0) | (p[tested] > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {p.tolist()}")
    adjusted = np.full(p.shape, math.nan)
    m = tested.size
    if m:
        order = tested[np.argsort(p[tested], kind="stable")]
        stepped = (m - np.arange(m)) * p[order]
        adjusted[order] = np.minimum(np.maximum.accumulate(stepped), 1.0)
    return adjusted


# ----------------------------------------------------------------------------------------------------------
# Bootstrap over episodes


def _iou_parts(episodes: pd.DataFrame, class_ids: np.ndarray, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-episode intersection and union for each IoU the metric averages: [episodes, parts] each.

    For ``miou`` the parts are the classes (an episode contributes only to its own class column); for
    ``fbiou`` they are foreground and background. Summing rows and averaging part IoUs that have a
    non-empty union is exactly :func:`fsseg.metrics.summarize`.
    """
    if metric == "miou":
        onehot = (episodes["class_id"].to_numpy()[:, None] == class_ids[None, :]).astype(np.float64)
        return (
            onehot * episodes["fg_intersection"].to_numpy(np.float64)[:, None],
            onehot * episodes["fg_union"].to_numpy(np.float64)[:, None],
        )
    return (
        episodes[["fg_intersection", "bg_intersection"]].to_numpy(np.float64),
        episodes[["fg_union", "bg_union"]].to_numpy(np.float64),
    )


def _mean_defined_iou(intersection: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Mean over the last axis of I / U where U > 0 (NaN where no part is defined), as ``summarize`` does."""
    defined = union > 0
    iou = np.divide(intersection, union, out=np.zeros_like(intersection), where=defined)
    count = defined.sum(axis=-1)
    # Undefined parts add exactly 0.0, so the sum equals summing the defined IoUs in class order.
    total = iou.sum(axis=-1)
    return np.divide(total, count, out=np.full(total.shape, math.nan), where=count > 0)


def _resample_weights(rng: np.random.Generator, rows: int, n: int) -> np.ndarray:
    """How often each of ``n`` episodes is drawn in each of ``rows`` size-``n`` resamples with replacement.

    One ``rng.integers(0, n, size=(rows, n))`` call: row r holds the same draws as the r-th of ``rows``
    successive ``rng.integers(0, n, size=n)`` calls (the generator's stream does not depend on how it is
    split into calls), which is what lets a plain loop reproduce the bootstrap exactly.
    """
    # int32 draws are the same numbers as the default int64 ones (both use 32-bit bounded sampling for n
    # below 2**32; the tests check it) at half the memory traffic. rows·n ≤ max(n, _BLOCK_CELLS) fits int32.
    draws = rng.integers(0, n, size=(rows, n), dtype=np.int32)
    draws += (np.arange(rows, dtype=np.int32) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n).astype(np.float64)


def bootstrap_generator(seed: int, fold: int, episode_seed: int) -> np.random.Generator:
    """The generator that draws the resamples of manifest (fold, episode_seed) for bootstrap ``seed``.

    Keyed by the manifest rather than drawn from one stream, so a manifest's resamples do not depend on
    which other folds or seeds the runs contain.
    """
    return np.random.default_rng([seed, fold, episode_seed])


def paired_bootstrap(
    records_a: pd.DataFrame,
    records_b: pd.DataFrame,
    n_boot: int = 10_000,
    seed: int = 0,
    *,
    metric: Metric = "miou",
    confidence: float = 0.95,
) -> BootstrapResult:
    """Paired bootstrap of Δ = mean over units of (score A − score B), resampling shared episodes.

    Resampling is stratified: each manifest (fold, episode_seed) is resampled on its own, with
    replacement, keeping its size. A resample draws episode indices once per manifest and applies them to
    A and B (the pairing) and to every train seed of that fold, because all of them were scored on the
    same episodes: re-drawing the episodes is what the bootstrap simulates. So each unit's resample stays
    inside the unit, and units sharing a manifest move together instead of being treated as independent.
    On each resample the metric is recomputed per (unit, episode seed) from summed counts (class-wise for
    ``miou``), averaged over the unit's episode seeds, then Δ is averaged over units.

    Random numbers: manifest (fold, e) uses :func:`bootstrap_generator` ``(seed, fold, e)`` and resample b
    is its b-th ``integers(0, n, size=n)`` draw (n = episodes in the manifest). Reports the observed Δ, the
    mean of the resampled Δ, the percentile ``confidence`` interval and the two-sided p
    2·min((1 + #{Δ* ≤ 0}) / (B + 1), (1 + #{Δ* ≥ 0}) / (B + 1)), capped at 1. Resamples whose Δ is
    undefined (no class with a non-empty union) are left out and counted in ``n_undefined``.
    """
    _check_metric(metric)
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    if seed < 0:
        raise ValueError(f"the bootstrap seed must be a non-negative integer, got {seed}")
    check_pairable(records_a, records_b)

    units = _units(records_a)
    unit_index = {unit: i for i, unit in enumerate(units)}
    seeds_per_unit = records_a.groupby(list(UNIT))["episode_seed"].nunique()
    n_seeds = np.array([seeds_per_unit[unit] for unit in units], dtype=np.float64)
    # Σ over episode seeds of each unit's score, per run and resample: [run, resample, unit].
    seed_sums = np.zeros((2, n_boot, len(units)))
    by_manifest = [dict(tuple(r.groupby(list(MANIFEST), sort=True))) for r in (records_a, records_b)]
    manifests = sorted(by_manifest[0])
    n_episodes = 0
    for fold, episode_seed in manifests:
        per_run = [
            by_manifest[r][(fold, episode_seed)].sort_values(["train_seed", "episode_id"]) for r in (0, 1)
        ]
        train_seeds = sorted(int(t) for t in per_run[0]["train_seed"].unique())
        first = per_run[0][per_run[0]["train_seed"] == train_seeds[0]]
        episode_ids = first["episode_id"].to_numpy()
        class_ids = np.unique(first["class_id"].to_numpy())
        # Design matrix [episode, run, train seed, I/U, part]: resampled sums are weights @ design.
        blocks = []
        for run in per_run:
            for train_seed in train_seeds:
                episodes = run[run["train_seed"] == train_seed]
                if not np.array_equal(episodes["episode_id"].to_numpy(), episode_ids):
                    raise PairingError(
                        f"fold {fold} train_seed {train_seed} episode_seed {episode_seed}: episodes differ"
                    )
                blocks.append(np.stack(_iou_parts(episodes, class_ids, metric), axis=1))
        n = episode_ids.size
        n_episodes += n * len(train_seeds)
        design = np.stack(blocks, axis=1).reshape(n, -1)
        columns = [unit_index[(int(fold), t)] for t in train_seeds]
        rng = bootstrap_generator(seed, int(fold), int(episode_seed))
        rows_per_block = max(1, _BLOCK_CELLS // n)
        for start in range(0, n_boot, rows_per_block):
            rows = min(rows_per_block, n_boot - start)
            sums = (_resample_weights(rng, rows, n) @ design).reshape(rows, 2, len(train_seeds), 2, -1)
            scores = _mean_defined_iou(sums[..., 0, :], sums[..., 1, :])  # [resample, run, train seed]
            # Manifests are visited in (fold, episode_seed) order, so each unit's seed scores are summed in
            # seed order, as np.mean does in unit_scores.
            seed_sums[:, start : start + rows, columns] += scores.transpose(1, 0, 2)

    unit_means = seed_sums / n_seeds
    distribution = np.ascontiguousarray(unit_means[0] - unit_means[1]).mean(axis=1)
    observed = unit_scores(records_a, metric) - unit_scores(records_b, metric)
    observed_diff = float(np.mean(observed.to_numpy()))

    finite = distribution[~np.isnan(distribution)]
    n_undefined = int(distribution.size - finite.size)
    note = f"{n_undefined} resamples with an undefined score left out" if n_undefined else ""
    if finite.size:
        # (100 − 95) / 2 = 2.5 exactly; (1 − 0.95) / 2 · 100 would be 2.5000000000000022.
        tail_pct = (100 - 100 * confidence) / 2
        ci_low, ci_high = (float(v) for v in np.percentile(finite, [tail_pct, 100 - tail_pct]))
        below = (1 + np.count_nonzero(finite <= 0)) / (finite.size + 1)
        above = (1 + np.count_nonzero(finite >= 0)) / (finite.size + 1)
        p = float(min(1.0, 2 * min(below, above)))
        mean_diff = float(finite.mean())
    else:
        ci_low = ci_high = p = mean_diff = math.nan
    return BootstrapResult(
        metric=metric,
        n_units=len(units),
        n_manifests=len(manifests),
        n_episodes=n_episodes,
        n_boot=n_boot,
        seed=seed,
        observed_diff=observed_diff,
        mean_diff=mean_diff,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        p=p,
        n_undefined=n_undefined,
        note=note,
        distribution=distribution,
    )


# ----------------------------------------------------------------------------------------------------------
# Comparisons


def compare_records(
    records_a: pd.DataFrame,
    records_b: pd.DataFrame,
    *,
    metric: Metric = "miou",
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    label_a: str | None = None,
    label_b: str | None = None,
) -> PairedComparison:
    """All tests of run A against run B: paired t-test and Wilcoxon over units, bootstrap over episodes.

    Refuses (:class:`PairingError`) runs that cannot be paired. ``n_boot = 0`` skips the bootstrap.
    """
    _check_metric(metric)
    check_pairable(records_a, records_b)
    a, b = unit_scores(records_a, metric), unit_scores(records_b, metric)
    b = b.reindex(a.index)
    scores = pd.DataFrame({"a": a, "b": b, "diff": a - b})
    bootstrap = (
        paired_bootstrap(records_a, records_b, n_boot, seed, metric=metric, confidence=confidence)
        if n_boot
        else None
    )
    return PairedComparison(
        metric=metric,
        label_a=label_a or run_label(records_a),
        label_b=label_b or run_label(records_b),
        scores=scores,
        ttest=paired_ttest(a, b, confidence),
        wilcoxon=wilcoxon(a, b),
        bootstrap=bootstrap,
    )


def compare_family(
    reference: pd.DataFrame | Mapping[str, pd.DataFrame],
    others: Mapping[str, pd.DataFrame],
    *,
    metric: Metric = "miou",
    n_boot: int = 10_000,
    seed: int = 0,
    confidence: float = 0.95,
    reference_label: str | None = None,
) -> dict[str, PairedComparison]:
    """Compare ``reference`` (A) with each of ``others`` (B) and Holm-adjust p within the family.

    A family is, e.g., the flagship against each baseline at one shot, or the full model against each of
    its ablations; Δ = reference − other, so a positive Δ favours the reference. Each test (t-test,
    bootstrap, Wilcoxon) is adjusted over the family on its own; tests not run stay NaN. Every comparison
    uses the same bootstrap seed, hence the same episode resamples (common random numbers).
    ``reference`` may be given per other (a mapping with the same names), e.g. the reference cut to the
    units each other was run on.
    """
    references = reference if isinstance(reference, Mapping) else dict.fromkeys(others, reference)
    comparisons = {
        name: compare_records(
            references[name],
            other,
            metric=metric,
            n_boot=n_boot,
            seed=seed,
            confidence=confidence,
            label_a=reference_label,
            label_b=name,
        )
        for name, other in others.items()
    }
    names = list(comparisons)
    raw = {
        "ttest": [comparisons[n].ttest.p for n in names],
        "bootstrap": [comparisons[n].bootstrap.p if comparisons[n].bootstrap else math.nan for n in names],
        "wilcoxon": [comparisons[n].wilcoxon.p for n in names],
    }
    adjusted = {test: holm(p) for test, p in raw.items()}
    return {
        name: replace(comparisons[name], holm={test: float(adjusted[test][i]) for test in adjusted})
        for i, name in enumerate(names)
    }
