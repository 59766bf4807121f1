"""Recall by who could see each ground-truth box: where cooperation has to earn its keep.

Every GT box of a sample falls in one class by the LiDAR points inside it: ``ego`` (at least
``min_points`` of the ego's own points), ``neighbours_only`` (fewer from the ego, at least
``min_points`` from one neighbour: the occluded or distant cars only cooperation can reveal)
and ``sparse`` (fewer than ``min_points`` from every agent). Recall counts a box found when some
detection overlaps it with BEV IoU >= the threshold; the median yaw error (modulo pi, degrees)
of those matches shows whether a strategy gets the heading of what it found right.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from models.batch import CooperativeSample
from models.box_ops import rotated_iou_bev
from scenarios.geometry import points_in_boxes, points_to_frame, wrap_angle

VISIBILITY_CLASSES = ("ego", "neighbours_only", "sparse")


def visibility_classes(sample: CooperativeSample, min_points: int = 5) -> NDArray[np.int64]:
    """Index into :data:`VISIBILITY_CLASSES` for each of ``sample.gt_boxes`` (ego frame)."""
    gt = sample.gt_boxes
    if len(gt) == 0:
        return np.zeros(0, np.int64)
    ego = points_in_boxes(sample.ego_points[:, :3], gt).sum(axis=0)
    best_neighbour = np.zeros(len(gt), np.int64)
    for points, to_ego in zip(sample.neighbour_points, sample.neighbour_to_ego, strict=True):
        counts = points_in_boxes(points_to_frame(points, to_ego)[:, :3], gt).sum(axis=0)
        best_neighbour = np.maximum(best_neighbour, counts)
    return np.where(ego >= min_points, 0, np.where(best_neighbour >= min_points, 1, 2))


class VisibilityRecall:
    """Accumulates recall per visibility class over many samples at one or more IoU thresholds
    (classes and IoUs computed once per sample); yaw errors at the first threshold."""

    def __init__(self, iou_thresholds: float | Sequence[float] = 0.5, min_points: int = 5) -> None:
        thresholds = (iou_thresholds,) if isinstance(iou_thresholds, float | int) else (
            iou_thresholds)
        self.iou_thresholds = tuple(float(t) for t in thresholds)
        if not self.iou_thresholds:
            raise ValueError("VisibilityRecall needs at least one IoU threshold")
        self.min_points = min_points
        self.found = np.zeros((len(self.iou_thresholds), len(VISIBILITY_CLASSES)), np.int64)
        self.total = np.zeros(len(VISIBILITY_CLASSES), np.int64)
        self.yaw_errors: list[list[float]] = [[] for _ in VISIBILITY_CLASSES]

    def add(self, sample: CooperativeSample, pred_boxes: NDArray[np.floating]) -> None:
        """One sample's detections (ego frame) against its GT boxes."""
        classes = visibility_classes(sample, self.min_points)
        self.total += np.bincount(classes, minlength=len(VISIBILITY_CLASSES))
        pred = np.asarray(pred_boxes, np.float64).reshape(-1, 7)
        if len(classes) == 0 or len(pred) == 0:
            return
        iou = rotated_iou_bev(pred, sample.gt_boxes)  # (P, G)
        best, best_iou = iou.argmax(axis=0), iou.max(axis=0)
        for i, threshold in enumerate(self.iou_thresholds):
            hit = best_iou >= threshold
            self.found[i] += np.bincount(classes[hit], minlength=len(VISIBILITY_CLASSES))
            if i == 0:
                for g in np.nonzero(hit)[0]:
                    error = abs(float(wrap_angle(2.0 * (pred[best[g], 6] - sample.gt_boxes[g, 6]))))
                    self.yaw_errors[classes[g]].append(float(np.degrees(error / 2)))

    def report(self) -> dict[str, dict[str, Any]]:
        """``{class: {"gt", "found", "recall", "median_yaw_error_deg"}}`` at the first threshold
        plus ``found@T`` / ``recall@T`` for each further threshold T (None where empty)."""
        out: dict[str, dict[str, Any]] = {}
        for c, name in enumerate(VISIBILITY_CLASSES):
            total, errors = int(self.total[c]), self.yaw_errors[c]
            row: dict[str, Any] = {"gt": total}
            for i, threshold in enumerate(self.iou_thresholds):
                found = int(self.found[i, c])
                suffix = "" if i == 0 else f"@{threshold:g}"
                row[f"found{suffix}"] = found
                row[f"recall{suffix}"] = found / total if total else None
            row["median_yaw_error_deg"] = float(np.median(errors)) if errors else None
            out[name] = row
        return out
