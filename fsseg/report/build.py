"""``fsseg report``: every table and figure of ``reports/`` from an aggregate, bench files and predictions.

Inputs are saved files only: the aggregate folder (``fsseg aggregate``), ``fsseg bench --out`` JSON files,
``fsseg predict`` npz files, the trained runs' ``train_summary.json`` (their ``train_log.jsonl`` beside
them) and the report spec. No model is run. Outputs (all written atomically): ``OUT/README.md`` (index:
protocol, every table, every figure) and, for every artefact that :mod:`fsseg.report.artefacts`
declares, ``OUT/tables/<name>.{md,tex,csv,caption.txt}`` or ``OUT/figures/<name>.{png,pdf,caption.txt}``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsseg.aggregate import load_aggregate
from fsseg.atomic import write_text
from fsseg.errors import DataError, FssegError
from fsseg.report import builders, captions, plots, tables
from fsseg.report.artefacts import ARTEFACTS, FIGURES, Artefact, artefact
from fsseg.report.builders import ReportInputs
from fsseg.report.results import all_families, select_runs
from fsseg.report.spec import MIN_UNITS_TO_MARK, ReportSpec, load_spec


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


def train_logs_of(train_summaries: Sequence[str | Path]) -> dict[Path, Path]:
    """Run folder (resolved) → the ``train_log.jsonl`` beside each given ``train_summary.json``."""
    logs = {}
    for summary in train_summaries:
        path = Path(summary)
        if path.name != "train_summary.json":
            raise FssegError(f"{path}: expected a run's train_summary.json (`fsseg report --train-runs`)")
        if not path.is_file():
            raise DataError(f"{path} does not exist: the run is not trained")
        logs[path.parent.resolve()] = path.parent / "train_log.jsonl"
    return logs


def _figure_captions(spec: ReportSpec, protocol: dict[str, Any]) -> dict[str, str]:
    return {
        f.name: captions.figure_caption(spec, protocol, f.caption_text(spec.alpha, MIN_UNITS_TO_MARK))
        for f in FIGURES
    }


def build_report(
    aggregate_dir: str | Path,
    spec_path: str | Path,
    out_dir: str | Path,
    efficiency_files: Sequence[str | Path] = (),
    prediction_files: Sequence[str | Path] = (),
    train_summaries: Sequence[str | Path] = (),
) -> list[Path]:
    """Render every artefact of :data:`~fsseg.report.artefacts.ARTEFACTS` into ``out_dir``; returns the
    files written. ``train_summaries`` are the ``train_summary.json`` files of the runs whose training
    curves are drawn (each run's ``train_log.jsonl`` beside it); a run not given has no curve."""
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

    runs = select_runs(agg, spec.all_runs, spec.shots)
    labels = {(r.method, r.variant): r.display for r in spec.all_runs}
    predictions = []
    for path in prediction_files:
        p = load_predictions(path)
        default = p["method"] if p["variant"] == "default" else f"{p['method']} ({p['variant']})"
        p["label"] = labels.get((p["method"], p["variant"]), default)
        predictions.append(p)
    inputs = ReportInputs(
        aggregate=agg,
        spec=spec,
        runs=runs,
        families=all_families(runs, spec),
        bench_rows=_order_bench_rows(read_bench_files(efficiency_files), spec),
        predictions=predictions,
        train_logs=train_logs_of(train_summaries),
    )

    out = Path(out_dir)
    figure_captions = _figure_captions(spec, protocol)
    built: list[tables.Table] = []
    written: list[Path] = []
    for item in ARTEFACTS:
        made = build_artefact(item, inputs)
        if isinstance(made, tables.Table):
            built.append(made)
            written += tables.write_table(made, out / item.folder)
            continue
        written += plots.save_figure(made, out / item.folder / item.name)
        caption_path = out / item.folder / f"{item.name}.caption.txt"
        write_text(caption_path, figure_captions[item.name] + "\n")
        written.append(caption_path)

    write_text(out / "README.md", _index(spec, protocol, built, figure_captions))
    written.append(out / "README.md")
    return written


def build_artefact(item: Artefact, inputs: ReportInputs) -> tables.Table | Any:
    """Run the artefact's declared builder; a table must come back under the artefact's name."""
    made = getattr(builders, item.builder)(inputs)
    if item.kind == "table" and (not isinstance(made, tables.Table) or made.name != item.name):
        raise TypeError(f"builder {item.builder} of table {item.name!r} returned {made!r}")
    return made


def _index(
    spec: ReportSpec, protocol: dict[str, Any], built: Sequence[tables.Table], figure_captions: dict[str, str]
) -> str:
    lines = [f"# {spec.title}", "", captions.protocol_text(protocol), "", "## Tables", ""]
    for table in built:
        lines += [
            f"### {artefact(table.name).title}",
            "",
            tables.to_markdown(table).rstrip(),
            "",
            f"Files: [Markdown](tables/{table.name}.md), [LaTeX](tables/{table.name}.tex), "
            f"[CSV](tables/{table.name}.csv)",
            "",
        ]
    lines += ["## Figures", ""]
    for name, caption in figure_captions.items():
        title = artefact(name).title
        lines += [
            f"### {title}",
            "",
            f"![{title}](figures/{name}.png)",
            "",
            f"*{caption.replace('*', chr(92) + '*')}*",
            "",
            f"Files: [PNG](figures/{name}.png), [PDF](figures/{name}.pdf)",
            "",
        ]
    return "\n".join(lines)
