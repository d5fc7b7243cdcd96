"""Planning the workflow: no torch, the prepare step's arguments from the experiment config, the
cross-checks of workflow and experiment configs, and (slow) the time the paper grid takes to plan."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

# Loaded ahead of everything in the planning process: at exit it writes the torch modules it holds.
_RECORDER = """
import atexit, os, sys

def _report():
    with open(os.environ["FSSEG_TORCH_RECORD"], "w") as handle:
        handle.write("\\n".join(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))))

atexit.register(_report)
"""


def _plan(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Dry-run the workflow with ``args``; the result and the torch modules the plan imported."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_RECORDER)
    record = tmp_path / "torch_modules.txt"
    env = {**os.environ, "PYTHONPATH": str(site), "FSSEG_TORCH_RECORD": str(record)}
    result = subprocess.run(
        [*SNAKEMAKE, "-n", "-p", "--cores", "2", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert record.is_file(), "the recorder did not run: " + result.stderr[-2000:]
    return result, [m for m in record.read_text().splitlines() if m]


def _config_with(tmp_path: Path, **changes: object) -> str:
    """config/default.yaml with top-level sections updated (nested mappings merged one level)."""
    cfg = yaml.safe_load((REPO / "config/default.yaml").read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    path = tmp_path / "workflow.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def test_default_plan_imports_no_torch_and_derives_the_prepare_arguments(tmp_path):
    result, torch_modules = _plan(tmp_path, "--forceall")
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch_modules == []
    # dataset name, --root (dataset.root) and --image-size (dataset.image_size) from the experiment config,
    # then the workflow config's own arguments
    assert "fsseg prepare synthetic --root data/synthetic --image-size 64 --seed 0 >" in result.stdout
    # every job's --set arguments are the grid axes of its output path
    sets = "--set fold=0 --set train.shot=1 --set train.train_seed=0 --set method.name=pfenet "
    assert sets in result.stdout


def test_a_prepare_argument_the_experiment_fixes_is_refused(tmp_path):
    synthetic = {
        "experiment": "config/experiments/synthetic.yaml",
        "prepare": "--seed 0 --image-size 96",
        "pretrain_backbone": True,
    }
    result, _ = _plan(tmp_path, "--configfile", _config_with(tmp_path, datasets={"synthetic": synthetic}))
    assert result.returncode != 0
    assert (
        "datasets.synthetic.prepare: --image-size come(s) from the experiment config"
        in result.stdout + result.stderr
    )


def test_grid_episode_count_must_equal_the_experiments(tmp_path):
    result, _ = _plan(tmp_path, "--configfile", _config_with(tmp_path, grid={"n_episodes": 50}))
    assert result.returncode != 0
    assert (
        "grid.n_episodes is 50 but eval.n_episodes of config/experiments/synthetic.yaml"
        in result.stdout + result.stderr
    )


def test_an_unknown_variant_fails_the_plan(tmp_path):
    config = _config_with(tmp_path, ablations={"variants": ["gpml_graph"]})
    result, _ = _plan(tmp_path, "--configfile", config)
    assert result.returncode != 0
    assert "unknown variant 'gpml_graph' of 'dsmfnet'" in result.stdout + result.stderr


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


@pytest.mark.slow
def test_paper_plan_imports_no_torch_and_reports_its_time(tmp_path):
    """Prints the time `snakemake -n --configfile config/paper.yaml` takes (target: 5 s; measured, not
    asserted: the machine's load decides the wall time)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result, torch_modules = _plan(tmp_path, "--configfile", "config/paper.yaml")
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert torch_modules == []
    assert "fsseg prepare isaid5i --out data/isaid5i --root /path/to/iSAID_patches >" in result.stdout
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    load = os.getloadavg()[0]
    print(
        f"\nplan of config/paper.yaml: {wall:.1f} s wall, {cpu:.1f} s CPU on {_cpu_model()} "
        f"({os.cpu_count()} CPUs, load average {load:.1f})"
    )
