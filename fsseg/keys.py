"""The identity of a training run and of an evaluation: the one definition of every key field.

A training run is named by its :data:`RUN_KEY` (dataset, method, variant, backbone, fold, training shot,
training seed); an evaluation by its :data:`EVAL_KEY` (the run's key plus the test shot and the episode
seed). Each :class:`KeyField` says its name (the output-path field, the Snakemake wildcard and the record
column at once), its type, where the experiment config holds it (its ``--set`` key), the wildcard's
pattern and its role when two runs are paired. From this table the rest is derived:

* the output path templates (:data:`RUN_DIR`, :data:`EVAL_DIR`, re-exported by :mod:`fsseg.paths`) and
  the values a config fills into them (:func:`path_values`);
* the workflow's wildcard constraints and the ``--set`` arguments of its jobs (:data:`GRID_AXES`,
  :func:`set_overrides`);
* the columns of ``records.csv`` (:mod:`fsseg.records`), the aggregate's identity columns and dtypes
  (:mod:`fsseg.aggregate`), the columns :mod:`fsseg.compare` types and :mod:`fsseg.stats` pairs on.

Adding an axis is one :class:`KeyField` here (and the use that needs it). Torch-free, so the workflow's
plan can import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # keys stay importable without the config's dependencies
    from fsseg.config import ExperimentConfig

Pairing = Literal["compared", "shared", "unit", "manifest", "unit_manifest"]
"""A key field's role in a paired comparison (:mod:`fsseg.stats`): ``compared`` tells the two runs apart
(method, variant, backbone); ``shared`` must hold one value within and across the two runs (dataset,
shots); ``unit`` names a trained model (with ``unit_manifest``: fold and training seed); ``manifest``
names a saved episode list (with ``unit_manifest``: fold and episode seed)."""


@dataclass(frozen=True)
class KeyField:
    """One axis of a run's or an evaluation's identity."""

    name: str
    """Output-path field, Snakemake wildcard and record column."""
    type: type
    """``int`` or ``str``: how a record column or a wildcard string is read back."""
    source: str
    """Attribute path of the value on an :class:`~fsseg.config.ExperimentConfig` (``train.shot``)."""
    wildcard: str | None
    """Regular expression a wildcard of this field matches (``None``: unconstrained)."""
    level: Literal["run", "eval", "path"]
    """``run``: names a training run; ``eval``: names an evaluation of one; ``path``: only a path field."""
    pairing: Pairing | None = None
    path_source: str | None = None
    """Where a path takes the value from when not from ``source``: records name the dataset, paths name
    the dataset with its option values (its tag, ``dlrsd-A``)."""

    def value(self, cfg: ExperimentConfig) -> Any:
        """This field's value in a config, as records and summaries hold it."""
        return attrgetter(self.source)(cfg)

    def path_value(self, cfg: ExperimentConfig) -> Any:
        """This field's value in a config, as output paths hold it."""
        return attrgetter(self.path_source or self.source)(cfg)

    def parse(self, text: str) -> Any:
        """A value read back from a path, a wildcard or a CSV cell."""
        return self.type(text)


_INT = r"\d+"

#: Every key and path field, key fields in record-column order.
FIELDS: tuple[KeyField, ...] = (
    KeyField("method", str, "method.name", r"[a-z0-9_]+", "run", "compared"),
    KeyField("variant", str, "method.variant", r"[a-z0-9_]+", "run", "compared"),
    KeyField("backbone", str, "backbone.name", r"[a-z0-9_]+", "run", "compared"),
    KeyField(
        "dataset",
        str,
        "dataset.name",
        r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+)*",
        "run",
        "shared",
        path_source="dataset_tag",
    ),
    KeyField("fold", int, "fold", _INT, "run", "unit_manifest"),
    KeyField("train_shot", int, "train.shot", _INT, "run", "shared"),
    KeyField("shot", int, "eval.shot", _INT, "eval", "shared"),
    KeyField("train_seed", int, "train.train_seed", _INT, "run", "unit"),
    KeyField("episode_seed", int, "eval.episode_seed", _INT, "eval", "manifest"),
    # path-only fields: where outputs go, not what they are
    KeyField("output_root", str, "output_root", None, "path"),
    KeyField("n_episodes", str, "eval.n_episodes", r"\d+|all", "path"),
    KeyField("split", str, "eval.split", None, "path"),
    KeyField("min_object_px", int, "dataset.min_object_px", None, "path"),
    KeyField("pretrain_seed", int, "pretrain.seed", _INT, "path"),
    KeyField("pretrain_scope", str, "pretrain_scope", r"fold\d+|auxiliary", "path"),
    KeyField("base_learner_seed", int, "base_learner.seed", _INT, "path"),
)
BY_NAME: dict[str, KeyField] = {f.name: f for f in FIELDS}

GRID_AXES: tuple[str, ...] = (
    "fold",
    "train_shot",
    "train_seed",
    "shot",
    "episode_seed",
    "n_episodes",
    "method",
    "variant",
)
"""The fields a workflow job chooses with ``--set`` (the grid's axes), in the order it passes them. The
others follow from the experiment file (dataset, split, object-size threshold, pretraining seed) or from it
and the method's overrides (backbone); a path holds them to name the file, a job never sets them."""

RUN_KEY: tuple[str, ...] = tuple(f.name for f in FIELDS if f.level == "run")
"""Names of the fields that name a training run, in record-column order."""
EVAL_KEY: tuple[str, ...] = tuple(f.name for f in FIELDS if f.level in ("run", "eval"))
"""Names of the fields that name an evaluation (a run tested on one manifest), in record-column order."""

RUN_DIR = "{output_root}/{dataset}/{method}-{variant}/{backbone}/fold{fold}/shot{train_shot}/seed{train_seed}"
"""Training outputs of one run (``fsseg train``): every :data:`RUN_KEY` field."""
EVAL_DIR = RUN_DIR + "/eval/shot{shot}_ep{episode_seed}_n{n_episodes}"
"""Evaluation outputs of one run on one test manifest (``fsseg evaluate``): every :data:`EVAL_KEY` field."""

SORT_ORDER: tuple[str, ...] = (
    "dataset",
    "method",
    "variant",
    "backbone",
    "train_shot",
    "shot",
    "fold",
    "train_seed",
    "episode_seed",
)
"""The order evaluations are sorted in (the aggregate's rows): the dataset, what a table column shows,
then the replicates."""
if sorted(SORT_ORDER) != sorted(EVAL_KEY):  # a new key field must be placed in the sort order too
    raise AssertionError(f"fsseg.keys.SORT_ORDER {SORT_ORDER} must list the fields of EVAL_KEY {EVAL_KEY}")

#: Columns of the key fields read back from CSV: integers and text.
INT_COLUMNS: tuple[str, ...] = tuple(n for n in EVAL_KEY if BY_NAME[n].type is int)
TEXT_COLUMNS: tuple[str, ...] = tuple(n for n in EVAL_KEY if BY_NAME[n].type is str)

#: Pairing of :mod:`fsseg.stats`: a unit is one trained model, a manifest one saved episode list.
UNIT: tuple[str, ...] = tuple(n for n in EVAL_KEY if BY_NAME[n].pairing in ("unit_manifest", "unit"))
MANIFEST: tuple[str, ...] = tuple(n for n in EVAL_KEY if BY_NAME[n].pairing in ("unit_manifest", "manifest"))
#: A record's episode across units: (fold, train_seed, episode_seed) and the episode id.
EPISODE_KEY: tuple[str, ...] = (*UNIT, *(n for n in MANIFEST if n not in UNIT), "episode_id")
#: Fields with one value within a run that is compared (what the two runs of a comparison are).
RUN_IDENTITY: tuple[str, ...] = tuple(n for n in EVAL_KEY if BY_NAME[n].pairing in ("compared", "shared"))


def path_values(cfg: ExperimentConfig) -> dict[str, Any]:
    """Every path field's value in a config (what the templates of :mod:`fsseg.paths` are formatted with)."""
    return {f.name: f.path_value(cfg) for f in FIELDS}


def key_values(cfg: ExperimentConfig, names: tuple[str, ...] = EVAL_KEY) -> dict[str, Any]:
    """The named key fields' values in a config, in the order given."""
    return {name: BY_NAME[name].value(cfg) for name in names}


def set_overrides(values: dict[str, Any]) -> list[str]:
    """``key=value`` config overrides (``fsseg ... --set``) that choose the given grid-axis values.

    Only :data:`GRID_AXES` are set, in that order; other key and path fields in ``values`` are skipped
    (the experiment config fixes them); a name that is no field at all is an error naming it.
    """
    unknown = sorted(set(values) - set(BY_NAME))
    if unknown:
        raise KeyError(f"{', '.join(map(repr, unknown))}: not key fields; known: {', '.join(BY_NAME)}")
    return [f"{BY_NAME[name].source}={values[name]}" for name in GRID_AXES if name in values]


def wildcard_constraints() -> dict[str, str]:
    """Snakemake wildcard constraints of every key and path field that has a pattern."""
    return {f.name: f.wildcard for f in FIELDS if f.wildcard is not None}
