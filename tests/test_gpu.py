"""CUDA checks (marker ``gpu``): skipped, not failed, on a machine without a CUDA device, so CI never
depends on one. On a GPU machine: ``pytest -m gpu -v`` (``ci/gpu-check.sh`` runs them with the GPU bench).

* every trainable method of the default grid (PANet, PFENet, DSMF-Net, HSNet, BAM with its base learner)
  trains and is evaluated with its diagnostics on CUDA, in fp32 and in bf16 with channels-last;
* a backbone pretraining on CUDA;
* a training killed after its checkpoint resumes on CUDA and ends where an unbroken one does;
* evaluation on CUDA is deterministic (two runs, the same records);
* fp32 on CUDA is IEEE fp32, not TF32 (a convolution and a matrix product against float64);
* the same trained weights evaluated on the CPU (fp32) and on CUDA (fp32, and bf16 + channels-last):
  class mIoU within the bf16 tolerance of the learning check, and identical episodes;
* ``fsseg bench`` rows on CUDA (fp32, bf16, channels-last) with the GPU named.

``FSSEG_GPU_TESTS_ON=cpu pytest -m gpu`` runs the same checks on the CPU instead: a dry run that keeps
this file from going stale on machines without a GPU (it says nothing about CUDA).
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from fsseg.config import load_config
from fsseg.device import describe_device
from fsseg.efficiency import BENCH_OVERRIDES, bench_config
from fsseg.engine.base_learner import train_base_learner
from fsseg.engine.build import build_method
from fsseg.engine.evaluate import evaluate
from fsseg.engine.pretrain import pretrain_backbone
from fsseg.engine.train import CHECKPOINT, MODEL, SUMMARY, train
from fsseg.numerics import Numerics
from fsseg.records import read_records
from tests.resume import killed_and_resumed

DEVICE = torch.device(os.environ.get("FSSEG_GPU_TESTS_ON", "cuda"))
ON = DEVICE.type

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device on this machine"
    ),
]

BF16_TOLERANCE_POINTS = 0.5  # as tests/test_learning.py

# Each method at the toy size, with the settings its default-grid entry needs to build there.
METHODS = {
    "panet": (),
    "pfenet": ("method.params.reduce_dim=16", "method.params.prior_gain=100"),
    "dsmfnet": ("method.params.reduce_dim=16",),
    "hsnet": (),
    "bam": ("method.params.reduce_dim=8", "base_learner.iterations=2", "base_learner.batch_size=2"),
}


def _summary(out):
    return json.loads((out / "summary.json").read_text())


def _on_device(*overrides: str) -> tuple[str, ...]:
    return (
        f"train.device={ON}",
        f"eval.device={ON}",
        f"pretrain.device={ON}",
        f"base_learner.device={ON}",
        *overrides,
    )


@pytest.mark.parametrize("numerics", [("fp32", "false"), ("bf16", "true")], ids=["fp32", "bf16_cl"])
@pytest.mark.parametrize("method", sorted(METHODS))
def test_training_and_evaluation_with_diagnostics_run_on_the_device(toy_config, method, numerics):
    precision, channels_last = numerics
    cfg = toy_config(
        *_on_device(
            f"method.name={method}",
            *METHODS[method],
            "train.iterations=4",
            f"train.precision={precision}",
            f"train.channels_last={channels_last}",
            f"eval.precision={precision}",
            f"eval.channels_last={channels_last}",
            f"base_learner.precision={precision}",
        )
    )
    if method == "bam":
        train_base_learner(cfg)
    run_dir = train(cfg)
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert summary["device"] == describe_device(DEVICE), summary["device"]
    weights = torch.load(run_dir / MODEL, weights_only=True)
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    out = evaluate(cfg, diagnose=True)
    result = _summary(out)
    assert result["device"] == describe_device(DEVICE)
    assert result["numerics"] == {"precision": precision, "channels_last": channels_last == "true"}
    assert 0.0 <= result["metrics"]["miou"] <= 1.0
    diagnostics = json.loads((out / "diagnostics.json").read_text())
    assert all(0.0 <= v <= 1.0 for v in diagnostics["scores"].values()), diagnostics["scores"]


def test_backbone_pretraining_runs_on_the_device_and_its_file_serves_a_cpu_job(toy_config, tmp_path):
    pretrain = ("pretrain.iterations=3", "pretrain.batch_size=2", "pretrain.precision=bf16")
    path = pretrain_backbone(toy_config(*_on_device(*pretrain)))
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["identity"]["pretrain"]["precision"] == "bf16"
    saved = torch.load(path, map_location="cpu", weights_only=True)["backbone"]
    assert all(torch.isfinite(t).all() for t in saved.values() if t.is_floating_point())
    # a training on the CPU builds its method on that backbone
    cpu_job = toy_config(*_on_device(*pretrain), "backbone.weights=fold_pretrained", "train.device=cpu")
    loaded = {k: v for k, v in build_method(cpu_job).state_dict().items() if k.startswith("backbone.")}
    for key, value in saved.items():
        if key.startswith("layer4."):  # PANet stops at layer3
            continue
        matches = [name for name in loaded if name.endswith("." + key)]
        assert len(matches) == 1, (key, matches)
        assert torch.equal(loaded[matches[0]], value), key


def test_a_killed_training_resumes_on_the_device(toy_config, tmp_path):
    """Checkpoint at 3, killed at 5, resumed: the log holds each iteration once and the weights are those
    of an unbroken run (bitwise on the CPU; on CUDA, whose backward passes of interpolation, adaptive
    pooling and the loss add in no fixed order, to a small tolerance)."""

    def left_by_the_kill(cfg):
        assert torch.load(cfg.run_dir / CHECKPOINT, weights_only=False)["iteration"] == 3

    common = _on_device("method.name=pfenet", *METHODS["pfenet"], "train.iterations=7")
    full, resumed = killed_and_resumed(toy_config, common, tmp_path, after_kill=left_by_the_kill)
    log = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in log] == list(range(1, 8))
    a = torch.load(full / MODEL, weights_only=True)
    b = torch.load(resumed / MODEL, weights_only=True)
    for key in a:
        if DEVICE.type == "cpu" or not a[key].is_floating_point():
            assert torch.equal(a[key], b[key]), key
        else:
            scale = a[key].abs().max().clamp_min(1e-6)
            assert (a[key] - b[key]).abs().max() / scale <= 1e-3, key


def test_evaluation_on_the_device_is_deterministic(toy_config, tmp_path):
    common = _on_device("method.name=pfenet", *METHODS["pfenet"], "train.iterations=3")
    cfg = toy_config(*common)
    train(cfg)
    again = tmp_path / "again"
    shutil.copytree(cfg.output_root, again)  # the same trained weights, evaluated a second time
    first = read_records(evaluate(cfg) / "records.csv")
    second = read_records(evaluate(toy_config(*common, f"output_root={again}")) / "records.csv")
    assert len(first) == 12 and first == second


def test_fp32_convolution_and_matrix_product_on_the_device_are_ieee_not_tf32():
    """TF32 rounds the inputs to 10 mantissa bits: a relative error of a few 1e-4 against float64 for
    sums this long. IEEE fp32 stays near 1e-6, or about 1e-5 where cuDNN picks a Winograd or FFT
    algorithm; 1e-4 separates the two."""
    Numerics("fp32").prepare(DEVICE, "eval.precision")
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 256, 33, 33, generator=generator, dtype=torch.float64)
    w = torch.randn(256, 256, 3, 3, generator=generator, dtype=torch.float64)
    a = torch.randn(512, 2048, generator=generator, dtype=torch.float64)
    b = torch.randn(2048, 512, generator=generator, dtype=torch.float64)
    for name, reference, ours in (
        (
            "conv2d",
            F.conv2d(x, w, padding=1),
            F.conv2d(x.float().to(DEVICE), w.float().to(DEVICE), padding=1),
        ),
        ("mm", a @ b, a.float().to(DEVICE) @ b.float().to(DEVICE)),
    ):
        relative = (ours.double().cpu() - reference).norm() / reference.norm()
        assert relative < 1e-4, (name, float(relative))


@pytest.mark.parametrize("method", ["panet", "pfenet"])
def test_device_evaluation_matches_the_cpu_on_the_same_weights(toy_config, tmp_path, method):
    common = ("train.device=cpu", f"method.name={method}", *METHODS[method])
    train(toy_config(*common))
    scores = {}
    for name, sets in {
        "cpu": ["eval.device=cpu"],
        "device": [f"eval.device={ON}"],
        "device_bf16": [f"eval.device={ON}", "eval.precision=bf16", "eval.channels_last=true"],
    }.items():
        out = evaluate(toy_config(*common, *sets))
        scores[name] = (_summary(out)["metrics"]["miou"], read_records(out / "records.csv"))
    cpu_miou, cpu_records = scores["cpu"]
    for name in ("device", "device_bf16"):
        miou, records = scores[name]
        assert [r["episode_id"] for r in records] == [r["episode_id"] for r in cpu_records]
        assert abs(100 * (miou - cpu_miou)) <= BF16_TOLERANCE_POINTS, (name, miou, cpu_miou)


def test_bench_on_the_device_names_it(toy_config):
    cfg = load_config(base=toy_config().to_dict(), overrides=list(BENCH_OVERRIDES))
    rows = bench_config(
        cfg,
        sizes=[64],
        shots=[1],
        device=DEVICE,
        batch_size=1,
        warmup=1,
        repeats=2,
        amp_bf16=True,
        channels_last=True,
    )
    modes = {("bf16" if r["amp_bf16"] else "fp32") + ("+cl" if r["channels_last"] else "") for r in rows}
    assert {"fp32", "bf16", "fp32+cl", "bf16+cl"} <= modes
    assert all(r["device_type"] == DEVICE.type and r["device"] == describe_device(DEVICE) for r in rows)
    if DEVICE.type == "cuda":
        assert all(torch.cuda.get_device_name(0) in r["device"] for r in rows)
        assert all(r["peak_memory_kind"] == "cuda_max_memory_allocated" for r in rows)
    assert all(r["latency_ms_median"] > 0 for r in rows)
