"""The paper's metrics — cIoU, gIoU — and the instance-level F1 this project defines.

Per-sample counts are computed once (``sample_scores``) and summed later
(``summarize``), so an evaluation can be resumed from its JSON-lines log and a
baseline's masks scored by the same code.

F1 (the paper reports it but never defines it; this is our definition):
instances are the connected components (8-connected) of prediction and truth with more
than ``min_instance_px`` pixels; prediction and truth instances are matched one-to-one
by the Hungarian method on IoU; a match with IoU ≥ ``match_iou`` is a true positive;
unmatched or weaker predictions are false positives, unmatched truths false negatives;
F1 = 2·TP / (2·TP + FP + FN) with TP, FP, FN summed over the whole set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

EIGHT_CONNECTED = np.ones((3, 3), bool)


@dataclass(frozen=True)
class MetricConfig:
    """The knobs, each with the value used for the published tables."""

    empty_iou: float = 1.0       # gIoU of a sample whose prediction and truth are both empty
    min_instance_px: int = 10    # an instance needs more pixels than this
    match_iou: float = 0.5       # a matched pair counts as TP from this IoU on


DEFAULT_METRICS = MetricConfig()


@dataclass
class SampleScore:
    """Counts for one sample; everything ``summarize`` needs."""

    intersection: int
    union: int
    iou: float
    tp: int
    fp: int
    fn: int

    def to_dict(self) -> dict:
        return asdict(self)


def instances(mask: np.ndarray, min_px: int) -> list[np.ndarray]:
    """8-connected components with more than ``min_px`` pixels, as flat pixel indices."""
    labels, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
    if n == 0:
        return []
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    bounds = np.searchsorted(flat[order], np.arange(1, n + 2))
    comps = [order[bounds[i]:bounds[i + 1]] for i in range(n)]
    return [c for c in comps if c.size > min_px]


def instance_matches(pred: np.ndarray, truth: np.ndarray, config: MetricConfig = DEFAULT_METRICS
                     ) -> tuple[int, int, int]:
    """(TP, FP, FN) of one sample under the F1 definition in the module docstring."""
    p = instances(pred, config.min_instance_px)
    t = instances(truth, config.min_instance_px)
    if not p or not t:
        return 0, len(p), len(t)
    iou = np.zeros((len(p), len(t)))
    for i, pi in enumerate(p):
        for j, tj in enumerate(t):
            inter = np.intersect1d(pi, tj, assume_unique=True).size
            if inter:
                iou[i, j] = inter / (pi.size + tj.size - inter)
    rows, cols = linear_sum_assignment(iou, maximize=True)
    tp = int(np.sum(iou[rows, cols] >= config.match_iou))
    return tp, len(p) - tp, len(t) - tp


def sample_scores(pred: np.ndarray, truth: np.ndarray, config: MetricConfig = DEFAULT_METRICS
                  ) -> SampleScore:
    """Score one predicted mask (H×W bool) against its truth (H×W bool)."""
    pred = np.asarray(pred, bool)
    truth = np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"Prediction {pred.shape} and truth {truth.shape} differ in shape.")
    inter = int(np.count_nonzero(pred & truth))
    union = int(np.count_nonzero(pred | truth))
    iou = inter / union if union else config.empty_iou
    tp, fp, fn = instance_matches(pred, truth, config)
    return SampleScore(inter, union, iou, tp, fp, fn)


def summarize(scores: Iterable[SampleScore | dict]) -> dict:
    """cIoU, gIoU and F1 (all in %, as the paper prints them) over a set of samples.

    cIoU = Σ intersection / Σ union; gIoU = mean per-sample IoU; F1 as defined above.
    An empty set gives NaN; a set with no pixels and no instances at all scores 100.
    """
    rows = [s.to_dict() if isinstance(s, SampleScore) else s for s in scores]
    n = len(rows)
    if n == 0:
        return {"n": 0, "cIoU": float("nan"), "gIoU": float("nan"), "F1": float("nan")}
    inter = sum(r["intersection"] for r in rows)
    union = sum(r["union"] for r in rows)
    tp, fp, fn = (sum(r[k] for r in rows) for k in ("tp", "fp", "fn"))
    return {
        "n": n,
        "cIoU": 100.0 * (inter / union if union else 1.0),
        "gIoU": 100.0 * sum(r["iou"] for r in rows) / n,
        "F1": 100.0 * (2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0),
        "tp": tp, "fp": fp, "fn": fn,
    }
