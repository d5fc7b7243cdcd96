# Episode manifests (one job per dataset and fold draws every test shot and episode seed of the grid,
# shared by every method), evaluation of every run on them, efficiency measurement per method, and
# predictions for the qualitative figure.


rule manifests:
    input:
        prepared=prepared_input,
    output:
        index=MANIFEST_SET,
        manifests=[grid_manifest(shot, seed) for shot in GRID["test_shots"] for seed in GRID["episode_seeds"]],
    params:
        experiment=experiment_file,
        config_digest=config_digest,
        sets=manifest_args,
        shots=" ".join(map(str, GRID["test_shots"])),
        seeds=" ".join(map(str, GRID["episode_seeds"])),
    log:
        f"{LOGS}/{{dataset}}/manifests/fold{{fold}}_{{split}}_n{{n_episodes}}_px{{min_object_px}}.log",
    localrule: True
    shell:
        "fsseg episodes -c {params.experiment} {params.sets} --shots {params.shots} --episode-seeds {params.seeds} "
        "> {log} 2>&1"


# One job per trained run: every test shot and episode seed in one process (the weights and the index
# are loaded once; process start-up was as long as a 100-episode loop), one output folder each; the
# DIAGNOSE_SHOTS evaluations also write diagnostics.json (support swap, base classes, probes). Its one
# declared output is the run's index of those folders (fsseg.paths.EVALUATED), written last: declaring
# every file of every folder made planning the paper grid handle ~27,000 outputs and ~11,000 targets
# (10.3 s instead of ~4). A changed grid (shots, seeds) changes the job's params and reruns it; a file
# deleted from a folder the index lists stops the plan with the fix (common.smk, check_evaluations).
rule evaluate:
    input:
        unpack(evaluate_inputs),
    output:
        EVALUATED,
    params:
        experiment=experiment_file,
        config_digest=config_digest,
        sets=eval_args,
    log:
        f"{LOGS}/{{dataset}}/evaluate/{{method}}-{{variant}}_{{backbone}}_fold{{fold}}_shot{{train_shot}}_seed{{train_seed}}_n{{n_episodes}}.log",
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    shell:
        "OMP_NUM_THREADS={threads} fsseg evaluate -c {params.experiment} {params.sets} > {log} 2>&1"


rule bench:
    output:
        f"{RESULTS}/{{dataset}}/efficiency/{{method}}-{{variant}}.json",
    params:
        experiment=experiment_file,
        config_digest=config_digest,
        args=bench_args,
    log:
        f"{LOGS}/{{dataset}}/bench/{{method}}-{{variant}}.log",
    threads: 1
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    shell:
        "OMP_NUM_THREADS={threads} fsseg bench -c {params.experiment} {params.args} --out {output} > {log} 2>&1"


rule predict:
    input:
        qualitative_inputs,
    output:
        f"{RESULTS}/{{dataset}}/qualitative/{{method}}-{{variant}}.npz",
    params:
        experiment=experiment_file,
        config_digest=config_digest,
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
        "OMP_NUM_THREADS={threads} fsseg predict -c {params.experiment} {params.sets} "
        "--episodes {params.episodes} --out {output} > {log} 2>&1"
