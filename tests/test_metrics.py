import math

import pytest
import torch

from fsseg.metrics import episode_counts, summarize


def t(rows):
    return torch.tensor(rows)


def test_counts_hand_computed_with_ignore():
    label = t([[1, 1, 0], [0, 255, 0]])
    pred = t([[1, 0, 1], [0, 1, 0]])
    c = episode_counts(pred, label)
    # valid pixels: 5 (the 255 one is dropped even though predicted fg)
    assert (c.fg_intersection, c.fg_union) == (1, 3)
    assert (c.bg_intersection, c.bg_union) == (2, 4)


def test_empty_prediction_and_empty_ground_truth():
    label = t([[0, 0], [0, 0]])
    empty = episode_counts(t([[0, 0], [0, 0]]), label)
    assert (empty.fg_intersection, empty.fg_union) == (0, 0)
    assert math.isnan(empty.fg_iou)
    assert (empty.bg_intersection, empty.bg_union) == (4, 4)
    label = t([[1, 1], [0, 0]])
    no_pred = episode_counts(t([[0, 0], [0, 0]]), label)
    assert no_pred.fg_iou == 0.0
    assert (no_pred.bg_intersection, no_pred.bg_union) == (2, 4)


def test_summary_class_wise_versus_episode_mean():
    rows = [
        {"class_id": 1, "fg_intersection": 10, "fg_union": 20, "bg_intersection": 70, "bg_union": 80},
        {"class_id": 1, "fg_intersection": 0, "fg_union": 80, "bg_intersection": 20, "bg_union": 100},
        {"class_id": 2, "fg_intersection": 30, "fg_union": 40, "bg_intersection": 60, "bg_union": 70},
    ]
    s = summarize(rows)
    assert s["class_iou"]["1"] == pytest.approx(10 / 100)
    assert s["class_iou"]["2"] == pytest.approx(30 / 40)
    assert s["miou"] == pytest.approx((0.1 + 0.75) / 2)
    assert s["episode_miou"] == pytest.approx((0.5 + 0.0 + 0.75) / 3)
    assert s["fbiou"] == pytest.approx((40 / 140 + 150 / 250) / 2)


def test_summary_skips_undefined_episode_and_requires_listed_classes():
    rows = [
        {"class_id": 3, "fg_intersection": 0, "fg_union": 0, "bg_intersection": 5, "bg_union": 5},
        {"class_id": 3, "fg_intersection": 2, "fg_union": 4, "bg_intersection": 5, "bg_union": 7},
    ]
    s = summarize(rows)
    assert s["episode_miou"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match=r"classes \[4\]"):
        summarize(rows, class_ids=[3, 4])
