"""Greedy rotated non-maximum suppression on BEV IoU."""

from __future__ import annotations

import numpy as np
import shapely
from numpy.typing import NDArray

from models.box_ops import (
    ArrayOrTensor,
    as_numpy_boxes,
    as_numpy_scores,
    bev_bounds,
    bev_polygons,
    sane_boxes,
)


def rotated_nms(
    boxes: ArrayOrTensor,
    scores: ArrayOrTensor,
    iou_threshold: float,
    score_threshold: float | None = None,
    pre_max_size: int | None = None,
    post_max_size: int | None = None,
) -> NDArray[np.int64]:
    """Indices (into the inputs) of the boxes kept, highest score first.

    Boxes under ``score_threshold`` are dropped, the ``pre_max_size`` best of the rest are
    compared by exact BEV rotated IoU, and a box is suppressed when its IoU with an
    already kept, higher-scored box is ``>= iou_threshold``. At most ``post_max_size`` are kept.
    Equal scores keep their input order (stable sort), so the result is deterministic.
    Boxes that are not :func:`~models.box_ops.sane_boxes` (non-finite, absurdly large or
    degenerate) and NaN scores are never kept, so any input of the right shapes is safe.
    """
    b = as_numpy_boxes(boxes)
    s = as_numpy_scores(scores)
    if len(b) != len(s):
        raise ValueError(f"nms: {len(b)} boxes but {len(s)} scores")
    candidates = np.nonzero(sane_boxes(b) & ~np.isnan(s))[0]
    if score_threshold is not None:
        candidates = candidates[s >= score_threshold]
    order = candidates[np.argsort(-s[candidates], kind="stable")]
    if pre_max_size is not None:
        order = order[:pre_max_size]
    if len(order) == 0:
        return np.empty(0, dtype=np.int64)
    # Lazy greedy: only a kept box's IoU row is computed, and only against the still-live,
    # lower-scored candidates whose axis-aligned bounds overlap it.
    cand = b[order]
    bounds = bev_bounds(cand)
    polygons = bev_polygons(cand)
    areas = cand[:, 3] * cand[:, 4]
    alive = np.ones(len(order), dtype=bool)
    keep: list[int] = []
    limit = len(order) if post_max_size is None else post_max_size
    for i in range(len(order)):
        if not alive[i]:
            continue
        keep.append(i)
        if len(keep) >= limit:
            break
        rest = i + 1 + np.nonzero(alive[i + 1 :])[0]
        bi, br = bounds[i], bounds[rest]
        near = rest[
            (br[:, 0] < bi[2]) & (bi[0] < br[:, 2]) & (br[:, 1] < bi[3]) & (bi[1] < br[:, 3])
        ]
        if len(near) == 0:
            continue
        inter = shapely.area(shapely.intersection(polygons[i], polygons[near]))
        union = np.maximum(areas[i] + areas[near] - inter, 1e-12)
        alive[near[inter / union >= iou_threshold]] = False
    return order[np.asarray(keep, dtype=np.int64)]
