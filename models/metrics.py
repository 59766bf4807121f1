"""Detection AP with the OPV2V / OpenCOOD protocol, and corruption-robustness errors.

Protocol (OpenCOOD ``eval_utils``): per frame, detections go in descending score order; each
one takes the still-unmatched GT box of highest BEV rotated IoU if that IoU is ``>= threshold``
(a true positive), else it is a false positive. The tp/fp flags and scores of all frames are
accumulated, cumulative sums give precision and recall, and AP is the VOC2010 all-point
interpolation (monotone precision envelope summed over recall changes).

Two orderings of the accumulated list, as in OpenCOOD (issue #101 / #104, PR #105, "global
score sorting as an option"):

* ``global_sort=False`` (the OPV2V paper's numbers): frames are concatenated in the order they
  were added, each frame sorted by its own scores; the precision/recall curve follows that
  order, so it depends on frame order.
* ``global_sort=True``: all detections of all frames are re-sorted by score (stable: equal
  scores keep their accumulation order) before the cumulative sums — the standard AP, which
  is invariant to frame order and usually higher.

Edge cases: no detections but some GT -> AP 0.0. No GT in any frame -> AP is NaN (recall is
undefined; report it as missing rather than as a score).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from models.box_ops import ArrayOrTensor, as_numpy_boxes, as_numpy_scores, rotated_iou_bev

DEFAULT_IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)


def match_detections(iou: NDArray[np.float64], iou_threshold: float) -> NDArray[np.bool_]:
    """Greedy matching of detections (rows, already in descending score order) to GT
    (columns) of a precomputed IoU matrix -> ``(N,)`` true-positive flags."""
    tp = np.zeros(iou.shape[0], dtype=bool)
    if iou.shape[1] == 0:
        return tp
    free = np.ones(iou.shape[1], dtype=bool)
    for i in range(iou.shape[0]):
        if not free.any():
            break
        row = np.where(free, iou[i], -1.0)
        j = int(np.argmax(row))
        if row[j] >= iou_threshold:
            tp[i] = True
            free[j] = False
    return tp


def voc_ap(recall: NDArray[np.float64], precision: NDArray[np.float64]) -> float:
    """VOC2010 all-point AP: pad recall with 0 and 1 (precision with 0 and 0), make precision
    monotone non-increasing from the right, sum ``delta_recall * precision`` where recall moves."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def average_precision(
    tp: NDArray[np.bool_], scores: NDArray[np.float64], num_gt: int, global_sort: bool = False
) -> float:
    """AP from accumulated tp flags (fp = not tp) and scores; see the module doc for the modes."""
    if num_gt == 0:
        return math.nan
    if len(tp) == 0:
        return 0.0
    if global_sort:
        order = np.argsort(-scores, kind="stable")
        tp = tp[order]
    tp_cum = np.cumsum(tp)
    fp_cum = np.cumsum(~tp)
    recall = tp_cum / num_gt
    precision = tp_cum / (tp_cum + fp_cum)
    return voc_ap(recall, precision)


class DetectionAccumulator:
    """Collects per-frame tp/fp flags at several IoU thresholds; AP on demand.

    Add frames one at a time (one IoU matrix per frame serves all thresholds), then call
    :meth:`average_precision`. All boxes of one frame must be in one frame of reference.
    """

    def __init__(self, iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS) -> None:
        self.iou_thresholds = tuple(float(t) for t in iou_thresholds)
        self._tp: dict[float, list[NDArray[np.bool_]]] = {t: [] for t in self.iou_thresholds}
        self._scores: list[NDArray[np.float64]] = []
        self.num_gt = 0
        self.num_frames = 0

    def add(
        self, pred_boxes: ArrayOrTensor, pred_scores: ArrayOrTensor, gt_boxes: ArrayOrTensor
    ) -> None:
        """Match one frame's ``(N, 7)`` detections with scores ``(N,)`` to ``(M, 7)`` GT."""
        pred = as_numpy_boxes(pred_boxes)
        scores = as_numpy_scores(pred_scores)
        gt = as_numpy_boxes(gt_boxes)
        if len(pred) != len(scores):
            raise ValueError(f"metrics: {len(pred)} boxes but {len(scores)} scores")
        order = np.argsort(-scores, kind="stable")
        iou = rotated_iou_bev(pred[order], gt)
        for t in self.iou_thresholds:
            self._tp[t].append(match_detections(iou, t))
        self._scores.append(scores[order])
        self.num_gt += len(gt)
        self.num_frames += 1

    def mark(self) -> tuple[int, int]:
        """A point to :meth:`rollback` to: ``(frames, ground-truth boxes)`` added so far."""
        return self.num_frames, self.num_gt

    def rollback(self, mark: tuple[int, int]) -> None:
        """Forget every frame added after ``mark`` (an abandoned, half-scored tick)."""
        frames, num_gt = mark
        for t in self.iou_thresholds:
            del self._tp[t][frames:]
        del self._scores[frames:]
        self.num_frames, self.num_gt = frames, num_gt

    @property
    def num_detections(self) -> int:
        return int(sum(len(s) for s in self._scores))

    def false_positives(self) -> dict[float, int]:
        """``{iou_threshold: detections that matched no GT}`` over every frame added so far."""
        return {t: int(sum((~tp).sum() for tp in self._tp[t])) for t in self.iou_thresholds}

    def average_precision(self, global_sort: bool = False) -> dict[float, float]:
        """``{iou_threshold: AP}`` over every frame added so far."""
        scores = np.concatenate(self._scores) if self._scores else np.empty(0)
        out = {}
        for t in self.iou_thresholds:
            tp = np.concatenate(self._tp[t]) if self._tp[t] else np.empty(0, dtype=bool)
            out[t] = average_precision(tp, scores, self.num_gt, global_sort)
        return out


def evaluate_detections(
    frames: Iterable[tuple[ArrayOrTensor, ArrayOrTensor, ArrayOrTensor]],
    iou_thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    global_sort: bool = False,
) -> dict[float, float]:
    """AP per IoU threshold over ``(pred_boxes (N, 7), pred_scores (N,), gt_boxes (M, 7))``
    frames, each in one frame of reference. See the module doc for ``global_sort``."""
    acc = DetectionAccumulator(iou_thresholds)
    for pred_boxes, pred_scores, gt_boxes in frames:
        acc.add(pred_boxes, pred_scores, gt_boxes)
    return acc.average_precision(global_sort)


def relative_corruption_error(ap_clean: float, ap_corrupt: float) -> float:
    """RCE = (AP_clean - AP_corrupt) / AP_clean; a clean AP of 0 (or NaN) is an error."""
    if not ap_clean or math.isnan(ap_clean):
        raise ValueError(f"relative corruption error needs a non-zero clean AP, got {ap_clean}")
    return (ap_clean - ap_corrupt) / ap_clean


def mean_relative_corruption_error(
    ap_clean: float, ap_corrupt: Mapping[str, float] | Iterable[float]
) -> float:
    """mRCE: the mean RCE over corruptions (``{name: AP}`` or a sequence of APs)."""
    values = list(ap_corrupt.values() if isinstance(ap_corrupt, Mapping) else ap_corrupt)
    if not values:
        raise ValueError("mean relative corruption error needs at least one corruption")
    return float(np.mean([relative_corruption_error(ap_clean, v) for v in values]))
