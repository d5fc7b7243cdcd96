"""A run folder's training state, read and checked: weights files, stored config, leftovers.

The training engine and evaluation call these so that a corrupt, non-finite or foreign file in a run
folder gives one message naming the file and the way out, never a traceback or a silent score.
"""

from __future__ import annotations

import pickle
import shutil
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch

from fsseg.config import ExperimentConfig, config_from_dict, read_yaml
from fsseg.engine.build import training_identity
from fsseg.errors import ConfigError, FssegError, RunFolderError, TrainingDiverged
from fsseg.finite import describe_names, nonfinite_in_module, nonfinite_in_state

#: The files of a run folder (``ExperimentConfig.run_dir``); see :mod:`fsseg.engine.train`.
CHECKPOINT = "checkpoint.pt"
MODEL = "model.pt"
SUMMARY = "train_summary.json"
LOG = "train_log.jsonl"

RESTART_HINT = "`fsseg train --restart` (same config) discards the run folder and trains from scratch"
#: A diverged run is retrained with another config, which the run folder refuses unless told to replace it.
RETRAIN_HINT = "lower train.lr and retrain with `fsseg train --replace-changed` (or --restart)"


def load_state_file(path: Path, map_location: Any = "cpu", weights_only: bool = True) -> Any:
    """``torch.load`` of a checkpoint or weights file; a truncated or foreign file raises
    :class:`RunFolderError` naming it and the way out."""
    try:
        return torch.load(path, map_location=map_location, weights_only=weights_only)
    except FileNotFoundError:
        raise
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as err:
        # torch's own text (often a page about weights_only) does not help here; its type is enough.
        raise RunFolderError(
            f"{path} is unreadable: truncated or not a file fsseg wrote ({type(err).__name__}); "
            + RESTART_HINT
        ) from None


def check_finite_state(state: dict[str, Any], path: Path) -> None:
    """Refuse weights holding NaN or infinity (a training that diverged without a non-finite loss)."""
    bad = nonfinite_in_state(state)
    if bad:
        raise RunFolderError(
            f"{path} holds non-finite weights ({describe_names(bad)}): its training diverged; {RETRAIN_HINT}"
        )


def check_finite_training(module: torch.nn.Module, where: str, run_name: str, lr: float) -> None:
    """Raise :class:`TrainingDiverged` if ``module``'s weights or gradients hold NaN or infinity."""
    weights, grads = nonfinite_in_module(module)
    if weights or grads:
        what = "; ".join(
            part
            for part in (
                f"weights: {describe_names(weights)}" if weights else "",
                f"gradients: {describe_names(grads)}" if grads else "",
            )
            if part
        )
        raise TrainingDiverged(
            f"training of {run_name} diverged ({where}): non-finite {what}, although the loss is finite; "
            f"nothing of this iteration was written (train.lr is {lr:g}); {RETRAIN_HINT}, or check the data"
        )


def check_finite_weights_to_save(weights: dict[str, Any], path: Path, run_name: str) -> None:
    """Refuse to write ``model.pt`` with NaN or infinite weights (raises :class:`TrainingDiverged`)."""
    bad = nonfinite_in_state(weights)
    if bad:
        raise TrainingDiverged(
            f"training of {run_name} diverged: the selected weights hold non-finite values "
            f"({describe_names(bad)}); {path} was not written; {RETRAIN_HINT}"
        )


def check_finished_weights(path: Path) -> None:
    """A finished run's ``model.pt`` must load and be finite before the run counts as trained."""
    check_finite_state(load_state_file(path), path)


def discard_run(run_dir: Path) -> None:
    """``--restart``: delete the run folder (checkpoint, weights, log, evaluations of those weights)."""
    if run_dir.exists():
        print(f"fsseg: --restart: deleting {run_dir} and training from scratch", file=sys.stderr)
        shutil.rmtree(run_dir)


def check_trained_with(cfg: ExperimentConfig, weights: Path) -> None:
    """Refuse to evaluate weights trained with another training config than ``cfg`` describes.

    The run folder's ``config.yaml`` (written by ``fsseg train``) must have the same training identity;
    otherwise the scores would be recorded under the run_id of a config that was never trained.
    """
    stored_path = cfg.run_dir / "config.yaml"
    if not stored_path.is_file():
        raise FssegError(
            f"{weights} has no {stored_path} next to it, so the config it was trained with is unknown; "
            "train with `fsseg train` (which writes it) or restore the file"
        )
    stored = config_from_dict(read_yaml(stored_path))
    ours, theirs = training_identity(cfg), training_identity(stored)
    if ours != theirs:
        differing = sorted(differing_keys(ours, theirs))
        raise ConfigError(
            f"{weights} was trained with another training config ({stored_path}); differing keys: "
            f"{', '.join(differing[:8])}. Evaluate with the config it was trained with, or train this one "
            "(`fsseg train`, with --replace-changed to replace that run)"
        )


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the leaves in which two nested dicts differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += differing_keys(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [prefix.rstrip(".")]
