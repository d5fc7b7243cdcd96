"""The experiment config: schema, composition from YAML files and ``key=value`` overrides, validation.

A config is composed from the schema defaults, then each YAML file in order (deep merge), then
``--set a.b=value`` overrides (values parsed as YAML). The ``method.params`` section is validated
against the chosen method's own parameter dataclass, and ``dataset.options`` against the dataset
adapter's options dataclass, so a typo anywhere is caught at load time.
"""

from __future__ import annotations

import copy
import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from fsseg import keys, paths
from fsseg.errors import ConfigError
from fsseg.schema import from_dict, opt, to_dict
from fsseg.yaml_strict import DuplicateKeyError, load_unique


@dataclass
class MethodConfig:
    name: str = opt("panet", help="registered method name (see `fsseg list`)")
    variant: str = opt("default", help="named variant (ablation) declared by the method")
    params: dict[str, Any] = opt({}, help="method hyper-parameters; override the variant's values")


@dataclass
class DatasetConfig:
    name: str = opt("synthetic", help="registered dataset name")
    root: str = opt("data/synthetic", help="folder holding the prepared dataset")
    image_size: int = opt(96, help="side of the square model input in pixels", ge=16, le=2048)
    train_filter: Literal["none", "remove_novel"] = opt(
        "none", help="remove_novel drops training images that contain any novel-class pixel"
    )
    min_object_px: int = opt(
        0, help="an image counts for a class only if the class covers at least this many pixels", ge=0
    )
    label_resolution: Literal["original", "input"] = opt(
        "original", help="evaluate against labels at their original size or at the model input size"
    )
    options: dict[str, Any] = opt({}, help="dataset-specific options (validated by the adapter)")


@dataclass
class BackboneConfig:
    name: Literal["resnet18", "resnet50", "resnet101", "resnet50_deep", "resnet101_deep", "vgg16"] = opt(
        "resnet18",
        help="backbone network; *_deep = PSPNet's deep-stem ResNet of PFENet (three 3x3 stem convs, "
        "loads the official resnet50_v2.pth / resnet101_v2.pth); vgg16 = PANet's VGG-16",
    )
    weights: str = opt(
        "none",
        help="'none' (random init), 'imagenet' (torchvision cache file), 'fold_pretrained' (the fold's "
        "base-class backbone from `fsseg pretrain`) or a path to a weights file",
    )
    sha256: str | None = opt(None, help="expected sha256 of the weights file (checked when given)")
    output_stride: Literal[8, 16, 32] = opt(8, help="output stride of the dilated backbone")
    max_stage: str | None = opt(
        None,
        help="deepest backbone stage kept (e.g. layer3 on a CPU); later stages are dropped and methods "
        "whose high-level stage is 'auto' use this one; null keeps every stage",
    )
    train_mode: Literal["method", "frozen", "finetune"] = opt(
        "method", help="'method' keeps the method's own choice; the others force it"
    )
    frozen_bn: Literal["eval", "batch_stats"] | None = opt(
        None,
        help="BatchNorm of a frozen backbone while training: 'eval' keeps its running statistics fixed; "
        "'batch_stats' leaves it in train mode (normalises with batch statistics, running statistics "
        "drift and are saved), as PFENet's official train.py does; null = the recipe's value",
    )


def _precision_field(what: str) -> Any:
    return opt(
        "fp32",
        help=f"numerical precision of {what}: fp32 (the reference) or bf16 autocast (a CPU with avx512_bf16 "
        "or amx_bf16, or a CUDA card with bf16); fsseg/numerics.py",
    )


def _channels_last_field(what: str) -> Any:
    return opt(False, help=f"channels-last layout of the model's 4-D weights and activations for {what}")


@dataclass
class TrainConfig:
    shot: int = opt(1, help="support images per training episode", ge=1, le=20)
    train_seed: int = opt(0, help="seed of initialisation, training episodes and dropout", ge=0)
    recipe: str = opt(
        "default",
        help="named training recipe: one the method declares (official: its paper's) or one of the "
        "benchmark's recipe file (train.recipe_file)",
    )
    recipe_file: str | None = opt(
        "config/recipes/synthetic.yaml",
        help="the benchmark's recipe file (recipe name -> method -> recipe; relative to the working "
        "directory), read when train.recipe is not one the method declares; null = none",
    )
    iterations: int | None = opt(None, help="optimizer steps (recipe value if null)", ge=0)
    batch_size: int | None = opt(None, help="episodes per step (recipe value if null)", ge=1)
    lr: float | None = opt(None, help="base learning rate (recipe value if null)", gt=0)
    optimizer: Literal["sgd", "adam", "adamw"] | None = opt(None, help="optimizer (recipe value if null)")
    momentum: float | None = opt(None, help="SGD momentum", ge=0, lt=1)
    weight_decay: float | None = opt(None, help="weight decay", ge=0)
    schedule: Literal["constant", "step", "poly"] | None = opt(None, help="learning-rate schedule")
    lr_steps: list[int] | None = opt(None, help="iterations at which a step schedule multiplies by lr_gamma")
    lr_gamma: float | None = opt(None, help="step-schedule factor", gt=0, le=1)
    poly_power: float | None = opt(None, help="poly-schedule exponent", gt=0)
    warmup: int | None = opt(
        None, help="iterations of linear learning-rate warm-up from lr/warmup (0 = none)", ge=0
    )
    epochs: int | None = opt(
        None,
        help="training length in epochs of the fold's filtered training list (images with a base-class "
        "object of at least dataset.min_object_px px, after train_filter): iterations = epochs x "
        "floor(N / batch_size), as PFENet's drop_last loader; null = the recipe's value (unless "
        "train.iterations is given)",
        ge=1,
    )
    augment: Literal["flip_rot90", "pfenet", "panet", "none"] | None = opt(
        None,
        help="training augmentation pipeline: flip_rot90 (random flip + 90-degree rotation, then resize), "
        "pfenet (RandScale 0.9-1.1, RandRotate +-10 deg, Gaussian blur, horizontal flip, random crop to "
        "the input size padded with 255), panet (resize to the input size + random mirror), none; "
        "null = the recipe's value",
    )
    checkpoint_every: int = opt(100, help="iterations between resumable checkpoints", ge=1)
    log_every: int = opt(
        10,
        help="iterations between progress lines and log rows; a row holds the mean loss over those "
        "iterations (the first row: iteration 1 alone, the untrained model's loss)",
        ge=1,
    )
    num_workers: int = opt(0, help="data-loader worker processes", ge=0)
    selection: Literal["last", "best_val"] = opt(
        "last",
        help="which weights model.pt holds: the last, or those with the best class mIoU on the validation "
        "episodes (train.val_*; fixed by the training config alone, no eval.* key changes them)",
    )
    val_every: int = opt(200, help="iterations between validations when selection is best_val", ge=1)
    val_episodes: int = opt(
        100,
        help="validation episodes of best_val: the fold's novel classes on the dataset's val split (never "
        "the test split), train.shot supports each, scored against original-resolution labels in batches "
        "of the training batch size",
        ge=1,
    )
    val_episode_seed: int = opt(12345, help="episode seed of the validation episodes (best_val)", ge=0)
    device: str = opt("auto", help="'auto' (CUDA if available), 'cpu' or 'cuda[:N]'")
    precision: Literal["fp32", "bf16"] = _precision_field("training (part of the run's identity)")
    channels_last: bool = _channels_last_field("training (part of the run's identity)")


@dataclass
class EvalConfig:
    shot: int = opt(1, help="support images per test episode", ge=1, le=20)
    episode_seed: int = opt(0, help="seed of the test episode manifest", ge=0)
    n_episodes: int | Literal["all"] = opt(
        1000,
        help="test episodes per fold; 'all' with sampler all_pairs (one episode per (image, class) pair "
        "of the split, the count set by the data)",
        ge=1,
    )
    sampler: Literal["balanced", "pfenet", "all_pairs"] = opt(
        "balanced",
        help="test-episode sampler: balanced (classes in balanced rounds, random query and supports), "
        "pfenet (walk the split's image list, class uniform among the novel classes in the query, as "
        "PFENet's test.py), all_pairs (every (image, novel class) pair once with random supports, as "
        "HSNet/SCCNet)",
    )
    split: str = opt("test", help="dataset split the test episodes are drawn from")
    batch_size: int = opt(8, help="episodes per forward pass", ge=1)
    num_workers: int = opt(0, help="data-loader worker processes", ge=0)
    device: str = opt("auto", help="'auto' (CUDA if available), 'cpu' or 'cuda[:N]'")
    precision: Literal["fp32", "bf16"] = _precision_field("evaluation (written into summary.json)")
    channels_last: bool = _channels_last_field("evaluation")

    def validate(self, path: str) -> None:
        if (self.n_episodes == "all") != (self.sampler == "all_pairs"):
            raise ConfigError(
                f"{path}.n_episodes: {self.n_episodes!r} does not fit {path}.sampler {self.sampler!r}; "
                "sampler all_pairs takes n_episodes 'all' (every pair once), the other samplers a number"
            )


@dataclass
class PretrainConfig:
    classes: Literal["base", "auxiliary"] = opt(
        "base",
        help="base: semantic segmentation of the fold's base classes (one backbone per fold); auxiliary: "
        "of the dataset's pretraining split, whose classes belong to no fold (one backbone for every fold, "
        "the role ImageNet plays for real data; only datasets that declare such a split)",
    )
    iterations: int = opt(1500, help="steps of semantic-segmentation pretraining", ge=1)
    batch_size: int = opt(16, help="images per step", ge=1)
    lr: float = opt(1e-3, help="Adam learning rate (cosine decay to zero)", gt=0)
    weight_decay: float = opt(1e-4, help="Adam weight decay", ge=0)
    seed: int = opt(0, help="seed of initialisation and image draws", ge=0)
    init_weights: str = opt("none", help="starting weights: 'none', 'imagenet' or a file path")
    device: str = opt("auto", help="'auto', 'cpu' or 'cuda[:N]'")
    precision: Literal["fp32", "bf16"] = _precision_field("backbone pretraining")
    channels_last: bool = _channels_last_field("backbone pretraining")


@dataclass
class BaseLearnerConfig:
    """The training of a method's base learner (``fsseg base-learner``; only methods that declare one)."""

    iterations: int = opt(
        1500, help="steps of the base learner's semantic segmentation of the base classes", ge=1
    )
    epochs: int | None = opt(
        None,
        help="length in epochs of the base learner's training images instead (iterations = epochs x "
        "floor(images / batch_size), as BAM's train_base.py); null: base_learner.iterations",
        ge=1,
    )
    batch_size: int = opt(16, help="images per step", ge=1)
    optimizer: Literal["adam", "sgd"] = opt(
        "adam", help="adam (ours: the pretraining's loop) or sgd (BAM's train_base.py, with momentum)"
    )
    lr: float = opt(1e-3, help="learning rate of the backbone (the head's: x head_lr_scale)", gt=0)
    momentum: float = opt(0.9, help="SGD momentum (optimizer sgd only)", ge=0, lt=1)
    weight_decay: float = opt(1e-4, help="weight decay (L2, either optimizer)", ge=0)
    schedule: Literal["cosine", "poly"] = opt(
        "cosine",
        help="cosine decay to zero (ours) or poly: lr x (1 - step/steps)^poly_power (BAM's util/util.py)",
    )
    poly_power: float = opt(0.9, help="exponent of the poly schedule", gt=0)
    head_lr_scale: float = opt(
        1.0,
        help="learning-rate multiplier of every parameter outside the backbone (BAM's PSPNet: 10, "
        "index_split 0 of util/util.py poly_learning_rate)",
        gt=0,
    )
    seed: int = opt(
        0, help="seed of the head's initialisation and of the image draws (in the file name)", ge=0
    )
    device: str = opt("auto", help="'auto', 'cpu' or 'cuda[:N]'")
    precision: Literal["fp32", "bf16"] = _precision_field("base-learner training")
    channels_last: bool = _channels_last_field("base-learner training")
    novel_pixels: Literal["ignore", "background"] = opt(
        "ignore",
        help="novel-class pixels of the training images: ignored (ours: the learner is never taught that "
        "novel objects are background) or background (BAM's official base training, "
        "util/get_mulway_base_data.py); under train_filter remove_novel no image holds them",
    )


#: The two published iSAID-5i protocols: the config values each one fixes.
PROTOCOLS: dict[str, dict[str, Any]] = {
    # SDM → SCCNet → MGCL (HSNet's test): novel-class training pixels kept as background,
    # every (image, novel class) pair of the test split once.
    "H": {"dataset.train_filter": "none", "eval.sampler": "all_pairs", "eval.n_episodes": "all"},
    # BAM → DMNet / R2Net (PFENet's dataset code): training images with novel classes removed,
    # 1000 episodes of PFENet's sampler per episode seed (run several seeds).
    "B": {"dataset.train_filter": "remove_novel", "eval.sampler": "pfenet", "eval.n_episodes": 1000},
}


@dataclass
class ExperimentConfig:
    fold: int = opt(0, help="fold whose classes are novel", ge=0)
    protocol: Literal["H", "B"] | None = opt(
        None,
        help="a published iSAID-5i protocol preset: H (SDM/SCCNet/MGCL: train_filter none, sampler "
        "all_pairs, n_episodes all) or B (BAM/DMNet/R2Net: train_filter remove_novel, sampler pfenet, "
        "1000 episodes per episode seed); it sets those three keys, and a config giving one of them "
        "another value is refused; null = set them yourself",
    )
    output_root: str = opt("results", help="root folder of run outputs")
    method: MethodConfig = opt(MethodConfig())
    dataset: DatasetConfig = opt(DatasetConfig())
    backbone: BackboneConfig = opt(BackboneConfig())
    train: TrainConfig = opt(TrainConfig())
    eval: EvalConfig = opt(EvalConfig())
    pretrain: PretrainConfig = opt(PretrainConfig())
    base_learner: BaseLearnerConfig = opt(BaseLearnerConfig())

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @property
    def dataset_tag(self) -> str:
        """The dataset name with its option values, as it appears in output paths."""
        return paths.dataset_tag(self.dataset.name, self.dataset.options)

    @property
    def run_name(self) -> str:
        """The run's name, ``{method}-{variant}_{backbone}_{dataset}-fold{f}_{shot}shot_seed{s}``."""
        return (
            f"{self.method.name}-{self.method.variant}_{self.backbone.name}_{self.dataset_tag}"
            f"-fold{self.fold}_{self.train.shot}shot_seed{self.train.train_seed}"
        )

    def tested_on(self, shot: int, episode_seed: int) -> ExperimentConfig:
        """This config with ``eval.shot`` and ``eval.episode_seed`` replaced (one test manifest of a run)."""
        test = dataclasses.replace(self.eval, shot=shot, episode_seed=episode_seed)
        return dataclasses.replace(self, eval=test)

    def _path_fields(self) -> dict[str, Any]:
        return keys.path_values(self)

    @property
    def pretrain_scope(self) -> str:
        """``fold<N>`` for a base-class backbone, ``auxiliary`` for the one shared by every fold."""
        return "auxiliary" if self.pretrain.classes == "auxiliary" else f"fold{self.fold}"

    @property
    def run_dir(self) -> Path:
        """Where ``fsseg train`` writes; the harness alone decides it."""
        return Path(paths.RUN_DIR.format(**self._path_fields()))

    @property
    def eval_dir(self) -> Path:
        return Path(paths.EVAL_DIR.format(**self._path_fields()))

    @property
    def manifest_path(self) -> Path:
        """Default manifest of (dataset, fold, eval.shot, eval.episode_seed, eval.n_episodes, split)."""
        return Path(paths.MANIFEST.format(**self._path_fields()))

    @property
    def manifest_set_path(self) -> Path:
        """Index of the fold's manifests at several shots and episode seeds (``fsseg episodes --shots``)."""
        return Path(paths.MANIFEST_SET.format(**self._path_fields()))

    @property
    def evaluated_path(self) -> Path:
        """Index of the run's evaluations at several shots and episode seeds (``fsseg evaluate --shots``)."""
        return Path(paths.EVALUATED.format(**self._path_fields()))

    @property
    def pretrained_backbone_path(self) -> Path:
        """Where ``fsseg pretrain`` writes the backbone this config's methods start from."""
        return Path(paths.PRETRAINED_BACKBONE.format(**self._path_fields()))

    @property
    def base_learner_path(self) -> Path:
        """Where ``fsseg base-learner`` writes the base learner of this config's method and fold."""
        return Path(paths.BASE_LEARNER.format(**self._path_fields()))


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``; mappings merge recursively, other values replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        data = load_unique(text)
    except DuplicateKeyError as err:
        raise ConfigError(f"config file {path}: {err.problem}") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` → ``{"a": {"b": {"c": value}}}``, value parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {err}") from None
    nested: dict[str, Any] = {}
    cursor = nested
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


def override_arguments(overrides: list[str]) -> str:
    """``key=value`` overrides as the (quoted) shell arguments ``--set key=value ...`` of an fsseg command,
    the form :func:`parse_override` reads back."""
    return " ".join(f"--set {shlex.quote(text)}" for text in overrides)


def compose(
    files: list[str | Path] = (), overrides: list[str] = (), base: dict | None = None
) -> dict[str, Any]:
    """Merge YAML files then overrides into one raw dict (not yet validated)."""
    raw: dict[str, Any] = copy.deepcopy(base or {})
    for file in files:
        raw = deep_merge(raw, read_yaml(file))
    for text in overrides:
        raw = deep_merge(raw, parse_override(text))
    return raw


def load_config(
    files: list[str | Path] = (), overrides: list[str] = (), base: dict | None = None
) -> ExperimentConfig:
    """Compose and validate an experiment config, including method params and dataset options."""
    raw = compose(files, overrides, base)
    if "include" in raw:
        raise ConfigError("config: 'include' is not supported; pass several --config files instead")
    raw = apply_protocol(raw)
    cfg = from_dict(ExperimentConfig, raw)
    resolve_method_and_dataset(cfg)
    return cfg


def apply_protocol(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill in the keys a ``protocol`` preset fixes; a different explicit value is an error naming it."""
    name = raw.get("protocol")
    if name is None:
        return raw
    if name not in PROTOCOLS:
        raise ConfigError(f"config.protocol: {name!r} is not one of {', '.join(map(repr, PROTOCOLS))}")
    raw = copy.deepcopy(raw)
    for key, value in PROTOCOLS[name].items():
        section, field = key.split(".")
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            continue  # the schema reports the malformed section
        if field in target and target[field] != value:
            raise ConfigError(
                f"config.{key}: {target[field]!r} contradicts protocol {name}, which sets it to {value!r}; "
                f"drop config.{key} or config.protocol"
            )
        target[field] = value
    return raw


def resolve_method_and_dataset(cfg: ExperimentConfig) -> None:
    """Validate the method/dataset-specific sections and fill in their defaults (in place)."""
    from fsseg.registry import DATASETS, METHODS

    method = METHODS.declaration(cfg.method.name)  # torch-free: the network is not imported
    cfg.method.params = to_dict(method.resolve_params(cfg.method.variant, cfg.method.params))
    method.recipe(cfg.train.recipe, cfg.train.recipe_file)  # raises on an unknown recipe name
    dataset_cls = DATASETS.get(cfg.dataset.name)
    cfg.dataset.options = to_dict(
        from_dict(dataset_cls.Options, cfg.dataset.options, "config.dataset.options")
    )
    n_folds = dataset_cls.num_folds(cfg.dataset.options)
    if cfg.fold >= n_folds:
        raise ConfigError(
            f"config.fold: {cfg.fold} is out of range; dataset {cfg.dataset.name!r} has {n_folds} folds"
        )


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Re-validate a resolved config (as written next to outputs)."""
    return load_config(base=data)


def describe_schema(schema: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """One line per key: path, type, default and help text (for `fsseg config --describe`)."""
    import typing

    lines = []
    hints = typing.get_type_hints(schema)
    for fld in dataclasses.fields(schema):
        tp = hints[fld.name]
        path = f"{prefix}{fld.name}"
        if dataclasses.is_dataclass(tp):
            lines.extend(describe_schema(tp, path + "."))
            continue
        default = fld.default if fld.default is not dataclasses.MISSING else fld.default_factory()
        help_text = fld.metadata.get("help", "")
        lines.append(f"{path} = {default!r}  # {help_text}")
    return lines
