# Training: one job per (dataset, method, variant, fold, train shot, train seed). A job killed half-way
# leaves checkpoint.pt behind; rerunning the workflow resumes it (the declared output, written last,
# is train_summary.json). A changed training config retrains that run from scratch.


# Trainings go before evaluations that are ready too, so the run ends on short jobs (on 2 cores
# a training started last left one core idle for its whole length).
rule train:
    input:
        unpack(train_inputs),
    output:
        RUN_DIR + "/train_summary.json",
    params:
        experiment=experiment_file,
        config_digest=config_digest,
        sets=train_args,
    priority: 10
    log:
        f"{LOGS}/{{dataset}}/train/{{method}}-{{variant}}_{{backbone}}_fold{{fold}}_shot{{train_shot}}_seed{{train_seed}}.log",
    threads: 1
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=720,
    shell:
        "OMP_NUM_THREADS={threads} fsseg train -c {params.experiment} {params.sets} --replace-changed "
        "> {log} 2>&1"
