"""The training engine: episodes from the harness, optimisation by the method's recipe, resumable.

Outputs in the run folder (``ExperimentConfig.run_dir``):

* ``config.yaml``: the resolved config; a rerun with a different training config is refused;
* ``checkpoint.pt``: model, optimizer, scheduler, RNG state and iteration, written atomically
  every ``train.checkpoint_every`` iterations; a rerun after a kill resumes from it and ends with
  the same weights as an uninterrupted run;
* ``train_log.jsonl``: a row after the first iteration (the loss of the untrained model), then one
  every ``train.log_every`` iterations and at the end, each with the mean of every loss term over
  the iterations since the previous row (``LossWindow``), the lr and the rate;
* ``model.pt``: the selected weights (last, or best on validation episodes), written at the end;
* ``train_summary.json``: written last; its presence marks a finished run.

Checkpoint selection (``train.selection: best_val``) scores the model every ``train.val_every``
iterations on validation episodes that the training config alone fixes (:func:`validation_manifest`,
:func:`validation_settings`): the dataset's val split, never the test split, and no ``eval.*`` key, so
one training config (one run id) selects one ``model.pt``.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from fsseg.atomic import remove_stale_temporaries, save_torch, write_json, write_text, write_yaml
from fsseg.config import ExperimentConfig, config_from_dict, read_yaml
from fsseg.data.adapter import DatasetAdapter
from fsseg.data.decoded import DecodedImages
from fsseg.data.episodes import EpisodeManifest, TrainEpisodeSampler, build_test_manifest
from fsseg.data.loading import TrainEpisodes, collate_episodes
from fsseg.device import describe_device, resolve_device
from fsseg.engine.base_learner import check_base_learner_file, load_base_learner
from fsseg.engine.build import (
    build_dataset,
    build_method,
    build_optimizer,
    build_scheduler,
    effective_recipe,
    iterations_for_epochs,
    run_id,
    training_identity,
)
from fsseg.engine.infer import InferenceSettings, class_miou, to_device
from fsseg.engine.run_state import (
    CHECKPOINT,
    LOG,
    MODEL,
    SUMMARY,
    check_finished_weights,
    check_finite_training,
    check_finite_weights_to_save,
    discard_run,
    load_state_file,
)
from fsseg.errors import ConfigError, TrainingDiverged
from fsseg.locks import folder_lock
from fsseg.method import FewShotMethod
from fsseg.models.onednn import onednn_setting
from fsseg.numerics import Numerics
from fsseg.progress import Progress, format_duration
from fsseg.registry import METHODS


class LossWindow:
    """Sums of the loss terms since the last log row; the checkpoint saves them, so a resumed run
    logs the same means as an uninterrupted one. The sums stay on the loss's device (float64) until
    a row or a checkpoint reads them, so logging adds no device synchronisation to a step (the
    finiteness check of each step's loss still waits for it, and so do data-dependent shapes in some
    methods, such as the prior's support crops)."""

    def __init__(self, sums: dict[str, float] | None = None, count: int = 0) -> None:
        self.sums: dict[str, torch.Tensor | float] = dict(sums or {})
        self.count = count

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> LossWindow:
        return cls(state["sums"], state["count"]) if state else cls()

    def _totals(self) -> dict[str, float]:
        return {key: float(total) for key, total in self.sums.items()}

    def state(self) -> dict[str, Any]:
        return {"sums": self._totals(), "count": self.count}

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for key, value in losses.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().double()
        self.count += 1

    def pop_means(self) -> dict[str, float]:
        means = {key: total / self.count for key, total in self._totals().items()}
        self.sums, self.count = {}, 0
        return means


def _check_same_run(run_dir: Path, cfg: ExperimentConfig, replace_changed: bool = False) -> None:
    """Refuse to resume or overwrite a run folder that holds a run of another training config.

    With ``replace_changed`` (the workflow's mode, where a changed config means "retrain") the stale
    folder, its evaluations included, is deleted instead.
    """
    stored_path = run_dir / "config.yaml"
    if not stored_path.is_file():
        return
    stored = config_from_dict(read_yaml(stored_path))
    if training_identity(stored) != training_identity(cfg):
        if replace_changed:
            print(f"fsseg: training config changed; deleting the stale run {run_dir}", file=sys.stderr)
            shutil.rmtree(run_dir)
            return
        raise ConfigError(
            f"{run_dir} holds a run of a different training config ({stored_path}); "
            "delete that folder or change output_root"
        )


def _truncate_log(path: Path, last_iteration: int) -> None:
    """Keep the log rows of iterations the checkpoint covers (a resumed run rewrites the rest)."""
    if not path.is_file():
        return
    rows = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in rows if json.loads(r).get("iteration", 0) <= last_iteration]
    write_text(path, "".join(r + "\n" for r in kept))


def train(
    cfg: ExperimentConfig,
    stop_after: int | None = None,
    on_iteration: Callable[[int], None] | None = None,
    replace_changed: bool = False,
    restart: bool = False,
) -> Path:
    """Train (or resume, or skip if finished) the configured run; returns the run folder.

    ``stop_after`` ends this invocation after that many total iterations without finishing the run
    (as if killed right after a checkpoint); ``on_iteration`` is called after each step (tests use it
    to simulate a kill at an arbitrary point); ``replace_changed`` retrains from scratch when the
    run folder holds a run of another training config instead of refusing; ``restart`` discards
    the run folder's training state (e.g. a corrupt checkpoint) and trains from scratch. The run
    folder is locked for the whole call (:mod:`fsseg.locks`).
    """
    with folder_lock(cfg.run_dir, "fsseg train"):
        if restart:
            discard_run(cfg.run_dir)
        remove_stale_temporaries(cfg.run_dir)
        return _train_locked(cfg, stop_after, on_iteration, replace_changed)


def _train_locked(
    cfg: ExperimentConfig,
    stop_after: int | None,
    on_iteration: Callable[[int], None] | None,
    replace_changed: bool,
) -> Path:
    run_dir = cfg.run_dir
    _check_same_run(run_dir, cfg, replace_changed)
    if (run_dir / SUMMARY).is_file() and (run_dir / MODEL).is_file():
        check_finished_weights(run_dir / MODEL)
        print(f"fsseg: {run_dir} is already trained; nothing to do", file=sys.stderr)
        return run_dir
    if METHODS.declaration(cfg.method.name).has_base_learner:
        check_base_learner_file(cfg)  # before the run folder is written
    adapter = build_dataset(cfg)
    sampler = TrainEpisodeSampler(
        adapter,
        cfg.fold,
        cfg.train.shot,
        cfg.train.train_seed,
        cfg.dataset.train_filter,
        cfg.dataset.min_object_px,
        split=adapter.train_split,
    )
    cfg, length = resolve_length(cfg, len(sampler.training_images))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(run_dir / "config.yaml", cfg.to_dict())

    device = resolve_device(cfg.train.device)
    recipe = effective_recipe(cfg)
    numerics = training_numerics(cfg)
    numerics.prepare(device, "train.precision")
    method = build_method(cfg)
    if method.has_base_learner:
        load_base_learner(cfg, method)
    method = numerics.apply(method.to(device))
    total = recipe.iterations if method.is_trainable else 0
    optimizer = build_optimizer(method, recipe) if method.is_trainable else None
    scheduler = build_scheduler(optimizer, recipe) if optimizer is not None else None

    start = 0
    best: dict[str, Any] = {"miou": -math.inf, "iteration": None}
    checkpoint_path = run_dir / CHECKPOINT
    if checkpoint_path.is_file():
        # Read onto the CPU: the generator states must be CPU tensors (a CUDA one is refused), and
        # load_state_dict copies weights and optimiser moments onto the device of the parameters.
        state = load_state_file(checkpoint_path, map_location="cpu", weights_only=False)
        method.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
        saved_rng = (state["torch_rng"], state.get("cuda_rng"))
        start = state["iteration"]
        best = state["best"]
        window = LossWindow.from_state(state.get("log_window"))
        print(f"fsseg: resuming {run_dir} from iteration {start}", file=sys.stderr)
    else:
        # Dropout and other in-training randomness draw from this stream; the checkpoint saves it.
        torch.manual_seed(cfg.train.train_seed + 1)
        saved_rng = None
        window = LossWindow()
    # Rows past the checkpoint (or every row, without one) are rewritten by this run: the log then
    # holds each iteration once, even after a kill or a failed write at the first checkpoint.
    _truncate_log(run_dir / LOG, start)

    validator = (
        _Validator(cfg, adapter, method, device) if cfg.train.selection == "best_val" and total else None
    )
    episodes = TrainEpisodes(sampler, cfg.dataset.image_size, recipe.augment, total * recipe.batch_size)
    loader = DataLoader(
        episodes,
        batch_size=recipe.batch_size,
        sampler=range(start * recipe.batch_size, total * recipe.batch_size),
        num_workers=cfg.train.num_workers,
        collate_fn=collate_episodes,
        persistent_workers=False,
        pin_memory=device.type == "cuda",
    )
    print(
        f"fsseg: training {cfg.run_name} on {describe_device(device)}: {total} iterations × "
        f"{recipe.batch_size} episodes, {recipe.optimizer} lr {recipe.lr:g} ({recipe.schedule}); "
        f"{length['length']}; augmentation {recipe.augment}; frozen BatchNorm {recipe.frozen_bn}; "
        f"{numerics.describe()}",
        file=sys.stderr,
    )
    progress = Progress("train", total, start)
    method.train()
    log_rows: list[str] = []
    iteration = start
    started = time.perf_counter()
    # Starting the loader draws its base seed from the global stream, in a resumed run as in an unbroken
    # one; the saved state is put back after that draw, so dropout continues where the checkpoint was.
    batches = iter(loader)
    if saved_rng is not None:
        torch.set_rng_state(saved_rng[0])
        if device.type == "cuda" and saved_rng[1] is not None:
            torch.cuda.set_rng_state(saved_rng[1], device)
    for batch in batches:
        batch = to_device(batch, device)
        with numerics.autocast(device):
            outputs = method(batch)
            losses = method.loss(outputs, batch)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            parts = ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            raise TrainingDiverged(
                f"training of {cfg.run_name} diverged at iteration {iteration + 1}: "
                f"loss is not finite ({parts}); "
                f"lower train.lr (now {recipe.lr:g}) or check the data. Last checkpoint: {checkpoint_path}"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        iteration += 1
        window.add(losses)
        if iteration == 1 or iteration % cfg.train.log_every == 0 or iteration == total:
            row = {
                "iteration": iteration,
                "lr": optimizer.param_groups[0]["lr"],
                "rate_it_s": progress.rate(iteration),
            }
            row.update(window.pop_means())
            log_rows.append(json.dumps(row))
            terms = " ".join(f"{k} {row[k]:.4f}" for k in losses)
            progress.update(iteration, terms)
        if validator is not None and (iteration % cfg.train.val_every == 0 or iteration == total):
            score = validator.score()
            method.train()
            if score > best["miou"]:
                best = {"miou": score, "iteration": iteration}
                save_torch(run_dir / "model_best.pt", method.state_dict())
            log_rows.append(json.dumps({"iteration": iteration, "val_miou": score}))
        if iteration % cfg.train.checkpoint_every == 0 or iteration == total:
            check_finite_training(method, f"iteration {iteration}", cfg.run_name, recipe.lr)
            _append_log(run_dir / LOG, log_rows)
            log_rows = []
            state = {
                "model": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "iteration": iteration,
                "best": best,
                "log_window": window.state(),
            }
            save_torch(checkpoint_path, state)
        if on_iteration is not None:
            on_iteration(iteration)
        if stop_after is not None and iteration >= stop_after and iteration < total:
            return run_dir
    _append_log(run_dir / LOG, log_rows)
    _finish(cfg, run_dir, method, best, total, time.perf_counter() - started, device, length)
    return run_dir


def resolve_length(cfg: ExperimentConfig, n_images: int) -> tuple[ExperimentConfig, dict[str, Any]]:
    """The config with a length in epochs resolved to ``train.iterations`` (and ``train.epochs`` stated),
    plus the facts of that resolution for the train summary.

    ``n_images`` is the fold's filtered training list. An explicit ``train.iterations`` that disagrees
    with the epochs is refused.
    """
    recipe = effective_recipe(cfg)
    facts: dict[str, Any] = {
        "epochs": recipe.epochs,
        "train_images": n_images,
        "augment": recipe.augment,
        "frozen_bn": recipe.frozen_bn,
    }
    if recipe.epochs is None:
        facts["length"] = f"{recipe.iterations} iterations"
        return cfg, facts
    iterations = iterations_for_epochs(recipe.epochs, n_images, recipe.batch_size)
    if cfg.train.iterations is not None and cfg.train.iterations != iterations:
        raise ConfigError(
            f"config.train.iterations: {cfg.train.iterations} disagrees with train.epochs {recipe.epochs} "
            f"on {n_images} training images in batches of {recipe.batch_size} ({iterations} iterations); "
            "give one of the two"
        )
    resolved = copy.deepcopy(cfg)
    resolved.train.epochs = recipe.epochs
    resolved.train.iterations = iterations
    facts["iterations_per_epoch"] = n_images // recipe.batch_size
    facts["length"] = (
        f"{recipe.epochs} epochs × {n_images // recipe.batch_size} iterations "
        f"({n_images} training images // batch {recipe.batch_size})"
    )
    return resolved, facts


def _append_log(path: Path, rows: list[str]) -> None:
    if not rows:
        return
    existing = path.read_text() if path.is_file() else ""
    write_text(path, existing + "".join(r + "\n" for r in rows))


def _finish(
    cfg: ExperimentConfig,
    run_dir: Path,
    method: FewShotMethod,
    best: dict[str, Any],
    total: int,
    seconds: float,
    device: torch.device,
    length: dict[str, Any],
) -> None:
    if cfg.train.selection == "best_val" and best["iteration"] is not None:
        weights = load_state_file(run_dir / "model_best.pt")
        selected = f"best_val (iteration {best['iteration']}, val miou {best['miou']:.4f})"
    else:
        weights = method.state_dict()
        selected = "last"
    check_finite_weights_to_save(weights, run_dir / MODEL, cfg.run_name)
    save_torch(run_dir / MODEL, weights)
    n_total = sum(p.numel() for p in method.parameters())
    n_trainable = sum(p.numel() for p in method.parameters() if p.requires_grad)
    write_json(
        run_dir / SUMMARY,
        {
            "run_id": run_id(cfg),
            "iterations": total,
            "epochs": length["epochs"],
            "train_images": length["train_images"],
            "augment": length["augment"],
            "frozen_bn": length["frozen_bn"],
            "train_seconds_this_invocation": round(seconds, 2),
            "device": describe_device(device),
            "numerics": training_numerics(cfg).describe(),
            "onednn": onednn_setting(),  # frozen CPU stages packed or plain (fsseg/models/onednn.py)
            "selection": selected,
            "params_total": n_total,
            "params_trainable": n_trainable,
        },
    )
    print(
        f"fsseg: finished {cfg.run_name} in {format_duration(seconds)}; weights: {run_dir / MODEL}",
        file=sys.stderr,
    )


def validation_manifest(cfg: ExperimentConfig, adapter: DatasetAdapter) -> EpisodeManifest:
    """The episodes ``train.selection: best_val`` selects on, fixed by the training config alone.

    ``train.val_episodes`` episodes of the fold's novel classes drawn (balanced sampler) from the
    dataset's validation split, never its test split, with ``train.shot`` supports each and the seed
    ``train.val_episode_seed``; objects below ``dataset.min_object_px`` do not count. Every input is part
    of :func:`~fsseg.engine.build.training_identity`, and no ``eval.*`` key is read.
    """
    return build_test_manifest(
        adapter,
        cfg.fold,
        cfg.train.shot,
        cfg.train.val_episode_seed,
        cfg.train.val_episodes,
        split=adapter.val_split,
        min_object_px=cfg.dataset.min_object_px,
    )


def validation_settings(cfg: ExperimentConfig) -> InferenceSettings:
    """How validation episodes are fed and scored: at ``dataset.image_size``, against labels at their
    original resolution (the default protocol; ``dataset.label_resolution`` is an evaluation setting),
    in batches of the training batch size (what fits a training step fits a forward pass without
    gradients), with ``train.num_workers`` loader workers (which change no result), in the training's
    numerics."""
    return InferenceSettings(
        cfg.dataset.image_size,
        "original",
        effective_recipe(cfg).batch_size,
        cfg.train.num_workers,
        training_numerics(cfg),
    )


def training_numerics(cfg: ExperimentConfig) -> Numerics:
    """The precision and memory layout of training (``train.precision``, ``train.channels_last``); the
    validation of ``best_val`` runs with them too."""
    return Numerics.of(cfg.train)


class _Validator:
    """Class-wise mIoU on the run's validation episodes (:func:`validation_manifest`)."""

    def __init__(
        self, cfg: ExperimentConfig, adapter: DatasetAdapter, method: FewShotMethod, device: torch.device
    ) -> None:
        self.method = method
        self.device = device
        self.adapter = adapter
        self.manifest = validation_manifest(cfg, adapter)
        self.settings = validation_settings(cfg)
        self.images = DecodedImages(adapter)  # the same episodes at every validation

    def score(self) -> float:
        return class_miou(self.method, self.manifest, self.adapter, self.settings, self.device, self.images)
