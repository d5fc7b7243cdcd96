# Aggregation, statistics, tables, figures: cheap local rules reading only saved records.


rule aggregate:
    input:
        dataset_run_indexes,
    output:
        evaluations=f"{RESULTS}/{{dataset}}/aggregate/evaluations.csv",
        records=f"{RESULTS}/{{dataset}}/aggregate/records.csv.gz",
        protocol=f"{RESULTS}/{{dataset}}/aggregate/protocol.json",
        diagnostics=f"{RESULTS}/{{dataset}}/aggregate/diagnostics.csv",
    params:
        out=f"{RESULTS}/{{dataset}}/aggregate",
        list_file=f"{RESULTS}/{{dataset}}/aggregate/eval_dirs.txt",
    log:
        f"{LOGS}/{{dataset}}/aggregate.log",
    localrule: True
    run:
        import os

        os.makedirs(params.out, exist_ok=True)
        with open(params.list_file, "w") as handle:
            handle.writelines(folder + "\n" for folder in eval_dirs(wildcards.dataset))
        shell("fsseg aggregate --evals-from {params.list_file} --out {params.out} > {log} 2>&1")


rule report_spec:
    output:
        f"{RESULTS}/{{dataset}}/aggregate/report_spec.yaml",
    params:
        spec=report_spec,
    log:
        f"{LOGS}/{{dataset}}/report_spec.log",
    localrule: True
    run:
        import yaml

        from fsseg.atomic import write_text

        write_text(output[0], yaml.safe_dump(params.spec, sort_keys=False))


# The report's tables and figures, their inputs and their HTML captions all come from one declaration,
# fsseg.report.artefacts. Snakemake reads a caption from an rst file, so the captions are written from
# that declaration at plan time, under .snakemake/ (rewritten only when their text changes).
import dataclasses

from fsseg.atomic import write_text
from fsseg.report.artefacts import FORMATS, INPUT_KINDS, html_caption, input_kinds
from fsseg.report.spec import MIN_UNITS_TO_MARK, ReportSpec

REPORT_CAPTIONS = Path(".snakemake/fsseg_report_captions").resolve()


def _write_report_captions():
    """One rst caption per artefact; the alpha is the report spec's default (report_spec sets none)."""
    alpha = next(f.default for f in dataclasses.fields(ReportSpec) if f.name == "alpha")
    for item in ARTEFACTS:
        path = REPORT_CAPTIONS / f"{item.name}.rst"
        text = html_caption(item, alpha, MIN_UNITS_TO_MARK)
        if not path.is_file() or path.read_text() != text:
            write_text(path, text)


_write_report_captions()


def trained_runs(wildcards):
    """train_summary.json of every run of the report; the training curves read train_log.jsonl beside it
    (written before the summary, which marks a finished run)."""
    tag = wildcards.dataset
    return sorted({RUN_DIR.format(**path_fields(tag, method=m, variant=v, fold=fold, train_shot=train_shot,
                                                train_seed=seed)) + "/train_summary.json"
                   for m, v, fold, train_shot, seed, _ in runs(tag)})


def aggregate_files(wildcards):
    return [path.format(dataset=wildcards.dataset) for path in (
        rules.aggregate.output.evaluations, rules.aggregate.output.records, rules.aggregate.output.protocol,
        rules.aggregate.output.diagnostics)]


def spec_file(wildcards):
    return rules.report_spec.output[0].format(dataset=wildcards.dataset)


# Which files of the workflow are each kind of input an artefact declares.
REPORT_INPUT_FILES = {
    "aggregate": aggregate_files,
    "spec": spec_file,
    "efficiency": efficiency_files,
    "predictions": prediction_files,
    "train_runs": trained_runs,
}
if set(REPORT_INPUT_FILES) != set(INPUT_KINDS):
    raise ValueError(f"report.smk provides inputs {sorted(REPORT_INPUT_FILES)}, artefacts declare {sorted(INPUT_KINDS)}")


def report_inputs(wildcards):
    """The inputs the declared artefacts read (fsseg.report.artefacts), by kind."""
    return {kind: REPORT_INPUT_FILES[kind](wildcards) for kind in input_kinds()}


rule report:
    input:
        unpack(report_inputs),
    output:
        [
            report(f"{REPORTS}/{{dataset}}/{item.folder}/{item.name}.{FORMATS[item.kind][0]}",
                   caption=str(REPORT_CAPTIONS / f"{item.name}.rst"), category=item.folder.capitalize())
            for item in ARTEFACTS
        ],
        [f"{REPORTS}/{{dataset}}/{path}" for item in ARTEFACTS for path in item.files()[1:]],
    params:
        aggregate=f"{RESULTS}/{{dataset}}/aggregate",
        out=f"{REPORTS}/{{dataset}}",
    log:
        f"{LOGS}/{{dataset}}/report.log",
    localrule: True
    shell:
        "fsseg report --aggregate {params.aggregate} --spec {input.spec} --efficiency {input.efficiency} "
        "--predictions {input.predictions} --train-runs {input.train_runs} --out {params.out} > {log} 2>&1"
