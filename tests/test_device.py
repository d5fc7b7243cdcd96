"""Device choice: the GPU a scheduler hands a job (CUDA_VISIBLE_DEVICES), else the CPU. CPU-only tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fsseg.device import describe_device, resolve_device
from fsseg.engine.evaluate import evaluate
from fsseg.engine.train import SUMMARY, train
from fsseg.errors import ConfigError


def test_auto_uses_the_first_gpu_the_scheduler_made_visible(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")  # e.g. SLURM gave this job physical GPU 3
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert "using cuda:0, the first GPU of CUDA_VISIBLE_DEVICES='3'" in capsys.readouterr().err


def test_auto_falls_back_to_the_cpu_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert resolve_device("auto") == torch.device("cpu")
    err = capsys.readouterr().err
    assert "no CUDA device available (CUDA_VISIBLE_DEVICES='')" in err and "running on the CPU" in err
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert resolve_device("auto") == torch.device("cpu")
    assert "fsseg: no CUDA device available; running on the CPU" in capsys.readouterr().err


def test_explicit_devices_are_checked(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not a device name"):
        resolve_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no CUDA device is available"):
        resolve_device("cuda:0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    visible_one = r"only 1 CUDA device\(s\) are visible \(CUDA_VISIBLE_DEVICES='5'\)"
    with pytest.raises(ConfigError, match=visible_one):
        resolve_device("cuda:1")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def test_training_and_evaluation_record_their_device(toy_config):
    cfg = toy_config("train.iterations=1")
    run_dir = train(cfg)
    expected = describe_device(torch.device("cpu"))
    assert expected.startswith("cpu (")
    assert json.loads((run_dir / SUMMARY).read_text())["device"] == expected
    out = evaluate(cfg)
    assert json.loads((out / "summary.json").read_text())["device"] == expected


REPO = Path(__file__).resolve().parents[1]
GPU_CHECK = REPO / "ci" / "gpu-check.sh"


def _gpu_check(out: Path, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": python}
    env.pop("OUT", None)
    return subprocess.run(
        ["bash", str(GPU_CHECK), str(out)], capture_output=True, text=True, env=env, timeout=120, check=False
    )


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the script runs its whole check")
def test_gpu_check_script_stops_clearly_without_a_cuda_device(tmp_path):
    """ci/gpu-check.sh, the prepared GPU run: here it gets as far as its import check (this tree's
    packages through its link folder, not an installed copy elsewhere) and then refuses, exit 2."""
    done = _gpu_check(tmp_path / "out")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "gpu-check: error: no CUDA device is visible to torch" in done.stderr
    env = (tmp_path / "out" / "env.txt").read_text()
    for name, folder in (("fsseg", "fsseg"), ("fsseg_methods", "methods"), ("fsseg_datasets", "datasets")):
        assert f"{name}: {REPO / folder}\n" in env
    assert f"torch {torch.__version__}" in env
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["env.txt"]  # nothing measured


def test_gpu_check_script_refuses_a_used_folder_and_a_python_without_torch(tmp_path):
    used = tmp_path / "used"
    used.mkdir()
    (used / "earlier.json").write_text("{}")
    done = _gpu_check(used)
    assert done.returncode == 2
    assert f"output folder {used} is not empty" in done.stderr
    assert [p.name for p in used.iterdir()] == ["earlier.json"]  # left as it was
    bare = tmp_path / "python-without-site-packages"
    bare.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "$@"\n')
    bare.chmod(0o755)
    done = _gpu_check(tmp_path / "out", python=str(bare))
    assert done.returncode == 2
    assert "lacks torch" in done.stderr and "install them or set PYTHON" in done.stderr
