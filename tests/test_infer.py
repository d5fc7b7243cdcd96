"""The episode loop's plumbing (fsseg/engine/infer.py, fsseg/data/decoded.py): prefetching, batched
scoring and shared decoded files change no result."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fsseg.data.decoded import DecodedImages
from fsseg.engine.build import build_dataset
from fsseg.engine.evaluate import evaluate_run
from fsseg.engine.infer import predict_at_labels, prefetched
from fsseg.engine.train import train
from fsseg.records import read_records


def test_prefetched_keeps_order_and_raises_where_the_source_failed():
    assert list(prefetched(range(50), depth=3)) == list(range(50))

    def failing():
        yield 1
        yield 2
        raise ValueError("file 7 is corrupt")

    got = []
    with pytest.raises(ValueError, match="file 7 is corrupt"):
        for item in prefetched(failing()):
            got.append(item)
    assert got == [1, 2]
    # a consumer that stops early leaves no thread blocked on a full queue
    for item in prefetched(range(1000), depth=1):
        if item == 3:
            break


def test_batched_scoring_equals_one_episode_at_a_time():
    torch.manual_seed(0)
    logits = torch.randn(5, 2, 16, 16)
    sizes = [torch.Size((40, 40)), torch.Size((16, 16)), torch.Size((40, 40)), torch.Size((33, 21)),
             torch.Size((40, 40))]
    batched = predict_at_labels(logits, sizes)
    for i, size in enumerate(sizes):
        one = logits[i : i + 1]
        if one.shape[-2:] != size:
            one = F.interpolate(one, size=size, mode="bilinear", align_corners=False)
        assert torch.equal(batched[i], one[0].argmax(dim=0)), i


def test_decoded_images_read_each_file_once_and_forget_the_oldest(toy_config):
    adapter = build_dataset(toy_config())
    split = adapter.test_split
    ids = adapter.image_ids(split)[:3]
    images = DecodedImages(adapter)
    first = images.load_image(split, ids[0])
    assert np.array_equal(first, adapter.load_image(split, ids[0]))
    assert images.load_image(split, ids[0]) is first and (images.hits, images.misses) == (1, 1)
    with pytest.raises(ValueError):
        first[0, 0, 0] = 1  # shared between episodes: read-only
    assert np.array_equal(images.load_mask(split, ids[0]), adapter.load_mask(split, ids[0]))
    small = DecodedImages(adapter, max_bytes=first.nbytes)  # room for about one image
    for image_id in ids:
        small.load_image(split, image_id)
    assert small.misses == 3 and len(small._items) == 1


def test_warm_decodes_ahead_and_stops_quietly_at_a_bad_file(toy_config):
    adapter = build_dataset(toy_config())
    split = adapter.test_split
    ids = adapter.image_ids(split)[:3]
    images = DecodedImages(adapter)
    images.warm(split, [ids[0], "no-such-image", ids[1]])
    # image and mask of the first; the bad id ended the head start, the third was not read
    assert {key[2] for key in images._items} == {ids[0]} and len(images._items) == 2
    assert np.array_equal(images.load_mask(split, ids[0]), adapter.load_mask(split, ids[0]))
    assert images.hits == 1


def test_evaluation_decodes_its_first_batches_while_the_model_loads(toy_config):
    from fsseg.engine.evaluate import _decode_first_batches, ensure_manifest

    cfg = toy_config("eval.batch_size=2")
    adapter = build_dataset(cfg)
    manifest = ensure_manifest(cfg, adapter)
    images = DecodedImages(adapter)
    thread = _decode_first_batches(cfg, images)
    assert thread is not None
    thread.join()
    first = {i for e in manifest.episodes[:4] for i in (e.query_id, *e.support_ids)}
    assert {key[2] for key in images._items} == first and images.misses == 2 * len(first)
    assert _decode_first_batches(toy_config("eval.num_workers=1"), images) is None  # workers prefetch
    assert _decode_first_batches(toy_config("eval.episode_seed=7"), images) is None  # no manifest yet


def test_one_process_evaluations_write_what_separate_ones_do(toy_config, tmp_path):
    """evaluate_run (shared decoded files, prefetching) against one evaluate_run per shot."""
    cfg = toy_config("train.iterations=2")
    train(cfg)
    together = evaluate_run(cfg, shots=[1, 2], episode_seeds=[0], diagnose_shots=[1])
    rows = {out.name: read_records(out / "records.csv") for out in together}
    diagnostics = (together[0] / "diagnostics.json").read_text()
    for shot in (1, 2):
        (out,) = evaluate_run(cfg, shots=[shot], episode_seeds=[0], diagnose_shots=[1] if shot == 1 else [])
        assert read_records(out / "records.csv") == rows[out.name]
    assert (together[0] / "diagnostics.json").read_text() == diagnostics


def test_a_run_s_evaluations_end_with_their_index(toy_config):
    """evaluate_run writes the run's index (the workflow's evaluate output) after its last evaluation:
    every folder it wrote, with the files in it; an untrained evaluation writes none."""
    cfg = toy_config("train.iterations=2")
    train(cfg)
    outs = evaluate_run(cfg, shots=[1, 2], episode_seeds=[0, 1], diagnose_shots=[1])
    index = json.loads(cfg.evaluated_path.read_text())
    assert cfg.evaluated_path.parent == outs[0].parent
    entries = index["evaluations"]
    assert [e["folder"] for e in entries] == [out.name for out in outs]
    assert [(e["shot"], e["episode_seed"]) for e in entries] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    for entry, out in zip(entries, outs, strict=True):
        expected = {"records.csv", "summary.json"} | ({"diagnostics.json"} if entry["shot"] == 1 else set())
        assert set(entry["files"]) == expected and all((out / name).is_file() for name in entry["files"])
    cfg.evaluated_path.unlink()
    evaluate_run(cfg, shots=[1], episode_seeds=[0], untrained=True)
    assert not cfg.evaluated_path.exists()


def test_two_class_prediction_is_the_argmax_ties_and_nan_included():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 8, 8)
    logits[0, 1, :2] = logits[0, 0, :2]  # ties: argmax takes the first class
    (got,) = predict_at_labels(logits[:1], [torch.Size((8, 8))])
    assert torch.equal(got, logits[0].argmax(dim=0)) and (got[:2] == 0).all()
    logits[1, 1, 0, 0] = float("nan")  # NaN counts as the maximum in argmax
    got = predict_at_labels(logits, [torch.Size((8, 8))] * 3)
    for i in range(3):
        assert torch.equal(got[i], logits[i].argmax(dim=0)), i
    assert got[1][0, 0] == 1
    three = torch.randn(2, 3, 8, 8)  # more classes: argmax as such
    for i, prediction in enumerate(predict_at_labels(three, [torch.Size((8, 8))] * 2)):
        assert torch.equal(prediction, three[i].argmax(dim=0))
