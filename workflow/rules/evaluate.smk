# Episode manifests (once per dataset/fold/shot/episode seed, shared by every method), evaluation of
# every run on them, efficiency measurement per method, and predictions for the qualitative figure.


rule manifest:
    input:
        prepared=prepared_input,
        experiment=experiment_file,
    output:
        MANIFEST,
    params:
        sets=manifest_args,
    log:
        f"{LOGS}/{{dataset}}/manifests/fold{{fold}}_{{split}}_shot{{shot}}_ep{{episode_seed}}_n{{n_episodes}}_px{{min_object_px}}.log",
    localrule: True
    shell:
        "fsseg episodes -c {input.experiment} {params.sets} --out {output} > {log} 2>&1"


# One job per trained run: every test shot and episode seed in one process (the weights and the index
# are loaded once; process start-up was as long as a 100-episode loop), one output folder each; the
# DIAGNOSE_SHOTS evaluations also write diagnostics.json (support swap, base classes, probes).
rule evaluate:
    input:
        trained=RUN_DIR + "/train_summary.json",
        manifests=run_manifests,
        experiment=experiment_file,
    output:
        summaries=run_eval_outputs("summary.json"),
        records=run_eval_outputs("records.csv"),
        diagnostics=run_diagnostics_outputs(),
    params:
        sets=eval_args,
    log:
        f"{LOGS}/{{dataset}}/evaluate/{{method}}-{{variant}}_{{backbone}}_fold{{fold}}_shot{{train_shot}}_seed{{train_seed}}_n{{n_episodes}}.log",
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    shell:
        "OMP_NUM_THREADS={threads} fsseg evaluate -c {input.experiment} {params.sets} > {log} 2>&1"


rule bench:
    input:
        experiment=experiment_file,
    output:
        f"{RESULTS}/{{dataset}}/efficiency/{{method}}-{{variant}}.json",
    params:
        args=bench_args,
    log:
        f"{LOGS}/{{dataset}}/bench/{{method}}-{{variant}}.log",
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    shell:
        "OMP_NUM_THREADS={threads} fsseg bench -c {input.experiment} {params.args} --out {output} > {log} 2>&1"


rule predict:
    input:
        qualitative_inputs,
        experiment=experiment_file,
    output:
        f"{RESULTS}/{{dataset}}/qualitative/{{method}}-{{variant}}.npz",
    params:
        sets=qualitative_args,
        episodes=QUALITATIVE.get("episodes", 6),
    log:
        f"{LOGS}/{{dataset}}/predict/{{method}}-{{variant}}.log",
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=30,
    shell:
        "OMP_NUM_THREADS={threads} fsseg predict -c {input.experiment} {params.sets} "
        "--episodes {params.episodes} --out {output} > {log} 2>&1"
