"""Report tables: one model (:class:`Table`), three renderings (Markdown, LaTeX booktabs, CSV).

Markdown and LaTeX show rounded display text (scores in %, differences in points) with the caption
attached (Markdown: an italic paragraph under the table; LaTeX: ``\\caption`` inside a ``table``
environment). The CSV holds the unrounded numbers as fractions, one observation per row, for
re-analysis; its caption goes to a sibling ``.caption.txt``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fsseg.atomic import write_text
from fsseg.report import captions
from fsseg.report.results import (
    MEAN,
    FamilyResult,
    Run,
    ablation_units,
    describe_variant,
    fold_cells,
    n_episode_seeds,
    restrict_to_units,
    run_loss_logs,
    significant,
)
from fsseg.report.spec import ReportSpec, RunRef

DASH = "–"
SUPPORT_UNUSED_MARK = "‡"
"""Marks, in the main tables, a method whose score hardly falls under a support swap."""
DAGGER = "†"


@dataclass
class Table:
    """A rendered table: leaf columns, optional spanning groups above them, display rows, caption, CSV."""

    name: str
    columns: list[str]
    rows: list[list[str]]
    caption: str
    data: pd.DataFrame
    groups: list[tuple[str, int]] = field(default_factory=list)  # (label, number of columns spanned)
    align: str = ""  # one of l/r/c per column; default: first column l, the rest r
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells to bold
    rules_after: set[int] = field(default_factory=set)  # row indices followed by a \midrule

    def alignment(self) -> str:
        return self.align or "l" + "r" * (len(self.columns) - 1)

    def group_of_columns(self) -> list[str]:
        """The group label above each leaf column ('' where none)."""
        out: list[str] = []
        for label, span in self.groups:
            out.extend([label] * span)
        return out + [""] * (len(self.columns) - len(out))


# ----------------------------------------------------------------------------------------------------------
# Formatting


def pct(value: float, digits: int = 1) -> str:
    return DASH if value is None or math.isnan(value) else f"{100 * value:.{digits}f}"


def points(value: float, digits: int = 2) -> str:
    """A difference in points (×100) with its sign; − is the minus sign."""
    if value is None or math.isnan(value):
        return DASH
    return f"{100 * value:+.{digits}f}".replace("-", "−")


def interval(low: float, high: float, digits: int = 2) -> str:
    if math.isnan(low) or math.isnan(high):
        return DASH
    return f"[{points(low, digits)}, {points(high, digits)}]"


def pvalue(value: float) -> str:
    if value is None or math.isnan(value):
        return DASH
    return f"{value:.1e}" if value < 1e-3 else f"{value:.3f}"


def mean_sd(mean: float, sd: float) -> str:
    if math.isnan(mean):
        return DASH
    return pct(mean) if math.isnan(sd) else f"{pct(mean)} ± {pct(sd)}"


# ----------------------------------------------------------------------------------------------------------
# Renderers


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table) -> str:
    groups = table.group_of_columns()
    header = [f"{g} {c}".strip() for g, c in zip(groups, table.columns, strict=True)]
    align = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(_md_escape(h) for h in header) + " |",
        "| " + " | ".join(align[a] for a in table.alignment()) + " |",
    ]
    for r, row in enumerate(table.rows):
        cells = [
            f"**{_md_escape(cell)}**" if (r, c) in table.bold and cell != DASH else _md_escape(cell)
            for c, cell in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    # Asterisks in the caption would end the italics early.
    caption = table.caption.replace("*", "\\*")
    return "\n".join(lines) + f"\n\n*{caption}*\n"


_LATEX_CHARS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
    "†": r"$^\dagger$",
    "−": r"$-$",
    "–": r"--",
    "→": r"$\rightarrow$",
    "≥": r"$\geq$",
    "·": r"$\cdot$",
    "<": r"$<$",
    ">": r"$>$",
    "`": "",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_CHARS.get(ch, ch) for ch in text)


def to_latex(table: Table) -> str:
    """A ``table`` environment with booktabs rules; needs ``\\usepackage{booktabs}``."""
    out = io.StringIO()
    out.write("% requires \\usepackage{booktabs}\n")
    out.write("\\begin{table}[t]\n\\centering\n\\small\n")
    out.write(f"\\caption{{{latex_escape(table.caption)}}}\n")
    out.write(f"\\label{{tab:{table.name}}}\n")
    out.write(f"\\begin{{tabular}}{{{table.alignment()}}}\n\\toprule\n")
    if table.groups:
        cells, rules, col = [], [], 1
        covered = sum(span for _, span in table.groups)
        for label, span in table.groups:
            if label:
                cells.append(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(label)}}}")
                rules.append(f"\\cmidrule(lr){{{col}-{col + span - 1}}}")
            else:
                cells.extend([""] * span)
            col += span
        cells.extend([""] * (len(table.columns) - covered))
        out.write(" & ".join(cells) + " \\\\\n" + "".join(rules) + "\n")
    out.write(" & ".join(latex_escape(c) for c in table.columns) + " \\\\\n\\midrule\n")
    for r, row in enumerate(table.rows):
        cells = [
            f"\\textbf{{{latex_escape(cell)}}}"
            if (r, c) in table.bold and cell != DASH
            else latex_escape(cell)
            for c, cell in enumerate(row)
        ]
        out.write(" & ".join(cells) + " \\\\\n")
        if r in table.rules_after and r < len(table.rows) - 1:
            out.write("\\midrule\n")
    out.write("\\bottomrule\n\\end{tabular}\n\\end{table}\n")
    return out.getvalue()


def to_csv(table: Table) -> str:
    # float repr: full precision, and the same text on every run.
    return table.data.to_csv(index=False, lineterminator="\n", float_format=None)


def write_table(table: Table, folder: Path) -> list[Path]:
    """Write ``<name>.md``, ``.tex``, ``.csv`` and ``.caption.txt`` into ``folder``; returns the paths."""
    paths = {
        "md": folder / f"{table.name}.md",
        "tex": folder / f"{table.name}.tex",
        "csv": folder / f"{table.name}.csv",
        "caption": folder / f"{table.name}.caption.txt",
    }
    write_text(paths["md"], to_markdown(table))
    write_text(paths["tex"], to_latex(table))
    write_text(paths["csv"], to_csv(table))
    write_text(paths["caption"], table.caption + "\n")
    return list(paths.values())


# ----------------------------------------------------------------------------------------------------------
# The report's tables


def _best_rows(rows: list[list[str]], column: int) -> set[int]:
    """Rows whose displayed value in ``column`` is the highest (ties all win)."""
    values = {}
    for r, row in enumerate(rows):
        text = row[column].split(" ± ")[0]
        if text != DASH:
            values[r] = float(text)
    if not values:
        return set()
    best = max(values.values())
    return {r for r, v in values.items() if v == best}


def main_table(
    name: str,
    metric: str,
    runs: dict[tuple[str, int], Run],
    spec: ReportSpec,
    protocol: dict[str, Any],
    unused_support: dict[str, float] | None = None,
) -> Table:
    """Rows: baselines then flagship; columns: each fold and the mean, per test shot; mean ± sd over seeds.

    ``unused_support`` (label → swap drop, :func:`support_unused`): these methods are marked
    ``SUPPORT_UNUSED_MARK`` and never bold: their scores are reachable without the support."""
    unused_support = unused_support or {}
    folds = [int(f) for f in protocol["folds"]]
    fold_columns: list[int | str] = [*folds, MEAN]
    columns = ["Method"]
    groups: list[tuple[str, int]] = [("", 1)]
    for shot in spec.shots:
        columns += [f"fold {f}" if f != MEAN else "mean" for f in fold_columns]
        groups.append((f"{shot}-shot", len(fold_columns)))
    rows, data = [], []
    episode_seed_counts, missing = set(), []
    seeds_of: dict[str, int] = {}  # train seeds of each method's mean cells (the most over its shots)
    train_shots: dict[int, list[int]] = {}
    for ref in spec.main_runs:
        row = [ref.display + (f" {SUPPORT_UNUSED_MARK}" if ref.display in unused_support else "")]
        for shot in spec.shots:
            run = runs.get((ref.display, shot))
            if run is None:
                row += [DASH] * len(fold_columns)
                missing.append(f"{ref.display} ({shot}-shot)")
                continue
            train_shots.setdefault(shot, []).append(run.train_shot)
            cells = fold_cells(run.units(metric), folds)
            seeds_of[ref.display] = max(seeds_of.get(ref.display, 0), cells[MEAN].n)
            episode_seed_counts.add(n_episode_seeds(run))
            for key in fold_columns:
                cell = cells[key]
                row.append(mean_sd(cell.mean, cell.sd))
                data.append(
                    {
                        "metric": metric,
                        "method": ref.method,
                        "variant": ref.variant,
                        "label": ref.display,
                        "backbone": run.backbone,
                        "train_shot": run.train_shot,
                        "shot": shot,
                        "fold": key,
                        "mean": cell.mean,
                        "sd": cell.sd,
                        "n_train_seeds": cell.n,
                    }
                )
        rows.append(row)
    trusted = [r for r, ref in enumerate(spec.main_runs) if ref.display not in unused_support]
    bold = {
        (trusted[r], c) for c in range(1, len(columns)) for r in _best_rows([rows[i] for i in trusted], c)
    }
    most_seeds = max(seeds_of.values(), default=0)
    caption = captions.main_caption(
        spec,
        protocol,
        metric,
        most_seeds,
        max(episode_seed_counts, default=0),
        train_shots,
        missing,
        unused_support,
        {label: n for label, n in seeds_of.items() if n < most_seeds},
    )
    frame = pd.DataFrame(
        data,
        columns=[
            "metric", "method", "variant", "label", "backbone", "train_shot", "shot", "fold", "mean", "sd",
            "n_train_seeds",
        ],
    )  # fmt: skip
    return Table(name, columns, rows, caption, frame, groups=groups, bold=bold)


def ablation_table(
    runs: dict[tuple[str, int], Run],
    family: FamilyResult | None,
    spec: ReportSpec,
    protocol: dict[str, Any],
) -> Table:
    """Rows: the full model, then each ablation; per shot: score, Δ vs full, Holm-adjusted p."""
    shots = [s for s in spec.shots if any((r.display, s) in runs for r in spec.ablations)] or spec.shots[:1]
    columns = ["Variant", "Change"]
    groups: list[tuple[str, int]] = [("", 2)]
    for shot in shots:
        columns += ["mIoU", "Δ", "p (Holm)"]
        groups.append((f"{shot}-shot", 3))
    by_pair = {(shot, b.label): c for shot, _, b, c in (family.comparisons if family else [])}
    runs_info = protocol.get("runs", {})
    default_params = runs_info.get(spec.flagship.key, {}).get("params", {})
    rows, data = [], []
    for i, ref in enumerate([spec.flagship, *spec.ablations]):
        if i == 0:
            change = "full model"
        elif ref.key in runs_info:
            change = describe_variant(runs_info[ref.key]["params"], default_params)
            if ref.method != spec.flagship.method:
                change = f"method {ref.method}; {change}"
        else:
            change = DASH
        row = [ref.display, change]
        for shot in shots:
            run = runs.get((ref.display, shot))
            units = ablation_units(runs, spec, shot)
            if run is not None and units:
                run = restrict_to_units(run, units)  # the full model on the ablations' units only
            folds = sorted({fold for fold, _ in units}) or [int(f) for f in protocol["folds"]]
            cell = fold_cells(run.units("miou"), folds)[MEAN] if run else None
            comparison = by_pair.get((shot, ref.display))
            score = mean_sd(cell.mean, cell.sd) if cell else DASH
            if comparison is None:
                row += [score, DASH, DASH]
            else:
                diff = -comparison.ttest.mean_diff  # the family's Δ is full − variant; shown: variant − full
                mark = DAGGER if significant(comparison, spec.alpha) else ""
                row += [score, points(diff), pvalue(comparison.holm.get("ttest", math.nan)) + mark]
            data.append(
                {
                    "label": ref.display,
                    "method": ref.method,
                    "variant": ref.variant,
                    "change": change,
                    "shot": shot,
                    "miou_mean": cell.mean if cell else math.nan,
                    "miou_sd": cell.sd if cell else math.nan,
                    "n_train_seeds": cell.n if cell else 0,
                    "diff_vs_full": -comparison.ttest.mean_diff if comparison else math.nan,
                    "p_ttest": comparison.ttest.p if comparison else math.nan,
                    "p_ttest_holm": comparison.holm.get("ttest", math.nan) if comparison else math.nan,
                    "significant": significant(comparison, spec.alpha) if comparison else False,
                }
            )
        rows.append(row)
    n_comparisons = len(family.comparisons) if family else 0
    caption = captions.ablation_caption(
        spec, protocol, n_comparisons, spec.bootstrap.iterations, family.missing if family else []
    )
    return Table(
        "ablation",
        columns,
        rows,
        caption,
        pd.DataFrame(data),
        groups=groups,
        align="ll" + "r" * (len(columns) - 2),
        rules_after={0},
    )


#: CSV header of an empty significance table (otherwise the header is PairedComparison.to_row's).
SIGNIFICANCE_HEADER = (
    "family", "shot", "metric", "a", "b", "n_units", "mean_a", "mean_b", "diff", "ci_low", "ci_high", "t",
    "df", "p_ttest", "d_z", "p_ttest_holm", "boot_ci_low", "boot_ci_high", "p_bootstrap", "p_wilcoxon",
    "marked",
)  # fmt: skip


def significance_table(families: Sequence[FamilyResult], spec: ReportSpec, protocol: dict[str, Any]) -> Table:
    """One row per comparison, grouped by Holm family."""
    columns = ["Family", "Shot", "A", "B", "n", "Δ", "95% CI", "p", "p (Holm)", "d_z", "bootstrap 95% CI", ""]
    rows, data, rules, missing = [], [], set(), []
    for family in families:
        missing += family.missing
        for shot, a, b, c in family.comparisons:
            tt, bs = c.ttest, c.bootstrap
            marked = significant(c, spec.alpha)
            rows.append(
                [
                    "vs baselines" if family.kind == "baselines" else "ablations",
                    str(shot),
                    a.label,
                    b.label,
                    str(tt.n),
                    points(tt.mean_diff),
                    interval(tt.ci_low, tt.ci_high),
                    pvalue(tt.p),
                    pvalue(c.holm.get("ttest", math.nan)),
                    DASH if math.isnan(tt.d_z) else f"{tt.d_z:+.2f}".replace("-", "−"),
                    interval(bs.ci_low, bs.ci_high) if bs else DASH,
                    DAGGER if marked else "",
                ]
            )
            data.append({"family": family.name, "shot": shot, **c.to_row(), "marked": marked})
        # A rule closes each family (the LaTeX writer drops the one after the last row).
        if rows:
            rules.add(len(rows) - 1)
    caption = captions.significance_caption(spec, protocol, [f.name for f in families], missing)
    return Table(
        "significance",
        columns,
        rows,
        caption,
        pd.DataFrame(data, columns=None if data else list(SIGNIFICANCE_HEADER)),
        align="lrll" + "r" * 7 + "c",
        rules_after=rules,
    )


EFFICIENCY_COLUMNS = (
    "Method",
    "Backbone",
    "Input px",
    "Shot",
    "Mode",
    "Params (M)",
    "Trainable (M)",
    "GFLOPs",
    "Latency (ms)",
    "FPS",
    "Peak mem. (MB)",
)


#: Columns of the efficiency CSV after ``label``: the bench fields a reader needs to re-plot or re-check.
EFFICIENCY_DATA = (
    "method", "variant", "backbone", "image_size", "shot", "batch_size", "amp_bf16", "channels_last",
    "params_total", "params_trainable", "params_used", "gflops_per_episode", "latency_ms_median",
    "latency_ms_p90", "fps", "peak_memory_mb", "peak_memory_kind", "device", "cpu", "num_threads",
    "torch_version",
)  # fmt: skip


def efficiency_table(rows: Sequence[dict[str, Any]], spec: ReportSpec) -> Table:
    """One row per ``fsseg bench`` measurement, in spec order."""
    from fsseg.efficiency import mode_label

    labels = {(r.method, r.variant): r.display for r in spec.all_runs}
    shown, data = [], []
    for row in rows:
        label = labels.get((row["method"], row["variant"]))
        if label is None:
            label = row["method"] if row["variant"] == "default" else f"{row['method']} ({row['variant']})"
        peak = row.get("peak_memory_mb")
        shown.append(
            [
                label,
                str(row["backbone"]),
                str(row["image_size"]),
                str(row["shot"]),
                mode_label(row),
                f"{row['params_total'] / 1e6:.2f}",
                f"{row['params_trainable'] / 1e6:.2f}",
                f"{row['gflops_per_episode']:.2f}",
                f"{row['latency_ms_median']:.1f}",
                f"{row['fps']:.1f}",
                "n/a" if peak is None else f"{peak:.1f}",
            ]
        )
        data.append({"label": label, **{k: row.get(k) for k in EFFICIENCY_DATA}})
    caption = captions.efficiency_caption(spec, rows)
    frame = pd.DataFrame(data, columns=["label", *EFFICIENCY_DATA])
    return Table("efficiency", list(EFFICIENCY_COLUMNS), shown, caption, frame, align="llrrl" + "r" * 6)


DIAGNOSTIC_LABELS = {
    "miou": "Class mIoU",
    "support_swap": "Support swap",
    "swap_drop": "Swap drop",
    "base_classes": "Base classes",
}


def _diagnostic_units(diagnostics: pd.DataFrame, ref: RunRef) -> list[tuple[int, pd.DataFrame]]:
    """Per diagnosed shot (ascending) of one run: its scores per unit (fold × train seed), each unit's
    averaged over episode seeds, with ``swap_drop`` (class mIoU − swap score) when both are there."""
    from fsseg.aggregate import SCORE_PREFIX

    if diagnostics.empty:
        return []
    mine = diagnostics[(diagnostics["method"] == ref.method) & (diagnostics["variant"] == ref.variant)]
    out = []
    for shot in sorted(mine["shot"].unique()):
        at = mine[mine["shot"] == shot].copy()
        if {f"{SCORE_PREFIX}miou", f"{SCORE_PREFIX}support_swap"} <= set(at.columns):
            at[f"{SCORE_PREFIX}swap_drop"] = at[f"{SCORE_PREFIX}miou"] - at[f"{SCORE_PREFIX}support_swap"]
        out.append((int(shot), at.groupby(["fold", "train_seed"]).mean(numeric_only=True)))
    return out


def support_unused(diagnostics: pd.DataFrame, spec: ReportSpec) -> dict[str, float]:
    """Display label → mean swap drop (points) of the runs whose drop at their smallest diagnosed shot is
    below ``spec.min_swap_drop``: scores reachable without using the support."""
    from fsseg.aggregate import SCORE_PREFIX

    flagged = {}
    for ref in spec.all_runs:
        per_shot = _diagnostic_units(diagnostics, ref)
        if not per_shot or f"{SCORE_PREFIX}swap_drop" not in per_shot[0][1].columns:
            continue
        drop = 100 * float(per_shot[0][1][f"{SCORE_PREFIX}swap_drop"].mean())
        if drop < spec.min_swap_drop:
            flagged[ref.display] = drop
    return flagged


def diagnostics_table(diagnostics: pd.DataFrame, spec: ReportSpec, protocol: dict[str, Any]) -> Table:
    """Does each method use its support? Class mIoU, under a support swap, on base classes, with probes.

    One row per (run, diagnosed shot): each score is the mean ± sd over units (fold × train seed), a
    unit's score averaged over episode seeds first; "Swap drop" is class mIoU minus the swap score.
    """
    from fsseg.aggregate import SCORE_PREFIX

    scores = sorted(c[len(SCORE_PREFIX) :] for c in diagnostics.columns if c.startswith(SCORE_PREFIX))
    fixed = [s for s in ("miou", "support_swap") if s in scores]
    others = [s for s in scores if s not in fixed]
    with_drop = len(fixed) == 2
    names = [*fixed, *(["swap_drop"] if with_drop else []), *others]
    columns = ["Method", "Shot", *(DIAGNOSTIC_LABELS.get(n, n) for n in names)]
    shown, data = [], []
    for ref in spec.all_runs:
        for shot, units in _diagnostic_units(diagnostics, ref):
            cells, values = [], {}
            for name in names:
                column = units[f"{SCORE_PREFIX}{name}"]
                mean = float(column.mean())
                sd = float(column.std(ddof=1)) if len(column) > 1 else math.nan
                cells.append(
                    (points(mean, 1) if name == "swap_drop" else pct(mean))
                    + ("" if math.isnan(sd) else f" ± {pct(sd)}")
                )
                values[name] = mean
            shown.append([ref.display, str(int(shot)), *cells])
            data.append({"label": ref.display, "shot": int(shot), "units": len(units), **values})
    caption = captions.diagnostics_caption(spec, protocol, others)
    frame = pd.DataFrame(data)
    return Table("diagnostics", columns, shown, caption, frame, align="lr" + "r" * (len(columns) - 2))


# ----------------------------------------------------------------------------------------------------------
# Training: does the loss fall, has it settled?

LOSS_RATIO_BOUND = 0.7
"""A run whose last logged loss is above this multiple of its first hardly learned (the "learns" bound of
the default benchmark)."""
SETTLE_WINDOW = 0.2
"""Share of the iterations over which the loss's late change is measured, against the share before."""
SETTLED_ALPHA = 0.05
"""A run has settled unless the least-squares trend of its log lines over the last :data:`SETTLE_WINDOW` of
its iterations is downward at this one-sided level. A logged loss is a mean over a few batches of random
episodes (line-to-line sd 0.013-0.028 in the long runs), so a fixed bound on a window's change would count
that noise as a trend, or hide one."""
MIN_TREND_LINES = 5
"""Fewer log lines than this in the last :data:`SETTLE_WINDOW`: too coarse to test (a dash)."""


def _mean_sd_text(values: pd.Series, digits: int = 3) -> str:
    """Mean ± sd (ddof 1) of the non-missing values; the mean alone for one, a dash for none."""
    values = values.dropna()
    if values.empty:
        return DASH
    text = f"{values.mean():.{digits}f}"
    return text if len(values) < 2 else f"{text} ± {values.std(ddof=1):.{digits}f}"


def _window_change(iterations: np.ndarray, losses: np.ndarray, window: float) -> float:
    """Relative change of the mean loss over the last ``window`` of the iterations against the ``window``
    before it; NaN when either holds no log line."""
    end = iterations[-1]
    late = losses[iterations > (1 - window) * end]
    before = losses[(iterations > (1 - 2 * window) * end) & (iterations <= (1 - window) * end)]
    return late.mean() / before.mean() - 1 if len(late) and len(before) else math.nan


def _late_trend_p(iterations: np.ndarray, losses: np.ndarray) -> float:
    """One-sided p that the log lines of the last :data:`SETTLE_WINDOW` of the iterations trend downward
    (t-test of the least-squares slope); NaN with fewer than :data:`MIN_TREND_LINES` lines there."""
    from scipy import stats as sps

    late = iterations > (1 - SETTLE_WINDOW) * iterations[-1]
    if late.sum() < MIN_TREND_LINES:
        return math.nan
    if np.ptp(losses[late]) == 0:
        return 1.0  # constant: no trend
    fit = sps.linregress(iterations[late], losses[late], alternative="less")
    if fit.stderr == 0:  # on a line exactly: the sign decides
        return 0.0 if fit.slope < 0 else 1.0
    return float(fit.pvalue)


def loss_summary(log: pd.DataFrame) -> dict[str, float]:
    """One run's logged losses (``iteration``, ``loss``, in order): first, last, their ratio, the relative
    change of the mean loss over the last :data:`SETTLE_WINDOW` of the iterations against the same share
    before (``late_change``), and the one-sided p of a downward trend within that last share (``late_p``,
    :func:`_late_trend_p`)."""
    iterations = log["iteration"].to_numpy(dtype=float)
    losses = log["loss"].to_numpy(dtype=float)
    return {
        "first": losses[0],
        "last": losses[-1],
        "ratio": losses[-1] / losses[0],
        "late_change": _window_change(iterations, losses, SETTLE_WINDOW),
        "late_p": _late_trend_p(iterations, losses),
    }


def _settled_count(late_p: pd.Series) -> tuple[int, int]:
    """(k, n): of the n runs with enough log lines at the end (a p, not NaN), the k whose loss showed no
    downward trend over the last :data:`SETTLE_WINDOW` (p ≥ :data:`SETTLED_ALPHA`)."""
    measured = late_p.dropna()
    return int((measured >= SETTLED_ALPHA).sum()), len(measured)


def _settled_text(late_p: pd.Series) -> str:
    """``k/n`` of :func:`_settled_count`; a dash when no run has enough log lines."""
    settled, measured = _settled_count(late_p)
    return f"{settled}/{measured}" if measured else DASH


def training_table(
    runs: dict[tuple[str, int], Run],
    spec: ReportSpec,
    protocol: dict[str, Any],
    train_logs: Mapping[Path, Path],
) -> Table:
    """Per trained method (every run the report shows): first and last logged loss, the range of their
    ratio, how many runs end at most :data:`LOSS_RATIO_BOUND` × their start, and the loss's change over the
    last :data:`SETTLE_WINDOW` of training, and how many runs had settled (:data:`SETTLED_ALPHA`)."""
    late_label = f"Last {SETTLE_WINDOW:.0%}"
    bound_label = f"≤ {LOSS_RATIO_BOUND:g} × first"
    columns = ["Method", "Runs", "First", "Last", "Last / first", bound_label, late_label, "Settled"]
    shown, data = [], []
    for ref in spec.all_runs:
        logs = run_loss_logs(runs, ref, spec.shots, train_logs)
        if not logs:
            continue  # not trained (or its logs were not given)
        frame = pd.DataFrame([loss_summary(log) for log in logs.values()])
        n = len(frame)
        within = int((frame["ratio"] <= LOSS_RATIO_BOUND).sum())
        shown.append(
            [
                ref.display,
                str(n),
                _mean_sd_text(frame["first"]),
                _mean_sd_text(frame["last"]),
                f"{frame['ratio'].min():.2f}–{frame['ratio'].max():.2f}",
                f"{within}/{n}",
                _mean_sd_text(100 * frame["late_change"], 1).replace("-", "−"),
                _settled_text(frame["late_p"]),
            ]
        )
        data.append(
            {
                "label": ref.display,
                "runs": n,
                "first_mean": frame["first"].mean(),
                "last_mean": frame["last"].mean(),
                "ratio_min": frame["ratio"].min(),
                "ratio_max": frame["ratio"].max(),
                "runs_within_bound": within,
                "late_change_mean": frame["late_change"].mean(),
                "late_change_max": frame["late_change"].max(),
                "late_p_min": frame["late_p"].min(),
                "runs_settled": _settled_count(frame["late_p"])[0],
            }
        )
    caption = captions.training_caption(
        spec, protocol, LOSS_RATIO_BOUND, SETTLE_WINDOW, SETTLED_ALPHA, MIN_TREND_LINES
    )
    frame = pd.DataFrame(data)
    return Table("training", columns, shown, caption, frame, align="l" + "r" * (len(columns) - 1))
