"""The evaluation engine: a saved manifest, the trained weights, per-episode records and a summary.

Outputs (``ExperimentConfig.eval_dir``): ``records.csv`` (one row per episode), ``summary.json``
(``miou``, ``fbiou``, ``episode_miou``, per-class IoU, timing, provenance) and ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path

import torch

from fsseg import paths
from fsseg.atomic import remove_stale_temporaries, write_json, write_yaml
from fsseg.config import ExperimentConfig
from fsseg.data.adapter import DatasetAdapter
from fsseg.data.decoded import DecodedImages
from fsseg.data.episodes import EpisodeManifest, build_test_manifest
from fsseg.device import describe_device, resolve_device
from fsseg.engine.build import build_dataset, build_method, run_id
from fsseg.engine.diagnose import diagnose as run_diagnostics
from fsseg.engine.infer import InferenceSettings, infer_episodes
from fsseg.engine.run_state import MODEL, check_finite_state, check_trained_with, load_state_file
from fsseg.errors import FssegError
from fsseg.locks import folder_lock
from fsseg.method import FewShotMethod
from fsseg.metrics import summarize
from fsseg.models.onednn import onednn_setting
from fsseg.numerics import Numerics
from fsseg.records import evaluation_identity, summary_identity, write_records


def ensure_manifest(
    cfg: ExperimentConfig, adapter: DatasetAdapter, path: Path | None = None
) -> EpisodeManifest:
    """Load the manifest at ``path`` (default ``cfg.manifest_path``), drawing and saving it if absent."""
    path = path or cfg.manifest_path
    if path.is_file():
        manifest = EpisodeManifest.load(path)
    else:
        manifest = build_test_manifest(
            adapter,
            cfg.fold,
            cfg.eval.shot,
            cfg.eval.episode_seed,
            cfg.eval.n_episodes,
            split=cfg.eval.split,
            min_object_px=cfg.dataset.min_object_px,
            sampler=cfg.eval.sampler,
        )
        manifest.save(path)
    manifest.check_matches(adapter, cfg.fold, cfg.eval.sampler)
    return manifest


def evaluation_settings(cfg: ExperimentConfig) -> InferenceSettings:
    """How ``fsseg evaluate`` feeds the test episodes to a method (``dataset.*`` and ``eval.*``)."""
    return InferenceSettings(
        cfg.dataset.image_size,
        cfg.dataset.label_resolution,
        cfg.eval.batch_size,
        cfg.eval.num_workers,
        Numerics.of(cfg.eval),
    )


def load_trained(cfg: ExperimentConfig, device: torch.device) -> FewShotMethod:
    """The trained method of ``cfg``: weights of the same training config, readable and finite."""
    method = build_method(cfg)
    weights_path = cfg.run_dir / MODEL
    if not weights_path.is_file():
        if method.is_trainable:
            raise FssegError(
                f"no trained weights at {weights_path}; run `fsseg train` with the same config first"
            )
    else:
        check_trained_with(cfg, weights_path)
        weights = load_state_file(weights_path)
        check_finite_state(weights, weights_path)
        method.load_state_dict(weights)
    return method.to(device)


def evaluate_run(
    cfg: ExperimentConfig,
    shots: list[int],
    episode_seeds: list[int],
    diagnose_shots: list[int] | None = None,
    untrained: bool = False,
) -> list[Path]:
    """Every evaluation of one trained run (each test shot × episode seed) in one process.

    The weights and the dataset index are loaded once; each evaluation still gets its own output
    folder, identical to what a separate ``evaluate`` call writes. ``diagnose_shots`` are the shots
    whose evaluations also write ``diagnostics.json``. After the last one, the run's index of them
    (``cfg.evaluated_path``: folders and files) is written, unless ``untrained``.
    """
    device = resolve_device(cfg.eval.device)
    adapter = build_dataset(cfg)
    images = DecodedImages(adapter)  # every evaluation below reads the same files: decode each once
    # The episode loop decodes batch n + 1 while the method runs on batch n; nothing overlaps the first
    # batches' files but the model's loading, so they are decoded meanwhile (joined before any use).
    head_start = _decode_first_batches(cfg.tested_on(shots[0], episode_seeds[0]), images) if shots else None
    try:
        method = build_method(cfg).to(device) if untrained else load_trained(cfg, device)
    finally:
        if head_start is not None:
            head_start.join()
    outs = []
    entries = []
    for shot in shots:
        for seed in episode_seeds:
            one = cfg.tested_on(shot, seed)
            diagnose = shot in (diagnose_shots or [])
            out = evaluate(
                one, untrained=untrained, diagnose=diagnose, method=method, adapter=adapter, images=images
            )
            outs.append(out)
            files = [*paths.EVAL_FILES, *([paths.DIAGNOSTICS_FILE] if diagnose else [])]
            entries.append({"shot": shot, "episode_seed": seed, "folder": out.name, "files": files})
    if not untrained:
        write_json(cfg.evaluated_path, {"run_id": run_id(cfg), "evaluations": entries})
    return outs


def _decode_first_batches(cfg: ExperimentConfig, images: DecodedImages) -> threading.Thread | None:
    """Start decoding the files of the first two batches (the loop's prefetch depth) of ``cfg``'s saved
    test manifest in a thread; ``None`` when there is no manifest yet or the loader has workers."""
    if cfg.eval.num_workers > 0 or not cfg.manifest_path.is_file():
        return None
    manifest = EpisodeManifest.load(cfg.manifest_path)
    episodes = manifest.episodes[: 2 * cfg.eval.batch_size]
    ids = list(dict.fromkeys(i for e in episodes for i in (e.query_id, *e.support_ids)))
    thread = threading.Thread(
        target=images.warm, args=(manifest.header["split"], ids), name="fsseg-head-start", daemon=True
    )
    thread.start()
    return thread


def evaluate(
    cfg: ExperimentConfig,
    manifest_file: Path | None = None,
    untrained: bool = False,
    diagnose: bool = False,
    method: FewShotMethod | None = None,
    adapter: DatasetAdapter | None = None,
    images: DecodedImages | None = None,
) -> Path:
    """Evaluate the trained run of ``cfg`` on its test manifest; returns the output folder.

    ``untrained`` evaluates the freshly initialised method (the "before training" reference);
    ``diagnose`` also writes ``diagnostics.json`` (support swap, base classes, the method's probes;
    see :mod:`fsseg.engine.diagnose`). ``method`` and ``adapter``, when given, are the already loaded
    run (:func:`evaluate_run` passes them), ``images`` the decoded files its evaluations share.
    """
    device = resolve_device(cfg.eval.device)
    adapter = adapter or build_dataset(cfg)
    manifest = ensure_manifest(cfg, adapter, manifest_file)
    if manifest.header["shot"] != cfg.eval.shot:
        raise FssegError(
            f"manifest {manifest_file} has shot {manifest.header['shot']}, "
            f"config eval.shot is {cfg.eval.shot}"
        )
    out_dir = cfg.eval_dir if not untrained else cfg.eval_dir.with_name(cfg.eval_dir.name + "_untrained")
    with folder_lock(out_dir, "fsseg evaluate"):
        remove_stale_temporaries(out_dir)
        return _evaluate_locked(
            cfg,
            adapter,
            manifest,
            device,
            out_dir,
            untrained,
            diagnose,
            method,
            images or DecodedImages(adapter),
        )


def _evaluate_locked(
    cfg: ExperimentConfig,
    adapter: DatasetAdapter,
    manifest: EpisodeManifest,
    device: torch.device,
    out_dir: Path,
    untrained: bool,
    diagnose: bool,
    method: FewShotMethod | None,
    images: DecodedImages,
) -> Path:
    if method is None:
        method = build_method(cfg).to(device) if untrained else load_trained(cfg, device)
    settings = evaluation_settings(cfg)
    settings.numerics.prepare(device, "eval.precision")
    timing: dict[str, float] = {}
    started = time.perf_counter()
    results = infer_episodes(
        method, manifest, adapter, settings, device, progress_label="eval", timing=timing, images=images
    )
    wall = time.perf_counter() - started

    rid = run_id(cfg) + ("-untrained" if untrained else "")
    manifest_hash = manifest.content_hash
    identity = evaluation_identity(
        cfg, rid, manifest.header["shot"], manifest.header["episode_seed"], manifest_hash
    )
    records = []
    for episode, result in zip(manifest.episodes, results, strict=True):
        records.append(
            {
                **identity,
                "episode_id": episode.episode_id,
                "class_id": episode.class_id,
                "class_name": adapter.class_name(episode.class_id),
                "query_id": episode.query_id,
                "support_ids": ";".join(episode.support_ids),
                **dataclasses.asdict(result.counts),
            }
        )
    metrics = summarize(records, manifest.header["novel_classes"])
    metrics["class_iou_by_name"] = {adapter.class_name(int(c)): v for c, v in metrics["class_iou"].items()}
    summary = {
        **summary_identity(identity),
        "sampler": manifest.header.get("sampler", "balanced"),
        "n_test_episodes": len(records),
        "manifest_hash": manifest_hash,
        "image_size": cfg.dataset.image_size,
        "label_resolution": cfg.dataset.label_resolution,
        "device": describe_device(device),
        "numerics": dataclasses.asdict(settings.numerics),
        "onednn": onednn_setting(),  # frozen CPU stages packed or plain (fsseg/models/onednn.py)
        "metrics": metrics,
        "timing": {
            "wall_seconds": round(wall, 3),
            "model_seconds": round(timing["model_seconds"], 3),
            "model_ms_per_episode": round(1000 * timing["model_seconds"] / len(records), 3),
            "harness_overhead_fraction": round(1 - timing["model_seconds"] / wall, 4) if wall > 0 else None,
        },
    }
    diagnostics = None
    if diagnose:
        diagnostics = run_diagnostics(
            method, manifest, adapter, cfg, settings, device, metrics["miou"], images=images
        )
    write_records(out_dir / paths.RECORDS_FILE, records)
    write_yaml(out_dir / "config.yaml", cfg.to_dict())
    if diagnostics is not None:
        write_json(out_dir / paths.DIAGNOSTICS_FILE, {"run_id": rid, "shot": cfg.eval.shot, **diagnostics})
    write_json(out_dir / paths.SUMMARY_FILE, summary)
    print(
        f"fsseg: {cfg.run_name} {cfg.eval.shot}-shot on {len(records)} episodes: "
        f"class mIoU {metrics['miou']:.4f}, FB-IoU {metrics['fbiou']:.4f}, "
        f"episode mIoU {metrics['episode_miou']:.4f}"
        + (
            ""
            if diagnostics is None
            else "; " + ", ".join(f"{k} {v:.4f}" for k, v in diagnostics["scores"].items() if k != "miou")
        )
        + f" → {out_dir}",
        file=sys.stderr,
    )
    return out_dir
