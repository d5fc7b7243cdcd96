# Aggregation, statistics, tables, figures: cheap local rules reading only saved records.


rule aggregate:
    input:
        eval_summaries,
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
            handle.writelines(os.path.dirname(p) + "\n" for p in input)
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


rule report:
    input:
        evaluations=rules.aggregate.output.evaluations,
        records=rules.aggregate.output.records,
        protocol=rules.aggregate.output.protocol,
        spec=rules.report_spec.output[0],
        efficiency=efficiency_files,
        predictions=prediction_files,
    output:
        [
            report(f"{REPORTS}/{{dataset}}/tables/{name}.md", caption="../report/tables.rst", category="Tables")
            for name in REPORT_TABLES
        ],
        [f"{REPORTS}/{{dataset}}/tables/{name}.{ext}" for name in REPORT_TABLES for ext in ("tex", "csv")],
        [
            report(f"{REPORTS}/{{dataset}}/figures/{name}.png", caption=f"../report/{name}.rst", category="Figures")
            for name in REPORT_FIGURES
        ],
        [f"{REPORTS}/{{dataset}}/figures/{name}.pdf" for name in REPORT_FIGURES],
    params:
        aggregate=f"{RESULTS}/{{dataset}}/aggregate",
        out=f"{REPORTS}/{{dataset}}",
    log:
        f"{LOGS}/{{dataset}}/report.log",
    localrule: True
    shell:
        "fsseg report --aggregate {params.aggregate} --spec {input.spec} --efficiency {input.efficiency} "
        "--predictions {input.predictions} --out {params.out} > {log} 2>&1"
