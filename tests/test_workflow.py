"""The Snakemake workflow: dry-runs of the default and paper grids, and a tiny real end-to-end run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fsseg.report.artefacts import ARTEFACTS

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _dry_run(*args: str) -> str:
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "--cores", "2", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def _job_counts(output: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    if "Job stats:" not in output:
        return counts  # "Nothing to be done"
    lines = output.split("Job stats:")[1].splitlines()[3:]
    for line in lines:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        counts[parts[0]] = int(parts[1])
    return counts


def _planned_jobs(output: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, wildcards) of every job in a dry-run's output."""
    jobs: list[tuple[str, dict[str, str]]] = []
    for line in output.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.rstrip().endswith(":"):
            jobs.append((line.split()[1].rstrip(":"), {}))
        elif line.strip().startswith("wildcards:") and jobs:
            pairs = line.split(":", 1)[1].split(",")
            jobs[-1][1].update(dict(pair.strip().split("=", 1) for pair in pairs if "=" in pair))
    return jobs


def _job_files(output: str, rule: str) -> dict[str, list[str]]:
    """The ``input`` and ``output`` lists of the one job of ``rule`` in a dry-run's output."""
    lines = output.splitlines()
    heads = (["rule", f"{rule}:"], ["localrule", f"{rule}:"])
    start = next(i for i, line in enumerate(lines) if line.split()[:2] in heads)
    files: dict[str, list[str]] = {}
    for line in lines[start + 1 :]:
        if not line.startswith("    "):
            break
        key, _, value = line.strip().partition(": ")
        files[key] = value.split(", ")
    return files


@pytest.mark.slow
def test_report_targets_inputs_and_captions_come_from_the_artefact_declaration():
    from fsseg.report.artefacts import html_caption
    from fsseg.report.spec import MIN_UNITS_TO_MARK

    plan = _dry_run("--configfile", "config/tiny.yaml", "--forceall")
    report = _job_files(plan, "report")
    declared = {f"reports-tiny/synthetic/{path}" for item in ARTEFACTS for path in item.files()}
    assert set(report["output"]) == declared
    assert declared <= set(_job_files(plan, "all")["input"])  # the targets of `rule all`
    # the training curves' inputs: every run's train_summary.json (its train_log.jsonl beside it)
    trained = {path for path in report["input"] if path.endswith("/train_summary.json")}
    assert len(trained) == _job_counts(plan)["train"]
    assert "results-tiny/synthetic/aggregate/diagnostics.csv" in report["input"]
    for item in ARTEFACTS:  # the HTML report's captions, written from the declaration at plan time
        caption = REPO / ".snakemake" / "fsseg_report_captions" / f"{item.name}.rst"
        assert caption.read_text() == html_caption(item, 0.05, MIN_UNITS_TO_MARK)


@pytest.mark.slow
def test_paper_config_plans_the_full_grid_without_data():
    counts = _job_counts(_dry_run("--configfile", "config/paper.yaml"))
    # 3 datasets × (5 methods × 3 folds × 2 train shots × 5 seeds + 7 ablations × 3 folds × 2 × 5)
    assert counts["train"] == 3 * (5 * 3 * 2 * 5 + 7 * 3 * 2 * 5)
    # one evaluate job per run: every test shot × episode seed in one process
    assert counts["evaluate"] == counts["train"]
    assert counts["prepare"] == 3 and counts["report"] == 3


@pytest.mark.slow
def test_paper_protocols_plan_apart_with_their_samplers_backbones_and_sizes():
    """Protocol H (config/paper.yaml) tests every pair ('nall' manifests); protocol B
    (config/paper_protocolB.yaml) 1000 episodes, under its own results folder; PANet at 417 px on
    VGG-16, PFENet and DSMF-Net on the deep-stem ResNet-50; HSNet (protocol H) on torchvision's
    ResNet-50, BAM (protocol B) on the deep-stem one with one base-learner job per fold."""
    h = _dry_run("--configfile", "config/paper.yaml")
    h_jobs = _planned_jobs(h)
    assert {w["n_episodes"] for r, w in h_jobs if r == "manifests"} == {"all"}
    backbones = {(w["method"], w["backbone"]) for r, w in h_jobs if r == "train"}
    assert backbones == {
        ("colour_floor", "resnet50"),
        ("panet", "vgg16"),
        ("pfenet", "resnet50_deep"),
        ("dsmfnet", "resnet50_deep"),
        ("hsnet", "resnet50"),
    }
    b = _dry_run("--configfile", "config/paper_protocolB.yaml")
    counts = _job_counts(b)
    assert counts["train"] == 5 * 3 * 2 * 5 + 7 * 3 * 2 * 5 and counts["report"] == 1
    assert counts["base_learner"] == 3  # one per fold, shared by BAM's seeds and shots
    b_backbones = {(w["method"], w["backbone"]) for r, w in _planned_jobs(b) if r == "train"}
    assert ("bam", "resnet50_deep") in b_backbones and not any(m == "hsnet" for m, _ in b_backbones)
    assert {w["n_episodes"] for r, w in _planned_jobs(b) if r == "manifests"} == {"1000"}
    assert "results/protocol_B/isaid5i/" in b and "reports/protocol_B/isaid5i/" in b


@pytest.mark.slow
def test_default_config_plans_every_stage():
    counts = _job_counts(_dry_run("--forceall"))
    stages = ("prepare", "pretrain", "train", "manifests", "evaluate", "bench", "predict", "aggregate")
    for rule in (*stages, "report"):
        assert counts.get(rule, 0) > 0, rule
    # one backbone on the auxiliary classes for every fold; one evaluation process per trained run
    assert counts["pretrain"] == 1
    assert counts["evaluate"] == counts["train"]


def test_a_method_with_a_base_learner_gets_one_per_fold_shared_by_its_runs(tmp_path):
    """BAM in the tiny grid: one base-learner job per fold, an input of every BAM training of that fold."""
    text = (REPO / "config/tiny.yaml").read_text()
    assert "    dsmfnet: [default]\n" in text
    config = tmp_path / "tiny_bam.yaml"
    with_bam = text.replace("    dsmfnet: [default]\n", "    dsmfnet: [default]\n    bam: [default]\n")
    config.write_text(with_bam)
    output = _dry_run("--forceall", "--configfile", str(config))
    assert _job_counts(output)["base_learner"] == 2  # folds 0 and 1, for both train seeds
    jobs = _planned_jobs(output)
    learners = {w["fold"] for rule, w in jobs if rule == "base_learner" and w["method"] == "bam"}
    assert learners == {"0", "1"}
    trainings = [block.split("\n[")[0] for block in output.split("\nrule train:")[1:]]
    assert any("method=bam" in job for job in trainings)
    for job in trainings:
        inputs = job.split("\n", 2)[1]
        assert ("base_learners/bam/" in inputs) == ("method=bam," in job), job[:400]


@pytest.mark.slow
@pytest.mark.workflow
def test_tiny_workflow_runs_end_to_end_and_reruns_nothing(tmp_path):
    """A real run of every rule on config/tiny.yaml, in a copy of the repo's workflow files."""
    for name in ("Snakefile", "workflow", "config"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    run = [*SNAKEMAKE, "--cores", "2", "--configfile", "config/tiny.yaml"]
    result = subprocess.run(run, cwd=tmp_path, capture_output=True, text=True, timeout=1500)
    assert result.returncode == 0, result.stderr[-5000:]
    reports = tmp_path / "reports-tiny" / "synthetic"
    for item in ARTEFACTS:
        for path in item.files():
            assert (reports / path).stat().st_size > 0, path
    assert "FB-IoU" in (reports / "tables" / "main_fbiou.md").read_text()

    again = subprocess.run([*run, "-n"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert "Nothing to be done" in again.stdout + again.stderr

    # changing one method's config reruns that method's jobs (and the aggregate/report) only
    changed = [*run, "-n", "--config", 'method_overrides={panet: ["train.iterations=3"]}']
    plan = subprocess.run(changed, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert plan.returncode == 0, plan.stderr[-3000:]
    jobs = _planned_jobs(plan.stdout)
    per_run = [(rule, w) for rule, w in jobs if rule in ("train", "evaluate", "bench", "predict")]
    assert {rule for rule, _ in per_run} >= {"train", "evaluate"}, jobs
    assert all(w.get("method") == "panet" for _, w in per_run), per_run
    assert sum(rule == "train" for rule, _ in per_run) == 4  # 2 folds × 2 seeds
    others = {rule for rule, _ in jobs} - {"train", "evaluate", "bench", "predict"}
    assert others <= {"aggregate", "report", "all"}, others

    # a file deleted from an evaluation folder stops the plan, naming the file and the run's index to
    # delete; deleting that index reruns only that run's evaluations and what reads them
    pattern = "synthetic/panet-default/*/fold0/shot1/seed0/eval/*/summary.json"
    summaries = sorted((tmp_path / "results-tiny").glob(pattern))
    summaries[0].unlink()
    plan = subprocess.run([*run, "-n"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    index = next(summaries[0].parents[1].glob("evaluated_n*.json"))
    assert plan.returncode != 0
    message = plan.stdout + plan.stderr
    assert str(summaries[0].relative_to(tmp_path)) in message
    assert f"delete {index.relative_to(tmp_path)}" in message
    index.unlink()
    plan = subprocess.run([*run, "-n"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    counts = _job_counts(plan.stdout)
    assert counts.get("evaluate") == 1 and counts.get("aggregate") == 1 and "train" not in counts, counts
