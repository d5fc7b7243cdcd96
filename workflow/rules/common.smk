# Shared helpers of the workflow: the grid, the path templates (from fsseg.paths, the one definition
# the harness also uses), the fsseg --set arguments of each job, and the target lists.
import re
import shlex
from pathlib import Path

from fsseg import paths
from fsseg.config import load_config
from fsseg.registry import METHODS

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
    dataset=r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*",
    method=r"[a-z0-9_]+",
    variant=r"[a-z0-9_]+",
    backbone=r"[a-z0-9_]+",
    fold=r"\d+",
    train_shot=r"\d+",
    train_seed=r"\d+",
    shot=r"\d+",
    episode_seed=r"\d+",
    n_episodes=r"\d+|all",
    pretrain_seed=r"\d+",
    base_learner_seed=r"\d+",
    pretrain_scope=r"fold\d+|auxiliary",


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
        # the grid's episode count must fit the experiment's sampler / protocol (e.g. 'all' for protocol H)
        load_config([entry["experiment"]], [f"eval.n_episodes={GRID['n_episodes']}"])
        if entry.get("pretrain_backbone") != (cfg.backbone.weights == "fold_pretrained"):
            raise ValueError(
                f"config datasets.{tag}: pretrain_backbone must be true exactly when the experiment's "
                f"backbone.weights is 'fold_pretrained' (it is {cfg.backbone.weights!r})"
            )
        experiments[tag] = cfg
    return experiments


def _check_methods():
    declared = {(m, v) for m, variants in GRID["methods"].items() for v in variants}
    declared |= {(FLAGSHIP["method"], v) for v in ABLATIONS.get("variants", [])}
    declared.add((FLAGSHIP["method"], FLAGSHIP["variant"]))
    for method, variant in sorted(declared):
        cls = METHODS.get(method)  # unknown names list the known ones
        if variant not in cls.variants:
            raise ValueError(
                f"config: method {method!r} has no variant {variant!r}; known: {', '.join(cls.variants)}"
            )
    for method in METHOD_OVERRIDES:
        METHODS.get(method)


EXPERIMENTS = _load_experiments()
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


def runs(tag):
    """(method, variant, fold, train_shot, train_seed, test_shots) of every training run of a dataset.

    Every run is evaluated at every test shot of the grid, in one process (rule evaluate)."""
    out = []
    for method, variants in GRID["methods"].items():
        for variant in variants:
            for fold in dataset_folds(tag):
                for train_shot in GRID["train_shots"]:
                    for seed in GRID["train_seeds"]:
                        out.append((method, variant, fold, train_shot, seed, tuple(GRID["test_shots"])))
    ablation_folds = ABLATIONS.get("folds", dataset_folds(tag))
    for variant in ABLATIONS.get("variants", []):
        for fold in ablation_folds:
            for train_shot in GRID["train_shots"]:
                for seed in GRID["train_seeds"]:
                    out.append((FLAGSHIP["method"], variant, fold, train_shot, seed, tuple(GRID["test_shots"])))
    return sorted(set(out))


_BACKBONES = {}


def backbone_of(tag, method):
    """The backbone a method runs with on a dataset (a method override may change it, e.g. PANet's VGG-16)."""
    if (tag, method) not in _BACKBONES:
        overrides = [f"method.name={method}", *METHOD_OVERRIDES.get(method, [])]
        cfg = load_config([config["datasets"][tag]["experiment"]], overrides)
        _BACKBONES[(tag, method)] = cfg.backbone.name
    return _BACKBONES[(tag, method)]


def path_fields(tag, **fixed):
    """Fixed parts of a path template for a dataset; every other field stays a wildcard."""
    cfg = EXPERIMENTS[tag]
    fields = {
        "output_root": RESULTS,
        "dataset": tag,
        "backbone": "{backbone}",
        "split": cfg.eval.split,
        "min_object_px": cfg.dataset.min_object_px,
        "pretrain_seed": cfg.pretrain.seed,
        "base_learner_seed": cfg.base_learner.seed,
        "n_episodes": GRID["n_episodes"],
    }
    for name in ("method", "variant", "fold", "train_shot", "train_seed", "shot", "episode_seed"):
        fields[name] = "{" + name + "}"
    fields.update(fixed)
    if "backbone" not in fixed and not fields["method"].startswith("{"):
        fields["backbone"] = backbone_of(tag, fields["method"])
    return fields


def wildcard_pattern(template):
    """A template with every field a wildcard (the form rules declare as outputs)."""
    names = ["output_root", "dataset", "method", "variant", "backbone", "fold", "train_shot",
             "train_seed", "shot", "episode_seed", "n_episodes", "split", "min_object_px",
             "pretrain_seed", "pretrain_scope", "base_learner_seed"]
    fields = {n: "{" + n + "}" for n in names}
    fields["output_root"] = RESULTS
    return template.format(**fields)


RUN_DIR = wildcard_pattern(paths.RUN_DIR)
EVAL_DIR = wildcard_pattern(paths.EVAL_DIR)
MANIFEST = wildcard_pattern(paths.MANIFEST)
BACKBONE = wildcard_pattern(paths.PRETRAINED_BACKBONE)
BASE_LEARNER = wildcard_pattern(paths.BASE_LEARNER)


def prepared_marker(tag):
    return str(Path(EXPERIMENTS[tag].dataset.root) / "fsseg_dataset.json")


def experiment_file(wildcards):
    return config["datasets"][wildcards.dataset]["experiment"]


def _sets(pairs):
    return " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in pairs)


def _method_sets(wildcards):
    pairs = [("method.name", wildcards.method), ("method.variant", wildcards.variant)]
    pairs += [tuple(item.split("=", 1)) for item in METHOD_OVERRIDES.get(wildcards.method, [])]
    return pairs


def train_args(wildcards):
    pairs = [("fold", wildcards.fold), ("train.shot", wildcards.train_shot),
             ("train.train_seed", wildcards.train_seed)]
    return _sets(pairs + _method_sets(wildcards))


def eval_args(wildcards):
    """One process evaluates the run at every test shot and episode seed (and diagnoses DIAGNOSE_SHOTS)."""
    pairs = [("fold", wildcards.fold), ("train.shot", wildcards.train_shot),
             ("train.train_seed", wildcards.train_seed), ("eval.n_episodes", wildcards.n_episodes)]
    shots = " ".join(map(str, GRID["test_shots"]))
    seeds = " ".join(map(str, GRID["episode_seeds"]))
    diagnose = " ".join(map(str, DIAGNOSE_SHOTS))
    return (f"--shots {shots} --episode-seeds {seeds} --diagnose-shots {diagnose} "
            + _sets(pairs + _method_sets(wildcards)))


DIAGNOSE_SHOTS = [s for s in DIAGNOSTICS.get("shots", [GRID["test_shots"][0]]) if s in GRID["test_shots"]]


def run_eval_dir(shot, episode_seed):
    """EVAL_DIR of the run's wildcards with the shot and the episode seed fixed."""
    return EVAL_DIR.replace("{shot}", str(shot)).replace("{episode_seed}", str(episode_seed))


def run_eval_outputs(name):
    """The evaluate rule's outputs: ``name`` in every evaluation folder of the run."""
    return [run_eval_dir(shot, seed) + "/" + name for shot in GRID["test_shots"] for seed in GRID["episode_seeds"]]


def run_diagnostics_outputs():
    return [run_eval_dir(shot, seed) + "/" + paths.DIAGNOSTICS_FILE for shot in DIAGNOSE_SHOTS
            for seed in GRID["episode_seeds"]]


def run_manifests(wildcards):
    return [MANIFEST.format(**path_fields(wildcards.dataset, fold=wildcards.fold, shot=shot, episode_seed=seed))
            for shot in GRID["test_shots"] for seed in GRID["episode_seeds"]]


def manifest_args(wildcards):
    pairs = [("fold", wildcards.fold), ("eval.shot", wildcards.shot),
             ("eval.episode_seed", wildcards.episode_seed), ("eval.n_episodes", wildcards.n_episodes)]
    return _sets(pairs)


def pretrain_args(wildcards):
    """The fold of a base-class backbone; an auxiliary one (shared by every fold) needs none."""
    scope = wildcards.pretrain_scope
    return _sets([("fold", scope[len("fold"):])]) if scope.startswith("fold") else ""


def pretrain_scope(tag, fold):
    return "auxiliary" if EXPERIMENTS[tag].pretrain.classes == "auxiliary" else f"fold{fold}"


PREPARED_ROOTS = {str(Path(cfg.dataset.root)): tag for tag, cfg in EXPERIMENTS.items()}
PREPARED_ROOT_PATTERN = "|".join(re.escape(root) for root in sorted(PREPARED_ROOTS))


def prepare_args(wildcards):
    return config["datasets"][PREPARED_ROOTS[wildcards.prepared_root]]["prepare"]


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
    if not METHODS.get(wildcards.method).has_base_learner:
        return []
    return BASE_LEARNER.format(**path_fields(wildcards.dataset, method=wildcards.method, fold=wildcards.fold,
                                             backbone=wildcards.backbone))


def base_learner_args(wildcards):
    """The fold and the method; its method_overrides too, so the method is built as its runs build it."""
    pairs = [("fold", wildcards.fold), ("method.name", wildcards.method)]
    pairs += [tuple(item.split("=", 1)) for item in METHOD_OVERRIDES.get(wildcards.method, [])]
    return _sets(pairs)


def eval_dirs(tag):
    """Every evaluation folder of the grid of one dataset."""
    out = []
    for method, variant, fold, train_shot, seed, shots in runs(tag):
        for shot in shots:
            for episode_seed in GRID["episode_seeds"]:
                out.append(EVAL_DIR.format(**path_fields(
                    tag, method=method, variant=variant, fold=fold, train_shot=train_shot,
                    train_seed=seed, shot=shot, episode_seed=episode_seed)))
    return out


def eval_summaries(wildcards):
    return [d + "/summary.json" for d in eval_dirs(wildcards.dataset)]


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


def qualitative_args(wildcards):
    q = QUALITATIVE
    pairs = [("fold", q.get("fold", 0)), ("train.shot", GRID["train_shots"][0]),
             ("train.train_seed", q.get("train_seed", 0)), ("eval.shot", q.get("shot", 1)),
             ("eval.episode_seed", q.get("episode_seed", 0)), ("eval.n_episodes", GRID["n_episodes"])]
    return _sets(pairs + _method_sets(wildcards))


def qualitative_inputs(wildcards):
    q = QUALITATIVE
    fields = path_fields(wildcards.dataset, method=wildcards.method, variant=wildcards.variant,
                         fold=q.get("fold", 0), train_shot=GRID["train_shots"][0],
                         train_seed=q.get("train_seed", 0), shot=q.get("shot", 1),
                         episode_seed=q.get("episode_seed", 0))
    return [RUN_DIR.format(**fields) + "/train_summary.json", MANIFEST.format(**fields)]


def bench_args(wildcards):
    sizes = BENCH.get("sizes") or [EXPERIMENTS[wildcards.dataset].dataset.image_size]
    shots = BENCH.get("shots", [1])
    return (f"--sizes {' '.join(map(str, sizes))} --shots {' '.join(map(str, shots))} "
            f"--repeats {BENCH.get('repeats', 20)} " + _sets(_method_sets(wildcards)))


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
    """Every evaluation summary, requested directly: Snakemake (≥ 7.7) does not remake a deleted
    intermediate file whose dependants are up to date, so a deleted evaluation is rerun only when it
    is itself a target (and the aggregate and report then follow, being older than it)."""
    return [d + "/summary.json" for tag in config["datasets"] for d in eval_dirs(tag)]
