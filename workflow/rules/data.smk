# Data preparation (once per dataset), base-class backbone pretraining (once per fold) and the base
# learners of methods that declare one (BAM: once per method, backbone and fold, shared by every seed).


rule prepare:
    output:
        "{prepared_root}/fsseg_dataset.json",
    wildcard_constraints:
        prepared_root=PREPARED_ROOT_PATTERN,
    params:
        args=prepare_args,
    log:
        f"{LOGS}/prepare/{{prepared_root}}.log",
    localrule: True
    shell:
        "fsseg prepare {params.args} > {log} 2>&1"


# Scheduled before anything else that is ready: every training of its fold (or, for a backbone on
# auxiliary classes, every training) waits for it; it takes both cores of a 2-core machine, which
# nothing else could use meanwhile.
rule pretrain:
    input:
        prepared=prepared_input,
    output:
        BACKBONE,
    params:
        experiment=experiment_file,
        config_digest=config_digest,
        sets=pretrain_args,
    priority: 20
    log:
        f"{LOGS}/{{dataset}}/pretrain/{{backbone}}_{{pretrain_scope}}_seed{{pretrain_seed}}.log",
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=120,
    shell:
        "OMP_NUM_THREADS={threads} fsseg pretrain -c {params.experiment} {params.sets} --out {output} > {log} 2>&1"


# A method's base learner (BAM's PSPNet) on the fold's base classes, before any training of that method
# and fold; it starts from the fold's pretrained backbone when the dataset uses one.
rule base_learner:
    input:
        prepared=prepared_input,
        backbone=backbone_input,
    output:
        BASE_LEARNER,
    params:
        experiment=experiment_file,
        config_digest=config_digest,
        sets=base_learner_args,
    priority: 15
    log:
        f"{LOGS}/{{dataset}}/base_learner/{{method}}_{{backbone}}_fold{{fold}}_seed{{base_learner_seed}}.log",
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    shell:
        "OMP_NUM_THREADS={threads} fsseg base-learner -c {params.experiment} {params.sets} --out {output} "
        "> {log} 2>&1"
