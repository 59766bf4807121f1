"""Box voting after NMS: each kept box becomes the score-weighted mean of the candidates that
overlap it (Gidaris & Komodakis 2015's "box voting"; the weighted NMS of CIA-SSD).

Why: the anchors of a few neighbouring 0.8 m cells all regress the same car, each with its own
small error, and NMS keeps the highest *score*, not the best *box*. At IoU 0.7 a 0.2 m centre
error decides (``scripts/diagnose_iou07.py``: repairing the centre alone takes the share of
matches reaching 0.7 from ~0.66 to ~0.96); averaging the overlapping candidates cancels part of
their independent errors. Scores, the set of boxes and their order are unchanged.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from models.box_ops import rotated_iou_bev


def vote_boxes(
    kept: NDArray[np.floating],
    candidates: NDArray[np.floating],
    scores: NDArray[np.floating],
    iou_threshold: float,
) -> NDArray[np.float32]:
    """``(K, 7)`` kept boxes refined by the ``(N, 7)`` candidates (with ``(N,)`` scores) whose
    BEV IoU with them is ``>= iou_threshold``: x, y, z, l, w, h are score-weighted means; the
    yaw is the kept box's plus the weighted mean of the candidates' yaw differences taken
    modulo pi (a candidate flipped by pi votes for the same heading). A kept box that is among
    the candidates always votes for itself, so one without neighbours is returned unchanged.
    """
    kept64 = np.asarray(kept, np.float64).reshape(-1, 7)
    cand = np.asarray(candidates, np.float64).reshape(-1, 7)
    if len(kept64) == 0 or len(cand) == 0:
        return kept64.astype(np.float32)
    weights = np.where(rotated_iou_bev(kept64, cand) >= iou_threshold, 1.0, 0.0)
    weights = weights * np.asarray(scores, np.float64).reshape(1, -1)
    total = weights.sum(axis=1, keepdims=True)
    alone = total[:, 0] <= 0
    total[alone] = 1.0
    out = kept64.copy()
    out[:, :6] = weights @ cand[:, :6] / total
    diff = cand[None, :, 6] - kept64[:, None, 6]
    diff = (diff + np.pi / 2) % np.pi - np.pi / 2
    out[:, 6] = kept64[:, 6] + (weights * diff).sum(axis=1) / total[:, 0]
    out[alone] = kept64[alone]
    return out.astype(np.float32)
