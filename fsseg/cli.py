"""The ``fsseg`` command line: prepare data, pretrain a backbone, train, draw episodes, evaluate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fsseg.errors import FssegError


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="YAML config file; repeat to compose (later files override earlier ones)",
    )
    parser.add_argument(
        "-s",
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key, e.g. --set train.iterations=200 (value parsed as YAML); repeatable",
    )


def _load(args: argparse.Namespace):
    from fsseg.config import load_config

    return load_config(args.config, args.set)


def cmd_prepare(args: argparse.Namespace) -> None:
    from fsseg.locks import folder_lock
    from fsseg.registry import DATASETS

    dataset = DATASETS.get(args.dataset)
    with folder_lock(dataset.prepare_output(args), f"fsseg prepare {args.dataset}"):
        dataset.prepare_from_args(args)


def cmd_pretrain(args: argparse.Namespace) -> None:
    from fsseg.engine.pretrain import pretrain_backbone

    pretrain_backbone(_load(args), Path(args.out) if args.out else None)


def cmd_base_learner(args: argparse.Namespace) -> None:
    from fsseg.engine.base_learner import train_base_learner

    train_base_learner(_load(args), Path(args.out) if args.out else None)


def cmd_train(args: argparse.Namespace) -> None:
    from fsseg.engine.train import train

    train(_load(args), replace_changed=args.replace_changed, restart=args.restart)


def cmd_episodes(args: argparse.Namespace) -> None:
    from fsseg.atomic import write_json
    from fsseg.engine.build import build_dataset
    from fsseg.engine.evaluate import ensure_manifest
    from fsseg.errors import ConfigError

    cfg = _load(args)
    if args.shots is None and args.episode_seeds is None:
        path = Path(args.out) if args.out else cfg.manifest_path
        manifest = ensure_manifest(cfg, build_dataset(cfg), path)
        print(f"{path}  sha256:{manifest.content_hash}  episodes:{len(manifest.episodes)}")
        return
    if args.out:
        raise ConfigError(
            "--out names one manifest; with --shots/--episode-seeds each goes to its default path"
        )
    adapter = build_dataset(cfg)
    entries = []
    for shot in args.shots or [cfg.eval.shot]:
        for seed in args.episode_seeds or [cfg.eval.episode_seed]:
            one = cfg.tested_on(shot, seed)
            manifest = ensure_manifest(one, adapter, one.manifest_path)
            entries.append(
                {
                    "shot": shot,
                    "episode_seed": seed,
                    "file": one.manifest_path.name,
                    "sha256": manifest.content_hash,
                }
            )
            print(f"{one.manifest_path}  sha256:{manifest.content_hash}  episodes:{len(manifest.episodes)}")
    write_json(cfg.manifest_set_path, {"manifests": entries})
    print(cfg.manifest_set_path)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from fsseg.engine.evaluate import evaluate, evaluate_run
    from fsseg.errors import ConfigError

    cfg = _load(args)
    if args.shots is None and args.episode_seeds is None:
        out = evaluate(
            cfg,
            Path(args.manifest) if args.manifest else None,
            untrained=args.untrained,
            diagnose=args.diagnose,
        )
        print(out)
        return
    if args.manifest:
        raise ConfigError(
            "--manifest names one manifest; with --shots/--episode-seeds the manifests are "
            "the default ones of each shot and episode seed (output_root/manifests/...)"
        )
    shots = args.shots or [cfg.eval.shot]
    diagnose_shots = (
        args.diagnose_shots if args.diagnose_shots is not None else (shots if args.diagnose else [])
    )
    unknown = sorted(set(diagnose_shots) - set(shots))
    if unknown:
        raise ConfigError(f"--diagnose-shots {unknown} are not among --shots {shots}")
    for out in evaluate_run(
        cfg, shots, args.episode_seeds or [cfg.eval.episode_seed], diagnose_shots, untrained=args.untrained
    ):
        print(out)


def _anchor_lines(rows: list[dict], anchor: str | None) -> list[str]:
    """Estimates of ours/official for rows matching the latency anchor (issue 14's table)."""
    from fsseg.anchor import DEFAULT_ANCHOR, anchor_estimates, load_anchor

    if anchor is None and not DEFAULT_ANCHOR.is_file():
        return []  # an installed copy without the checkout's reports/: no anchor to compare with
    return anchor_estimates(rows, load_anchor(anchor or DEFAULT_ANCHOR))


def cmd_bench(args: argparse.Namespace) -> None:
    """Time the configured method. Rule: the backbone is always randomly initialised
    (``fsseg.efficiency.BENCH_OVERRIDES``: ``backbone.weights=none``), because parameters, FLOPs,
    latency and memory do not depend on weight values; no pretrained or trained file is needed."""
    import torch

    from fsseg.atomic import write_json
    from fsseg.config import load_config
    from fsseg.device import resolve_device
    from fsseg.efficiency import BENCH_OVERRIDES, bench_config, format_table, table_footnote
    from fsseg.errors import ConfigError

    cfg = load_config(args.config, [*args.set, *BENCH_OVERRIDES])
    if args.against is not None:
        _bench_against(args, cfg)
        return
    if args.rounds is not None:
        raise ConfigError("--rounds counts the interleaved rounds of --against REV; give --against too")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = bench_config(
        cfg,
        sizes=args.sizes,
        shots=args.shots,
        device=resolve_device(args.device or cfg.eval.device),
        batch_size=args.batch_size,
        warmup=args.warmup,
        repeats=args.repeats,
        amp_bf16=args.bf16,
        channels_last=args.channels_last,
        log=sys.stderr,
    )
    print(format_table(rows))
    print(table_footnote(rows))
    for line in _anchor_lines(rows, args.anchor):
        print(line)
    if args.out:
        document = {
            "config": cfg.to_dict(),
            "bench_overrides": list(BENCH_OVERRIDES),
            "allocator": getattr(args, "allocator", None),
            "onednn": getattr(args, "onednn", None),
            "results": rows,
        }
        write_json(args.out, document)
        print(f"# written to {args.out}")


def _bench_against(args: argparse.Namespace, cfg) -> None:
    """``fsseg bench --against REV``: the current tree and REV in fresh, interleaved processes."""
    from fsseg.atomic import write_json
    from fsseg.bench_against import bench_against, format_against_table

    bench_args: list[str] = []
    for path in args.config:
        bench_args += ["-c", path]
    for override in args.set:
        bench_args += ["--set", override]
    bench_args += ["--batch-size", str(args.batch_size), "--warmup", str(args.warmup)]
    bench_args += ["--repeats", str(args.repeats)]
    if args.device:
        bench_args += ["--device", args.device]
    if args.bf16:
        bench_args.append("--bf16")
    if args.channels_last:
        bench_args.append("--channels-last")
    document = bench_against(
        args.against,
        bench_args,
        sizes=args.sizes or [cfg.dataset.image_size],
        shots=args.shots or [cfg.eval.shot],
        rounds=3 if args.rounds is None else args.rounds,
        threads=args.threads or 1,
        log=sys.stderr,
    )
    print(format_against_table(document))
    current_rows = [
        {**r["current_rows"][0], "latency_ms_median": r["current_ms"]} for r in document["results"]
    ]
    for line in _anchor_lines(current_rows, args.anchor):
        print(line)
    if args.out:
        write_json(args.out, document)
        print(f"# written to {args.out}")


def cmd_config(args: argparse.Namespace) -> None:
    import yaml

    from fsseg.config import describe_schema

    if args.describe:
        print("\n".join(describe_schema()))
        return
    cfg = _load(args)
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    print(f"# run folder: {cfg.run_dir}")


def cmd_list(args: argparse.Namespace) -> None:
    from fsseg.recipes import read_recipe_file
    from fsseg.registry import DATASETS, METHODS

    files = args.recipe_files
    if files is None:
        files = sorted(Path("config/recipes").glob("*.yaml"))
    books = {str(path): read_recipe_file(path, METHODS.names()) for path in files}
    print("methods:")
    for name in METHODS.names():
        cls = METHODS.declaration(name)
        recipes = [f"{recipe} (method)" for recipe in cls.recipes]
        recipes += [f"{r} ({path})" for path, book in books.items() for r, per in book.items() if name in per]
        trained = f"recipes {', '.join(recipes) or 'none'}" if cls.needs_training else "nothing to train"
        print(f"  {name}: variants {', '.join(cls.variants)}; {trained}")
    print("datasets:")
    for name in DATASETS.names():
        cls = DATASETS.get(name)
        print(f"  {name}: {len(cls.class_names)} classes")


def cmd_compare(args: argparse.Namespace) -> None:
    from fsseg.compare import run_compare

    run_compare(
        args.runs, metric=args.metric, n_boot=args.bootstrap, seed=args.seed, output_format=args.format
    )


def cmd_aggregate(args: argparse.Namespace) -> None:
    from fsseg.aggregate import aggregate, read_eval_list

    folders = list(args.evals)
    for listing in args.evals_from:
        folders += read_eval_list(listing)
    protocol = aggregate(folders, Path(args.out))
    print(f"{args.out}: {protocol['n_evaluations']} evaluations of {protocol['dataset']}")


def cmd_report(args: argparse.Namespace) -> None:
    from fsseg.report import build_report

    written = build_report(
        args.aggregate, args.spec, args.out, args.efficiency, args.predictions, args.train_runs
    )
    print(f"{args.out}: {len(written)} files (index: {Path(args.out) / 'README.md'})")


def cmd_predict(args: argparse.Namespace) -> None:
    from fsseg.qualitative import predict

    print(predict(_load(args), args.episodes, Path(args.out), args.manifest))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsseg",
        description="Few-shot semantic segmentation of aerial images: a benchmark harness. "
        "Typical use: `fsseg prepare synthetic --root data/synthetic`, then `fsseg train -c CONFIG`, "
        "`fsseg evaluate -c CONFIG`. Configs are YAML files validated on load (`fsseg config --describe`).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from fsseg.registry import DATASETS

    p = sub.add_parser("prepare", help="prepare a dataset (generate the synthetic one, index a real release)")
    p.description = (
        "Validate a dataset and write its index (and index-label PNGs) once; nothing is downloaded."
    )
    dsub = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    for name in DATASETS.names():
        cls = DATASETS.get(name)
        dp = dsub.add_parser(name, help=(cls.__doc__ or name).strip().splitlines()[0])
        cls.add_prepare_arguments(dp)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("pretrain", help="pretrain a backbone on a fold's base classes (shared by methods)")
    p.description = (
        "Train the configured backbone as a plain semantic-segmentation network on the base classes of "
        "the fold (novel-class pixels ignored) and save it for `backbone.weights`."
    )
    _add_config_args(p)
    p.add_argument("--out", help="weights file to write (default: under output_root/<dataset>/backbones/)")
    p.set_defaults(func=cmd_pretrain, runs_models=True)

    p = sub.add_parser(
        "base-learner", help="train a method's base learner on a fold's base classes (BAM; shared by seeds)"
    )
    p.description = (
        "Train the base learner of the configured method (one that declares it, e.g. BAM's PSPNet) as plain "
        "semantic segmentation of the fold's base classes with the base_learner.* settings, and cache it per "
        "dataset, method, backbone, fold and base_learner.seed for `fsseg train`."
    )
    _add_config_args(p)
    p.add_argument("--out", help="file to write (default: under output_root/<dataset>/base_learners/)")
    p.set_defaults(func=cmd_base_learner, runs_models=True)

    p = sub.add_parser("train", help="train a method on a fold's base classes (resumes after a kill)")
    p.description = (
        "Train the configured method; rerunning after an interruption resumes from the last checkpoint."
    )
    _add_config_args(p)
    p.add_argument(
        "--replace-changed",
        action="store_true",
        help="if the run folder holds a run of a different training config, delete it and retrain "
        "(default: refuse)",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="delete the run folder (checkpoint, weights, log, its evaluations) and train from scratch, "
        "e.g. after a corrupt checkpoint.pt or model.pt",
    )
    p.set_defaults(func=cmd_train, runs_models=True)

    p = sub.add_parser("episodes", help="draw and save the test-episode manifest of a fold")
    p.description = (
        "Draw the test episodes of (dataset, fold, eval.shot, eval.episode_seed, eval.n_episodes)."
    )
    _add_config_args(p)
    p.add_argument("--out", help="manifest file (default: output_root/manifests/...)")
    p.add_argument(
        "--shots",
        type=int,
        nargs="+",
        metavar="K",
        help="draw the manifest of each shot (and each --episode-seeds), each at its default path, "
        "then their index (output_root/manifests/<dataset>/fold<F>_..._n<N>_px<P>.manifests.json)",
    )
    p.add_argument(
        "--episode-seeds", type=int, nargs="+", metavar="S", help="episode seeds (default: eval.episode_seed)"
    )
    p.set_defaults(func=cmd_episodes)

    p = sub.add_parser("evaluate", help="evaluate a trained run on a test manifest")
    p.description = "Write per-episode records and a summary (class-wise mIoU, FB-IoU, episode mIoU)."
    _add_config_args(p)
    p.add_argument("--manifest", help="manifest file (default: drawn/loaded at output_root/manifests/...)")
    p.add_argument("--untrained", action="store_true", help="evaluate the untrained method (reference)")
    p.add_argument(
        "--diagnose",
        action="store_true",
        help="also score support swap, base-class episodes and the method's probes (diagnostics.json)",
    )
    p.add_argument(
        "--shots",
        type=int,
        nargs="+",
        help="evaluate every one of these test shots (one process, one output "
        "folder each; default: eval.shot)",
    )
    p.add_argument(
        "--episode-seeds", type=int, nargs="+", help="… and these episode seeds (default: eval.episode_seed)"
    )
    p.add_argument(
        "--diagnose-shots",
        type=int,
        nargs="*",
        help="the shots whose evaluations also write diagnostics.json "
        "(default: all with --diagnose, none without)",
    )
    p.set_defaults(func=cmd_evaluate, runs_models=True)

    p = sub.add_parser("bench", help="measure params, FLOPs, latency/FPS and peak memory of a method")
    p.description = (
        "Time the configured method on synthetic episodes (randomly initialised backbone: weights do not "
        "change the cost) over image sizes x shots and print a table; bf16/channels-last runs are added "
        "next to the fp32 run when asked for. With --against REV, the current source tree and git revision "
        "REV are timed in fresh, interleaved processes and their latency ratios printed. Rows matching the "
        "latency anchor (reports/anchor/) get an estimate of ours/official."
    )
    _add_config_args(p)
    p.add_argument("--sizes", type=int, nargs="+", metavar="PX", help="input sizes (default: image_size)")
    p.add_argument("--shots", type=int, nargs="+", metavar="K", help="shots (default: eval.shot)")
    p.add_argument("--batch-size", type=int, default=1, help="episodes per forward (default 1)")
    p.add_argument("--warmup", type=int, default=5, help="untimed forwards first (default 5)")
    p.add_argument("--repeats", type=int, default=20, help="timed forwards (default 20)")
    p.add_argument("--device", help="auto, cpu or cuda[:N] (default: eval.device)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--bf16", action="store_true", help="also time under bf16 autocast")
    p.add_argument("--channels-last", action="store_true", help="also time in channels-last memory format")
    p.add_argument("--out", help="JSON file to write the results to (atomically)")
    p.add_argument(
        "--against",
        metavar="REV",
        help="time this source tree against git revision REV of fsseg (same inputs, fresh processes, "
        "interleaved) and print current/REV latency ratios; threads default to 1 here",
    )
    p.add_argument(
        "--rounds",
        type=int,
        metavar="N",
        help="with --against: interleaved rounds per size, shot (default 3)",
    )
    p.add_argument(
        "--anchor",
        metavar="FILE.csv",
        help="latency anchor for the ours/official estimate (default: reports/anchor/official_latency.csv "
        "of the checkout, when present)",
    )
    p.set_defaults(func=cmd_bench, runs_models=True)

    p = sub.add_parser("config", help="print the resolved config (or describe every key)")
    _add_config_args(p)
    p.add_argument("--describe", action="store_true", help="list every key with its default and meaning")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("list", help="list registered methods (variants, recipes) and datasets")
    p.add_argument(
        "--recipe-files",
        nargs="*",
        metavar="FILE.yaml",
        help="benchmark recipe files whose recipes are listed too (default: config/recipes/*.yaml)",
    )
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "compare",
        help="paired statistics of two runs from their saved per-episode records",
        usage="fsseg compare RUN_A RUN_B [--bootstrap N] [--seed S] [--metric {miou,fbiou}] "
        "[--format {table,csv,json}]",
    )
    p.description = (
        "Is A better than B? Paired t-test and Wilcoxon over fold × train_seed units, paired bootstrap over "
        "shared episodes; nothing is re-run. Refuses runs scored on different episode manifests."
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="RUN_A and RUN_B: each a folder (searched for records.csv), a records.csv file, a quoted glob, "
        "or a comma-separated list of those",
    )
    p.add_argument("--bootstrap", type=int, default=10_000, metavar="N", help="bootstrap resamples (0: skip)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed (default 0)")
    p.add_argument("--metric", choices=("miou", "fbiou"), default="miou", help="class-wise mIoU or FB-IoU")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("aggregate", help="gather evaluation folders into one aggregate folder")
    p.description = (
        "Read evaluation folders (summary.json, records.csv, config.yaml) and write OUT/evaluations.csv (one "
        "row per folder), OUT/records.csv.gz (every episode record) and OUT/protocol.json (the protocol "
        "facts captions state). Folders that disagree on a shared protocol fact are refused."
    )
    p.add_argument("--evals", nargs="*", default=[], metavar="DIR", help="evaluation folders")
    p.add_argument(
        "--evals-from", action="append", default=[], metavar="FILE", help="file listing folders, one per line"
    )
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="folder to write the aggregate to")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("report", help="render the report's tables and figures from saved results")
    p.description = (
        "Tables (Markdown, LaTeX, CSV) and figures (PNG, PDF) from an aggregate, `fsseg bench` JSON files "
        "and `fsseg predict` npz files, as declared by a report spec; no model is run."
    )
    p.add_argument("--aggregate", required=True, metavar="DIR", help="folder written by `fsseg aggregate`")
    p.add_argument("--spec", required=True, metavar="SPEC.yaml", help="report spec (runs, families, shots)")
    p.add_argument("--efficiency", nargs="*", default=[], metavar="FILE.json", help="`fsseg bench` files")
    p.add_argument("--predictions", nargs="*", default=[], metavar="FILE.npz", help="`fsseg predict` files")
    p.add_argument(
        "--train-runs",
        nargs="*",
        default=[],
        metavar="train_summary.json",
        help="trained runs whose training curves are drawn (their train_log.jsonl beside each)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="report folder (e.g. reports/)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("predict", help="save a trained run's predictions on its first test episodes")
    p.description = (
        "Run the configured trained run on the first N episodes of its test manifest and save images, masks, "
        "labels and predictions as an npz file (for the report's qualitative grid)."
    )
    _add_config_args(p)
    p.add_argument("--episodes", type=int, default=8, metavar="N", help="episodes to save (default 8)")
    p.add_argument("--manifest", help="manifest file (default: drawn/loaded at output_root/manifests/...)")
    p.add_argument("--out", required=True, metavar="FILE.npz", help="file to write (atomically)")
    p.set_defaults(func=cmd_predict, runs_models=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "runs_models", False):
            from fsseg.allocator import tune_for_tensors
            from fsseg.models.onednn import describe_setting

            args.allocator = tune_for_tensors()
            args.onednn = describe_setting()
            print(f"fsseg: {args.allocator}; {args.onednn}", file=sys.stderr)
        args.func(args)
    except FssegError as err:
        print(f"fsseg: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        # A read-only folder or a full disk met outside the atomic writes (e.g. creating a folder):
        # one line naming the path, no traceback; atomic writes have left no partial file.
        from fsseg.oserrors import describe_os_error

        print(f"fsseg: error: {describe_os_error(err, action='')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fsseg: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
