"""The builders of the report's artefacts: one function per table or figure, each from :class:`ReportInputs`.

:data:`fsseg.report.artefacts.ARTEFACTS` names each artefact's builder and the inputs it reads; the
builders only read what :class:`ReportInputs` holds, which :func:`fsseg.report.build.build_report` loads
from the files it is given (no working-directory lookups).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from fsseg.aggregate import CLASS_PREFIX, Aggregate
from fsseg.report import plots, tables
from fsseg.report.results import FamilyResult, Run
from fsseg.report.spec import ReportSpec


@dataclass
class ReportInputs:
    """What the builders read, loaded once from the report's saved inputs."""

    aggregate: Aggregate
    spec: ReportSpec
    runs: dict[tuple[str, int], Run]
    families: list[FamilyResult]
    bench_rows: list[dict[str, Any]]
    predictions: list[dict[str, Any]]
    train_logs: dict[Path, Path]
    """Run folder (resolved) → its ``train_log.jsonl``, for the runs the report was given."""

    @property
    def protocol(self) -> dict[str, Any]:
        return self.aggregate.protocol

    @property
    def folds(self) -> list[int]:
        return [int(f) for f in self.protocol["folds"]]

    @property
    def ablation(self) -> FamilyResult | None:
        return next((f for f in self.families if f.kind == "ablations"), None)

    @property
    def unused_support(self) -> dict[str, float]:
        return tables.support_unused(self.aggregate.diagnostics, self.spec)


def _class_folds(agg: Aggregate) -> dict[str, int]:
    """Fold of each class column: the fold whose evaluations score it."""
    folds: dict[str, int] = {}
    for column in agg.class_columns:
        scored: pd.Series = agg.evaluations.loc[agg.evaluations[column].notna(), "fold"]
        if not scored.empty:
            folds[column] = int(scored.min())
    return folds


# --- tables --------------------------------------------------------------------------------------------


def main_miou(x: ReportInputs) -> tables.Table:
    return tables.main_table("main_miou", "miou", x.runs, x.spec, x.protocol, x.unused_support)


def main_fbiou(x: ReportInputs) -> tables.Table:
    return tables.main_table("main_fbiou", "fbiou", x.runs, x.spec, x.protocol, x.unused_support)


def ablation(x: ReportInputs) -> tables.Table:
    return tables.ablation_table(x.runs, x.ablation, x.spec, x.protocol)


def significance(x: ReportInputs) -> tables.Table:
    return tables.significance_table(x.families, x.spec, x.protocol)


def efficiency(x: ReportInputs) -> tables.Table:
    return tables.efficiency_table(x.bench_rows, x.spec)


def diagnostics(x: ReportInputs) -> tables.Table:
    return tables.diagnostics_table(x.aggregate.diagnostics, x.spec, x.protocol)


def training(x: ReportInputs) -> tables.Table:
    return tables.training_table(x.runs, x.spec, x.protocol, x.train_logs)


# --- figures -------------------------------------------------------------------------------------------


def per_fold_miou(x: ReportInputs) -> Figure:
    return plots.per_fold_figure(x.runs, x.spec.main_runs, x.spec.shots, x.folds)


def class_iou_heatmap(x: ReportInputs) -> Figure:
    columns = [c for c in x.aggregate.class_columns if c.startswith(CLASS_PREFIX)]
    folds = _class_folds(x.aggregate)
    return plots.class_heatmap_figure(x.runs, x.spec.main_runs, x.spec.shots, columns, folds)


def training_curves(x: ReportInputs) -> Figure:
    return plots.training_curves_figure(x.runs, x.spec.main_runs, x.spec.shots, x.train_logs)


def miou_vs_fps(x: ReportInputs) -> Figure:
    size = x.protocol["image_size"]
    return plots.tradeoff_figure(x.runs, x.spec.all_runs, x.spec.shots, x.folds, x.bench_rows, size, "fps")


def miou_vs_params(x: ReportInputs) -> Figure:
    size = x.protocol["image_size"]
    return plots.tradeoff_figure(x.runs, x.spec.all_runs, x.spec.shots, x.folds, x.bench_rows, size, "params")


def paired_differences(x: ReportInputs) -> Figure:
    return plots.paired_differences_figure(x.families, x.spec.alpha)


def qualitative(x: ReportInputs) -> Figure:
    order = [r.display for r in x.spec.all_runs]
    return plots.qualitative_figure(x.predictions, order, x.spec.qualitative_rows)
