"""The GRPO rewards against hand-computed values for every rule (arithmetic in comments)."""

import json

import numpy as np
import pytest

from socio_reasoner.train.rewards import (
    RewardBreakdown,
    box_iou_inclusive,
    match_boxes,
    stage1_reward,
    stage2_reward,
    truth_boxes,
)

A = (0, 0, 99, 99)  # 100×100 inclusive
B = (200, 200, 299, 299)
TRUTH = [A, B]
EXP_M1 = 0.36787944117144233  # e^-1
EXP_M05 = 0.6065306597126334  # e^-0.5
EXP_M2 = 0.1353352832366127  # e^-2


def answer(items, think="t"):
    """A well-tagged answer whose JSON is ``items`` (a str is used as is)."""
    body = items if isinstance(items, str) else json.dumps(items)
    return f"<think>{think}</think>\n<answer>{body}</answer>"


def boxes(*bs):
    return [{"bbox_2d": list(b)} for b in bs]


def scores(r: RewardBreakdown):
    return pytest.approx((r.format, r.count, r.accuracy), abs=1e-12)


# -- box IoU and matching ------------------------------------------------------------------

def test_inclusive_iou_small_boxes():
    # (0,0,3,3): 4×4 = 16 px; (2,0,5,3): 16 px; overlap x 2..3 (2) × y 0..3 (4) = 8;
    # union 16 + 16 − 8 = 24 → 8/24 = 1/3 (the exclusive convention would give 3/15 = 0.2).
    assert box_iou_inclusive((0, 0, 3, 3), (2, 0, 5, 3)) == pytest.approx(1 / 3)
    # (0,0,9,9) vs (5,5,14,14): 5×5 = 25 over 100 + 100 − 25 = 175 → 1/7.
    assert box_iou_inclusive((0, 0, 9, 9), (5, 5, 14, 14)) == pytest.approx(1 / 7)
    assert box_iou_inclusive((0, 0, 0, 0), (0, 0, 0, 0)) == 1.0  # a single pixel is 1×1
    assert box_iou_inclusive((0, 0, 3, 3), (10, 10, 13, 13)) == 0.0
    assert box_iou_inclusive((5, 5, 0, 0), (5, 5, 0, 0)) == 0.0  # inverted: no area


def test_hungarian_matching_finds_the_crossed_pairs():
    pairs, costs = match_boxes([B, A], [A, B])
    assert pairs == [(0, 1), (1, 0)] and costs == [0.0, 0.0]
    assert match_boxes([], [A]) == ([], [])


def test_matching_costs_per_rule():
    # (0,0,99,139) vs A: IoU 10000/14000 = 0.714 > 0.5 but L1 (0+0+0+40)/4 = 10, not < 10 → 1.
    # (0,0,99,199) vs A: IoU 10000/20000 = 0.5, not > 0.5; L1 100/4 = 25 → 2.
    # (2,0,5,3) vs (0,0,3,3): IoU 1/3; L1 (2+0+2+0)/4 = 1 < 10 → 1.
    assert match_boxes([(0, 0, 99, 139)], [A])[1] == [1.0]
    assert match_boxes([(0, 0, 99, 199)], [A])[1] == [2.0]
    assert match_boxes([(2, 0, 5, 3)], [(0, 0, 3, 3)])[1] == [1.0]
    assert match_boxes([(0, 0, 99, 139)], [A], variant="paper")[1] == [1.0]
    # (0,0,99,108): IoU 10000/10900 = 0.917, L1 9/4 = 2.25 → both pass → 0.
    assert match_boxes([(0, 0, 99, 108)], [A], variant="paper")[1] == [0.0]


# -- stage 1 -------------------------------------------------------------------------------

def test_stage1_perfect_answer():
    r = stage1_reward(answer(boxes(A, B)), TRUTH)
    assert scores(r) == (2.0, 1.0, 1.0)  # tags 1 + 2/2 exact; e^0; (2 − 0) / 2
    assert r.total == pytest.approx(4.0)


def test_stage1_missing_or_broken_tags_keep_the_answer():
    # No <think>: tags fail (0) but the answer is still read: 0 + 2/2 = 1.
    assert scores(stage1_reward(f"<answer>{json.dumps(boxes(A, B))}</answer>", TRUTH)) == (
        1.0, 1.0, 1.0)
    # Text after </answer> breaks the full match only.
    assert scores(stage1_reward(answer(boxes(A, B)) + " done", TRUTH)) == (1.0, 1.0, 1.0)
    # No <answer> block at all: nothing to read → 0 everywhere.
    assert scores(stage1_reward(json.dumps(boxes(A, B)), TRUTH)) == (0.0, 0.0, 0.0)


def test_stage1_unparseable_json_earns_only_the_tags():
    text = answer('[{"bbox_2d": [0, 0, 99, 99]}')  # missing "]"
    assert scores(stage1_reward(text, TRUTH)) == (1.0, 0.0, 0.0)
    assert scores(stage1_reward(answer(boxes(A)[0]), [A])) == (1.0, 0.0, 0.0)  # dict, not list


def test_stage1_one_wrong_format_item_among_two():
    # Extra key: not exact (format 1 + 1/2) but still a prediction: K = J = 2.
    labelled = [{"bbox_2d": list(A)}, {"bbox_2d": list(B), "label": "park"}]
    assert scores(stage1_reward(answer(labelled), TRUTH)) == (1.5, 1.0, 1.0)
    # Wrong key: not exact and not a prediction: K = 1, J = 2 → count e^(−2·1/2) = e^−1,
    # accuracy (1 − 0) / max(1, 2) = 0.5.
    wrong_key = [{"bbox_2d": list(A)}, {"bbox": list(B)}]
    assert scores(stage1_reward(answer(wrong_key), TRUTH)) == (1.5, EXP_M1, 0.5)
    # Three numbers, a string number, a bool, an int too big for a float: 1 + 1/5 = 1.2.
    bad = [{"bbox_2d": list(A)}, {"bbox_2d": [0, 0, 9]}, {"bbox_2d": ["0", 0, 9, 9]},
           {"bbox_2d": [True, 0, 9, 9]}, {"bbox_2d": [0, 0, 10**400, 9]}]
    assert stage1_reward(answer(bad), TRUTH).format == pytest.approx(1.2)
    nan = answer('[{"bbox_2d": [0, 0, NaN, 9]}]')  # NaN is neither exact nor a prediction
    assert scores(stage1_reward(nan, [A])) == (1.0, EXP_M2, 0.0)


def test_stage1_count_and_accuracy_when_k_differs_from_j():
    # K = 3, J = 2: count e^(−2·1/2) = e^−1; accuracy (2 − 0) / 3.
    extra = boxes(A, B, (400, 400, 499, 499))
    assert scores(stage1_reward(answer(extra), TRUTH)) == (2.0, EXP_M1, 2 / 3)
    # K = 0 (empty list), J = 2: exact fraction over no items is 0; count e^(−2·2/2) = e^−2;
    # accuracy 0 / 2.
    assert scores(stage1_reward(answer([]), TRUTH)) == (1.0, EXP_M2, 0.0)


def test_stage1_no_truth():
    # J = 0 < K = 1: count 0, accuracy 0 / 1.
    assert scores(stage1_reward(answer(boxes(A)), [])) == (2.0, 0.0, 0.0)
    # K = J = 0: count 1, accuracy 1 (our convention, as for count).
    assert scores(stage1_reward(answer([]), [])) == (1.0, 1.0, 1.0)


def test_stage1_pair_passing_iou_only_contributes_zero():
    # IoU 0.714 > 0.5, L1 = 10 not < 10 → cost 1 → (1 − 1) / 1 = 0.
    assert stage1_reward(answer(boxes((0, 0, 99, 139))), [A]).accuracy == 0.0


def test_stage1_pair_failing_both_makes_accuracy_negative():
    # IoU exactly 0.5 and L1 25 → cost 2 → (1 − 2) / 1 = −1.
    assert stage1_reward(answer(boxes((0, 0, 99, 199))), [A]).accuracy == -1.0
    # One perfect pair and one failing both: (2 − (0 + 2)) / 2 = 0.
    far = boxes(A, (600, 600, 699, 699))
    assert stage1_reward(answer(far), TRUTH).accuracy == 0.0
    # One failing both plus an unmatched extra: K = 2, J = 1 → (1 − 2) / 2 = −0.5.
    assert stage1_reward(answer(boxes((0, 0, 99, 199), B)), [A]).accuracy == pytest.approx(-0.5)


def test_stage1_paper_variant():
    assert scores(stage1_reward(answer(boxes(A, B)), TRUTH, "paper")) == (1.0, 1.0, 1.0)
    labelled = [{"bbox_2d": list(A)}, {"bbox_2d": list(B), "label": "park"}]
    assert stage1_reward(answer(labelled), TRUTH, "paper").format == 0.0  # not every item exact
    no_think = f"<answer>{json.dumps(boxes(A, B))}</answer>"
    assert stage1_reward(no_think, TRUTH, "paper").format == 0.0  # tags fail
    assert stage1_reward(answer([]), TRUTH, "paper").format == 0.0  # no item to be exact
    # Failing pairs count 0, never −1: perfect + far → 1 / 2 (released: 0); IoU-only → 0.
    assert stage1_reward(answer(boxes(A, (600, 600, 699, 699))), TRUTH, "paper").accuracy == 0.5
    assert stage1_reward(answer(boxes((0, 0, 99, 199))), [A], "paper").accuracy == 0.0
    assert stage1_reward(answer(boxes((0, 0, 99, 139))), [A], "paper").accuracy == 0.0
    # K = 3, J = 2: 2 / 3; count unchanged, e^−1.
    r = stage1_reward(answer(boxes(A, B, (400, 400, 499, 499))), TRUTH, "paper")
    assert scores(r) == (1.0, EXP_M1, 2 / 3)
    with pytest.raises(ValueError):
        stage1_reward(answer([]), TRUTH, "other")


# -- truth boxes ---------------------------------------------------------------------------

def test_truth_boxes_drop_small_contours_by_polygon_area():
    mask = np.zeros((100, 100), bool)
    mask[2:5, 2:5] = True  # 3×3 blob: polygon through pixel centres 2×2 → area 4 ≤ 10
    mask[10:14, 2:6] = True  # 4×4 = 16 px but area 3×3 = 9 ≤ 10 → dropped
    mask[20:50, 2:3] = True  # a 1×30 line: 30 px, area 0 → dropped
    mask[60:65, 2:7] = True  # 5×5: area 4×4 = 16 > 10 → kept, (2, 60, 2+5, 60+5)
    # L: rows 10..29 × cols 40..44 plus rows 25..29 × cols 40..59. Through pixel centres the
    # hull x 40..59 × y 10..29 is 19×19 = 361 minus the notch x 44..59 × y 10..25, 15×15 = 225,
    # = 136, plus 0.5 where CHAIN_APPROX_SIMPLE cuts the inner corner → 136.5 > 10, kept.
    # boundingRect (40, 10, 20, 20) → (40, 10, 60, 30).
    mask[10:30, 40:45] = True
    mask[25:30, 40:60] = True
    assert truth_boxes(mask, (100, 100)) == [(40, 10, 60, 30), (2, 60, 7, 65)]
    # Lowering the threshold below 9 keeps the 4×4 blob (2, 10, 6, 14) as well.
    assert (2, 10, 6, 14) in truth_boxes(mask, (100, 100), min_contour_area=8.0)
    assert truth_boxes(np.zeros((50, 50), bool), (50, 50)) == []


def test_truth_boxes_resize_768_to_756():
    mask = np.zeros((768, 768), bool)
    mask[300:400, 100:200] = True
    # Nearest (PIL) samples source floor((d + 0.5)·768/756) for destination d:
    # cols: first d with (d + .5)·768/756 ≥ 100 is d ≥ 98.4375 − .5 → 98 (98.5·1.01587 = 100.06);
    #       last with < 200: d < 196.875 − .5 → 196 (196.5·1.01587 = 199.62) → x 98, w 99.
    # rows: ≥ 300 → d ≥ 295.3125 − .5 → 295; < 400 → d < 393.75 − .5 → 393 → y 295, h 99.
    assert truth_boxes(mask, (756, 756)) == [(98, 295, 98 + 99, 295 + 99)]
    # Unresized, the same block gives (100, 300, 200, 400).
    assert truth_boxes(mask, (768, 768)) == [(100, 300, 200, 400)]


# -- stage 2 -------------------------------------------------------------------------------

def items2(*specs):
    return [{"bbox_2d": list(b), "points": [list(p) for p in pts]} for b, pts in specs]


GOOD_A = (A, [(30, 30), (60, 60)])
GOOD_B = (B, [(250, 250), (260, 240)])


def masks_3_7():
    final, truth = np.zeros((10, 10), bool), np.zeros((10, 10), bool)
    final[0:4, 0:5] = True  # 20 px
    truth[0:4, 2:7] = True  # 20 px; overlap rows 0..3 × cols 2..4 = 12; union 28 → 3/7
    return final, truth


def test_stage2_perfect_answer():
    r = stage2_reward(answer(items2(GOOD_A, GOOD_B)), TRUTH, *masks_3_7())
    assert scores(r) == (2.0, 1.0, 3 / 7)  # tags + 2/2; n = 2 → e^0 = 1 each; 12 / 28


def test_stage2_changed_box_or_edge_point_loses_that_item():
    final, truth = masks_3_7()
    moved = items2(GOOD_A, ((200, 200, 299, 300), GOOD_B[1]))
    assert stage2_reward(answer(moved), TRUTH, final, truth).format == 1.5  # 1 + 1/2
    edge = items2((A, [(0, 50), (60, 60)]), GOOD_B)  # x = x1 is not strictly inside
    assert stage2_reward(answer(edge), TRUTH, final, truth).format == 1.5
    corner = items2((A, [(99, 99)]), GOOD_B)
    assert stage2_reward(answer(corner), TRUTH, final, truth).format == 1.5
    floats = items2(((0.0, 0.0, 99.0, 99.0), GOOD_A[1]), GOOD_B)  # same numbers as floats
    assert stage2_reward(answer(floats), TRUTH, final, truth).format == 2.0
    no_points = [{"bbox_2d": list(A)}, items2(GOOD_B)[0]]  # points key required
    assert stage2_reward(answer(no_points), TRUTH, final, truth).format == 1.5


def test_stage2_wrong_item_count_scores_no_item():
    final, truth = masks_3_7()
    three = items2(GOOD_A, GOOD_B, ((400, 400, 499, 499), [(450, 450), (460, 460)]))
    assert scores(stage2_reward(answer(three), TRUTH, final, truth)) == (1.0, 1.0, 3 / 7)
    one = items2(GOOD_A)
    assert stage2_reward(answer(one), TRUTH, final, truth).format == 1.0
    # No stage-1 boxes: the fraction is 0 (over nothing); no items → count 0.
    assert scores(stage2_reward(answer([]), [], final, truth)) == (1.0, 0.0, 3 / 7)


def test_stage2_point_count_reward():
    final, truth = masks_3_7()
    # n = 2 → e^0 = 1; n = 0 → e^(−4/8) = e^−0.5; mean (1 + 0.60653066) / 2 = 0.80326533.
    r = stage2_reward(answer(items2(GOOD_A, (B, []))), TRUTH, final, truth)
    assert r.count == pytest.approx(0.8032653298563167)
    assert r.format == 2.0  # an empty points list has no point outside its box
    # n = 4 → e^(−4/8) = e^−0.5 too; n = 1 → e^(−1/8) = 0.8824969025845955.
    four = (A, [(10, 10), (20, 20), (30, 30), (40, 40)])
    assert stage2_reward(answer(items2(four)), [A], final, truth).count == pytest.approx(EXP_M05)
    one = (A, [(10, 10)])
    assert stage2_reward(answer(items2(one)), [A], final, truth).count == pytest.approx(
        0.8824969025845955)
    assert stage2_reward(answer("not json"), [A], final, truth).count == 0.0  # no items


def test_stage2_mask_iou_and_empty_union():
    empty = np.zeros((10, 10), bool)
    text = answer(items2(GOOD_A))
    assert stage2_reward(text, [A], empty, empty).accuracy == 0.0  # eval would say 1
    full = np.ones((10, 10), np.uint8)
    assert stage2_reward(text, [A], full, full).accuracy == 1.0
    assert stage2_reward(text, [A], full, empty).accuracy == 0.0  # 0 / 100
    with pytest.raises(ValueError):
        stage2_reward(text, [A], np.zeros((10, 11), bool), empty)


def test_stage2_paper_variant():
    final, truth = masks_3_7()
    good = stage2_reward(answer(items2(GOOD_A, GOOD_B)), TRUTH, final, truth, "paper")
    assert scores(good) == (1.0, 1.0, 3 / 7)
    edge = items2((A, [(0, 50)]), GOOD_B)
    assert stage2_reward(answer(edge), TRUTH, final, truth, "paper").format == 0.0
    no_think = f"<answer>{json.dumps(items2(GOOD_A, GOOD_B))}</answer>"
    assert stage2_reward(no_think, TRUTH, final, truth, "paper").format == 0.0
