"""CUDA checks (marker ``gpu``): skipped, not failed, on a machine without a CUDA device, so CI never
depends on one. On a GPU machine: ``pytest -m gpu -v``.

* a tiny training and evaluation on CUDA in fp32 and in bf16 with channels-last;
* the same trained weights evaluated on the CPU (fp32) and on CUDA (fp32, and bf16 + channels-last):
  class mIoU within the bf16 tolerance of the learning check, and identical episodes;
* ``fsseg bench`` rows on CUDA (fp32, bf16, channels-last) with the GPU named.
"""

from __future__ import annotations

import json

import pytest
import torch

from fsseg.config import load_config
from fsseg.efficiency import BENCH_OVERRIDES, bench_config
from fsseg.engine.evaluate import evaluate
from fsseg.engine.train import train
from fsseg.records import read_records

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"),
]

BF16_TOLERANCE_POINTS = 0.5  # as tests/test_learning.py


def _summary(out):
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("numerics", [("fp32", "false"), ("bf16", "true")])
def test_cuda_training_and_evaluation_run(toy_config, numerics):
    precision, channels_last = numerics
    cfg = toy_config(
        "train.iterations=6",
        "train.device=cuda",
        "eval.device=cuda",
        f"train.precision={precision}",
        f"train.channels_last={channels_last}",
        f"eval.precision={precision}",
        f"eval.channels_last={channels_last}",
    )
    run_dir = train(cfg)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["device"].startswith("cuda"), summary["device"]
    out = _summary(evaluate(cfg))
    assert out["device"].startswith("cuda")
    assert out["numerics"] == {"precision": precision, "channels_last": channels_last == "true"}
    assert 0.0 <= out["metrics"]["miou"] <= 1.0


def test_cuda_evaluation_matches_the_cpu_on_the_same_weights(toy_config, tmp_path):
    train(toy_config("train.iterations=6", "train.device=cpu"))
    scores = {}
    for name, sets in {
        "cpu": ["eval.device=cpu"],
        "cuda": ["eval.device=cuda"],
        "cuda_bf16": ["eval.device=cuda", "eval.precision=bf16", "eval.channels_last=true"],
    }.items():
        cfg = toy_config("train.iterations=6", "train.device=cpu", *sets)
        out = evaluate(cfg)
        scores[name] = (_summary(out)["metrics"]["miou"], read_records(out / "records.csv"))
    cpu_miou, cpu_records = scores["cpu"]
    for name in ("cuda", "cuda_bf16"):
        miou, records = scores[name]
        assert [r["episode_id"] for r in records] == [r["episode_id"] for r in cpu_records]
        assert abs(100 * (miou - cpu_miou)) <= BF16_TOLERANCE_POINTS, (name, miou, cpu_miou)


def test_bench_on_cuda_names_the_gpu(toy_config):
    cfg = load_config(base=toy_config().to_dict(), overrides=list(BENCH_OVERRIDES))
    rows = bench_config(
        cfg, sizes=[64], shots=[1], device=torch.device("cuda"), batch_size=1, warmup=1, repeats=2,
        amp_bf16=True, channels_last=True,
    )
    modes = {("bf16" if r["amp_bf16"] else "fp32") + ("+cl" if r["channels_last"] else "") for r in rows}
    assert {"fp32", "bf16", "fp32+cl", "bf16+cl"} <= modes
    assert all(r["device_type"] == "cuda" and torch.cuda.get_device_name(0) in r["device"] for r in rows)
    assert all(r["latency_ms_median"] > 0 for r in rows)
