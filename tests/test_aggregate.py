"""``fsseg aggregate``: evaluation folders of the real engine (and hand-built ones) into one aggregate.

The helpers here (:func:`real_evaluations`, :func:`write_fake_evaluation`) are shared with
``tests/test_report.py``.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fsseg.aggregate import (
    EVALUATION_COLUMNS,
    EVALUATIONS_FILE,
    PROTOCOL_FILE,
    RECORDS_FILE,
    aggregate,
    load_aggregate,
)
from fsseg.atomic import write_json, write_yaml
from fsseg.cli import main
from fsseg.engine.evaluate import evaluate
from fsseg.errors import DataError, FssegError
from fsseg.metrics import summarize
from fsseg.records import RECORD_COLUMNS, read_records, write_records
from tests.toy_dataset import toy_config_maker

OUTPUTS = (EVALUATIONS_FILE, RECORDS_FILE, PROTOCOL_FILE)


def real_evaluations(
    make_config: Callable,
    folds=(0, 1),
    train_seeds=(0, 1),
    episode_seeds=(0, 1),
    method: str = "colour_floor",
) -> list[Path]:
    """Evaluation folders written by the real engine (the colour floor needs no training)."""
    folders = []
    for fold in folds:
        for train_seed in train_seeds:
            for episode_seed in episode_seeds:
                cfg = make_config(
                    f"method.name={method}",
                    f"fold={fold}",
                    f"train.train_seed={train_seed}",
                    f"eval.episode_seed={episode_seed}",
                )
                folders.append(evaluate(cfg))
    return folders


def write_fake_evaluation(
    out: Path,
    cfg,
    records: list[dict],
    novel_classes: list[int],
    class_names: dict[int, str],
) -> Path:
    """An evaluation folder in the layout ``fsseg evaluate`` writes, from hand-made records."""
    metrics = summarize(records, novel_classes)
    metrics["class_iou_by_name"] = {class_names[int(c)]: v for c, v in metrics["class_iou"].items()}
    first = records[0]
    summary = {
        "run_id": first["run_id"],
        "method": cfg.method.name,
        "variant": cfg.method.variant,
        "dataset": cfg.dataset.name,
        "fold": cfg.fold,
        "train_shot": cfg.train.shot,
        "shot": cfg.eval.shot,
        "train_seed": cfg.train.train_seed,
        "episode_seed": cfg.eval.episode_seed,
        "manifest_hash": first["manifest_hash"],
        "image_size": cfg.dataset.image_size,
        "label_resolution": cfg.dataset.label_resolution,
        "device": "cpu (2 threads)",
        "metrics": metrics,
        "timing": {"wall_seconds": 1.0, "model_seconds": 0.5, "model_ms_per_episode": 2.0},
    }
    write_records(out / "records.csv", records)
    write_yaml(out / "config.yaml", cfg.to_dict())
    write_json(out / "summary.json", summary)
    return out


def _read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.fixture(scope="module")
def real_folders(toy_root, tmp_path_factory):
    """Colour-floor evaluations: 2 folds × 2 train seeds × 2 episode seeds, 12 episodes each."""
    make = toy_config_maker(toy_root, tmp_path_factory.mktemp("real_evals") / "results")

    return make, real_evaluations(make)


def test_aggregate_of_real_evaluations_has_one_row_per_folder_and_every_record(real_folders, tmp_path):
    _, folders = real_folders
    aggregate(folders, tmp_path / "agg")
    rows = _read_csv(tmp_path / "agg" / EVALUATIONS_FILE)
    header = next(csv.reader([(tmp_path / "agg" / EVALUATIONS_FILE).read_text().splitlines()[0]]))
    assert tuple(header[: len(EVALUATION_COLUMNS)]) == EVALUATION_COLUMNS
    assert header[len(EVALUATION_COLUMNS) :] == [f"iou__{c}" for c in "abcdef"]  # class-id order
    assert len(rows) == len(folders) == 8

    by_dir = {row["eval_dir"]: row for row in rows}
    for folder in folders:
        summary = json.loads((folder / "summary.json").read_text())
        row = by_dir[str(folder)]
        for key in ("run_id", "method", "variant", "dataset", "manifest_hash", "label_resolution", "device"):
            assert row[key] == str(summary[key])
        for key in ("fold", "train_shot", "shot", "train_seed", "episode_seed", "image_size"):
            assert int(row[key]) == summary[key]
        for key in ("miou", "fbiou", "episode_miou"):
            assert float(row[key]) == summary["metrics"][key]  # full precision, no rounding
        assert int(row["n_episodes"]) == 12 and row["backbone"] == "resnet18"
        assert row["run_dir"] == str(folder.parent.parent)
        assert float(row["model_ms_per_episode"]) == summary["timing"]["model_ms_per_episode"]
        for name, value in summary["metrics"]["class_iou_by_name"].items():
            assert float(row[f"iou__{name}"]) == value
        scored = {c for c in "abcdef" if row[f"iou__{c}"] != ""}
        assert scored == set(summary["metrics"]["class_iou_by_name"])

    with gzip.open(tmp_path / "agg" / RECORDS_FILE, "rt") as handle:
        text = handle.read()
    lines = text.splitlines()
    assert lines[0] == ",".join(RECORD_COLUMNS)
    assert len(lines) == 1 + 8 * 12
    expected = sorted(line for f in folders for line in (f / "records.csv").read_text().splitlines()[1:])
    assert sorted(lines[1:]) == expected  # records unchanged, byte for byte

    loaded = load_aggregate(tmp_path / "agg")
    assert len(loaded.evaluations) == 8 and len(loaded.records) == 96
    assert loaded.records["fg_union"].dtype == np.int64
    assert "source" not in loaded.records.columns


def test_aggregate_is_byte_identical_whatever_the_order_of_folders(real_folders, tmp_path):
    _, folders = real_folders
    aggregate(folders, tmp_path / "a")
    aggregate(list(reversed(folders)) + folders[:1], tmp_path / "b")  # a repeated folder counts once
    for name in OUTPUTS:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    raw = (tmp_path / "a" / RECORDS_FILE).read_bytes()
    assert raw[4:8] == b"\0\0\0\0"  # gzip mtime 0


def test_protocol_json_states_the_protocol_facts(real_folders, tmp_path):
    _, folders = real_folders
    protocol = aggregate(folders, tmp_path / "agg")
    assert protocol == json.loads((tmp_path / "agg" / PROTOCOL_FILE).read_text())
    assert protocol["dataset"] == "toy" and protocol["dataset_options"] == {}
    assert protocol["n_episodes"] == 12 and protocol["eval_split"] == "test"
    assert protocol["episode_seeds"] == [0, 1] and protocol["train_seeds"] == [0, 1]
    assert protocol["folds"] == [0, 1] and protocol["shots"] == [1] and protocol["train_shots"] == [1]
    assert protocol["image_size"] == 32 and protocol["label_resolution"] == "original"
    assert protocol["train_filter"] == "none" and protocol["min_object_px"] == 0
    assert protocol["checkpoint_selection"] == {"selection": "last"}
    assert protocol["backbones"] == ["resnet18"] and protocol["backbone_weights"] == ["none"]
    assert protocol["runs"]["colour_floor-default"]["params"] == {"scale": 20.0}
    assert protocol["classes"] == {str(i + 1): c for i, c in enumerate("abcdef")}
    assert protocol["n_evaluations"] == 8


def test_folders_that_disagree_on_a_shared_protocol_fact_are_refused(real_folders, tmp_path):
    make, folders = real_folders
    odd = evaluate(
        make("method.name=colour_floor", "fold=1", "dataset.image_size=24", f"output_root={tmp_path}")
    )
    with pytest.raises(FssegError, match=r"image_size of colour_floor-default: 24 in .*; 32 in ") as info:
        aggregate([folders[0], odd], tmp_path / "agg")
    assert str(odd) in str(info.value) and str(folders[0]) in str(info.value)
    assert not (tmp_path / "agg").exists()


def test_the_same_evaluation_in_two_folders_is_refused(real_folders, tmp_path):
    _, folders = real_folders
    copy = tmp_path / "copy"
    shutil.copytree(folders[0], copy)
    with pytest.raises(FssegError, match="hold the same evaluation"):
        aggregate([folders[0], copy], tmp_path / "agg")


def test_truncated_records_are_refused(real_folders, tmp_path):
    _, folders = real_folders
    broken = tmp_path / "broken"
    shutil.copytree(folders[0], broken)
    lines = (broken / "records.csv").read_text().splitlines()
    (broken / "records.csv").write_text("\n".join(lines[:-2]) + "\n")
    with pytest.raises(DataError, match=r"has 10 episode rows but .* counts 12"):
        aggregate([broken], tmp_path / "agg")
    with pytest.raises(DataError, match="does not exist"):
        aggregate([tmp_path / "nowhere"], tmp_path / "agg")


def test_cli_reads_folders_from_a_list_file(real_folders, tmp_path, capsys):
    _, folders = real_folders
    listing = tmp_path / "evals.txt"
    listing.write_text("# evaluation folders\n" + "\n".join(map(str, folders[2:])) + "\n\n")
    argv = ["aggregate", "--evals", *map(str, folders[:2]), "--evals-from", str(listing), "--out"]
    assert main([*argv, str(tmp_path / "cli")]) == 0
    assert "8 evaluations of toy" in capsys.readouterr().out
    aggregate(folders, tmp_path / "api")
    for name in OUTPUTS:
        assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "api" / name).read_bytes()
    assert main(["aggregate", "--out", str(tmp_path / "none")]) == 2  # nothing to aggregate


def test_records_of_aggregate_equal_the_engines_records(real_folders, tmp_path):
    _, folders = real_folders
    aggregate(folders, tmp_path / "agg")
    loaded = load_aggregate(tmp_path / "agg").records
    assert tuple(loaded.columns) == RECORD_COLUMNS  # exactly the records.csv columns
    one = read_records(folders[0] / "records.csv")
    rows = loaded[
        (loaded["fold"] == int(one[0]["fold"]))
        & (loaded["train_seed"] == int(one[0]["train_seed"]))
        & (loaded["episode_seed"] == int(one[0]["episode_seed"]))
    ]
    assert rows["fg_intersection"].tolist() == [int(r["fg_intersection"]) for r in one]
