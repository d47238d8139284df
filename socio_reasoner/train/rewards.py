"""The GRPO rewards the released SocioReasoner weights were trained with, as pure functions,
so a fine-tune scores answers exactly as the original training did (or as the paper says).

Both stages score ``format + count + accuracy``. ``variant="released"`` follows the released
training rules; ``variant="paper"`` follows the paper's text where it differs (a binary format
gate and an accuracy counting only pairs that meet both box tests).

Conventions decided here:

* Items are read from the first ``<answer>…</answer>`` block with strict ``json.loads`` and
  must form a JSON list; ``parsing.parse_answer`` is not used because it repairs, clips,
  de-duplicates and drops items, which would both hide format slips and shift item indices.
  An unreadable answer (no block, bad JSON, not a list) earns no format fraction, count or
  accuracy; the tag part of the format score is still given when the tags match.
* A stage-1 prediction is an item with a ``"bbox_2d"`` of 4 finite numbers (extra keys still
  count as a prediction but lose the format point); bools and NaN are not numbers.
* Box IoU counts pixels inclusively (width ``x2 - x1 + 1``), like the reference; truth boxes
  are ``[x, y, x + w, y + h]`` from ``cv2.boundingRect``, also like the reference, although
  that makes them one pixel wider and taller than the inclusive extent of the region.
* Stage-1 accuracy is 1.0 when there is neither a prediction nor a truth box (as count's
  "both 0 gives 1"); stage-2 accuracy is 0.0 on an empty union, whereas evaluation
  (``metrics.MetricConfig.empty_iou``) counts both-empty as 1.0.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..parsing import has_strict_format
from ..render import resize_mask

VARIANTS = ("released", "paper")
IOU_THRESHOLD = 0.5  # a pair passes the IoU test when IoU > this
L1_THRESHOLD_PX = 10.0  # a pair passes the position test when the mean L1 < this
POINTS_TARGET = 2  # stage-2 count is best with this many points per object

_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass(frozen=True)
class RewardBreakdown:
    """The three reward terms of one answer; ``total`` is what GRPO optimises."""

    format: float
    count: float
    accuracy: float

    @property
    def total(self) -> float:
        """Sum of the three terms."""
        return self.format + self.count + self.accuracy


def stage1_reward(text: str, truth_boxes: list[tuple], variant: str = "released"
                  ) -> RewardBreakdown:
    """Score a stage-1 (boxes only) answer against the truth boxes.

    Parameters
    ----------
    text : str
        The model's raw output.
    truth_boxes : list of (x1, y1, x2, y2)
        Truth boxes in the model frame, as made by `truth_boxes`.
    variant : {"released", "paper"}
        ``"released"``: format = [tags match] + fraction of items exactly
        ``{"bbox_2d": [4 numbers]}`` (0 to 2); accuracy = Σ(1 − cost) over the Hungarian pairs
        / max(K, J), in [−1, 1]. ``"paper"``: format = 1 only when the tags match and every
        item is exact (an empty list is not); accuracy = pairs passing both tests / max(K, J).

    Returns
    -------
    RewardBreakdown
        count = exp(−2·|K − J| / J) for K predicted and J truth boxes, 1 if K = J = 0 and
        0 if J = 0 < K.
    """
    _check_variant(variant)
    items = _answer_items(text)
    tags = float(has_strict_format(text))
    exact = _fraction(sum(_is_exact_stage1_item(i) for i in items or []), len(items or []))
    fmt = tags + exact if variant == "released" else float(tags == 1.0 and exact == 1.0)
    if items is None:
        return RewardBreakdown(fmt, 0.0, 0.0)
    pred = [tuple(float(v) for v in i["bbox_2d"]) for i in items if _has_box(i)]
    k, j = len(pred), len(truth_boxes)
    if j == 0:
        count = 1.0 if k == 0 else 0.0
    else:
        count = math.exp(-2.0 * abs(k - j) / j)
    if max(k, j) == 0:
        return RewardBreakdown(fmt, count, 1.0)
    _, costs = match_boxes(pred, truth_boxes, variant)
    return RewardBreakdown(fmt, count, sum(1.0 - c for c in costs) / max(k, j))


def stage2_reward(text: str, stage1_boxes: list[tuple], final_mask: np.ndarray,
                  truth_mask: np.ndarray, variant: str = "released") -> RewardBreakdown:
    """Score a stage-2 (boxes and points) answer and the mask SAM made from it.

    Parameters
    ----------
    text : str
        The model's raw output.
    stage1_boxes : list of (x1, y1, x2, y2)
        The boxes the model was given from stage 1, in order.
    final_mask, truth_mask : np.ndarray
        H×W masks of the same shape (any dtype; nonzero is foreground).
    variant : {"released", "paper"}
        ``"released"``: format = [tags match] + fraction of stage-1 boxes whose item keeps
        the box unchanged with every point strictly inside (0 to 2). ``"paper"``: format = 1
        only when the tags match and every stage-1 box scores (our reading of the paper's
        binary gate, applied to stage 2 too).

    Returns
    -------
    RewardBreakdown
        count = mean over items of exp(−(n − 2)² / 8), n the item's points (0 with no items);
        accuracy = IoU of the masks, 0.0 when their union is empty.

    Raises
    ------
    ValueError
        If the masks differ in shape or the variant is unknown.
    """
    _check_variant(variant)
    final, truth = np.asarray(final_mask, bool), np.asarray(truth_mask, bool)
    if final.shape != truth.shape:
        raise ValueError(f"mask shapes differ: {final.shape} vs {truth.shape}")
    items = _answer_items(text) or []
    kept = 0
    if len(items) == len(stage1_boxes):
        kept = sum(_keeps_box(item, box) for item, box in zip(items, stage1_boxes, strict=True))
    tags = float(has_strict_format(text))
    fraction = _fraction(kept, len(stage1_boxes))
    fmt = tags + fraction if variant == "released" else float(tags == 1.0 and fraction == 1.0)
    counts = [math.exp(-((_n_points(i) - POINTS_TARGET) ** 2) / 8.0) for i in items]
    count = sum(counts) / len(counts) if counts else 0.0
    union = int(np.count_nonzero(final | truth))
    accuracy = np.count_nonzero(final & truth) / union if union else 0.0
    return RewardBreakdown(fmt, count, float(accuracy))


def truth_boxes(mask: np.ndarray, frame_wh: tuple[int, int], min_contour_area: float = 10.0
                ) -> list[tuple[int, int, int, int]]:
    """The stage-1 truth: one box per external contour of the truth mask in the model frame.

    Parameters
    ----------
    mask : np.ndarray
        H×W truth mask (nonzero is foreground), in tile pixels.
    frame_wh : (int, int)
        Model-frame width and height; the mask is resized to it by nearest neighbour
        (``render.resize_mask``, as the pipeline resizes masks).
    min_contour_area : float
        Contours with ``cv2.contourArea`` (polygon area through pixel centres, so a 3×3 blob
        has area 4) not above this are dropped.

    Returns
    -------
    list of (x1, y1, x2, y2)
        ``(x, y, x + w, y + h)`` from ``cv2.boundingRect`` (the reference's convention),
        sorted top to bottom, then left to right.
    """
    import cv2  # training-only dependency: the inference engine does not need opencv

    width, height = (int(v) for v in frame_wh)
    resized = resize_mask(np.asarray(mask) != 0, width, height).astype(np.uint8)
    contours, _ = cv2.findContours(resized, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours:
        if cv2.contourArea(contour) > min_contour_area:
            x, y, w, h = cv2.boundingRect(contour)
            boxes.append((x, y, x + w, y + h))
    return sorted(boxes, key=lambda b: (b[1], b[0], b[3], b[2]))


def box_iou_inclusive(a, b) -> float:
    """IoU of two ``(x1, y1, x2, y2)`` boxes counting pixels inclusively (``x2 - x1 + 1``
    wide); an empty or inverted box has area 0, and a zero union gives 0.0."""
    def area(x1, y1, x2, y2):
        return max(0.0, x2 - x1 + 1) * max(0.0, y2 - y1 + 1)

    inter = area(max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3]))
    union = area(*a) + area(*b) - inter
    return float(inter / union) if union > 0 else 0.0


def box_l1(a, b) -> float:
    """Mean absolute difference of the four coordinates, in pixels."""
    return sum(abs(float(p) - float(q)) for p, q in zip(a, b, strict=True)) / 4.0


def match_boxes(pred, truth, variant: str = "released"
                ) -> tuple[list[tuple[int, int]], list[float]]:
    """Match predicted to truth boxes one-to-one by the Hungarian method.

    Parameters
    ----------
    pred, truth : list of (x1, y1, x2, y2)
    variant : {"released", "paper"}
        ``"released"`` cost: 2 − [IoU > 0.5] − [mean L1 < 10 px]. ``"paper"`` cost:
        1 − [both tests pass], so the matching maximises the pairs that pass both.

    Returns
    -------
    pairs : list of (pred_index, truth_index)
        min(K, J) pairs, by increasing prediction index.
    costs : list of float
        The cost of each pair.
    """
    _check_variant(variant)
    if not pred or not truth:
        return [], []
    cost = np.empty((len(pred), len(truth)))
    for i, p in enumerate(pred):
        for j, t in enumerate(truth):
            iou_ok = box_iou_inclusive(p, t) > IOU_THRESHOLD
            l1_ok = box_l1(p, t) < L1_THRESHOLD_PX
            cost[i, j] = 2 - iou_ok - l1_ok if variant == "released" else 1 - (iou_ok and l1_ok)
    rows, cols = linear_sum_assignment(cost)
    pairs = [(int(r), int(c)) for r, c in zip(rows, cols, strict=True)]
    return pairs, [float(cost[r, c]) for r, c in pairs]


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")


def _answer_items(text: object) -> list | None:
    """The JSON list in the first ``<answer>`` block, or None when there is none."""
    match = _ANSWER_BLOCK.search(text) if isinstance(text, str) else None
    if match is None:
        return None
    try:
        data = json.loads(match.group(1))
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, list) else None


def _fraction(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def _is_number(value: object) -> bool:
    """An int or float that is finite as a float; not a bool (JSON may hold NaN, 1e999 or
    ints too large for a float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _is_box(value: object) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)


def _has_box(item: object) -> bool:
    return isinstance(item, dict) and _is_box(item.get("bbox_2d"))


def _is_exact_stage1_item(item: object) -> bool:
    return _has_box(item) and len(item) == 1


def _n_points(item: object) -> int:
    points = item.get("points") if isinstance(item, dict) else None
    return len(points) if isinstance(points, list) else 0


def _keeps_box(item: object, box) -> bool:
    """Whether a stage-2 item repeats its stage-1 box and has a points list (possibly empty)
    whose every point lies strictly inside that box."""
    if not _has_box(item) or [float(v) for v in item["bbox_2d"]] != [float(v) for v in box]:
        return False
    points = item.get("points")
    if not isinstance(points, list):
        return False
    x1, y1, x2, y2 = (float(v) for v in box)
    return all(isinstance(p, list) and len(p) == 2 and all(_is_number(v) for v in p)
               and x1 < p[0] < x2 and y1 < p[1] < y2 for p in points)
