"""Metrics against values computed by hand."""

import math

import numpy as np
import pytest

from socio_reasoner.metrics import MetricConfig, instance_matches, sample_scores, summarize


def canvas(*rects, shape=(20, 20)):
    m = np.zeros(shape, bool)
    for r0, r1, c0, c1 in rects:
        m[r0:r1, c0:c1] = True
    return m


def test_iou_of_overlapping_squares():
    pred, truth = canvas((0, 4, 0, 4)), canvas((2, 6, 2, 6))      # 16 + 16, overlap 4
    s = sample_scores(pred, truth)
    assert (s.intersection, s.union) == (4, 28) and s.iou == pytest.approx(4 / 28)
    assert (s.tp, s.fp, s.fn) == (0, 1, 1)                         # IoU 0.14 < 0.5


def test_empty_prediction_and_empty_truth():
    empty = canvas()
    both = sample_scores(empty, empty)
    assert (both.iou, both.tp, both.fp, both.fn) == (1.0, 0, 0, 0)
    assert sample_scores(empty, empty, MetricConfig(empty_iou=0.0)).iou == 0.0
    miss = sample_scores(empty, canvas((0, 5, 0, 5)))
    assert (miss.iou, miss.tp, miss.fp, miss.fn) == (0.0, 0, 0, 1)
    false_alarm = sample_scores(canvas((0, 5, 0, 5)), empty)
    assert (false_alarm.iou, false_alarm.fp, false_alarm.fn) == (0.0, 1, 0)


def test_small_components_are_not_instances():
    # 3×3 = 9 px ≤ 10: counted in IoU, not as an instance; 11 px is one
    tiny = canvas((0, 3, 0, 3))
    assert instance_matches(tiny, tiny) == (0, 0, 0)
    eleven = canvas((0, 1, 0, 11))
    assert instance_matches(eleven, eleven) == (1, 0, 0)


def test_touching_instances_diagonally_are_one_under_8_connectivity():
    truth = canvas((0, 4, 0, 4), (4, 8, 4, 8))          # corner contact → one instance
    assert instance_matches(truth, truth) == (1, 0, 0)
    apart = canvas((0, 4, 0, 4), (5, 9, 5, 9))
    assert instance_matches(apart, apart) == (2, 0, 0)


def test_one_prediction_covering_two_truths():
    truth = canvas((0, 5, 0, 5), (0, 5, 7, 12))          # two 25-px instances
    pred = canvas((0, 5, 0, 12))                          # one 60-px instance over both
    # IoU with each truth = 25/60 < 0.5 → 0 TP, 1 FP, 2 FN
    assert instance_matches(pred, truth) == (0, 1, 2)
    pred2 = canvas((0, 5, 0, 6))                          # 30 px: IoU 25/30 with the first
    assert instance_matches(pred2, truth) == (1, 0, 1)


def test_hungarian_prefers_the_best_one_to_one_assignment():
    truth = canvas((0, 10, 0, 10), (12, 20, 0, 10))
    pred = canvas((0, 10, 0, 9), (12, 20, 0, 10))
    assert instance_matches(pred, truth) == (2, 0, 0)


def test_summarize_over_a_set():
    rows = [sample_scores(canvas((0, 6, 0, 6)), canvas((0, 6, 0, 3))),   # I 18, U 36, IoU .5, TP 1
            sample_scores(canvas(), canvas((0, 5, 0, 5))),                 # I 0, U 25, FN 1
            sample_scores(canvas(), canvas())]                             # both empty: IoU 1
    s = summarize(rows)
    assert s["n"] == 3
    assert s["cIoU"] == pytest.approx(100 * 18 / 61)
    assert s["gIoU"] == pytest.approx(100 * (0.5 + 0 + 1) / 3)
    assert s["F1"] == pytest.approx(100 * 2 / (2 + 0 + 1))
    assert summarize([r.to_dict() for r in rows]) == s
    assert math.isnan(summarize([])["cIoU"])
    with pytest.raises(ValueError, match="differ in shape"):
        sample_scores(canvas(), canvas(shape=(10, 10)))
