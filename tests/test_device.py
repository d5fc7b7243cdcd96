"""Device choice: the GPU a scheduler hands a job (CUDA_VISIBLE_DEVICES), else the CPU. CPU-only tests."""

from __future__ import annotations

import json

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
