"""Box geometry for the head and the metrics: BEV IoU and anchor residual coding.

Boxes are ``(M, 7)`` ``x, y, z, l, w, h, yaw`` (z is the box centre, yaw in radians), all in one
frame of reference named by the caller.

Two IoUs, for two jobs:

* :func:`rotated_iou_bev` is the exact BEV IoU of rotated rectangles (shapely 2, vectorised).
  Metrics and NMS use it: it is what the OPV2V protocol scores.
* :func:`nearest_bev_iou` rotates every box to its nearest axis-aligned heading (0 or 90
  degrees, swapping ``l`` and ``w``) and takes the axis-aligned IoU, in torch. Target assignment
  uses it, as OpenPCDet's ``AxisAlignedTargetAssigner`` does when heights are not matched: the
  anchors are axis-aligned already, so only the ground truth is approximated, and a pure tensor
  IoU is fast for tens of thousands of anchors.
"""

from __future__ import annotations

import math

import numpy as np
import shapely
import torch
from numpy.typing import ArrayLike, NDArray

from scenarios.geometry import box_corners_bev

ArrayOrTensor = NDArray[np.floating] | torch.Tensor


def as_numpy_boxes(boxes: ArrayOrTensor | ArrayLike) -> NDArray[np.float64]:
    """Any ``(M, 7)`` array or tensor -> float64 numpy ``(M, 7)`` (no copy if possible)."""
    if isinstance(boxes, torch.Tensor):
        boxes = boxes.detach().cpu().numpy()
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return arr.reshape(0, 7)
    if arr.ndim != 2 or arr.shape[1] != 7:
        raise ValueError(f"boxes must have shape (M, 7), got {arr.shape}")
    return arr


def as_numpy_scores(scores: ArrayOrTensor | ArrayLike) -> NDArray[np.float64]:
    """Any ``(N,)`` scores array or tensor -> float64 numpy ``(N,)``."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    return np.asarray(scores, dtype=np.float64).reshape(-1)


# Largest centre coordinate or size (metres) a box may have and still be scored: far beyond any
# LiDAR range, far inside where polygon arithmetic in GEOS loses precision or fails.
MAX_BOX_METRES = 1.0e5


def sane_boxes(boxes: NDArray[np.float64]) -> NDArray[np.bool_]:
    """``(M,)`` True for boxes that polygon code can handle: all seven numbers finite, centre
    and sizes within :data:`MAX_BOX_METRES`, length and width positive. Head outputs on hostile
    (huge but finite) features break each of these; such boxes are dropped, never scored."""
    if len(boxes) == 0:
        return np.zeros(0, dtype=bool)
    finite = np.isfinite(boxes).all(axis=1)
    with np.errstate(invalid="ignore"):
        inside = (np.abs(boxes[:, :6]) <= MAX_BOX_METRES).all(axis=1)
        positive = (boxes[:, 3] > 0) & (boxes[:, 4] > 0)
    return finite & inside & positive


def bev_polygons(boxes: ArrayOrTensor) -> NDArray[np.object_]:
    """``(M, 7)`` boxes -> ``(M,)`` array of shapely BEV polygons (one vectorised call)."""
    b = as_numpy_boxes(boxes)
    if len(b) == 0:
        return np.empty(0, dtype=object)
    return shapely.polygons(box_corners_bev(b))


def bev_bounds(boxes: NDArray[np.float64]) -> NDArray[np.float64]:
    """``(M, 4)`` axis-aligned BEV bounds ``x_min, y_min, x_max, y_max`` of rotated boxes."""
    cos, sin = np.abs(np.cos(boxes[:, 6])), np.abs(np.sin(boxes[:, 6]))
    half_x = 0.5 * (boxes[:, 3] * cos + boxes[:, 4] * sin)
    half_y = 0.5 * (boxes[:, 3] * sin + boxes[:, 4] * cos)
    return np.stack(
        [boxes[:, 0] - half_x, boxes[:, 1] - half_y, boxes[:, 0] + half_x, boxes[:, 1] + half_y],
        axis=1,
    )


def rotated_iou_bev(boxes_a: ArrayOrTensor, boxes_b: ArrayOrTensor) -> NDArray[np.float64]:
    """Exact BEV IoU of rotated boxes, ``(N, M)`` float64.

    An axis-aligned bounds test picks the pairs that can overlap; only those go through shapely's
    polygon intersection, so sparse scenes cost little more than the bounds test. Degenerate
    boxes (zero area) have IoU 0 with everything.
    """
    a, b = as_numpy_boxes(boxes_a), as_numpy_boxes(boxes_b)
    iou = np.zeros((len(a), len(b)), dtype=np.float64)
    if len(a) == 0 or len(b) == 0:
        return iou
    ba, bb = bev_bounds(a), bev_bounds(b)
    overlap = (
        (ba[:, None, 0] < bb[None, :, 2])
        & (bb[None, :, 0] < ba[:, None, 2])
        & (ba[:, None, 1] < bb[None, :, 3])
        & (bb[None, :, 1] < ba[:, None, 3])
    )
    ia, ib = np.nonzero(overlap)
    if len(ia) == 0:
        return iou
    pa, pb = bev_polygons(a), bev_polygons(b)
    inter = shapely.area(shapely.intersection(pa[ia], pb[ib]))
    area_a, area_b = a[:, 3] * a[:, 4], b[:, 3] * b[:, 4]
    union = area_a[ia] + area_b[ib] - inter
    iou[ia, ib] = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return iou


def nearest_bev_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """``(M, 7)`` boxes -> ``(M, 4)`` axis-aligned BEV ``x_min, y_min, x_max, y_max``.

    Each box is turned to the nearer of 0 and 90 degrees: when ``|yaw|`` mod pi is closer to
    pi/2, length and width swap.
    """
    yaw = torch.remainder(boxes[:, 6] + math.pi / 4, math.pi) - math.pi / 4
    swap = yaw.abs() > math.pi / 4
    size_x = torch.where(swap, boxes[:, 4], boxes[:, 3])
    size_y = torch.where(swap, boxes[:, 3], boxes[:, 4])
    x, y = boxes[:, 0], boxes[:, 1]
    return torch.stack([x - size_x / 2, y - size_y / 2, x + size_x / 2, y + size_y / 2], dim=1)


def nearest_bev_iou(boxes_a: torch.Tensor, boxes_b: torch.Tensor) -> torch.Tensor:
    """Axis-aligned BEV IoU after :func:`nearest_bev_boxes`, ``(N, M)`` in ``boxes_a``'s dtype."""
    if len(boxes_a) == 0 or len(boxes_b) == 0:
        return boxes_a.new_zeros((len(boxes_a), len(boxes_b)))
    a, b = nearest_bev_boxes(boxes_a), nearest_bev_boxes(boxes_b.to(boxes_a))
    # Column by column on (N, M) tensors: about a dozen elementwise ops, no (N, M, 2) stacks;
    # callers get the best speed with the longer set as boxes_b (the inner axis).
    ax0, ay0, ax1, ay1 = a.T.contiguous()[:, :, None]  # each (N, 1)
    bx0, by0, bx1, by1 = b.T.contiguous()  # each (M,), contiguous for fast broadcasting
    inter_x = (torch.minimum(ax1, bx1) - torch.maximum(ax0, bx0)).clamp_(min=0)
    inter_y = (torch.minimum(ay1, by1) - torch.maximum(ay0, by0)).clamp_(min=0)
    inter = inter_x.mul_(inter_y)
    area_a = (ax1 - ax0) * (ay1 - ay0)
    area_b = (bx1 - bx0) * (by1 - by0)
    union = (area_a + area_b).sub_(inter).clamp_(min=1e-12)
    return inter.div_(union)


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Residuals of ``boxes`` against same-shape ``anchors`` (``(..., 7)``), SECOND style.

    ``dx = (x - xa) / d``, ``dy = (y - ya) / d`` with ``d`` the anchor's BEV diagonal,
    ``dz = (z - za) / ha``, ``log(l / la)``, ``log(w / wa)``, ``log(h / ha)``,
    ``dyaw = yaw - yaw_a``.
    """
    xa, ya, za, la, wa, ha, ra = anchors.unbind(dim=-1)
    xg, yg, zg, lg, wg, hg, rg = boxes.unbind(dim=-1)
    diag = torch.sqrt(la * la + wa * wa)
    return torch.stack(
        [
            (xg - xa) / diag,
            (yg - ya) / diag,
            (zg - za) / ha,
            torch.log(lg / la),
            torch.log(wg / wa),
            torch.log(hg / ha),
            rg - ra,
        ],
        dim=-1,
    )


def decode_boxes(residuals: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`encode_boxes`: residuals ``(..., 7)`` + anchors -> boxes ``(..., 7)``.

    The yaw is returned unwrapped (``yaw_a + dyaw``); callers wrap it when they need a range.
    """
    xa, ya, za, la, wa, ha, ra = anchors.unbind(dim=-1)
    dx, dy, dz, dl, dw, dh, dr = residuals.unbind(dim=-1)
    diag = torch.sqrt(la * la + wa * wa)
    return torch.stack(
        [
            dx * diag + xa,
            dy * diag + ya,
            dz * ha + za,
            torch.exp(dl) * la,
            torch.exp(dw) * wa,
            torch.exp(dh) * ha,
            dr + ra,
        ],
        dim=-1,
    )
