"""``fsseg report`` and ``fsseg predict``: every table and figure, numbers checked against a hand computation
and against :mod:`fsseg.stats`, captions checked for the protocol, predictions checked against evaluation.

Two inputs: a hand-made grid of evaluation folders with controlled skills (three runs × two shots × two
folds × three train seeds × two episode seeds), and a small grid written by the real engine.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from fsseg.aggregate import aggregate, load_aggregate
from fsseg.cli import main
from fsseg.config import load_config
from fsseg.engine.build import run_id
from fsseg.errors import ConfigError, FssegError
from fsseg.records import evaluation_identity
from fsseg.report import captions
from fsseg.report.artefacts import FIGURES, TABLES
from fsseg.report.build import build_report
from fsseg.report.spec import ReportSpec, RunRef
from fsseg.stats import compare_family, compare_records, holm
from tests.test_aggregate import real_evaluations, write_fake_evaluation
from tests.toy_dataset import toy_config_maker

TABLE_NAMES = [t.name for t in TABLES]
FIGURE_NAMES = [f.name for f in FIGURES]
CLASS_NAMES = {i + 1: name for i, name in enumerate("abcdef")}
FOLD_CLASSES = {0: [1, 2, 3], 1: [4, 5, 6]}
SKILL = {("colour_floor", "default"): 0.25, ("panet", "default"): 0.55, ("panet", "no_align"): 0.45}
SHOTS = (1, 5)
FOLDS = (0, 1)
TRAIN_SEEDS = (0, 1, 2)
EPISODE_SEEDS = (0, 1)
N_EPISODES = 12
PIXELS = 32 * 32
SPEC = {
    "dataset": "toy",
    "title": "Toy benchmark",
    "flagship": {"method": "panet"},
    "baselines": [{"method": "colour_floor", "label": "colour floor"}],
    "ablations": [{"method": "panet", "variant": "no_align"}],
    "shots": list(SHOTS),
    "bootstrap": {"iterations": 200, "seed": 3},
    "caption_extra": "Extra sentence for the captions.",
}


def _fake_records(cfg, skill: float, manifest_hash: str) -> list[dict]:
    """Episodes depend on the manifest (fold, shot, episode seed) only; scores on skill and the seeds."""
    episodes = np.random.default_rng([cfg.fold, cfg.eval.shot, cfg.eval.episode_seed])
    sizes = episodes.integers(20, 200, N_EPISODES)
    noise = np.random.default_rng(
        [int(skill * 100), cfg.fold, cfg.eval.shot, cfg.train.train_seed, cfg.eval.episode_seed]
    )
    rid = run_id(cfg)
    rows = []
    for episode_id in range(N_EPISODES):
        class_id = FOLD_CLASSES[cfg.fold][episode_id % 3]
        true_px = int(sizes[episode_id])
        hit = int(true_px * min(1.0, max(0.0, skill + noise.normal(0, 0.15))))
        false_px = int(noise.integers(0, 60))
        rows.append(
            {
                **evaluation_identity(cfg, rid, cfg.eval.shot, cfg.eval.episode_seed, manifest_hash),
                "episode_id": episode_id,
                "class_id": class_id,
                "class_name": CLASS_NAMES[class_id],
                "query_id": f"test_{episode_id:03d}",
                "support_ids": "test_100",
                "fg_intersection": hit,
                "fg_union": true_px + false_px,
                "bg_intersection": PIXELS - true_px - false_px,
                "bg_union": PIXELS - hit,
            }
        )
    return rows


def _train_log(run_dir: Path, seed: int, skill: float) -> Path:
    """A ``train_log.jsonl`` as the training engine writes it (loss rows and validation rows), and the
    ``train_summary.json`` that marks the run finished; returns the summary's path."""
    rows = []
    for iteration in range(10, 101, 10):
        loss = 1.0 / (1 + skill * iteration / 10) + 0.01 * seed
        rows.append({"iteration": iteration, "lr": 0.001, "rate_it_s": 5.0, "loss": loss, "loss_main": loss})
        if iteration % 50 == 0:
            rows.append({"iteration": iteration, "val_miou": skill})
    (run_dir / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "train_summary.json").write_text(json.dumps({"iterations": 100}) + "\n")
    return run_dir / "train_summary.json"


def _bench_file(path: Path, toy_root: Path, tmp: Path) -> None:
    """``fsseg bench --out`` rows: real ones of the colour floor, and PANet rows made from them (timing a
    ResNet takes seconds; the report only reads the numbers)."""
    from fsseg.atomic import write_json
    from fsseg.efficiency import BENCH_OVERRIDES, bench_config

    cfg = load_config(
        base={
            "dataset": {"name": "toy", "root": str(toy_root), "image_size": 32},
            "output_root": str(tmp),
            "method": {"name": "colour_floor"},
        },
        overrides=list(BENCH_OVERRIDES),
    )
    rows = bench_config(cfg, shots=list(SHOTS), device="cpu", warmup=0, repeats=1)
    for i, variant in enumerate(("default", "no_align")):
        for row in rows[: len(SHOTS)]:
            made = {**row, "method": "panet", "variant": variant, "params_total": 2_780_000 + i}
            rows.append(
                {**made, "params_trainable": made["params_total"], "fps": 50.0 + 10 * i + row["shot"]}
            )
    write_json(path, {"config": {}, "bench_overrides": list(BENCH_OVERRIDES), "results": rows})


@pytest.fixture(scope="module")
def fake_report(toy_root, tmp_path_factory):
    """Hand-made grid → aggregate → report (with real bench rows and real predictions)."""
    from fsseg.engine.train import train
    from fsseg.qualitative import predict

    root = tmp_path_factory.mktemp("fake_grid")
    folders, records, train_runs = [], [], []
    for (method, variant), skill in SKILL.items():
        for shot in SHOTS:
            for fold in FOLDS:
                for train_seed in TRAIN_SEEDS:
                    for episode_seed in EPISODE_SEEDS:
                        cfg = load_config(
                            base={
                                "dataset": {"name": "toy", "root": str(toy_root), "image_size": 32},
                                "output_root": str(root / "results"),
                                "method": {"name": method, "variant": variant},
                                "fold": fold,
                                "train": {"shot": shot, "train_seed": train_seed},
                                "eval": {
                                    "shot": shot,
                                    "episode_seed": episode_seed,
                                    "n_episodes": N_EPISODES,
                                },
                            }
                        )
                        manifest = hashlib.sha256(f"{fold}/{shot}/{episode_seed}".encode()).hexdigest()
                        rows = _fake_records(cfg, skill, manifest)
                        records += rows
                        folders.append(
                            write_fake_evaluation(cfg.eval_dir, cfg, rows, FOLD_CLASSES[fold], CLASS_NAMES)
                        )
                    if method != "colour_floor":
                        train_runs.append(_train_log(cfg.run_dir, train_seed, skill))
    aggregate(folders, root / "agg")

    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    bench = root / "bench.json"
    _bench_file(bench, toy_root, root / "bench")
    predictions = []
    for method in ("colour_floor", "panet"):  # real predictions on the toy manifest; panet untrained
        cfg = load_config(
            base={
                "dataset": {"name": "toy", "root": str(toy_root), "image_size": 32},
                "output_root": str(root / "predict"),
                "method": {"name": method},
                "train": {"iterations": 0},
                "eval": {"n_episodes": 12, "batch_size": 12},
            }
        )
        train(cfg)
        predictions.append(predict(cfg, 3, root / f"{method}.npz"))
    out = root / "reports"
    written = build_report(root / "agg", spec_path, out, [bench], predictions, train_runs)
    return {
        "root": root,
        "train_runs": train_runs,
        "out": out,
        "written": written,
        "records": pd.DataFrame(records),
        "agg": load_aggregate(root / "agg"),
    }


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


# ----------------------------------------------------------------------------------------------------------
# Files


def test_report_writes_every_table_and_figure(fake_report):
    out = fake_report["out"]
    expected = [out / "tables" / f"{n}.{e}" for n in TABLE_NAMES for e in ("md", "tex", "csv", "caption.txt")]
    expected += [out / "figures" / f"{n}.{e}" for n in FIGURE_NAMES for e in ("png", "pdf", "caption.txt")]
    expected.append(out / "README.md")
    assert sorted(map(str, fake_report["written"])) == sorted(map(str, expected))
    for path in expected:
        assert path.is_file() and path.stat().st_size > 0, path
    for name in FIGURE_NAMES:
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / "figures" / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    index = (out / "README.md").read_text()
    for name in TABLE_NAMES:
        assert f"tables/{name}.tex" in index
    for name in FIGURE_NAMES:
        assert f"figures/{name}.png" in index


def test_table_files_carry_their_captions(fake_report):
    tables = fake_report["out"] / "tables"
    for name in TABLE_NAMES:
        caption = (tables / f"{name}.caption.txt").read_text().strip()
        md = (tables / f"{name}.md").read_text()
        assert md.rstrip().endswith(f"*{caption}*")  # italic paragraph under the table
        tex = (tables / f"{name}.tex").read_text()
        assert "\\begin{table}" in tex and "\\caption{" in tex and "\\end{table}" in tex
        assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
        body = "\n".join(line for line in tex.splitlines() if not line.startswith("\\label"))
        assert "_" not in body.replace("\\_", "")  # every underscore escaped
        assert caption not in (tables / f"{name}.csv").read_text()  # the CSV holds data only


# ----------------------------------------------------------------------------------------------------------
# Numbers


def _class_miou(rows: pd.DataFrame) -> float:
    """Class-wise mIoU by hand: per class, summed intersections over summed unions; mean over classes."""
    ious = []
    for _, group in rows.groupby("class_id"):
        ious.append(group["fg_intersection"].sum() / group["fg_union"].sum())
    return sum(ious) / len(ious)


def _fbiou(rows: pd.DataFrame) -> float:
    fg = rows["fg_intersection"].sum() / rows["fg_union"].sum()
    bg = rows["bg_intersection"].sum() / rows["bg_union"].sum()
    return (fg + bg) / 2


def _hand_cells(records: pd.DataFrame, method: str, variant: str, shot: int, score) -> dict:
    """{fold or 'mean': (mean, sd)} over train seeds of unit scores (episode seeds averaged first)."""
    run = records[(records["method"] == method) & (records["variant"] == variant) & (records["shot"] == shot)]
    unit = {}
    for fold in FOLDS:
        for seed in TRAIN_SEEDS:
            per_episode_seed = [
                score(run[(run["fold"] == fold) & (run["train_seed"] == seed) & (run["episode_seed"] == e)])
                for e in EPISODE_SEEDS
            ]
            unit[(fold, seed)] = sum(per_episode_seed) / len(per_episode_seed)
    cells = {}
    for fold in FOLDS:
        values = [unit[(fold, s)] for s in TRAIN_SEEDS]
        cells[str(fold)] = (statistics.mean(values), statistics.stdev(values))
    per_seed = [statistics.mean(unit[(f, s)] for f in FOLDS) for s in TRAIN_SEEDS]
    cells["mean"] = (statistics.mean(per_seed), statistics.stdev(per_seed))
    return cells


@pytest.mark.parametrize(("table", "score"), [("main_miou", _class_miou), ("main_fbiou", _fbiou)])
def test_main_table_equals_a_hand_computation_from_the_records(fake_report, table, score):
    data = _csv(fake_report["out"] / "tables" / f"{table}.csv")
    assert len(data) == 2 * len(SHOTS) * (len(FOLDS) + 1)  # flagship and baseline, folds and mean
    md = (fake_report["out"] / "tables" / f"{table}.md").read_text()
    for (method, variant), label in (
        (("panet", "default"), "panet"),
        (("colour_floor", "default"), "colour floor"),
    ):
        for shot in SHOTS:
            cells = _hand_cells(fake_report["records"], method, variant, shot, score)
            for fold, (mean, sd) in cells.items():
                row = data[
                    (data["label"] == label) & (data["shot"] == shot) & (data["fold"].astype(str) == fold)
                ]
                assert len(row) == 1
                assert row["mean"].item() == pytest.approx(mean, abs=1e-12)
                assert row["sd"].item() == pytest.approx(sd, abs=1e-12)
                assert row["n_train_seeds"].item() == len(TRAIN_SEEDS)
                assert f"{100 * mean:.1f} ± {100 * sd:.1f}" in md


def test_best_mean_per_column_is_bold(fake_report):
    md = (fake_report["out"] / "tables" / "main_miou.md").read_text().splitlines()
    flagship = next(line for line in md if line.startswith("| panet |"))
    baseline = next(line for line in md if line.startswith("| colour floor |"))
    n_columns = len(SHOTS) * (len(FOLDS) + 1)
    assert flagship.count("**") == 2 * n_columns and "**" not in baseline  # the flagship is far better
    tex = (fake_report["out"] / "tables" / "main_miou.tex").read_text()
    assert tex.count("\\textbf{") == n_columns
    assert "\\multicolumn{3}{c}{1-shot}" in tex and "\\cmidrule(lr){2-4}" in tex


def test_methods_that_do_not_use_their_support_are_marked_and_never_bold(fake_report):
    """The ‡ of the main tables comes from the diagnostics: a swap drop under ``min_swap_drop`` points."""
    from fsseg.aggregate import SCORE_PREFIX
    from fsseg.report import tables
    from fsseg.report.results import select_runs
    from fsseg.report.spec import load_spec

    spec = load_spec(fake_report["root"] / "spec.yaml")
    rows = []
    for method, drop in (("panet", 0.005), ("colour_floor", 0.25)):  # panet: 0.5 points; floor: 25
        for fold in FOLDS:
            for train_seed in TRAIN_SEEDS:
                scores = {"miou": 0.5, "support_swap": 0.5 - drop}
                rows.append(
                    {"method": method, "variant": "default", "shot": 1, "fold": fold,
                     "train_seed": train_seed, "episode_seed": 0,
                     **{SCORE_PREFIX + k: v for k, v in scores.items()}}
                )  # fmt: skip
    flagged = tables.support_unused(pd.DataFrame(rows), spec)
    assert flagged == {"panet": pytest.approx(0.5)}
    assert tables.support_unused(pd.DataFrame(), spec) == {}

    agg = fake_report["agg"]
    runs = select_runs(agg, spec.all_runs, spec.shots)
    protocol = agg.protocol
    table = tables.main_table("main_miou", "miou", runs, spec, protocol, flagged)
    labels = [row[0] for row in table.rows]
    assert f"panet {tables.SUPPORT_UNUSED_MARK}" in labels and "colour floor" in labels
    flagship_row = labels.index(f"panet {tables.SUPPORT_UNUSED_MARK}")
    assert not any(r == flagship_row for r, _ in table.bold)  # the better score is not bold when flagged
    assert {c for _, c in table.bold} == set(range(1, len(table.columns)))  # the next best is, everywhere
    assert "‡: the score falls by less than 2 points" in table.caption and "panet (+0.5)" in table.caption
    plain = tables.main_table("main_miou", "miou", runs, spec, protocol)
    assert "‡" not in plain.caption and all("‡" not in row[0] for row in plain.rows)


def _run_records(agg, method: str, variant: str, shot: int) -> pd.DataFrame:
    r = agg.records
    return r[(r["method"] == method) & (r["variant"] == variant) & (r["shot"] == shot)].reset_index(drop=True)


def test_significance_equals_fsseg_stats(fake_report):
    agg = fake_report["agg"]
    data = _csv(fake_report["out"] / "tables" / "significance.csv")
    assert len(data) == 2 * len(SHOTS)  # one baseline per shot, one ablation per shot
    for shot in SHOTS:
        expected = compare_family(
            _run_records(agg, "panet", "default", shot),
            {"colour floor": _run_records(agg, "colour_floor", "default", shot)},
            n_boot=200,
            seed=3,
        )["colour floor"]
        row = data[(data["shot"] == shot) & (data["b"] == "colour floor")].iloc[0]
        for column, value in expected.to_row().items():
            if isinstance(value, float) and not math.isnan(value):
                assert row[column] == pytest.approx(value, rel=1e-12, abs=1e-15), column
        assert row["p_ttest_holm"] == pytest.approx(expected.holm["ttest"], rel=1e-12)
        assert row["n_units"] == len(FOLDS) * len(TRAIN_SEEDS)

    # the ablations form one family over both shots
    ablations = [
        compare_records(
            _run_records(agg, "panet", "default", shot),
            _run_records(agg, "panet", "no_align", shot),
            n_boot=200,
            seed=3,
        )
        for shot in SHOTS
    ]
    adjusted = holm([c.ttest.p for c in ablations])
    ablation_table = _csv(fake_report["out"] / "tables" / "ablation.csv")
    for shot, comparison, p_holm in zip(SHOTS, ablations, adjusted, strict=True):
        row = data[(data["shot"] == shot) & (data["b"] == "panet (no_align)")].iloc[0]
        assert row["diff"] == pytest.approx(comparison.ttest.mean_diff, rel=1e-12)
        assert row["p_ttest"] == pytest.approx(comparison.ttest.p, rel=1e-12)
        assert row["p_ttest_holm"] == pytest.approx(p_holm, rel=1e-12)
        assert row["boot_ci_low"] == pytest.approx(comparison.bootstrap.ci_low, rel=1e-12)
        assert bool(row["marked"]) == (p_holm < 0.05)
        ab = ablation_table[
            (ablation_table["shot"] == shot) & (ablation_table["variant"] == "no_align")
        ].iloc[0]
        assert ab["diff_vs_full"] == pytest.approx(-comparison.ttest.mean_diff, rel=1e-12)  # variant − full
        assert ab["p_ttest_holm"] == pytest.approx(p_holm, rel=1e-12)
        assert ab["change"] == "align: True → False"


def test_significant_comparisons_are_marked(fake_report):
    md = (fake_report["out"] / "tables" / "significance.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| vs baselines")]
    assert len(rows) == len(SHOTS) and all(row.rstrip(" |").endswith("†") for row in rows)


def test_efficiency_table_comes_from_bench_files(fake_report):
    data = _csv(fake_report["out"] / "tables" / "efficiency.csv")
    bench = json.loads((fake_report["root"] / "bench.json").read_text())["results"]
    assert len(data) == len(bench) == len(SKILL) * len(SHOTS)
    assert list(data["label"][:2]) == ["colour floor", "colour floor"]  # spec order: baselines first
    panet = data[data["label"] == "panet"].iloc[0]
    source = next(r for r in bench if r["method"] == "panet" and r["variant"] == "default" and r["shot"] == 1)
    assert panet["params_total"] == source["params_total"] and panet["fps"] == pytest.approx(source["fps"])
    caption = (fake_report["out"] / "tables" / "efficiency.caption.txt").read_text()
    assert source["device"] in caption and source["peak_memory_kind"] in caption
    md = (fake_report["out"] / "tables" / "efficiency.md").read_text()
    assert f"{source['params_total'] / 1e6:.2f}" in md


# ----------------------------------------------------------------------------------------------------------
# Captions


def test_captions_state_the_protocol(fake_report):
    tables = fake_report["out"] / "tables"
    figures = fake_report["out"] / "figures"
    paths = [tables / f"{n}.caption.txt" for n in TABLE_NAMES if n != "efficiency"]
    paths += [figures / f"{n}.caption.txt" for n in FIGURE_NAMES]
    for path in paths:
        text = path.read_text()
        for fact in (
            "dataset toy",
            "folds 0, 1",
            f"{N_EPISODES} test episodes per fold and episode seed",
            "episode seeds 0, 1;",
            "train seeds 0, 1, 2;",
            "input 32×32 px",
            "original resolution",
            "train filter: none",
            "no minimum object size",
            "last checkpoint",
            "backbone resnet18",
            "Extra sentence for the captions.",
        ):
            assert fact in text, (path.name, fact)
    main = (tables / "main_miou.caption.txt").read_text()
    assert "mean ± sd over 3 train seeds" in main and "averaged over 2 episode seeds" in main
    assert "for 1- and 5-shot test episodes" in main


def test_fbiou_is_never_labelled_miou(fake_report):
    tables = fake_report["out"] / "tables"
    for ext in ("md", "tex", "csv", "caption.txt"):
        text = (tables / f"main_fbiou.{ext}").read_text()
        assert "mIoU" not in text and "miou" not in text
    assert "FB-IoU" in (tables / "main_fbiou.md").read_text()
    assert set(_csv(tables / "main_fbiou.csv")["metric"]) == {"fbiou"}


def test_spec_errors_are_reported(fake_report, tmp_path):
    agg = fake_report["root"] / "agg"
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text(yaml.safe_dump({**SPEC, "baseline": []}))
    with pytest.raises(ConfigError, match="unknown key"):
        build_report(agg, bad_key, tmp_path / "out")
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump({**SPEC, "dataset": "isaid5i"}))
    with pytest.raises(FssegError, match="for dataset 'isaid5i'"):
        build_report(agg, other, tmp_path / "out")
    absent = tmp_path / "absent.yaml"
    absent.write_text(yaml.safe_dump({**SPEC, "flagship": {"method": "dsmfnet"}}))
    with pytest.raises(FssegError, match="flagship dsmfnet-default has no evaluation"):
        build_report(agg, absent, tmp_path / "out")


# ----------------------------------------------------------------------------------------------------------
# The real engine end to end, and predict


@pytest.fixture(scope="module")
def real_grid(toy_root, tmp_path_factory):
    """Colour floor and an untrained PANet (0 iterations: differs per train seed) from the real engine."""
    from fsseg.engine.train import train

    root = tmp_path_factory.mktemp("real_grid")
    make = toy_config_maker(toy_root, root / "results")

    for fold in FOLDS:
        for seed in (0, 1):
            train(make("method.name=panet", f"fold={fold}", f"train.train_seed={seed}"))
    folders = real_evaluations(make, episode_seeds=(0,)) + real_evaluations(
        make, episode_seeds=(0,), method="panet"
    )
    return root, make, folders


def test_report_from_real_evaluations_through_the_cli(real_grid, tmp_path, capsys):
    _, _, folders = real_grid
    assert main(["aggregate", "--evals", *map(str, folders), "--out", str(tmp_path / "agg")]) == 0
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "dataset": "toy",
                "flagship": {"method": "panet"},
                "baselines": [{"method": "colour_floor"}],
                "shots": [1],
                "bootstrap": {"iterations": 50, "seed": 0},
            }
        )
    )
    argv = ["report", "--aggregate", str(tmp_path / "agg"), "--spec", str(spec)]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 7 * 4 + 7 * 3 + 1  # 7 tables (md, tex, csv, caption), 7 figures (png, pdf, caption)
    for rel in files:  # reruns give the same bytes, figures included
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    data = _csv(tmp_path / "a" / "tables" / "significance.csv")
    assert list(data["n_units"]) == [len(FOLDS) * 2]
    summaries = [json.loads((f / "summary.json").read_text()) for f in folders]
    panet = [s["metrics"]["miou"] for s in summaries if s["method"] == "panet"]
    main_table = _csv(tmp_path / "a" / "tables" / "main_miou.csv")
    mean = main_table[(main_table["label"] == "panet") & (main_table["fold"] == "mean")]["mean"].item()
    assert mean == pytest.approx(sum(panet) / len(panet), abs=1e-12)  # one episode seed: plain mean
    capsys.readouterr()


def test_predict_saves_episodes_that_match_the_evaluation(real_grid, tmp_path):
    from fsseg.qualitative import IDENTITY_KEYS, crop, load_predictions
    from fsseg.records import read_records

    _, make, folders = real_grid
    cfg = make("method.name=panet", "fold=1", "train.train_seed=1")
    out = tmp_path / "pred.npz"
    assert main(["predict", "--set", "method.name=panet", "--set", "fold=1", "--set", "train.train_seed=1",
                 "--set", f"output_root={cfg.output_root}", "--set", f"dataset.root={cfg.dataset.root}",
                 "--set", "dataset.name=toy", "--set", "dataset.image_size=32", "--set", "eval.n_episodes=12",
                 "--set", "train.iterations=0", "--episodes", "5", "--out", str(out)]) == 0  # fmt: skip
    p = load_predictions(out)
    n = 5
    assert p["query_images"].shape == (n, 32, 32, 3) and p["query_images"].dtype == np.uint8
    assert p["support_images"].shape == (n, 1, 32, 32, 3) and p["support_images"].dtype == np.uint8
    assert p["support_masks"].shape == (n, 1, 32, 32) and set(np.unique(p["support_masks"])) <= {0, 1, 255}
    assert p["query_labels"].shape == (n, 32, 32) and set(np.unique(p["query_labels"])) <= {0, 1, 255}
    assert p["predictions"].shape == (n, 32, 32) and p["predictions"].dtype == np.uint8
    assert set(np.unique(p["predictions"])) <= {0, 1}
    assert p["query_sizes"].tolist() == [[32, 32]] * n and p["support_sizes"].shape == (n, 1, 2)
    assert p["episode_ids"].tolist() == list(range(n))
    assert p["class_names"].shape == (n,) and set(p["class_names"]) <= set("def")
    assert all(key in p for key in IDENTITY_KEYS)
    assert (p["method"], p["variant"], p["fold"], p["shot"]) == ("panet", "default", 1, 1)
    assert crop(p["predictions"][0], p["query_sizes"][0]).shape == (32, 32)

    # the saved predictions are the evaluated ones: same manifest, same counts episode by episode
    evaluated = next(
        f for f in folders if "panet-default" in str(f) and "fold1" in str(f) and "seed1" in str(f)
    )
    records = read_records(evaluated / "records.csv")[:n]
    assert p["manifest_hash"] == records[0]["manifest_hash"]
    for column in ("fg_intersection", "fg_union", "bg_intersection", "bg_union"):
        assert p[column].tolist() == [int(r[column]) for r in records]
    assert p["class_ids"].tolist() == [int(r["class_id"]) for r in records]
    assert p["query_ids"].tolist() == [r["query_id"] for r in records]

    again = tmp_path / "again.npz"
    from fsseg.qualitative import predict

    predict(cfg, n, again)
    assert again.read_bytes() == out.read_bytes()  # fixed zip timestamps: same bytes


def test_qualitative_grid_has_one_column_per_method(fake_report):
    from fsseg.qualitative import load_predictions

    files = sorted(fake_report["root"].glob("*.npz"))
    loaded = [load_predictions(f) for f in files]
    assert {p["method"] for p in loaded} == {"colour_floor", "panet"}
    assert len({p["manifest_hash"] for p in loaded}) == 1  # same episodes, so they share rows
    png = fake_report["out"] / "figures" / "qualitative.png"
    from PIL import Image

    width, height = Image.open(png).size
    assert width > height  # 3 episode rows × (3 + 2) columns


# ----------------------------------------------------------------------------------------------------------
# The artefact declaration and the training curves' inputs


def test_every_declared_artefact_has_a_builder_known_inputs_and_its_caption_in_the_report(fake_report):
    from fsseg.report import builders
    from fsseg.report.artefacts import ARTEFACTS, INPUT_KINDS, artefact, html_caption
    from fsseg.report.spec import MIN_UNITS_TO_MARK

    assert len({a.name for a in ARTEFACTS}) == len(ARTEFACTS)
    for item in ARTEFACTS:
        assert callable(getattr(builders, item.builder)), item.builder
        assert set(item.inputs) <= set(INPUT_KINDS), item.name
        assert item.title in (fake_report["out"] / "README.md").read_text()
        assert item.title in html_caption(item, 0.05, MIN_UNITS_TO_MARK)
    for item in FIGURES:  # a figure's caption.txt is the declared caption plus the protocol
        caption = (fake_report["out"] / "figures" / f"{item.name}.caption.txt").read_text()
        assert item.caption_text(0.05, MIN_UNITS_TO_MARK) in caption
    assert "p < 0.01 over at least 3 units" in artefact("paired_differences").caption_text(0.01, 3)
    with pytest.raises(KeyError, match="no report artefact 'nope'; known: main_miou"):
        artefact("nope")


def _curve_counts(figure) -> list[int]:
    return [len(ax.get_lines()) for ax in figure.axes if ax.get_visible()]


def test_training_curves_read_only_the_given_runs_whatever_the_working_directory(
    fake_report, tmp_path, monkeypatch
):
    from fsseg.report.build import train_logs_of
    from fsseg.report.plots import training_curves_figure
    from fsseg.report.results import select_runs
    from fsseg.report.spec import load_spec

    spec = load_spec(fake_report["root"] / "spec.yaml")
    runs = select_runs(fake_report["agg"], spec.all_runs, spec.shots)
    given = train_logs_of(fake_report["train_runs"])
    monkeypatch.chdir(tmp_path)  # nothing is looked up relative to the working directory
    drawn = _curve_counts(training_curves_figure(runs, spec.main_runs, spec.shots, given))
    assert sum(drawn) > 0 and 0 in drawn  # curves for the trained methods, none for the colour floor
    assert sum(_curve_counts(training_curves_figure(runs, spec.main_runs, spec.shots, {}))) == 0
    one = dict([next(iter(given.items()))])
    assert 0 < sum(_curve_counts(training_curves_figure(runs, spec.main_runs, spec.shots, one))) < sum(drawn)


def test_training_curve_inputs_must_be_finished_runs(fake_report, tmp_path):
    from fsseg.report.build import train_logs_of

    log = Path(fake_report["train_runs"][0]).parent / "train_log.jsonl"
    with pytest.raises(FssegError, match=r"train_log\.jsonl: expected a run's train_summary\.json"):
        train_logs_of([log])
    with pytest.raises(FssegError, match=r"does not exist: the run is not trained"):
        train_logs_of([tmp_path / "train_summary.json"])


def test_main_caption_names_the_methods_run_on_fewer_train_seeds(fake_report):
    """grid.method_train_seeds: a method with fewer seeds is named, so its cells without sd are explained."""
    spec = ReportSpec(dataset="toy", flagship=RunRef("panet"), baselines=[RunRef("colour_floor")])
    protocol = fake_report["agg"].protocol
    plain = captions.main_caption(spec, protocol, "miou", 3, 2, {1: [1]}, [])
    fewer = captions.main_caption(spec, protocol, "miou", 3, 2, {1: [1]}, [], None, {"colour_floor": 1})
    assert "mean ± sd over 3 train seeds;" in plain and "fewer" not in plain
    assert "mean ± sd over 3 train seeds (fewer for colour_floor 1 train seed: no sd with one);" in fewer


def test_loss_summary_measures_the_fall_and_the_late_change() -> None:
    """First/last/ratio, and the change of the mean loss over the last fifth against the fifth before."""
    import pandas as pd

    from fsseg.report.tables import loss_summary

    iterations = [1, 20, 40, 60, 80, 100]
    falling = loss_summary(pd.DataFrame({"iteration": iterations, "loss": [2.0, 1.6, 1.2, 1.0, 0.9, 0.8]}))
    assert (falling["first"], falling["last"]) == (2.0, 0.8) and falling["ratio"] == pytest.approx(0.4)
    assert falling["late_change"] == pytest.approx(0.8 / 0.9 - 1)  # (80, 100] against (60, 80]
    flat = loss_summary(pd.DataFrame({"iteration": iterations, "loss": [2.0, 1.0, 0.5, 0.5, 0.5, 0.5]}))
    assert flat["late_change"] == pytest.approx(0.0) and flat["ratio"] == pytest.approx(0.25)
    rising = loss_summary(pd.DataFrame({"iteration": [1, 100], "loss": [1.0, 0.9]}))
    assert math.isnan(rising["late_change"])  # no log line in the fifth before the last


def test_settled_counts_runs_whose_loss_no_longer_trends_down() -> None:
    """Settled: no downward least-squares trend (one-sided, 5 %) over the last fifth's log lines. With the
    long runs' noise, the 200 draws below: a flat loss is called still falling in 4 % of them; a loss that
    falls 0.018 a tenth of the iterations (about 5 % at these levels) in 98 %, 0.012 (3 %) in 79 %, 0.006
    in 34 % (PANet at a constant rate fell 0.011 a tenth after 2,000 steps): the column finds a clear
    fall, not a slight one."""
    import numpy as np
    import pandas as pd

    from fsseg.report.tables import SETTLED_ALPHA, _settled_text, loss_summary

    iterations = np.arange(20, 3001, 20).astype(float)  # 30 log lines in the last fifth, as the long run

    def called_falling(slope: float) -> float:
        """Share of 200 noise draws (sd 0.015, the long runs' 0.013-0.028) with p < 5 %."""
        p = []
        for seed in range(200):
            noise = np.random.default_rng(seed).normal(0.0, 0.015, iterations.size)
            log = pd.DataFrame({"iteration": iterations, "loss": 0.45 - slope * iterations / 3000 + noise})
            p.append(loss_summary(log)["late_p"])
        return float(np.mean(np.array(p) < SETTLED_ALPHA))

    assert called_falling(0.0) <= 0.08 and called_falling(0.18) >= 0.95
    coarse = loss_summary(pd.DataFrame({"iteration": [1, 80, 90, 100], "loss": [2.0, 1.0, 0.9, 0.8]}))
    assert math.isnan(coarse["late_p"])  # one log line in the last fifth: too coarse to test
    noiseless = loss_summary(pd.DataFrame({"iteration": iterations, "loss": 1 - iterations / 6000}))
    flat = loss_summary(pd.DataFrame({"iteration": iterations, "loss": np.full(iterations.size, 0.5)}))
    assert noiseless["late_p"] < 1e-6 and flat["late_p"] == 1.0
    assert _settled_text(pd.Series([flat["late_p"], noiseless["late_p"], math.nan])) == "1/2"
    assert _settled_text(pd.Series([math.nan, math.nan])) == "–"  # the tables' dash


def test_training_table_counts_the_runs_whose_loss_fell_enough(fake_report, tmp_path):
    from fsseg.report.build import train_logs_of
    from fsseg.report.results import select_runs
    from fsseg.report.spec import load_spec
    from fsseg.report.tables import training_table

    spec = load_spec(fake_report["root"] / "spec.yaml")
    runs = select_runs(fake_report["agg"], spec.all_runs, spec.shots)
    protocol = fake_report["agg"].protocol
    given = train_logs_of(fake_report["train_runs"])
    table = training_table(runs, spec, protocol, given)
    untrained = {r.display for r in spec.all_runs} - set(table.data["label"])
    assert untrained == {"colour floor"}  # no training log: no row
    # the fixture's losses, 1 / (1 + skill · iteration / 10), end at about a quarter of their start
    assert (table.data["runs_within_bound"] == table.data["runs"]).all()
    assert (table.data["ratio_max"] < 0.3).all() and (table.data["late_change_mean"] < 0).all()
    assert all(row[5] == f"{n}/{n}" for row, n in zip(table.rows, table.data["runs"], strict=True))
    # the fixture logs a few lines a run: too few in the last fifth to test a trend, so a dash, not 0/n
    assert table.data["late_p_min"].isna().all() and all(row[7] == "–" for row in table.rows)

    # one run whose loss hardly fell: counted out, and its ratio is the largest
    slow = tmp_path / "train_log.jsonl"
    slow.write_text(
        "".join(json.dumps({"iteration": i, "loss": 1.0 - i / 1000}) + "\n" for i in (1, 50, 100))
    )
    run_dir = next(iter(given))
    changed = training_table(runs, spec, protocol, {**given, run_dir: slow}).data
    assert changed["runs_within_bound"].sum() == table.data["runs_within_bound"].sum() - 1
    assert changed["ratio_max"].max() == pytest.approx(0.9 / 0.999)
    assert training_table(runs, spec, protocol, {}).rows == []  # no logs given: no rows
