"""Output path templates: the one definition shared by the harness and the Snakemake workflow.

Each template is a ``str.format`` pattern whose fields are the key and path fields of
:mod:`fsseg.keys` (which holds the run and evaluation folders), also the workflow's wildcard names, so
the workflow formats only the fixed parts and leaves ``{fold}``, ``{train_seed}`` … as wildcards.
"""

from __future__ import annotations

from fsseg.keys import EVAL_DIR, RUN_DIR

__all__ = [
    "BASE_LEARNER",
    "DIAGNOSTICS_FILE",
    "EVALUATED",
    "EVAL_DIR",
    "EVAL_FILES",
    "MANIFEST",
    "MANIFEST_SET",
    "PRETRAINED_BACKBONE",
    "RECORDS_FILE",
    "RUN_DIR",
    "SUMMARY_FILE",
    "dataset_tag",
]

MANIFEST = (
    "{output_root}/manifests/{dataset}/fold{fold}_{split}_shot{shot}_ep{episode_seed}_n{n_episodes}"
    "_px{min_object_px}.json"
)
"""A test-episode manifest, shared by every method (``fsseg episodes``)."""

MANIFEST_SET = (
    "{output_root}/manifests/{dataset}/fold{fold}_{split}_n{n_episodes}_px{min_object_px}.manifests.json"
)
"""The index of one fold's manifests at several shots and episode seeds, written after them by ``fsseg
episodes --shots ... --episode-seeds ...``: the one file a run's evaluations depend on in the workflow."""

SUMMARY_FILE = "summary.json"
"""In an evaluation folder, written last: the scores, and the mark of a finished evaluation."""
RECORDS_FILE = "records.csv"
"""In an evaluation folder: one row per episode."""
EVAL_FILES = (RECORDS_FILE, SUMMARY_FILE)
"""The files of every evaluation folder, in the order ``fsseg evaluate`` writes them."""

EVALUATED = RUN_DIR + "/eval/evaluated_n{n_episodes}.json"
"""The index of a run's evaluations at several shots and episode seeds (their folders and files),
written by ``fsseg evaluate --shots ... --episode-seeds ...`` after the last of them: the one output of
the workflow's evaluate job, so that planning a grid handles one file per run, not one per evaluation."""

DIAGNOSTICS_FILE = "diagnostics.json"
"""In an evaluation folder: the support-use diagnostics (``fsseg evaluate --diagnose``)."""

PRETRAINED_BACKBONE = "{output_root}/{dataset}/backbones/{backbone}_{pretrain_scope}_seed{pretrain_seed}.pt"
"""A backbone pretrained by ``fsseg pretrain``: on one fold's base classes (scope ``fold<N>``) or on
the dataset's auxiliary pretraining classes, shared by every fold (scope ``auxiliary``)."""

BASE_LEARNER = (
    "{output_root}/{dataset}/base_learners/{method}/{backbone}_fold{fold}_seed{base_learner_seed}.pt"
)
"""A method's base learner trained by ``fsseg base-learner`` on one fold's base classes (BAM's PSPNet);
shared by every variant, shot and train seed of the method."""


def dataset_tag(name: str, options: dict) -> str:
    """Name used in output paths: the dataset name plus its option values (``dlrsd-A``)."""
    values = [str(options[k]) for k in sorted(options)]
    return "-".join([name, *values])
