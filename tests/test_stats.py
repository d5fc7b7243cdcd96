"""Paired statistics over saved records: fsseg.stats against scipy and hand-written references, and
the ``fsseg compare`` command on record folders written in the real ``records.csv`` format."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from fsseg import stats
from fsseg.cli import main
from fsseg.compare import find_record_files, load_run
from fsseg.metrics import summarize
from fsseg.records import RECORD_COLUMNS, write_records

# ----------------------------------------------------------------------------------------------------------
# Fake runs


def manifest_hash(fold: int, shot: int, episode_seed: int, n_episodes: int) -> str:
    return hashlib.sha256(f"{fold}/{shot}/{episode_seed}/{n_episodes}".encode()).hexdigest()


def fake_records(
    method: str,
    skill: float,
    *,
    folds: tuple[int, ...] = (0, 1),
    train_seeds: tuple[int, ...] = (0, 1),
    episode_seeds: tuple[int, ...] = (0,),
    n_episodes: int = 9,
    n_classes: int = 3,
    shot: int = 1,
    noise_seed: int = 0,
) -> list[dict]:
    """Rows in the exact ``records.csv`` layout. Episodes (class, object size) depend only on the manifest
    (fold, shot, episode_seed), as in the harness; scores depend on the method's ``skill`` and noise."""
    noise = np.random.default_rng(noise_seed)
    rows = []
    for fold in folds:
        for train_seed in train_seeds:
            for episode_seed in episode_seeds:
                episodes = np.random.default_rng([fold, shot, episode_seed])
                classes = episodes.integers(0, n_classes, n_episodes) + 1 + fold * n_classes
                objects = episodes.integers(20, 200, n_episodes)
                for episode_id in range(n_episodes):
                    true_px = int(objects[episode_id])
                    hit = int(true_px * min(1.0, max(0.0, skill + noise.normal(0, 0.25))))
                    false_px = int(noise.integers(0, 60))
                    fg_union = true_px + false_px
                    if episode_id == 0:  # an empty prediction on an empty (all-ignored) mask: union 0
                        hit, fg_union = 0, 0
                    rows.append(
                        {
                            "run_id": f"{method}-fold{fold}-seed{train_seed}-abc",
                            "method": method,
                            "variant": "default",
                            "backbone": "resnet18",
                            "dataset": "synthetic",
                            "fold": fold,
                            "train_shot": shot,
                            "shot": shot,
                            "train_seed": train_seed,
                            "episode_seed": episode_seed,
                            "manifest_hash": manifest_hash(fold, shot, episode_seed, n_episodes),
                            "episode_id": episode_id,
                            "class_id": int(classes[episode_id]),
                            "class_name": f"class{int(classes[episode_id])}",
                            "query_id": f"img{episode_id:03d}",
                            "support_ids": f"img{episode_id + 100:03d}",
                            "fg_intersection": hit,
                            "fg_union": fg_union,
                            "bg_intersection": 1000 - fg_union,
                            "bg_union": 1000 - hit,
                        }
                    )
    return rows


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(RECORD_COLUMNS))


def write_run(root: Path, rows: list[dict]) -> Path:
    """One evaluation folder per (fold, train_seed, episode_seed), as ``ExperimentConfig.eval_dir``."""
    df = frame(rows)
    for (fold, train_seed, episode_seed), group in df.groupby(["fold", "train_seed", "episode_seed"]):
        shot = int(group["shot"].iloc[0])
        folder = (
            root
            / f"fold{fold}"
            / f"shot{shot}"
            / f"seed{train_seed}"
            / "eval"
            / f"shot{shot}_ep{episode_seed}_n9"
        )
        write_records(folder / "records.csv", group.to_dict("records"))
        summary = {"manifest_hash": group["manifest_hash"].iloc[0], "metrics": {"n_episodes": len(group)}}
        (folder / "summary.json").write_text(json.dumps(summary))
    return root


def hand_unit_scores(rows: list[dict]) -> dict[tuple[int, int], float]:
    """Class-wise mIoU per (fold, train_seed), mean over episode seeds, written out longhand."""
    per_seed: dict[tuple[int, int, int], dict[int, list[int]]] = {}
    for r in rows:
        sums = per_seed.setdefault((r["fold"], r["train_seed"], r["episode_seed"]), {})
        i, u = sums.get(r["class_id"], [0, 0])
        sums[r["class_id"]] = [i + r["fg_intersection"], u + r["fg_union"]]
    by_unit: dict[tuple[int, int], list[float]] = {}
    for (fold, train_seed, _), sums in sorted(per_seed.items()):
        ious = [i / u for i, u in sums.values() if u > 0]
        by_unit.setdefault((fold, train_seed), []).append(sum(ious) / len(ious))
    return {unit: sum(v) / len(v) for unit, v in by_unit.items()}


# ----------------------------------------------------------------------------------------------------------
# Tests over units


A_SCORES = [0.512, 0.498, 0.530, 0.471, 0.505, 0.520]
B_SCORES = [0.490, 0.501, 0.507, 0.452, 0.489, 0.499]


def test_paired_ttest_matches_scipy():
    result = stats.paired_ttest(A_SCORES, B_SCORES)
    reference = sps.ttest_rel(A_SCORES, B_SCORES)
    diffs = np.subtract(A_SCORES, B_SCORES)
    assert result.n == 6 and result.df == 5
    assert result.p == pytest.approx(reference.pvalue, rel=1e-12)
    assert result.t == pytest.approx(reference.statistic, rel=1e-12)
    assert result.mean_diff == pytest.approx(diffs.mean())
    assert result.d_z == pytest.approx(diffs.mean() / diffs.std(ddof=1))
    low, high = reference.confidence_interval(0.95)
    assert (result.ci_low, result.ci_high) == (pytest.approx(low), pytest.approx(high))
    assert result.mean_a == pytest.approx(np.mean(A_SCORES)) and result.note == ""


def test_paired_ttest_pairs_series_by_unit_not_position():
    index = pd.MultiIndex.from_tuples(
        [(f, s) for f in range(3) for s in range(2)], names=["fold", "train_seed"]
    )
    a = pd.Series(A_SCORES, index=index)
    b = pd.Series(B_SCORES, index=index).iloc[::-1]
    assert stats.paired_ttest(a, b).p == pytest.approx(sps.ttest_rel(A_SCORES, B_SCORES).pvalue)
    with pytest.raises(ValueError, match="same unique unit index"):
        stats.paired_ttest(a, b.iloc[1:])


def test_paired_ttest_small_n_and_zero_variance():
    one = stats.paired_ttest([0.5], [0.4])
    assert one.n == 1 and math.isnan(one.p) and "at least 2" in one.note
    assert one.mean_diff == pytest.approx(0.1)
    constant = stats.paired_ttest([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])
    assert math.isnan(constant.p) and math.isnan(constant.d_z) and "zero variance" in constant.note
    same = stats.paired_ttest(A_SCORES, A_SCORES)
    assert math.isnan(same.p) and same.mean_diff == 0.0


def test_wilcoxon_skipped_below_six_pairs_and_scipy_from_six():
    skipped = stats.wilcoxon(A_SCORES[:5], B_SCORES[:5])
    assert skipped.skipped and math.isnan(skipped.p)
    assert skipped.note.startswith("skipped (n<6)") and "0.0625" in skipped.note
    run = stats.wilcoxon(A_SCORES, B_SCORES)
    reference = sps.wilcoxon(A_SCORES, B_SCORES)
    assert not run.skipped and run.n == 6
    assert (run.statistic, run.p) == (pytest.approx(reference.statistic), pytest.approx(reference.pvalue))
    assert stats.wilcoxon(A_SCORES, A_SCORES).skipped


def holm_reference(pvalues: list[float]) -> list[float]:
    """Holm (1979) step-down, longhand: walk sorted p-values, multiply by the tests left, keep monotone."""
    tested = [(p, i) for i, p in enumerate(pvalues) if not math.isnan(p)]
    tested.sort()
    m = len(tested)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        out[i] = running
    return out


def test_holm_textbook_values_and_reference():
    # R: p.adjust(c(0.01, 0.02, 0.03, 0.04, 0.05), "holm")
    assert stats.holm([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx([0.05, 0.08, 0.09, 0.09, 0.09])
    assert stats.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(7)
    for size in (1, 2, 5, 12):
        p = list(rng.uniform(0, 0.2, size) ** 2)
        p[0] = p[-1]  # a tie
        assert stats.holm(p) == pytest.approx(holm_reference(p))


def test_holm_nan_passthrough_cap_and_monotone():
    adjusted = stats.holm([0.04, math.nan, 0.6, 0.01])
    assert math.isnan(adjusted[1])
    # NaN is not a test: m = 3
    assert adjusted[[0, 2, 3]] == pytest.approx([0.08, 0.6, 0.03])
    assert stats.holm([0.5, 0.9]).max() == 1.0
    assert math.isnan(stats.holm([math.nan])[0]) and stats.holm([]).size == 0
    with pytest.raises(ValueError):
        stats.holm([1.5])


# ----------------------------------------------------------------------------------------------------------
# Unit scores and pairing


def test_unit_scores_average_episode_seeds_with_one_metric_definition():
    rows = fake_records("panet", 0.6, episode_seeds=(0, 1))
    scores = stats.unit_scores(frame(rows))
    assert list(scores.index) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for unit, expected in hand_unit_scores(rows).items():
        assert scores[unit] == pytest.approx(expected, rel=1e-12)
    fold0 = [r for r in rows if (r["fold"], r["train_seed"], r["episode_seed"]) == (0, 0, 1)]
    per_seed = stats.episode_seed_scores(frame(rows), "fbiou")
    assert per_seed[(0, 0, 1)] == summarize(fold0)["fbiou"]


def test_refuses_runs_on_different_manifests_and_says_where():
    a = frame(fake_records("dsmfnet", 0.6))
    b = frame(fake_records("panet", 0.5))
    stats.check_pairable(a, b)
    b.loc[b["fold"] == 1, "manifest_hash"] = "f" * 64
    with pytest.raises(stats.PairingError, match=r"fold 1 episode_seed 0 \(shot 1\)") as err:
        stats.check_pairable(a, b)
    assert "manifest" in str(err.value) and "fold 0" not in str(err.value)
    with pytest.raises(stats.PairingError, match="manifest"):
        stats.paired_bootstrap(a, b, 10, 0)


def test_refuses_other_mismatches():
    a = frame(fake_records("dsmfnet", 0.6))
    fewer_units = frame(fake_records("panet", 0.5, train_seeds=(0,)))
    with pytest.raises(stats.PairingError, match="only in A: fold 0 train_seed 1, fold 1 train_seed 1"):
        stats.check_pairable(a, fewer_units)
    other_shot = frame(fake_records("panet", 0.5, shot=5))
    with pytest.raises(stats.PairingError, match="different shot: A has 1, B has 5"):
        stats.check_pairable(a, other_shot)
    truncated = a[~((a["fold"] == 0) & (a["train_seed"] == 1) & (a["episode_id"] == 8))]
    with pytest.raises(stats.PairingError, match="fold 0 episode_seed 0 episode 8"):
        stats.check_pairable(truncated, a)
    cut = a[~((a["fold"] == 0) & (a["episode_id"] == 8))]  # every train seed of A cut the same way
    with pytest.raises(stats.PairingError, match="fold 0 episode_seed 0 episode 8: only in B"):
        stats.check_pairable(cut, a)
    twice = pd.concat([a, a.assign(run_id=a["run_id"] + "-untrained")])
    with pytest.raises(stats.PairingError, match="more than once"):
        stats.check_run(twice, "A")
    mixed = pd.concat([a, frame(fake_records("panet", 0.5, folds=(2,)))])
    with pytest.raises(stats.PairingError, match="mixes method values dsmfnet, panet"):
        stats.check_run(mixed, "A")


# ----------------------------------------------------------------------------------------------------------
# Bootstrap


def loop_bootstrap(rows_a: list[dict], rows_b: list[dict], n_boot: int, seed: int, metric: str) -> np.ndarray:
    """The bootstrap written longhand: resample b takes, for every manifest (fold, episode_seed), the b-th
    index draw of that manifest's generator, applies it to A, B and every train seed, scores each (unit,
    episode seed) with summarize, averages seeds per unit and differences over units."""

    def index(rows: list[dict]) -> dict[tuple[int, int, int], list[dict]]:
        out: dict[tuple[int, int, int], list[dict]] = {}
        for r in sorted(rows, key=lambda r: r["episode_id"]):
            out.setdefault((r["fold"], r["train_seed"], r["episode_seed"]), []).append(r)
        return out

    episodes = [index(rows_a), index(rows_b)]
    manifests = sorted({(f, e) for f, _, e in episodes[0]})
    generators = {(f, e): stats.bootstrap_generator(seed, f, e) for f, e in manifests}
    units = sorted({(f, t) for f, t, _ in episodes[0]})
    distribution = []
    for _ in range(n_boot):
        seed_scores: dict[tuple[int, int, int], list[float]] = {}
        for fold, episode_seed in manifests:
            n = len(episodes[0][(fold, 0, episode_seed)])
            draw = generators[(fold, episode_seed)].integers(0, n, size=n)
            for run in (0, 1):
                for (f, t, e), rows in episodes[run].items():
                    if (f, e) == (fold, episode_seed):
                        resampled = [rows[i] for i in draw]
                        seed_scores.setdefault((run, f, t), []).append(summarize(resampled)[metric])
        diffs = [np.mean(seed_scores[(0, f, t)]) - np.mean(seed_scores[(1, f, t)]) for f, t in units]
        distribution.append(np.mean(diffs))
    return np.array(distribution)


@pytest.mark.parametrize("metric", ["miou", "fbiou"])
def test_vectorised_bootstrap_equals_the_loop_exactly(metric, monkeypatch):
    rows_a = fake_records("dsmfnet", 0.6, episode_seeds=(0, 1), noise_seed=1)
    rows_b = fake_records("panet", 0.55, episode_seeds=(0, 1), noise_seed=2)
    expected = loop_bootstrap(rows_a, rows_b, 40, 11, metric)
    result = stats.paired_bootstrap(frame(rows_a), frame(rows_b), 40, 11, metric=metric)
    assert np.array_equal(result.distribution, expected)
    assert result.n_units == 4 and result.n_manifests == 4 and result.n_episodes == 2 * 2 * 2 * 9
    # Blocking the resamples (memory bound) must not change a single draw.
    monkeypatch.setattr(stats, "_BLOCK_CELLS", 9 * 3)
    blocked = stats.paired_bootstrap(frame(rows_a), frame(rows_b), 40, 11, metric=metric)
    assert np.array_equal(blocked.distribution, expected)
    observed = np.mean(
        [
            a - b
            for a, b in zip(
                stats.unit_scores(frame(rows_a), metric),
                stats.unit_scores(frame(rows_b), metric),
                strict=True,
            )
        ]
    )
    assert result.observed_diff == observed


def test_bootstrap_summary_definitions_and_seed():
    a = frame(fake_records("dsmfnet", 0.6, noise_seed=1))
    b = frame(fake_records("panet", 0.5, noise_seed=2))
    result = stats.paired_bootstrap(a, b, 500, 3)
    d = result.distribution
    assert result.ci_low == np.percentile(d, 2.5) and result.ci_high == np.percentile(d, 97.5)
    below, above = (1 + np.sum(d <= 0)) / 501, (1 + np.sum(d >= 0)) / 501
    assert result.p == min(1.0, 2 * min(below, above))
    assert result.mean_diff == pytest.approx(d.mean()) and (result.n_boot, result.seed) == (500, 3)
    assert np.array_equal(stats.paired_bootstrap(a, b, 500, 3).distribution, d)
    assert not np.array_equal(stats.paired_bootstrap(a, b, 500, 4).distribution, d)
    same = stats.paired_bootstrap(a, a, 50, 0)
    assert same.p == 1.0 and same.observed_diff == 0.0


def test_family_holm_adjusts_each_test():
    flagship = frame(fake_records("dsmfnet", 0.7, folds=(0, 1, 2), noise_seed=1))
    others = {
        "panet": frame(fake_records("panet", 0.5, folds=(0, 1, 2), noise_seed=2)),
        "pfenet": frame(fake_records("pfenet", 0.6, folds=(0, 1, 2), noise_seed=3)),
    }
    family = stats.compare_family(flagship, others, n_boot=200, seed=0, reference_label="dsmfnet")
    raw = [family[name].ttest.p for name in others]
    assert [family[name].holm["ttest"] for name in others] == pytest.approx(holm_reference(raw))
    assert family["panet"].label_a == "dsmfnet" and family["panet"].wilcoxon.n == 6
    assert family["panet"].ttest.mean_diff > 0  # Δ = reference − other


def test_a_baseline_on_fewer_train_seeds_is_compared_on_the_units_both_have():
    """grid.method_train_seeds: a baseline trained on one seed is paired with the flagship's same units
    (the flagship cut to them), Holm-adjusted in one family with the baselines on every seed."""
    from fsseg.report.results import Run, baseline_family
    from fsseg.report.spec import BootstrapSpec, ReportSpec, RunRef

    def run(method: str, skill: float, seeds: tuple[int, ...], noise: int) -> Run:
        records = frame(fake_records(method, skill, folds=(0, 1, 2), train_seeds=seeds, noise_seed=noise))
        evaluations = records[["fold", "train_seed"]].drop_duplicates()
        return Run(RunRef(method), 1, 1, "resnet18", records, evaluations)

    runs = {
        ("dsmfnet", 1): run("dsmfnet", 0.7, (0, 1), 1),
        ("panet", 1): run("panet", 0.5, (0, 1), 2),
        ("hsnet", 1): run("hsnet", 0.6, (0,), 3),
    }
    spec = ReportSpec(
        dataset="synthetic",
        title="t",
        flagship=RunRef("dsmfnet"),
        baselines=[RunRef("panet"), RunRef("hsnet")],
        shots=[1],
        bootstrap=BootstrapSpec(iterations=200, seed=0),
    )
    family = {b.label: (a, b, c) for _, a, b, c in baseline_family(runs, spec, 1).comparisons}
    a_hsnet, _, hsnet = family["hsnet"]
    alone = stats.compare_records(
        a_hsnet.records, runs[("hsnet", 1)].records, n_boot=200, seed=0, label_a="dsmfnet", label_b="hsnet"
    )
    assert set(zip(a_hsnet.records["fold"], a_hsnet.records["train_seed"], strict=True)) == {
        (0, 0),
        (1, 0),
        (2, 0),
    }
    assert hsnet.wilcoxon.n == 3 and hsnet.ttest.mean_diff == alone.ttest.mean_diff
    assert family["panet"][0] is runs[("dsmfnet", 1)] and family["panet"][2].wilcoxon.n == 6
    raw = [family[name][2].ttest.p for name in ("panet", "hsnet")]
    assert [family[name][2].holm["ttest"] for name in ("panet", "hsnet")] == pytest.approx(
        holm_reference(raw)
    )


# ----------------------------------------------------------------------------------------------------------
# The command


@pytest.fixture(autouse=True)
def toy_dataset_without_prepare(monkeypatch):
    # The parser adds a `prepare` sub-command per registered dataset; the test-only toy one (registered by
    # conftest) has no prepare hook, so give it an empty one while `main` builds the parser.
    from tests.toy_dataset import ToyDataset

    if not hasattr(ToyDataset, "add_prepare_arguments"):
        monkeypatch.setattr(
            ToyDataset, "add_prepare_arguments", classmethod(lambda cls, parser: None), raising=False
        )


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path, list[dict], list[dict]]:
    rows_a = fake_records("dsmfnet", 0.65, folds=(0, 1, 2), noise_seed=1)
    rows_b = fake_records("panet", 0.55, folds=(0, 1, 2), noise_seed=2)
    return write_run(tmp_path / "a", rows_a), write_run(tmp_path / "b", rows_b), rows_a, rows_b


def test_cli_compare_prints_the_expected_numbers(two_runs, capsys):
    run_a, run_b, rows_a, rows_b = two_runs
    assert main(["compare", str(run_a), str(run_b), "--bootstrap", "300", "--seed", "5"]) == 0
    out = capsys.readouterr().out
    units = sorted(hand_unit_scores(rows_a))
    a = [hand_unit_scores(rows_a)[u] for u in units]
    b = [hand_unit_scores(rows_b)[u] for u in units]
    reference = sps.ttest_rel(a, b)
    low, high = reference.confidence_interval()
    ttest_line = next(line for line in out.splitlines() if line.startswith("paired t-test"))
    assert ttest_line.split()[2:7] == [
        "6",
        f"{np.mean(a):.4f}",
        f"{np.mean(b):.4f}",
        f"{np.mean(a) - np.mean(b):+.4f}",
        f"[{low:+.4f},",
    ]
    assert f"{high:+.4f}]" in ttest_line and f"{reference.pvalue:.4f}" in ttest_line
    diffs = np.subtract(a, b)
    assert f"d_z = {diffs.mean() / diffs.std(ddof=1):.2f}" in ttest_line
    boot = stats.paired_bootstrap(frame(rows_a), frame(rows_b), 300, 5)
    boot_line = next(line for line in out.splitlines() if line.startswith("paired bootstrap"))
    assert f"[{boot.ci_low:+.4f}, {boot.ci_high:+.4f}]" in boot_line and "300 resamples" in boot_line
    wilcoxon_line = next(line for line in out.splitlines() if line.startswith("Wilcoxon"))
    assert f"{sps.wilcoxon(a, b).pvalue:.4f}" in wilcoxon_line
    assert "class mIoU" in out and "6 evaluation folders" in out
    assert f"{a[0]:.4f}" in out  # the per-unit table


def test_cli_compare_csv_and_json_match_the_api(two_runs, capsys):
    run_a, run_b, rows_a, rows_b = two_runs
    assert (
        main(
            ["compare", str(run_a), str(run_b), "--bootstrap", "200", "--format", "csv", "--metric", "fbiou"]
        )
        == 0
    )
    (row,) = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    api = stats.compare_records(frame(rows_a), frame(rows_b), metric="fbiou", n_boot=200, seed=0)
    assert row["metric"] == "fbiou" and row["a"] == "dsmfnet-default resnet18 synthetic 1-shot"
    assert float(row["p_ttest"]) == api.ttest.p and float(row["p_bootstrap"]) == api.bootstrap.p
    assert float(row["boot_ci_low"]) == api.bootstrap.ci_low and int(row["n_units"]) == 6
    assert main(["compare", str(run_a), str(run_b), "--bootstrap", "0", "--format", "json"]) == 0
    (document,) = json.loads(capsys.readouterr().out)
    assert document["bootstrap"] is None and len(document["units"]) == 6
    assert document["ttest"]["p"] == stats.compare_records(frame(rows_a), frame(rows_b), n_boot=0).ttest.p


def test_cli_compare_refuses_unpairable_runs_with_exit_code_2(tmp_path, capsys):
    rows_a = fake_records("dsmfnet", 0.6, folds=(0, 1, 2))
    rows_b = fake_records("panet", 0.5, folds=(0, 1, 2))
    for r in rows_b:
        if r["fold"] == 2:
            r["manifest_hash"] = manifest_hash(2, 1, 0, 1000)
    run_a, run_b = write_run(tmp_path / "a", rows_a), write_run(tmp_path / "b", rows_b)
    assert main(["compare", str(run_a), str(run_b)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "fold 2 episode_seed 0" in captured.err and "manifest" in captured.err
    assert main(["compare", str(run_a), str(run_b), str(run_b)]) == 2
    assert "quote it" in capsys.readouterr().err
    assert main(["compare", str(run_a), str(tmp_path / "nothing")]) == 2
    assert "no records.csv" in capsys.readouterr().err


def test_run_arguments_accept_folders_globs_and_lists(two_runs):
    run_a, *_ = two_runs
    by_folder = find_record_files(str(run_a))
    assert len(by_folder) == 6
    assert find_record_files(f"{run_a}/**/records.csv") == by_folder
    assert find_record_files(",".join(map(str, by_folder[:2])) + f",{by_folder[0].parent}") == by_folder[:2]
    records = load_run(str(run_a))
    assert pd.api.types.is_string_dtype(records["manifest_hash"]) and records["fold"].dtype == np.int64
    assert records["source"].nunique() == 6
