from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.toy_dataset import make_toy_dataset

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_toy_dataset(tmp_path_factory.mktemp("toy"))


@pytest.fixture
def toy_config(toy_root: Path, tmp_path: Path):
    """A config for fast runs on the toy dataset: PANet, ResNet-18, 32-px images, a few iterations.

    Every job runs on the CPU, also on a machine with a GPU (``auto`` would take it): the fast suite's
    claims (bitwise-equal weights, recorded devices) are CPU claims; tests/test_gpu.py overrides the
    devices it checks.
    """
    from fsseg.config import load_config

    def make(*overrides: str):
        base = {
            "dataset": {"name": "toy", "root": str(toy_root), "image_size": 32},
            "output_root": str(tmp_path / "results"),
            "method": {"name": "panet"},
            "train": {
                "iterations": 6,
                "batch_size": 2,
                "checkpoint_every": 3,
                "log_every": 1,
                "device": "cpu",
            },
            "eval": {"n_episodes": 12, "batch_size": 4, "device": "cpu"},
            "pretrain": {"device": "cpu"},
            "base_learner": {"device": "cpu"},
        }
        return load_config(base=base, overrides=list(overrides))

    return make
