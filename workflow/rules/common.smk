# Shared helpers of the workflow: the grid, the path templates and key fields (from fsseg.paths and
# fsseg.keys, the one definition the harness also uses), each job's config overrides (built from the key
# fields of its output path), the cross-checks of workflow and experiment configs, and the target lists.
# Planning imports no torch: experiment configs are validated against the methods' torch-free
# declarations.
import hashlib
import json
import os
import re
import shlex
from pathlib import Path

from fsseg import keys, paths
from fsseg.config import load_config, override_arguments
from fsseg.errors import ConfigError
from fsseg.registry import DATASETS, METHODS

RESULTS = config.get("results", "results")
REPORTS = config.get("reports", "reports")
LOGS = config.get("logs", "logs")
GRID = config["grid"]
ABLATIONS = config.get("ablations", {}) or {}
FLAGSHIP = config["flagship"]
FLAGSHIP.setdefault("variant", "default")
METHOD_OVERRIDES = config.get("method_overrides", {}) or {}
STATS = config.get("statistics", {}) or {}
DIAGNOSTICS = config.get("diagnostics", {}) or {}
BENCH = config.get("bench", {}) or {}
QUALITATIVE = config.get("qualitative", {}) or {}


wildcard_constraints:
    **keys.wildcard_constraints(),


def _load_experiments():
    """Validate every dataset's experiment config now, so a typo fails the plan, not a job."""
    experiments = {}
    for tag, entry in config["datasets"].items():
        cfg = load_config([entry["experiment"]])
        if cfg.dataset_tag != tag:
            raise ValueError(
                f"config datasets.{tag}: its experiment {entry['experiment']} describes dataset "
                f"{cfg.dataset_tag!r}; name the entry {cfg.dataset_tag!r}"
            )
        if cfg.output_root != RESULTS:
            raise ValueError(
                f"config datasets.{tag}: output_root of {entry['experiment']} is {cfg.output_root!r}, "
                f"the workflow's results folder is {RESULTS!r}; make them equal"
            )
        if str(cfg.eval.n_episodes) != str(GRID["n_episodes"]):
            raise ValueError(
                f"config grid.n_episodes is {GRID['n_episodes']!r} but eval.n_episodes of "
                f"{entry['experiment']} (dataset {tag}) is {cfg.eval.n_episodes!r}: the tables' captions "
                "state the experiment's value; make them equal"
            )
        if entry.get("pretrain_backbone") != (cfg.backbone.weights == "fold_pretrained"):
            raise ValueError(
                f"config datasets.{tag}: pretrain_backbone must be true exactly when the experiment's "
                f"backbone.weights is 'fold_pretrained' (it is {cfg.backbone.weights!r})"
            )
        experiments[tag] = cfg
    return experiments


EXPERIMENTS = _load_experiments()


def method_config(tag, method, variant="default"):
    """The experiment config of a method variant on a dataset (its method overrides applied), validated
    through fsseg's own config API: an unknown method, variant or override fails the plan."""
    key = (tag, method, variant)
    if key not in _METHOD_CONFIGS:
        overrides = keys.set_overrides({"method": method, "variant": variant})
        overrides += METHOD_OVERRIDES.get(method, [])
        try:
            _METHOD_CONFIGS[key] = load_config([config["datasets"][tag]["experiment"]], overrides)
        except ConfigError as err:
            raise ValueError(f"config: method {method!r} variant {variant!r} on dataset {tag}: {err}") from None
    return _METHOD_CONFIGS[key]


_METHOD_CONFIGS = {}


def _check_methods():
    declared = {(m, v) for m, variants in GRID["methods"].items() for v in variants}
    declared |= {(FLAGSHIP["method"], v) for v in ABLATIONS.get("variants", [])}
    declared.add((FLAGSHIP["method"], FLAGSHIP["variant"]))
    declared |= {(m, "default") for m in METHOD_OVERRIDES}
    for tag in config["datasets"]:
        for method, variant in sorted(declared):
            method_config(tag, method, variant)


_check_methods()


def dataset_folds(tag):
    return config["datasets"][tag].get("folds", GRID["folds"])


def _check_ablation_shots():
    extra = sorted(set(ABLATIONS.get("test_shots", [])) - set(GRID["test_shots"]))
    if extra:
        raise ValueError(
            f"config ablations.test_shots {extra} are not among grid.test_shots {GRID['test_shots']}: every "
            "run is evaluated at the grid's test shots, and ablations.test_shots selects what the ablation "
            "table shows"
        )


_check_ablation_shots()


def _check_qualitative():
    """The qualitative figure's episodes come from a manifest the grid draws."""
    for name, grid, default in (("shot", "test_shots", 1), ("episode_seed", "episode_seeds", 0)):
        value = QUALITATIVE.get(name, default)
        if value not in GRID[grid]:
            raise ValueError(f"config qualitative.{name} {value!r} is not among grid.{grid} {GRID[grid]}")


_check_qualitative()


def method_train_seeds(method):
    """A method's training seeds: grid.method_train_seeds[method] when given, else grid.train_seeds."""
    return GRID.get("method_train_seeds", {}).get(method, GRID["train_seeds"])


def _check_method_train_seeds():
    for method, seeds in GRID.get("method_train_seeds", {}).items():
        if method not in GRID["methods"]:
            raise ValueError(f"config grid.method_train_seeds.{method}: {method!r} is not in grid.methods")
        extra = sorted(set(seeds) - set(GRID["train_seeds"]))
        if extra:
            raise ValueError(
                f"config grid.method_train_seeds.{method}: seeds {extra} are not among grid.train_seeds "
                f"{GRID['train_seeds']}; a method runs a subset of the grid's seeds"
            )


_check_method_train_seeds()


def runs(tag):
    """(method, variant, fold, train_shot, train_seed, test_shots) of every training run of a dataset.

    Every run is evaluated at every test shot of the grid, in one process (rule evaluate)."""
    out = []
    for method, variants in GRID["methods"].items():
        for variant in variants:
            for fold in dataset_folds(tag):
                for train_shot in GRID["train_shots"]:
                    for seed in method_train_seeds(method):
                        out.append((method, variant, fold, train_shot, seed, tuple(GRID["test_shots"])))
    ablation_folds = ABLATIONS.get("folds", dataset_folds(tag))
    for variant in ABLATIONS.get("variants", []):
        for fold in ablation_folds:
            for train_shot in GRID["train_shots"]:
                for seed in GRID["train_seeds"]:
                    out.append((FLAGSHIP["method"], variant, fold, train_shot, seed, tuple(GRID["test_shots"])))
    return sorted(set(out))


def backbone_of(tag, method):
    """The backbone a method runs with on a dataset (a method override may change it, e.g. PANet's VGG-16)."""
    return method_config(tag, method).backbone.name


def _wildcard(name):
    return "{" + name + "}"


def _dataset_path_fields(tag):
    """Path fields of a dataset's jobs: the experiment's (results folder, dataset tag, split ...), the grid's
    episode count, every other key field a wildcard. Computed once per dataset (the plan asks ~10^4 times)."""
    if tag not in _DATASET_PATH_FIELDS:
        fields = keys.path_values(EXPERIMENTS[tag])
        fields.update({name: _wildcard(name) for name in keys.EVAL_KEY if name != "dataset"})
        fields.update(n_episodes=GRID["n_episodes"], pretrain_scope=_wildcard("pretrain_scope"))
        _DATASET_PATH_FIELDS[tag] = fields
    return _DATASET_PATH_FIELDS[tag]


_DATASET_PATH_FIELDS = {}


def path_fields(tag, **fixed):
    """Fixed parts of a path template for a dataset; every other key field stays a wildcard."""
    fields = {**_dataset_path_fields(tag), **fixed}
    if "backbone" not in fixed and not str(fields["method"]).startswith("{"):
        fields["backbone"] = backbone_of(tag, fields["method"])
    return fields


def wildcard_pattern(template):
    """A template with every field a wildcard but the results folder (the form rules declare as outputs)."""
    fields = {f.name: _wildcard(f.name) for f in keys.FIELDS}
    fields["output_root"] = RESULTS
    return template.format(**fields)


RUN_DIR = wildcard_pattern(paths.RUN_DIR)
EVAL_DIR = wildcard_pattern(paths.EVAL_DIR)
EVALUATED = wildcard_pattern(paths.EVALUATED)
MANIFEST = wildcard_pattern(paths.MANIFEST)
MANIFEST_SET = wildcard_pattern(paths.MANIFEST_SET)
BACKBONE = wildcard_pattern(paths.PRETRAINED_BACKBONE)
BASE_LEARNER = wildcard_pattern(paths.BASE_LEARNER)


def prepared_marker(tag):
    return str(Path(EXPERIMENTS[tag].dataset.root) / "fsseg_dataset.json")


def experiment_file(wildcards):
    return config["datasets"][wildcards.dataset]["experiment"]


def _config_digest(tag):
    """sha256 of a dataset's experiment config and of the recipe file it names (train.recipe_file).

    Every job built from them has it as a param, so editing either reruns them (Snakemake's params
    trigger); it replaced the experiment file as an input, which cost the plan a file lookup in each of
    the paper grid's ~2,200 jobs, and recipe edits now rerun the trainings too."""
    digest = hashlib.sha256(Path(config["datasets"][tag]["experiment"]).read_bytes())
    if EXPERIMENTS[tag].train.recipe_file:
        digest.update(Path(EXPERIMENTS[tag].train.recipe_file).read_bytes())
    return digest.hexdigest()[:16]


CONFIG_DIGESTS = {tag: _config_digest(tag) for tag in EXPERIMENTS}


def config_digest(wildcards):
    return CONFIG_DIGESTS[wildcards.dataset]


def job_overrides(wildcards, **values):
    """A job's config overrides: the grid axes among its output path's key fields (its wildcards, and
    ``values`` for a job whose output names fewer), then its method's overrides."""
    fields = {**{k: v for k, v in wildcards.items() if k in keys.BY_NAME}, **values}
    method_overrides = METHOD_OVERRIDES.get(fields["method"], []) if "method" in fields else []
    return [*keys.set_overrides(fields), *method_overrides]


def train_args(wildcards):
    return override_arguments(job_overrides(wildcards))


def eval_args(wildcards):
    """One process evaluates the run at every test shot and episode seed (and diagnoses DIAGNOSE_SHOTS)."""
    shots = " ".join(map(str, GRID["test_shots"]))
    seeds = " ".join(map(str, GRID["episode_seeds"]))
    diagnose = " ".join(map(str, DIAGNOSE_SHOTS))
    return (f"--shots {shots} --episode-seeds {seeds} --diagnose-shots {diagnose} "
            + override_arguments(job_overrides(wildcards)))


DIAGNOSE_SHOTS = [s for s in DIAGNOSTICS.get("shots", [GRID["test_shots"][0]]) if s in GRID["test_shots"]]


def grid_manifest(shot, episode_seed):
    """MANIFEST of the manifests rule's wildcards with the shot and the episode seed fixed."""
    return MANIFEST.replace("{shot}", str(shot)).replace("{episode_seed}", str(episode_seed))


def run_manifest_set(wildcards):
    return MANIFEST_SET.format(**path_fields(wildcards.dataset, fold=wildcards.fold))


def manifest_args(wildcards):
    return override_arguments(job_overrides(wildcards))


def pretrain_args(wildcards):
    """The backbone and its seed; the fold of a base-class backbone (an auxiliary one, shared by every
    fold, needs none)."""
    scope = wildcards.pretrain_scope
    fold = {"fold": scope[len("fold"):]} if scope.startswith("fold") else {}
    return override_arguments(job_overrides(wildcards, **fold))


def pretrain_scope(tag, fold):
    return "auxiliary" if EXPERIMENTS[tag].pretrain.classes == "auxiliary" else f"fold{fold}"


PREPARED_ROOTS = {str(Path(cfg.dataset.root)): tag for tag, cfg in EXPERIMENTS.items()}
PREPARED_ROOT_PATTERN = "|".join(re.escape(root) for root in sorted(PREPARED_ROOTS))


def _prepare_command(tag):
    """``fsseg prepare`` arguments of a dataset: its name and the options its experiment config fixes (the
    output folder, image size, variant ...), then the workflow config's own ``prepare`` arguments."""
    dataset = EXPERIMENTS[tag].dataset
    derived = DATASETS.get(dataset.name).prepare_arguments(dataset)
    extra = shlex.split(config["datasets"][tag].get("prepare", ""))
    fixed = {arg for arg in derived if arg.startswith("--")}
    repeated = sorted({arg.split("=", 1)[0] for arg in extra} & fixed)
    if repeated:
        raise ValueError(
            f"config datasets.{tag}.prepare: {', '.join(repeated)} come(s) from the experiment config "
            f"{config['datasets'][tag]['experiment']} (dataset.*); remove it from prepare"
        )
    return shlex.join([dataset.name, *derived, *extra])


PREPARE_COMMANDS = {tag: _prepare_command(tag) for tag in EXPERIMENTS}


def prepare_args(wildcards):
    return PREPARE_COMMANDS[PREPARED_ROOTS[wildcards.prepared_root]]


def prepared_input(wildcards):
    return prepared_marker(wildcards.dataset)


def backbone_input(wildcards):
    """The fold's pretrained backbone when the dataset uses one, else nothing."""
    if not config["datasets"][wildcards.dataset].get("pretrain_backbone", False):
        return []
    return BACKBONE.format(**path_fields(wildcards.dataset, fold=wildcards.fold, backbone=wildcards.backbone,
                                         pretrain_scope=pretrain_scope(wildcards.dataset, wildcards.fold)))


def base_learner_input(wildcards):
    """The method's base learner of the fold (one file for every variant, shot and seed) when the method
    declares one (BAM), else nothing."""
    if not METHODS.declaration(wildcards.method).has_base_learner:
        return []
    return BASE_LEARNER.format(**path_fields(wildcards.dataset, method=wildcards.method, fold=wildcards.fold,
                                             backbone=wildcards.backbone))


def train_inputs(wildcards):
    """A training's inputs, from one function (the plan calls it once per run, not once per input)."""
    return {"prepared": prepared_input(wildcards), "backbone": backbone_input(wildcards),
            "base_learner": base_learner_input(wildcards)}


def evaluate_inputs(wildcards):
    """An evaluation job's inputs: the trained run and the fold's manifest index."""
    return {"trained": RUN_DIR.format(**wildcards) + "/train_summary.json",
            "manifests": run_manifest_set(wildcards)}


def base_learner_args(wildcards):
    """The fold and the method; its method_overrides too, so the method is built as its runs build it."""
    return override_arguments(job_overrides(wildcards))


def eval_dirs(tag):
    """Every evaluation folder of the grid of one dataset (computed once: the aggregate and rule all ask)."""
    if tag not in _EVAL_DIRS:
        out = []
        for method, variant, fold, train_shot, seed, shots in runs(tag):
            for shot in shots:
                for episode_seed in GRID["episode_seeds"]:
                    out.append(EVAL_DIR.format(**path_fields(
                        tag, method=method, variant=variant, fold=fold, train_shot=train_shot,
                        train_seed=seed, shot=shot, episode_seed=episode_seed)))
        _EVAL_DIRS[tag] = out
    return list(_EVAL_DIRS[tag])


_EVAL_DIRS = {}


def run_indexes(tag):
    """The evaluate job's output (its index of the run's evaluations) of every run of a dataset (computed
    once: the evaluation check, rule all and the aggregate ask)."""
    if tag not in _RUN_INDEXES:
        _RUN_INDEXES[tag] = [
            EVALUATED.format(**path_fields(tag, method=m, variant=v, fold=fold, train_shot=train_shot,
                                           train_seed=seed))
            for m, v, fold, train_shot, seed, _ in runs(tag)]
    return list(_RUN_INDEXES[tag])


_RUN_INDEXES = {}


def dataset_run_indexes(wildcards):
    return run_indexes(wildcards.dataset)


def method_variants(tag):
    return sorted({(m, v) for m, v, *_ in runs(tag)})


def efficiency_files(wildcards):
    return [f"{RESULTS}/{wildcards.dataset}/efficiency/{m}-{v}.json" for m, v in method_variants(wildcards.dataset)]


def prediction_files(wildcards):
    q = QUALITATIVE
    tag = wildcards.dataset
    keep = {(m, v) for m, v, fold, _, seed, shots in runs(tag)
            if fold == q.get("fold", 0) and seed == q.get("train_seed", 0) and q.get("shot", 1) in shots}
    main = {(m, v) for m, variants in GRID["methods"].items() for v in variants}
    return [f"{RESULTS}/{tag}/qualitative/{m}-{v}.npz" for m, v in sorted(keep & main)]


def qualitative_key(wildcards):
    """The key fields of the evaluation the qualitative figure shows (config qualitative.*)."""
    q = QUALITATIVE
    return {"fold": q.get("fold", 0), "train_shot": GRID["train_shots"][0], "train_seed": q.get("train_seed", 0),
            "shot": q.get("shot", 1), "episode_seed": q.get("episode_seed", 0), "n_episodes": GRID["n_episodes"]}


def qualitative_args(wildcards):
    return override_arguments(job_overrides(wildcards, **qualitative_key(wildcards)))


def qualitative_inputs(wildcards):
    fields = path_fields(wildcards.dataset, method=wildcards.method, variant=wildcards.variant,
                         **qualitative_key(wildcards))
    return [RUN_DIR.format(**fields) + "/train_summary.json", MANIFEST.format(**fields)]


def bench_args(wildcards):
    sizes = BENCH.get("sizes") or [EXPERIMENTS[wildcards.dataset].dataset.image_size]
    shots = BENCH.get("shots", [1])
    return (f"--sizes {' '.join(map(str, sizes))} --shots {' '.join(map(str, shots))} "
            f"--repeats {BENCH.get('repeats', 20)} " + override_arguments(job_overrides(wildcards)))


from fsseg.report.artefacts import ARTEFACTS  # the report's one declaration (tables, figures, captions)


def report_outputs(tag):
    """Every file of a dataset's report: the artefacts fsseg.report.artefacts declares, in their formats."""
    return [f"{REPORTS}/{tag}/{path}" for item in ARTEFACTS for path in item.files()]


def all_report_targets():
    return [path for tag in config["datasets"] for path in report_outputs(tag)]


def report_spec(wildcards):
    """What the report compares: the flagship against each baseline, and each ablation against it."""
    main = [{"method": m, "variant": v} for m, variants in GRID["methods"].items() for v in variants]
    flagship = {"method": FLAGSHIP["method"], "variant": FLAGSHIP["variant"]}
    return {
        "dataset": wildcards.dataset,
        "title": f"fsseg benchmark: {wildcards.dataset}",
        "flagship": flagship,
        "baselines": [m for m in main if m != flagship],
        "ablations": [{"method": FLAGSHIP["method"], "variant": v} for v in ABLATIONS.get("variants", [])],
        "shots": list(GRID["test_shots"]),
        "bootstrap": {"iterations": STATS.get("bootstrap_iterations", 2000), "seed": STATS.get("seed", 0)},
        "min_swap_drop": DIAGNOSTICS.get("min_swap_drop", 2.0),
    }


def all_evaluation_targets():
    """Every run's index of its evaluations, requested directly: Snakemake (≥ 7.7) does not remake a
    deleted intermediate file whose dependants are up to date, so a deleted index is remade (its run
    evaluated again) only when it is itself a target (and the aggregate and report then follow)."""
    return [path for tag in config["datasets"] for path in run_indexes(tag)]


def check_evaluations():
    """Stop the plan when a file of an evaluation that a run's index lists is gone (the evaluate job
    declares only the index, so Snakemake cannot see it): name the file and how to redo the run."""
    for tag in config["datasets"]:
        for index in run_indexes(tag):
            if not os.path.isfile(index):
                continue
            eval_root = os.path.dirname(index)
            for entry in json.loads(Path(index).read_text())["evaluations"]:
                for name in entry["files"]:
                    path = os.path.join(eval_root, entry["folder"], name)
                    if not os.path.isfile(path):
                        raise ValueError(
                            f"{path} is missing, but {index} lists it as written: delete {index} and run "
                            "the workflow again to redo that run's evaluations"
                        )
