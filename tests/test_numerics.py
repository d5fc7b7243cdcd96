"""Precision and memory layout (fsseg/numerics.py) as training, evaluation and pretraining use them."""

import json

import pytest
import torch
from torch import nn

from fsseg.engine.build import run_id
from fsseg.engine.evaluate import evaluate
from fsseg.engine.pretrain import pretrain_backbone
from fsseg.engine.train import MODEL, train
from fsseg.errors import ConfigError
from fsseg.numerics import Numerics, cpu_has_native_bf16, use_ieee_fp32


def test_cpu_bf16_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n")
    assert cpu_has_native_bf16(info) is True
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert cpu_has_native_bf16(info) is False
    assert cpu_has_native_bf16(tmp_path / "missing") is None


def test_bf16_on_cuda_needs_a_card_with_native_bf16(monkeypatch):
    """Compute capability 8.0 or later; torch.cuda.is_bf16_supported() would also pass a V100 or a T4,
    where bf16 is emulated."""
    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    with pytest.raises(ConfigError, match=r"config.eval.precision: .*Tesla V100 \(compute capability 7.0\)"):
        Numerics("bf16").check(cuda, "eval.precision")
    assert Numerics("fp32").check(cuda, "eval.precision") is None
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))
    assert Numerics("bf16").check(cuda, "eval.precision") is None


def test_fp32_on_cuda_is_ieee_not_tf32(monkeypatch):
    """cuDNN convolutions default to TF32 on Ampere and later; fsseg's fp32 turns it off on CUDA and
    leaves the switches alone for a CPU job."""
    switches = (torch.backends.cudnn, torch.backends.cuda.matmul)
    before = [switch.allow_tf32 for switch in switches]  # process-wide: put back afterwards
    try:
        for switch in switches:
            switch.allow_tf32 = True
        use_ieee_fp32(torch.device("cpu"))
        assert all(switch.allow_tf32 for switch in switches)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
        Numerics("bf16").prepare(torch.device("cuda", 0), "train.precision")
        assert not any(switch.allow_tf32 for switch in switches)
    finally:
        for switch, value in zip(switches, before, strict=True):
            switch.allow_tf32 = value


def test_bf16_autocast_and_channels_last_change_what_a_convolution_computes_in():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    with Numerics("fp32").autocast(torch.device("cpu")):
        assert conv(x).dtype == torch.float32
    with Numerics("bf16").autocast(torch.device("cpu")):
        y = conv(x)
    assert y.dtype == torch.bfloat16
    assert torch.allclose(y.float(), conv(x), atol=0.1)  # bf16 keeps about 3 significant digits
    Numerics("fp32", channels_last=True).apply(conv)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert conv(x).is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ConfigError, match="fp16"):
        Numerics("fp16")


def test_training_precision_is_part_of_the_run_and_evaluation_records_its_own(toy_config):
    fp32 = toy_config("train.iterations=2")
    bf16 = toy_config("train.iterations=2", "train.precision=bf16", "train.channels_last=true")
    assert run_id(fp32) != run_id(bf16)
    run_dir = train(bf16)
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["numerics"] == "bf16, channels-last"
    weights = torch.load(run_dir / MODEL, weights_only=True)
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
    # the same weights evaluated in fp32 and in bf16: each summary says how it was computed
    out32 = evaluate(bf16)
    s32 = json.loads((out32 / "summary.json").read_text())
    assert s32["numerics"] == {"precision": "fp32", "channels_last": False}
    cfg16 = toy_config("train.iterations=2", "train.precision=bf16", "train.channels_last=true",
                       "eval.precision=bf16")
    assert run_id(cfg16) == run_id(bf16)  # evaluation settings are not part of the training identity
    s16 = json.loads((evaluate(cfg16) / "summary.json").read_text())
    assert s16["numerics"] == {"precision": "bf16", "channels_last": False}
    assert s16["n_test_episodes"] == s32["n_test_episodes"]


def test_a_backbone_pretrained_with_other_settings_is_not_reused(toy_config, tmp_path):
    common = ("backbone.weights=none", "pretrain.iterations=2", "pretrain.batch_size=2",
              f"output_root={tmp_path}/pre")
    first = pretrain_backbone(toy_config(*common))
    meta = json.loads(first.with_suffix(".json").read_text())
    assert meta["identity"]["pretrain"]["precision"] == "fp32"
    assert pretrain_backbone(toy_config(*common)) == first  # same settings: reused
    with pytest.raises(ConfigError, match=r"pretrain\.precision"):
        pretrain_backbone(toy_config(*common, "pretrain.precision=bf16"))
    # runs on a pretrained backbone carry its settings in their identity
    a = toy_config("backbone.weights=fold_pretrained")
    b = toy_config("backbone.weights=fold_pretrained", "pretrain.iterations=3")
    c = toy_config("backbone.weights=none", "pretrain.iterations=3")
    assert run_id(a) != run_id(b)
    assert run_id(c) == run_id(toy_config("backbone.weights=none"))
