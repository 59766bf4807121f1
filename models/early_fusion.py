"""Early fusion on the point side: every agent's cloud moved into the ego LiDAR frame and merged.

The merged cloud then goes through the ordinary single-agent feature net (one encoder pass on all
points), which is also how the clean "teacher" sees the scene. Numpy only, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike, NDArray

from scenarios.geometry import points_to_frame, relative_transform


def merge_points_to_ego(
    points_list: Sequence[NDArray[np.floating]],
    poses: Sequence[ArrayLike],
    ego_pose: ArrayLike,
) -> NDArray[np.float32]:
    """Concatenate ``(N_i, 4)`` clouds, each in its own LiDAR frame with ``world <- lidar``
    pose ``poses[i]``, as one float32 ``(sum N_i, 4)`` cloud in the ego LiDAR frame.

    Order is kept (cloud 0 first), so first-come voxelization favours earlier clouds when a
    voxel overflows; put the ego's own cloud first. Intensity is carried through unchanged.
    """
    if len(points_list) != len(poses):
        raise ValueError(f"early fusion: {len(points_list)} clouds but {len(poses)} poses")
    parts = [
        points_to_frame(
            np.asarray(p, dtype=np.float32).reshape(-1, 4), relative_transform(t, ego_pose)
        )
        for p, t in zip(points_list, poses, strict=True)
    ]
    if not parts:
        return np.zeros((0, 4), dtype=np.float32)
    return np.concatenate(parts).astype(np.float32, copy=False)
