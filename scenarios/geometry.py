"""Rigid transforms between the world, LiDAR and ego frames, with OpenCOOD's pose convention.

Poses are 4x4 float64 matrices mapping a local frame into the world (``world <- local``).
OPV2V files store poses as ``[x, y, z, roll, yaw, pitch]`` in metres and degrees; convert only at
the file boundary with :func:`pose_to_matrix` / :func:`matrix_to_pose`, which use exactly the
rotation of OpenCOOD's ``x_to_world`` so that a pose read and written round-trips.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray


def pose_to_matrix(pose: ArrayLike) -> NDArray[np.float64]:
    """``[x, y, z, roll, yaw, pitch]`` (metres, degrees) -> 4x4 ``world <- local`` matrix."""
    x, y, z, roll, yaw, pitch = np.asarray(pose, dtype=np.float64).reshape(6)
    cy, sy = np.cos(np.radians(yaw)), np.sin(np.radians(yaw))
    cr, sr = np.cos(np.radians(roll)), np.sin(np.radians(roll))
    cp, sp = np.cos(np.radians(pitch)), np.sin(np.radians(pitch))
    matrix = np.eye(4)
    matrix[:3, 3] = (x, y, z)
    matrix[:3, :3] = [
        [cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr],
        [sp, -cp * sr, cp * cr],
    ]
    return matrix


def matrix_to_pose(matrix: ArrayLike) -> NDArray[np.float64]:
    """4x4 ``world <- local`` matrix -> ``[x, y, z, roll, yaw, pitch]`` (metres, degrees).

    Inverse of :func:`pose_to_matrix` for pitch in (-90, 90) degrees.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"pose matrix must be 4x4, got shape {m.shape}")
    pitch = np.arcsin(np.clip(m[2, 0], -1.0, 1.0))
    roll = np.arctan2(-m[2, 1], m[2, 2])
    yaw = np.arctan2(m[1, 0], m[0, 0])
    return np.array(
        [m[0, 3], m[1, 3], m[2, 3], np.degrees(roll), np.degrees(yaw), np.degrees(pitch)]
    )


def yaw_pose(x: float, y: float, z: float, yaw_rad: float) -> NDArray[np.float64]:
    """A planar pose (no roll or pitch) as a 4x4 ``world <- local`` matrix; yaw in radians."""
    return pose_to_matrix([x, y, z, 0.0, np.degrees(yaw_rad), 0.0])


def relative_transform(
    source_to_world: ArrayLike, target_to_world: ArrayLike
) -> NDArray[np.float64]:
    """Transform taking coordinates in the source frame to the target frame.

    ``inv(T_target) @ T_source`` as in OpenCOOD's ``x1_to_x2``.
    """
    source = np.asarray(source_to_world, dtype=np.float64)
    target = np.asarray(target_to_world, dtype=np.float64)
    return np.linalg.solve(target, source)


def points_to_frame(points: NDArray[np.floating], transform: ArrayLike) -> NDArray[np.float32]:
    """Apply a 4x4 transform to ``(N, 3+)`` points; extra columns (intensity) are kept."""
    t = np.asarray(transform, dtype=np.float64)
    out = np.array(points, dtype=np.float32, copy=True)
    if out.shape[0] == 0:
        return out
    xyz = points[:, :3].astype(np.float64) @ t[:3, :3].T + t[:3, 3]
    out[:, :3] = xyz.astype(np.float32)
    return out


def boxes_to_frame(boxes: NDArray[np.floating], transform: ArrayLike) -> NDArray[np.float32]:
    """Apply a 4x4 transform to ``(M, 7)`` boxes ``x, y, z, l, w, h, yaw``.

    The centre is transformed rigidly and the transform's heading (rotation about z) is added to
    the yaw, wrapped to ``[-pi, pi)``; sizes are unchanged. Roll and pitch of the transform are
    dropped, as OpenCOOD does when it turns corners back into centre boxes.
    """
    t = np.asarray(transform, dtype=np.float64)
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    out = b.copy()
    out[:, :3] = b[:, :3] @ t[:3, :3].T + t[:3, 3]
    out[:, 6] = wrap_angle(b[:, 6] + np.arctan2(t[1, 0], t[0, 0]))
    return out.astype(np.float32)


def wrap_angle(angle: ArrayLike) -> NDArray[np.float64]:
    """Wrap radians to ``[-pi, pi)``."""
    a = np.asarray(angle, dtype=np.float64)
    return (a + np.pi) % (2.0 * np.pi) - np.pi


def box_corners_bev(boxes: NDArray[np.floating]) -> NDArray[np.float64]:
    """``(M, 7)`` boxes -> ``(M, 4, 2)`` BEV corners, counter-clockwise from front-left."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    half_l, half_w = b[:, 3:4] / 2.0, b[:, 4:5] / 2.0
    local = np.stack(
        [
            np.concatenate([half_l, half_w], axis=1),
            np.concatenate([-half_l, half_w], axis=1),
            np.concatenate([-half_l, -half_w], axis=1),
            np.concatenate([half_l, -half_w], axis=1),
        ],
        axis=1,
    )
    cos, sin = np.cos(b[:, 6])[:, None], np.sin(b[:, 6])[:, None]
    x = local[..., 0] * cos - local[..., 1] * sin + b[:, 0:1]
    y = local[..., 0] * sin + local[..., 1] * cos + b[:, 1:2]
    return np.stack([x, y], axis=-1)


def points_in_boxes(points: NDArray[np.floating], boxes: NDArray[np.floating]) -> NDArray[np.bool_]:
    """``(N, M)`` mask: point n lies inside box m (same frame; boxes yaw-only)."""
    p = np.asarray(points, dtype=np.float64)[:, :3]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 7)
    d = p[:, None, :] - b[None, :, :3]
    cos, sin = np.cos(b[:, 6]), np.sin(b[:, 6])
    local_x = d[..., 0] * cos + d[..., 1] * sin
    local_y = -d[..., 0] * sin + d[..., 1] * cos
    return (
        (np.abs(local_x) <= b[:, 3] / 2)
        & (np.abs(local_y) <= b[:, 4] / 2)
        & (np.abs(d[..., 2]) <= b[:, 5] / 2)
    )
