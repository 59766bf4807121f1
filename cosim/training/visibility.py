"""Recall by who could see each ground-truth box: where cooperation has to earn its keep.

Every GT box of a sample falls in one class by the LiDAR points inside it: ``ego`` (at least
``min_points`` of the ego's own points), ``neighbours_only`` (fewer from the ego, at least
``min_points`` from one neighbour: the occluded or distant cars only cooperation can reveal)
and ``sparse`` (fewer than ``min_points`` from every agent). Recall counts a box found when some
detection overlaps it with BEV IoU >= the threshold; the median yaw error (modulo pi, degrees),
centre error (BEV, metres) and length / width errors (metres) of those matches show whether a
strategy gets the heading, the place and the size of what it found right: what separates a box
found at IoU 0.5 from one found at 0.7.

:class:`ClassRecall` is the accumulator; :class:`VisibilityRecall` classes boxes by who saw
them, :class:`cosim.training.size_recall.SizeRecall` by their size (car / van / truck-bus).
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


# The match errors every class row reports (medians over the matches at the first threshold).
ERROR_KEYS = (
    "median_yaw_error_deg",
    "median_centre_error_m",
    "median_length_error_m",
    "median_width_error_m",
)


def match_errors(pred: NDArray[np.float64], gt: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(N, 4)`` errors of matched ``(N, 7)`` pairs, one column per :data:`ERROR_KEYS`: yaw
    modulo pi (degrees, BEV IoU cannot tell a flip), BEV centre distance, and absolute length
    and width differences (metres)."""
    yaw = np.degrees(np.abs(wrap_angle(2.0 * (pred[:, 6] - gt[:, 6]))) / 2.0)
    centre = np.hypot(pred[:, 0] - gt[:, 0], pred[:, 1] - gt[:, 1])
    length, width = np.abs(pred[:, 3] - gt[:, 3]), np.abs(pred[:, 4] - gt[:, 4])
    return np.column_stack([yaw, centre, length, width])


class ClassRecall:
    """Accumulates recall per class of GT box over many samples at one or more IoU thresholds
    (classes and IoUs computed once per sample), and the match errors (:data:`ERROR_KEYS`) at
    the first threshold. Subclasses say how a sample's boxes are classed."""

    class_names: tuple[str, ...] = ()

    def __init__(self, iou_thresholds: float | Sequence[float] = 0.5) -> None:
        thresholds = (
            (iou_thresholds,) if isinstance(iou_thresholds, float | int) else (iou_thresholds)
        )
        self.iou_thresholds = tuple(float(t) for t in thresholds)
        if not self.iou_thresholds:
            raise ValueError(f"{type(self).__name__} needs at least one IoU threshold")
        n = len(self.class_names)
        self.found = np.zeros((len(self.iou_thresholds), n), np.int64)
        self.total = np.zeros(n, np.int64)
        self.errors: list[list[NDArray[np.float64]]] = [[] for _ in self.class_names]

    @property
    def yaw_errors(self) -> list[list[float]]:
        """Per class, the yaw errors (degrees) of the matches at the first threshold."""
        return [[float(v) for e in rows for v in e[:, 0]] for rows in self.errors]

    def classes_of(self, sample: CooperativeSample) -> NDArray[np.int64]:
        """Index into ``class_names`` for each of ``sample.gt_boxes``."""
        raise NotImplementedError

    def add(self, sample: CooperativeSample, pred_boxes: NDArray[np.floating]) -> None:
        """One sample's detections (ego frame) against its GT boxes."""
        classes = self.classes_of(sample)
        n = len(self.class_names)
        self.total += np.bincount(classes, minlength=n)
        pred = np.asarray(pred_boxes, np.float64).reshape(-1, 7)
        if len(classes) == 0 or len(pred) == 0:
            return
        gt = np.asarray(sample.gt_boxes, np.float64)
        iou = rotated_iou_bev(pred, gt)  # (P, G)
        best, best_iou = iou.argmax(axis=0), iou.max(axis=0)
        for i, threshold in enumerate(self.iou_thresholds):
            hit = best_iou >= threshold
            self.found[i] += np.bincount(classes[hit], minlength=n)
            if i == 0 and hit.any():
                errors = match_errors(pred[best[hit]], gt[hit])
                for c in range(n):
                    mine = classes[hit] == c
                    if mine.any():
                        self.errors[c].append(errors[mine])

    def report(self) -> dict[str, dict[str, Any]]:
        """``{class: {"gt", "found", "recall", *ERROR_KEYS}}`` at the first threshold plus
        ``found@T`` / ``recall@T`` for each further threshold T (None where empty)."""
        out: dict[str, dict[str, Any]] = {}
        for c, name in enumerate(self.class_names):
            total = int(self.total[c])
            errors = np.concatenate(self.errors[c]) if self.errors[c] else np.zeros((0, 4))
            row: dict[str, Any] = {"gt": total}
            for i, threshold in enumerate(self.iou_thresholds):
                found = int(self.found[i, c])
                suffix = "" if i == 0 else f"@{threshold:g}"
                row[f"found{suffix}"] = found
                row[f"recall{suffix}"] = found / total if total else None
            for k, key in enumerate(ERROR_KEYS):
                row[key] = float(np.median(errors[:, k])) if len(errors) else None
            out[name] = row
        return out


class VisibilityRecall(ClassRecall):
    """:class:`ClassRecall` over :data:`VISIBILITY_CLASSES` (who saw each box)."""

    class_names = VISIBILITY_CLASSES

    def __init__(self, iou_thresholds: float | Sequence[float] = 0.5, min_points: int = 5) -> None:
        super().__init__(iou_thresholds)
        self.min_points = min_points

    def classes_of(self, sample: CooperativeSample) -> NDArray[np.int64]:
        return visibility_classes(sample, self.min_points)
