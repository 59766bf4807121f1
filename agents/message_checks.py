"""The ego's checks on a decoded neighbour message before anything of it reaches fusion.

The codec proves a message is well formed and intact; it cannot prove the sender is honest or
sane. A checksum-valid message can still carry a pose that is not a rigid transform, a pose
kilometres away, a sender id or send time other than the link's, or feature values no honest
encoder can produce (a ``x 1000`` map made NMS raise inside the ego's fuse). Each check here is
a pure function returning ``None`` (fine) or a short reason; :func:`check_message` runs them
all and the ego records a failing message as ``rejected`` against the sender that delivered it,
and skips it. Fail closed: when in doubt the neighbour is dropped, never the ego.

Early and late fusion messages (:mod:`channel.payload_codec`) go through the same link and pose
checks (:func:`check_payload`). A points message needs no value check: its coordinates are
int16 centimetres (within +-327.67 m of the sender) and its intensity a uint8 step of [0, 1],
so every decoded cloud already lies in the input domain :mod:`models.message_bound` assumes
(coordinates beyond the grid are dropped by voxelization). Boxes are checked for sizes, scores,
yaw and distance no honest detector produces (:func:`check_boxes`).

Costs are kept to a few vector passes (a per-channel min and max of the map), well under the
decode itself (``bench/bench_codec.py`` measures both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from channel import DecodedFeature, GridHeader, Header
from channel.payload_codec import (
    DEFAULT_MAX_BOXES,
    DEFAULT_MAX_POINTS,
    DecodedBoxes,
    DecodedCloud,
    PayloadHeader,
)
from models.detector import CooperativeDetector
from models.message_bound import FALLBACK_ABS_BOUND, message_value_bounds

# No V2X radio in use (DSRC ~300 m, C-V2X sidelink up to ~1 km) reaches further: a reported
# pose further than this from the ego is not where any real sender can be.
PLAUSIBLE_RANGE_M = 1000.0
ROTATION_TOL = 1e-4  # |R^T R - I| and |det R - 1|; honest poses are exact to ~1e-12
TIME_TOL_S = 1e-6
# Slack on the model-derived value bounds: float16 rounds to 1e-3 relative, int8 to
# (high - low) / 510 per channel, both well inside 1 % of the channel's range.
VALUE_SLACK = 0.01
REJECTED = "rejected"
# The longest vehicles (articulated trucks, buses) are under 20 m; no detected object is larger.
MAX_BOX_SIZE_M = 30.0
MAX_ABS_YAW = 4.0 * math.pi  # head outputs are anchor yaw + a bounded residual


@dataclass(frozen=True)
class MessageExpectation:
    """What an acceptable message looks like for one ego model.

    ``low``/``high`` are per-channel value bounds (``None``: only ``|v| <= abs_bound``).
    ``max_points`` / ``max_boxes`` cap an early / late fusion message (the boxes cap is the
    model's ``max_detections``: an honest sender keeps no more).
    """

    shape: tuple[int, int, int]
    grid: GridHeader
    low: NDArray[np.float32] | None = None
    high: NDArray[np.float32] | None = None
    abs_bound: float = FALLBACK_ABS_BOUND
    max_range_m: float = PLAUSIBLE_RANGE_M
    max_points: int = DEFAULT_MAX_POINTS
    max_boxes: int = DEFAULT_MAX_BOXES

    @classmethod
    def for_model(cls, model: CooperativeDetector, grid: GridHeader) -> MessageExpectation:
        """The model's message shape and grid, with its bounds widened by :data:`VALUE_SLACK`."""
        bounds = message_value_bounds(model)
        max_boxes = model.config.head.max_detections
        if bounds is None:
            return cls(tuple(model.message_shape), grid, max_boxes=max_boxes)
        low, high = bounds
        slack = VALUE_SLACK * (high - low) + 1e-6
        return cls(
            tuple(model.message_shape),
            grid,
            (low - slack).astype(np.float32),
            (high + slack).astype(np.float32),
            max_boxes=max_boxes,
        )


def check_link(header: Header | PayloadHeader, sender: int, t_send: float) -> str | None:
    """The header's sender and send time must be the delivering link's."""
    if header.sender_id != sender:
        return f"header says sender {header.sender_id}, the link delivered it from {sender}"
    if not abs(header.t_send - t_send) <= TIME_TOL_S:
        return f"header says sent at {header.t_send:.6g} s, the link sent it at {t_send:.6g} s"
    return None


def check_pose(
    pose: NDArray[np.float64], ego_pose: NDArray[np.float64], max_range_m: float
) -> str | None:
    """A finite rigid ``world <- sender`` transform (orthonormal rotation, det +1, last row
    ``0 0 0 1``) placed within ``max_range_m`` of the ego's reported position."""
    if pose.shape != (4, 4) or not np.isfinite(pose).all():
        return "pose is not a finite 4x4 matrix"
    if np.abs(pose[3] - (0.0, 0.0, 0.0, 1.0)).max() > ROTATION_TOL:
        return "pose's last row is not 0 0 0 1"
    rot = pose[:3, :3]
    err = float(np.abs(rot.T @ rot - np.eye(3)).max())
    if err > ROTATION_TOL or abs(float(np.linalg.det(rot)) - 1.0) > ROTATION_TOL:
        return f"pose is not a rigid transform (|R^T R - I| = {err:.3g})"
    dist = math.dist(pose[:3, 3], ego_pose[:3, 3])
    if not dist <= max_range_m:
        return f"pose is {dist:.4g} m from the ego, beyond the {max_range_m:g} m any link reaches"
    return None


def check_values(
    feature: NDArray[np.float32],
    expect: MessageExpectation,
    extremes: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
) -> str | None:
    """Every value finite and within the per-channel bounds (or ``abs_bound``).

    ``extremes`` = per-channel ``(min, max)`` already known (the decoder's ``value_min``,
    ``value_max`` over the sent cells; the unsent ones are zero, inside any bound): then the
    check is O(C) instead of two passes over the map.
    """
    if extremes is not None:
        lo, hi = extremes
    else:
        flat = feature.reshape(feature.shape[0], -1)
        if flat.shape[1] == 0:
            return None
        hi, lo = flat.max(axis=1), flat.min(axis=1)  # NaN propagates into both
    if not (np.isfinite(hi).all() and np.isfinite(lo).all()):
        return "feature map holds NaN/inf"
    if expect.high is None or expect.low is None:
        peak = float(max(hi.max(), -lo.min()))
        if peak > expect.abs_bound:
            return f"feature value {peak:.4g} beyond the bound {expect.abs_bound:g}"
        return None
    over = hi > expect.high
    under = lo < expect.low
    if over.any() or under.any():
        c = int(np.argmax(over | under))
        value = float(hi[c] if over[c] else lo[c])
        return (
            f"channel {c} value {value:.4g} outside what the model can produce "
            f"[{float(expect.low[c]):.4g}, {float(expect.high[c]):.4g}]"
        )
    return None


def check_message(
    decoded: DecodedFeature,
    sender: int,
    t_send: float,
    ego_pose: NDArray[np.float64],
    expect: MessageExpectation,
) -> str | None:
    """All checks of a decoded message, cheapest first; ``None`` or the first failure's reason.

    The shape and grid are checked by the codec before decompression (``expected_shape``,
    ``expected_grid``); they are checked again here so this function stands on its own.
    """
    header = decoded.header
    if header.shape != expect.shape or header.grid != expect.grid:
        return f"message {header.shape} on {header.grid.as_list()}, expected {expect.shape}"
    return (
        check_link(header, sender, t_send)
        or check_pose(header.pose, ego_pose, expect.max_range_m)
        or check_values(decoded.feature, expect, _extremes(decoded))
    )


def _extremes(
    decoded: DecodedFeature,
) -> tuple[NDArray[np.float32], NDArray[np.float32]] | None:
    """The decoder's per-channel extremes, widened to include the zeros of unsent cells."""
    if decoded.value_min is None or decoded.value_max is None:
        return None
    return np.minimum(decoded.value_min, 0.0), np.maximum(decoded.value_max, 0.0)


def check_boxes(
    boxes: NDArray[np.float32], scores: NDArray[np.float32], max_boxes: int, max_range_m: float
) -> str | None:
    """Boxes ``(n, 7)`` (sender frame) and scores a detector can produce: at most
    ``max_boxes``, finite, sizes in (0, :data:`MAX_BOX_SIZE_M`], centres within
    ``max_range_m`` of the sender, ``|yaw| <=`` :data:`MAX_ABS_YAW`, scores in [0, 1]."""
    n = boxes.shape[0]
    if n > max_boxes:
        return f"{n} boxes, more than the {max_boxes} the model keeps"
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        return "boxes or scores hold NaN/inf"
    sizes = boxes[:, 3:6]
    if not ((sizes > 0) & (sizes <= MAX_BOX_SIZE_M)).all():
        i = int(np.argmax(~((sizes > 0) & (sizes <= MAX_BOX_SIZE_M)).all(axis=1)))
        return f"box {i} size {np.round(sizes[i], 3).tolist()} outside (0, {MAX_BOX_SIZE_M:g}] m"
    far = np.hypot(boxes[:, 0], boxes[:, 1]) > max_range_m
    if far.any():
        return f"box {int(np.argmax(far))} lies beyond {max_range_m:g} m of its sender"
    if (np.abs(boxes[:, 6]) > MAX_ABS_YAW).any():
        return f"a box yaw beyond +-{MAX_ABS_YAW:.4g} rad"
    if ((scores < 0) | (scores > 1)).any():
        i = int(np.argmax((scores < 0) | (scores > 1)))
        return f"box {i} score {float(scores[i]):.4g} outside [0, 1]"
    return None


def check_payload(
    decoded: DecodedCloud | DecodedBoxes,
    sender: int,
    t_send: float,
    ego_pose: NDArray[np.float64],
    expect: MessageExpectation,
) -> str | None:
    """:func:`check_message` for an early (points) or late (boxes) fusion message: the link,
    the pose, and for boxes :func:`check_boxes` (points are bounded by their encoding)."""
    header = decoded.header
    reason = check_link(header, sender, t_send) or check_pose(
        header.pose, ego_pose, expect.max_range_m
    )
    if reason is not None or isinstance(decoded, DecodedCloud):
        return reason
    return check_boxes(decoded.boxes, decoded.scores, expect.max_boxes, expect.max_range_m)
