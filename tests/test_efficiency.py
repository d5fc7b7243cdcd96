"""Efficiency measurement: parameter and FLOP counts, latency/memory keys, the `fsseg bench` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fsseg.cli import main
from fsseg.efficiency import count_parameters, measure_efficiency, percentile, synthetic_episode
from fsseg.method import BackboneSpec, Batch, FewShotMethod
from fsseg_methods.panet.model import PANet, PANetParams

FAST = {"warmup": 1, "repeats": 2}


class TwoConvNet(FewShotMethod):
    """conv 3→8 (3×3, padding 1) and conv 8→2 (1×1) on every image; one never-used 1×1 conv."""

    def __init__(self) -> None:
        super().__init__(None, BackboneSpec())
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 2, 1)
        self.unused = nn.Conv2d(2, 5, 1)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        images = torch.cat([batch["support_imgs"].flatten(0, 1), batch["query_img"]])
        out = self.conv2(F.relu(self.conv1(images)))
        return {"logits": out[-batch["query_img"].shape[0] :]}


def conv_flops(c_in: int, c_out: int, k: int, h: int, w: int) -> int:
    return 2 * c_in * c_out * k * k * h * w


@pytest.mark.parametrize(("size", "shot", "batch_size"), [(16, 1, 1), (20, 3, 2)])
def test_flops_of_a_small_conv_net_match_the_analytic_count(size, shot, batch_size):
    result = measure_efficiency(TwoConvNet(), size, shot, "cpu", batch_size=batch_size, **FAST)
    images_per_episode = shot + 1  # supports and the query all pass through both convs
    expected = images_per_episode * (conv_flops(3, 8, 3, size, size) + conv_flops(8, 2, 1, size, size))
    assert result["flops_per_episode"] == expected
    assert result["flops_by_operator"] == {"aten.convolution": expected * batch_size}
    assert result["gflops_per_episode"] == pytest.approx(expected / 1e9)


def test_parameter_counts_total_trainable_used():
    net = TwoConvNet()
    net.conv1.requires_grad_(False)
    conv1, conv2, unused = (
        sum(p.numel() for p in m.parameters()) for m in (net.conv1, net.conv2, net.unused)
    )
    assert count_parameters(net) == (conv1 + conv2 + unused, conv2 + unused)
    result = measure_efficiency(net, 8, 1, "cpu", **FAST)
    assert result["params_total"] == conv1 + conv2 + unused
    assert result["params_trainable"] == conv2 + unused
    assert result["params_used"] == conv1 + conv2


def test_panet_measurement_has_every_key_positive_and_restores_training_mode():
    torch.manual_seed(0)
    method = PANet(PANetParams(), BackboneSpec(name="resnet18"))
    method.train()
    result = measure_efficiency(method, 32, 1, "cpu", **FAST)
    assert method.training
    for key in (
        "params_total",
        "params_trainable",
        "params_used",
        "flops_per_episode",
        "gflops_per_episode",
        "latency_ms_median",
        "latency_ms_p90",
        "latency_ms_min",
        "fps",
        "num_threads",
        "image_size",
        "shot",
    ):
        assert result[key] > 0, key
    assert len(result["latency_ms"]) == 2
    assert result["latency_ms_p90"] >= result["latency_ms_median"] >= result["latency_ms_min"]
    assert result["fps"] == pytest.approx(1000.0 / result["latency_ms_median"])
    assert result["params_used"] <= result["params_total"]
    assert result["device"].startswith("cpu") and result["torch_version"] == torch.__version__
    assert (result["image_size"], result["shot"], result["amp_bf16"], result["channels_last"]) == (
        32,
        1,
        False,
        False,
    )
    assert result["peak_memory_kind"] in {
        "cpu_peak_rss_growth",
        "cpu_peak_rss_growth_lower_bound",
        "unavailable",
    }
    if result["peak_memory_kind"] != "unavailable":
        assert result["peak_memory_mb"] >= 0 and result["memory_baseline_mb"] > 0
    json.dumps(result)  # serialisable as it is


def test_frozen_backbone_has_fewer_trainable_than_total_parameters():
    frozen = PANet(PANetParams(), BackboneSpec(name="resnet18", train_mode="frozen"))
    total, trainable = count_parameters(frozen)
    assert trainable < total
    result = measure_efficiency(frozen, 32, 1, "cpu", **FAST)
    assert result["params_trainable"] < result["params_total"] == total


def test_bf16_and_channels_last_are_options_that_do_not_change_the_flops():
    plain = measure_efficiency(TwoConvNet(), 16, 2, "cpu", **FAST)
    both = measure_efficiency(TwoConvNet(), 16, 2, "cpu", amp_bf16=True, channels_last=True, **FAST)
    assert (plain["amp_bf16"], plain["channels_last"]) == (False, False)
    assert (both["amp_bf16"], both["channels_last"]) == (True, True)
    assert both["flops_per_episode"] == plain["flops_per_episode"]


def test_synthetic_episode_has_the_batch_contract_and_a_foreground_blob():
    batch = synthetic_episode(24, 3, batch_size=2)
    assert batch["query_img"].shape == (2, 3, 24, 24)
    assert batch["support_imgs"].shape == (2, 3, 3, 24, 24)
    assert batch["support_masks"].shape == (2, 3, 24, 24) and batch["support_masks"].dtype == torch.long
    for mask in batch["support_masks"].flatten(0, 1):
        fraction = mask.float().mean().item()
        assert 0.1 < fraction < 0.4 and set(mask.unique().tolist()) == {0, 1}
    again = synthetic_episode(24, 3, batch_size=2)
    assert torch.equal(batch["query_img"], again["query_img"])


def test_percentile_interpolates_linearly():
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([10.0, 0.0], 90) == pytest.approx(9.0)
    assert percentile([7.0], 90) == 7.0


def test_bench_cli_prints_a_table_and_writes_json(toy_root: Path, tmp_path: Path, capsys, monkeypatch):
    from tests.toy_dataset import ToyDataset

    # The parser adds a `prepare` sub-command per registered dataset; the test-only toy one has none.
    if not hasattr(ToyDataset, "add_prepare_arguments"):
        monkeypatch.setattr(
            ToyDataset, "add_prepare_arguments", classmethod(lambda cls, parser: None), raising=False
        )
    config = tmp_path / "bench.yaml"
    # fold_pretrained needs a pretrained file that does not exist: bench must not need it.
    config.write_text(
        f"output_root: {tmp_path / 'results'}\n"
        f"dataset: {{name: toy, root: {toy_root}, image_size: 32}}\n"
        "backbone: {name: resnet18, weights: fold_pretrained, train_mode: frozen}\n"
        "method: {name: panet}\n"
    )
    out = tmp_path / "bench" / "panet.json"
    argv = ["bench", "-c", str(config), "--sizes", "24", "32", "--shots", "1", "2", "--warmup", "1"]
    code = main([*argv, "--repeats", "2", "--device", "cpu", "--out", str(out)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    for column in ("method", "variant", "backbone", "size", "shot", "GFLOPs", "median", "FPS", "peak"):
        assert column in header
    rows = [line.split() for line in lines[1:5]]
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("panet", "default", "resnet18", size, shot) for size in ("24", "32") for shot in ("1", "2")
    ]
    document = json.loads(out.read_text())
    assert document["config"]["backbone"]["weights"] == "none"
    results = document["results"]
    assert len(results) == 4
    assert all(r["params_trainable"] < r["params_total"] for r in results)
    assert all(r["method"] == "panet" and r["backbone_train_mode"] == "frozen" for r in results)
    assert results[2]["flops_per_episode"] > results[0]["flops_per_episode"]  # 32 px costs more than 24 px
