"""Late fusion: every agent's detections moved into the ego frame and merged by rotated NMS,
then (``vote_iou`` > 0) box voting over every agent's overlapping boxes; :func:`detect_late` is
the merge with a detector's neighbour choice and head settings (``cosim run`` and ``eval``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from models.box_voting import vote_boxes
from models.detector import CooperativeDetector
from models.grid import GridSpec
from models.head import Detections
from models.nms import rotated_nms
from scenarios.geometry import boxes_to_frame


def merge_late(
    own: Detections,
    neighbour_detections: Sequence[tuple[Detections, ArrayLike]],
    grid: GridSpec,
    ego_clearance: float,
    nms_iou: float,
    max_detections: int,
    vote_iou: float = 0.0,
) -> Detections:
    """Each neighbour's boxes (its LiDAR frame, with its 4x4 neighbour->ego transform) projected
    to the ego frame and pooled with the ego's; boxes whose centre leaves the grid (x, y) or
    lies within ``ego_clearance`` of the ego LiDAR (the ego itself) are dropped; then rotated
    NMS by score, at most ``max_detections``. With ``vote_iou`` > 0 each kept box becomes the
    score-weighted mean of the pooled boxes overlapping it that much (:mod:`models.box_voting`):
    two agents' independent errors on one car average out."""
    boxes = [np.asarray(own.boxes, np.float32).reshape(-1, 7)]
    scores = [np.asarray(own.scores, np.float32).reshape(-1)]
    for dets, transform in neighbour_detections:
        boxes.append(boxes_to_frame(dets.boxes, np.asarray(transform, np.float64)))
        scores.append(np.asarray(dets.scores, np.float32).reshape(-1))
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    x0, y0, _, x1, y1, _ = grid.point_range
    inside = (
        (all_boxes[:, 0] >= x0)
        & (all_boxes[:, 0] < x1)
        & (all_boxes[:, 1] >= y0)
        & (all_boxes[:, 1] < y1)
        & (np.hypot(all_boxes[:, 0], all_boxes[:, 1]) >= ego_clearance)
    )
    all_boxes, all_scores = all_boxes[inside], all_scores[inside]
    keep = rotated_nms(all_boxes, all_scores, nms_iou, post_max_size=max_detections)
    kept = all_boxes[keep]
    if vote_iou > 0.0 and len(kept):
        kept = vote_boxes(kept, all_boxes, all_scores, vote_iou)
    return Detections(kept, all_scores[keep])


def detect_late(
    model: CooperativeDetector,
    own: Detections,
    neighbour_detections: Sequence[tuple[Detections, ArrayLike]],
    nms_iou: float | None = None,
) -> Detections:
    """:func:`merge_late` of the ego's boxes and those of the neighbours ``model`` chooses
    (within ``comm_range``, the nearest ``max_neighbours``), with its grid, ego clearance and
    head settings (``nms_iou`` None: the head's)."""
    transforms = (
        np.stack([np.asarray(t, np.float64) for _, t in neighbour_detections])
        if neighbour_detections
        else np.zeros((0, 4, 4))
    )
    chosen = [
        (neighbour_detections[i][0], transforms[i]) for i in model.select_neighbours(transforms)
    ]
    cfg = model.anchor_head.config  # what cosim eval --vote-iou overrides
    return merge_late(
        own,
        chosen,
        model.grid,
        model.config.ego_clearance,
        cfg.nms_iou if nms_iou is None else nms_iou,
        cfg.max_detections,
        cfg.vote_iou,
    )
