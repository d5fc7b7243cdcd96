import json
import shutil

import pytest
import torch

from fsseg.engine.evaluate import evaluate
from fsseg.engine.train import CHECKPOINT, MODEL, SUMMARY, train
from fsseg.errors import ConfigError, DataError, TrainingDiverged
from fsseg.metrics import summarize
from fsseg.records import read_records
from tests.resume import killed_and_resumed


def _weights(run_dir):
    return torch.load(run_dir / MODEL, weights_only=True)


@pytest.mark.parametrize("method", ["panet", "pfenet"])  # PFENet draws dropout masks from the saved stream
def test_resume_after_kill_gives_identical_weights(toy_config, tmp_path, method):
    def left_by_the_kill(cfg):  # killed at 5: after the checkpoint at 3, in the middle of the next interval
        assert (cfg.run_dir / CHECKPOINT).is_file() and not (cfg.run_dir / MODEL).exists()
        assert torch.load(cfg.run_dir / CHECKPOINT, weights_only=False)["iteration"] == 3

    common = ("train.iterations=7", f"method.name={method}")
    full, resumed = killed_and_resumed(toy_config, common, tmp_path, after_kill=left_by_the_kill)
    a, b = _weights(full), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    log = [json.loads(line) for line in (resumed / "train_log.jsonl").read_text().splitlines()]
    assert [row["iteration"] for row in log] == list(range(1, 8))
    # a finished run is not retrained
    before = (resumed / MODEL).stat().st_mtime_ns
    train(toy_config(*common, f"output_root={tmp_path}/b"))
    assert (resumed / MODEL).stat().st_mtime_ns == before


def test_changed_training_config_refuses_to_reuse_the_run_folder(toy_config):
    cfg = toy_config("train.iterations=2")
    train(cfg)
    with pytest.raises(ConfigError, match="holds a run of a different training config"):
        train(toy_config("train.iterations=2", "train.lr=0.5"))


def test_evaluation_records_reproduce_summary_and_are_deterministic(toy_config):
    cfg = toy_config("train.iterations=3")
    train(cfg)
    out = evaluate(cfg)
    records = read_records(out / "records.csv")
    summary = json.loads((out / "summary.json").read_text())
    assert len(records) == cfg.eval.n_episodes
    again = summarize(records, [int(c) for c in summary["metrics"]["class_iou"]])
    for key in ("miou", "fbiou", "episode_miou"):
        assert again[key] == pytest.approx(summary["metrics"][key], abs=1e-12)
    # by hand: class-wise mIoU straight from the CSV columns
    per_class = {}
    for r in records:
        i, u = per_class.get(r["class_id"], (0, 0))
        per_class[r["class_id"]] = (i + int(r["fg_intersection"]), u + int(r["fg_union"]))
    by_hand = sum(i / u for i, u in per_class.values()) / len(per_class)
    assert by_hand == pytest.approx(summary["metrics"]["miou"], abs=1e-12)
    first = (out / "records.csv").read_bytes()
    evaluate(cfg)
    assert (out / "records.csv").read_bytes() == first
    assert {r["query_id"] for r in records}.isdisjoint({""})
    assert all(r["query_id"] not in r["support_ids"].split(";") for r in records)


def test_untrained_method_cannot_be_evaluated_without_weights(toy_config):
    with pytest.raises(Exception, match="no trained weights"):
        evaluate(toy_config())


def test_colour_floor_needs_no_training(toy_config):
    cfg = toy_config("method.name=colour_floor")
    run_dir = train(cfg)
    assert json.loads((run_dir / SUMMARY).read_text())["iterations"] == 0
    out = evaluate(cfg)
    assert json.loads((out / "summary.json").read_text())["metrics"]["miou"] >= 0


def test_nan_loss_stops_with_clear_message(toy_config):
    cfg = toy_config("train.lr=1e30", "train.optimizer=sgd", "train.iterations=20")
    with pytest.raises(TrainingDiverged, match=r"diverged at iteration \d+: loss is not finite"):
        train(cfg)


def _copy_toy(toy_root, tmp_path):
    root = tmp_path / "toy_copy"
    shutil.copytree(toy_root, root)
    return root


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing_image", r"image file is missing: .*test_\d+\.png"),
        ("corrupt_image", r"image file is corrupt or unreadable: .*test_\d+\.png"),
        ("mask_size", r"mask .*test_\d+\.png is 8x8 but its image is 32x32"),
        ("label_value", r"mask .*test_\d+\.png holds label value\(s\) \[9\] outside the 6 classes"),
    ],
)
def test_bad_data_files_give_clear_errors_and_no_output(toy_config, toy_root, tmp_path, damage, message):
    import numpy as np
    from PIL import Image

    root = _copy_toy(toy_root, tmp_path)
    cfg = toy_config("method.name=colour_floor", f"dataset.root={root}")
    train(cfg)
    from fsseg.engine.build import build_dataset
    from fsseg.engine.evaluate import ensure_manifest

    victim = ensure_manifest(cfg, build_dataset(cfg)).episodes[0].query_id
    image, mask = root / "images" / "test" / f"{victim}.png", root / "masks" / "test" / f"{victim}.png"
    if damage == "missing_image":
        image.unlink()
    elif damage == "corrupt_image":
        image.write_bytes(b"not a png")
    elif damage == "mask_size":
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(mask)
    else:
        arr = np.array(Image.open(mask))
        arr[0, 0] = 9
        Image.fromarray(arr).save(mask)
    # As if the files had been broken when the dataset was prepared: a change made after prepare is
    # caught earlier, by the index checksums (tests/test_faults.py).
    _refresh_checksums(root, "test", victim)
    cfg.manifest_path.unlink()  # drawn from the index before; the same episodes are drawn again
    with pytest.raises(DataError, match=message):
        evaluate(cfg)
    assert not cfg.eval_dir.exists()


def _refresh_checksums(root, split, image_id):
    from fsseg.data.index import with_checksums

    path = root / "index" / f"{split}.json"
    index = json.loads(path.read_text())
    for i, row in enumerate(index["images"]):
        if row["id"] == image_id and (root / row["image"]).exists():
            bare = {k: v for k, v in row.items() if not k.endswith("_sha256")}
            index["images"][i] = with_checksums(root, bare)
    path.write_text(json.dumps(index))


def test_unprepared_dataset_says_how_to_prepare(toy_config, tmp_path):
    with pytest.raises(DataError, match="run `fsseg prepare toy"):
        train(toy_config(f"dataset.root={tmp_path / 'nowhere'}"))


def test_replace_changed_retrains_a_stale_run(toy_config):
    train(toy_config("train.iterations=2"))
    changed = toy_config("train.iterations=2", "train.lr=0.5")
    run_dir = train(changed, replace_changed=True)
    assert json.loads((run_dir / SUMMARY).read_text())["iterations"] == 2
    from fsseg.config import read_yaml

    assert read_yaml(run_dir / "config.yaml")["train"]["lr"] == 0.5


def test_same_config_and_threads_give_identical_weights_and_records(toy_config, tmp_path):
    """Bitwise reproducibility on one machine at one thread count: two independent trainings of the same
    config (separate output folders) end with equal weights, and their evaluations write the same bytes."""
    threads = torch.get_num_threads()
    outs = []
    for name in ("a", "b"):
        cfg = toy_config("train.iterations=4", f"output_root={tmp_path / name}")
        torch.set_num_threads(threads)
        run = train(cfg)
        outs.append((run, evaluate(cfg)))
    (run_a, eval_a), (run_b, eval_b) = outs
    weights_a = torch.load(run_a / "model.pt", weights_only=True)
    weights_b = torch.load(run_b / "model.pt", weights_only=True)
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert (eval_a / "records.csv").read_bytes() == (eval_b / "records.csv").read_bytes()


def test_log_rows_hold_window_means_and_survive_a_resume(toy_config, tmp_path):
    """Row 1 is the untrained model's loss; later rows average every iteration since the previous row,
    also when a kill splits a window (the checkpoint carries the partial sums)."""
    sets = ("train.iterations=7", "train.log_every=4", "train.checkpoint_every=3")
    full, resumed = killed_and_resumed(toy_config, sets, tmp_path)

    def rows(run_dir):
        return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]

    assert [row["iteration"] for row in rows(full)] == [1, 4, 7]
    for a, b in zip(rows(full), rows(resumed), strict=True):
        assert a["iteration"] == b["iteration"] and a["loss"] == pytest.approx(b["loss"], rel=1e-12)
    # each row is the mean of the per-iteration losses of its window (a run logging every iteration)
    every = train(toy_config("train.iterations=7", "train.log_every=1", "train.checkpoint_every=3",
                             f"output_root={tmp_path}/c"))  # fmt: skip
    losses = [row["loss"] for row in rows(every)]
    assert len(losses) == 7
    expected = [losses[0], sum(losses[1:4]) / 3, sum(losses[4:7]) / 3]
    assert [row["loss"] for row in rows(full)] == pytest.approx(expected, rel=1e-9)


BEST_VAL = ("train.selection=best_val", "train.iterations=6", "train.val_every=2", "train.val_episodes=6")


def _val_scores(run_dir):
    rows = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [(row["iteration"], row["val_miou"]) for row in rows if "val_miou" in row]


def test_best_val_selects_the_same_weights_whatever_eval_says(toy_config, tmp_path):
    """One training config (one run id) selects one model.pt: the validation episodes and how they are
    scored come from the training config, so no eval.* key (nor the evaluation's label resolution,
    which is not in the training identity either) changes the validation scores or the pick."""
    from fsseg.engine.build import run_id
    from tests.toy_dataset import make_toy_dataset

    # a val split with enough images per class for 2-shot episodes, so eval.shot=2 could be drawn
    root = make_toy_dataset(tmp_path / "toy_val24", per_split={"train": 36, "val": 24, "test": 40})
    a = toy_config(*BEST_VAL, f"dataset.root={root}", f"output_root={tmp_path / 'a'}")
    b = toy_config(
        *BEST_VAL,
        f"dataset.root={root}",
        f"output_root={tmp_path / 'b'}",
        "eval.shot=2",
        "eval.n_episodes=20",
        "eval.episode_seed=7",
        "eval.batch_size=1",
        "eval.split=val",
        "dataset.label_resolution=input",
    )
    assert run_id(a) == run_id(b)
    run_a, run_b = train(a), train(b)
    assert [it for it, _ in _val_scores(run_a)] == [2, 4, 6]
    assert _val_scores(run_a) == _val_scores(run_b)
    summary_a = json.loads((run_a / SUMMARY).read_text())
    assert summary_a["selection"].startswith("best_val (iteration ")
    assert summary_a["selection"] == json.loads((run_b / SUMMARY).read_text())["selection"]
    assert (run_a / MODEL).read_bytes() == (run_b / MODEL).read_bytes()


def test_best_val_selects_on_val_split_episodes_never_test(toy_config, monkeypatch):
    """Every episode that checkpoint selection scores comes from the val split (train.shot supports,
    train.val_episodes of them), and no test-split file is read while training."""
    import fsseg.engine.train as train_module
    from fsseg.engine.build import build_dataset
    from tests.toy_dataset import ToyDataset

    cfg = toy_config(*BEST_VAL, "train.shot=1", "eval.shot=2")
    read: list[tuple[str, str]] = []
    for name in ("load_image", "load_mask"):
        original = getattr(ToyDataset, name)

        def spy(self, split, image_id, _original=original):
            read.append((split, image_id))
            return _original(self, split, image_id)

        monkeypatch.setattr(ToyDataset, name, spy)
    scored = []
    real_class_miou = train_module.class_miou

    def spy_class_miou(method, manifest, *args):
        scored.append(manifest)
        return real_class_miou(method, manifest, *args)

    monkeypatch.setattr(train_module, "class_miou", spy_class_miou)
    train(cfg)

    adapter = build_dataset(cfg)
    val_ids, test_ids = set(adapter.image_ids("val")), set(adapter.image_ids("test"))
    assert len(scored) == 3  # iterations 2, 4, 6
    scored_ids = set()
    for manifest in scored:
        assert manifest.header["split"] == adapter.val_split == "val"
        assert manifest.header["shot"] == cfg.train.shot
        assert len(manifest.episodes) == cfg.train.val_episodes
        for episode in manifest.episodes:
            assert len(episode.support_ids) == cfg.train.shot
            scored_ids.update([episode.query_id, *episode.support_ids])
    assert scored_ids <= val_ids and scored_ids.isdisjoint(test_ids)
    assert {split for split, _ in read} == {"train", "val"}
    assert {image_id for split, image_id in read if split == "val"} == scored_ids
