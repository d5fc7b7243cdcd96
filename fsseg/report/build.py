"""``fsseg report``: every table and figure of ``reports/`` from an aggregate, bench files and predictions.

Inputs are saved files only: the aggregate folder (``fsseg aggregate``), ``fsseg bench --out`` JSON files,
``fsseg predict`` npz files and the report spec. No model is run. Outputs (all written atomically)::

    OUT/README.md                                  index: protocol, every table, every figure
    OUT/tables/{main_miou,main_fbiou,ablation,significance,efficiency}.{md,tex,csv,caption.txt}
    OUT/figures/{per_fold_miou,class_iou_heatmap,training_curves,miou_vs_fps,miou_vs_params,
                 paired_differences,qualitative}.{png,pdf,caption.txt}
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsseg.aggregate import CLASS_PREFIX, Aggregate, load_aggregate
from fsseg.atomic import write_text
from fsseg.errors import DataError, FssegError
from fsseg.report import captions, plots, tables
from fsseg.report.results import MIN_UNITS_TO_MARK, all_families, select_runs
from fsseg.report.spec import ReportSpec, load_spec

TABLE_NAMES = ("main_miou", "main_fbiou", "ablation", "significance", "efficiency", "diagnostics")
TABLE_TITLES = {
    "main_miou": "Main comparison: class-wise mIoU",
    "main_fbiou": "Main comparison: FB-IoU",
    "ablation": "Ablations",
    "significance": "Significance",
    "efficiency": "Efficiency",
    "diagnostics": "Does each method use its support?",
}
FIGURE_TITLES = {
    "per_fold_miou": "Class mIoU per fold",
    "class_iou_heatmap": "Per-class IoU",
    "training_curves": "Training curves",
    "miou_vs_fps": "Class mIoU against speed",
    "miou_vs_params": "Class mIoU against parameters",
    "paired_differences": "Paired differences",
    "qualitative": "Qualitative examples",
}


def read_bench_files(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """The measurement rows of ``fsseg bench --out`` files (a document with ``results``, or a bare list)."""
    rows: list[dict[str, Any]] = []
    for path in paths:
        try:
            document = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"cannot read efficiency file {path}: {err}") from None
        results = document.get("results") if isinstance(document, dict) else document
        if not isinstance(results, list):
            raise DataError(f"{path} is not an `fsseg bench --out` file (no 'results' list)")
        for row in results:
            missing = [
                k for k in ("method", "variant", "params_total", "fps", "image_size", "shot") if k not in row
            ]
            if missing:
                raise DataError(f"{path}: a result lacks {', '.join(missing)}")
            rows.append(row)
    return rows


def _order_bench_rows(rows: list[dict[str, Any]], spec: ReportSpec) -> list[dict[str, Any]]:
    order = {(r.method, r.variant): i for i, r in enumerate(spec.all_runs)}

    def key(row: dict[str, Any]) -> tuple:
        return (
            order.get((row["method"], row["variant"]), len(order)),
            str(row["method"]),
            str(row["variant"]),
            str(row.get("backbone", "")),
            int(row["image_size"]),
            int(row["shot"]),
            bool(row.get("amp_bf16")),
            bool(row.get("channels_last")),
        )

    return sorted(rows, key=key)


def _class_folds(agg: Aggregate) -> dict[str, int]:
    """Fold of each class column: the fold whose evaluations score it."""
    folds: dict[str, int] = {}
    for column in agg.class_columns:
        scored = agg.evaluations.loc[agg.evaluations[column].notna(), "fold"]
        if not scored.empty:
            folds[column] = int(scored.min())
    return folds


def _figure_captions(spec: ReportSpec, protocol: dict[str, Any], n_boot: int) -> dict[str, str]:
    texts = {
        "per_fold_miou": "class-wise mIoU (%) per fold and averaged over folds, one panel per test shot. "
        "Bars: mean over train seeds; whiskers: 95% t confidence interval over train seeds; dots: the "
        "individual train seeds (each averaged over its episode seeds)",
        "class_iou_heatmap": "per-class IoU (%) of each method, averaged over train seeds and episode seeds; "
        "classes grouped by the fold in which they are novel",
        "training_curves": "training loss against iteration, one panel per method; lines: mean over train "
        "seeds per fold and train shot, bands: ± 1 sd over train seeds",
        "miou_vs_fps": "class-wise mIoU (%) averaged over folds (whiskers: sd over train seeds) against "
        "speed (episodes per second, `fsseg bench`, fp32, benchmark input size)",
        "miou_vs_params": "class-wise mIoU (%) averaged over folds (whiskers: sd over train seeds) against "
        "the total number of parameters",
        "paired_differences": "paired differences Δ = A − B of class-wise mIoU in points: grey dots are the "
        "units (fold × train seed), the red diamond their mean with its 95% t confidence interval; one "
        f"panel per Holm family; † marks Holm-adjusted t-test p < {spec.alpha:g} over at least "
        f"{MIN_UNITS_TO_MARK} units",
        "qualitative": "test episodes (rows): the first support image with its mask (orange), the query, its "
        "ground truth and each method's prediction (orange, with the episode's foreground IoU); grey: "
        "ignored pixels. Episodes are the first ones of the saved test manifest, not chosen by score",
    }
    return {name: captions.figure_caption(spec, protocol, text) for name, text in texts.items()}


def build_report(
    aggregate_dir: str | Path,
    spec_path: str | Path,
    out_dir: str | Path,
    efficiency_files: Sequence[str | Path] = (),
    prediction_files: Sequence[str | Path] = (),
) -> list[Path]:
    """Render every table and figure of the report into ``out_dir``; returns the files written."""
    from fsseg.qualitative import load_predictions

    agg = load_aggregate(aggregate_dir)
    spec = load_spec(spec_path)
    protocol = agg.protocol
    if spec.dataset != protocol["dataset"]:
        raise FssegError(
            f"the report spec is for dataset {spec.dataset!r} but {aggregate_dir} aggregates "
            f"{protocol['dataset']!r}"
        )
    known = set(protocol.get("runs", {}))
    absent = [r.key for r in spec.all_runs if r.key not in known]
    if spec.flagship.key not in known:
        raise FssegError(
            f"the flagship {spec.flagship.key} has no evaluation in {aggregate_dir}; "
            f"it holds {', '.join(sorted(known)) or 'nothing'}"
        )
    if absent:
        print(f"fsseg report: no evaluations of {', '.join(absent)}; shown as missing", file=sys.stderr)

    out = Path(out_dir)
    table_dir, figure_dir = out / "tables", out / "figures"
    runs = select_runs(agg, spec.all_runs, spec.shots)
    families = all_families(runs, spec)
    ablation = next((f for f in families if f.kind == "ablations"), None)
    bench_rows = _order_bench_rows(read_bench_files(efficiency_files), spec)

    unused_support = tables.support_unused(agg.diagnostics, spec)
    built = [
        tables.main_table("main_miou", "miou", runs, spec, protocol, unused_support),
        tables.main_table("main_fbiou", "fbiou", runs, spec, protocol, unused_support),
        tables.ablation_table(runs, ablation, spec, protocol),
        tables.significance_table(families, spec, protocol),
        tables.efficiency_table(bench_rows, spec),
        tables.diagnostics_table(agg.diagnostics, spec, protocol),
    ]
    written: list[Path] = []
    for table in built:
        written += tables.write_table(table, table_dir)

    labels = {(r.method, r.variant): r.display for r in spec.all_runs}
    predictions = []
    for path in prediction_files:
        p = load_predictions(path)
        default = p["method"] if p["variant"] == "default" else f"{p['method']} ({p['variant']})"
        p["label"] = labels.get((p["method"], p["variant"]), default)
        predictions.append(p)

    folds = [int(f) for f in protocol["folds"]]
    main_refs = spec.main_runs
    figure_captions = _figure_captions(spec, protocol, spec.bootstrap.iterations)
    class_columns = [c for c in agg.class_columns if c.startswith(CLASS_PREFIX)]
    figures = {
        "per_fold_miou": lambda: plots.per_fold_figure(runs, main_refs, spec.shots, folds),
        "class_iou_heatmap": lambda: plots.class_heatmap_figure(
            runs, main_refs, spec.shots, class_columns, _class_folds(agg)
        ),
        "training_curves": lambda: plots.training_curves_figure(runs, main_refs, spec.shots, Path.cwd()),
        "miou_vs_fps": lambda: plots.tradeoff_figure(
            runs, spec.all_runs, spec.shots, folds, bench_rows, protocol["image_size"], "fps"
        ),
        "miou_vs_params": lambda: plots.tradeoff_figure(
            runs, spec.all_runs, spec.shots, folds, bench_rows, protocol["image_size"], "params"
        ),
        "paired_differences": lambda: plots.paired_differences_figure(families, spec.alpha),
        "qualitative": lambda: plots.qualitative_figure(
            predictions, [r.display for r in spec.all_runs], spec.qualitative_rows
        ),
    }
    for name, make in figures.items():
        written += plots.save_figure(make(), figure_dir / name)
        caption_path = figure_dir / f"{name}.caption.txt"
        write_text(caption_path, figure_captions[name] + "\n")
        written.append(caption_path)

    write_text(out / "README.md", _index(spec, protocol, built, figure_captions))
    written.append(out / "README.md")
    return written


def _index(
    spec: ReportSpec, protocol: dict[str, Any], built: Sequence[tables.Table], figure_captions: dict[str, str]
) -> str:
    lines = [f"# {spec.title}", "", captions.protocol_text(protocol), "", "## Tables", ""]
    for table in built:
        lines += [
            f"### {TABLE_TITLES[table.name]}",
            "",
            tables.to_markdown(table).rstrip(),
            "",
            f"Files: [Markdown](tables/{table.name}.md), [LaTeX](tables/{table.name}.tex), "
            f"[CSV](tables/{table.name}.csv)",
            "",
        ]
    lines += ["## Figures", ""]
    for name, caption in figure_captions.items():
        lines += [
            f"### {FIGURE_TITLES[name]}",
            "",
            f"![{FIGURE_TITLES[name]}](figures/{name}.png)",
            "",
            f"*{caption.replace('*', chr(92) + '*')}*",
            "",
            f"Files: [PNG](figures/{name}.png), [PDF](figures/{name}.pdf)",
            "",
        ]
    return "\n".join(lines)
