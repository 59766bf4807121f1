"""Warp a neighbour's BEV features into the ego grid from the two LiDAR poses.

The neighbour's map lives on a source :class:`GridSpec` (the window it sends, in its own LiDAR
frame), the result on a target grid (the ego's, in the ego LiDAR frame); by default both are
the same grid. The two may differ in extent but must share the cell size. For every target
cell centre we find the point it is in the neighbour's frame (``inv(T_nbr_to_ego)``, planar part
only: x, y, yaw) and sample the neighbour's map there bilinearly with zero padding.

Normalised coordinates: ``F.grid_sample`` / ``F.affine_grid`` with ``align_corners=False`` put
-1 and +1 at the outer *edges* of the first and last cells, so cell ``j`` has its centre at
``(2j + 1) / W - 1``. That is exactly GridSpec's convention (cell centre at
``x_min + (j + 0.5) * cell_size``) when the normalised span [-1, 1] is mapped to the full
metric extent ``[x_min, x_max]``; a shift by whole cells then samples exact cell centres and
is an exact copy (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray

from models.grid import GridSpec
from scenarios.geometry import relative_transform


@dataclass(frozen=True)
class Warped:
    """``features`` ``(B, C, H, W)`` in the ego grid; ``mask`` ``(B, 1, H, W)`` float, 1 where
    the ego cell centre falls inside the neighbour's (source) grid extent (0 where the zero padding
    stands in for data the neighbour never had)."""

    features: torch.Tensor
    mask: torch.Tensor


def planar_transform(nbr_to_ego: ArrayLike) -> NDArray[np.float64]:
    """``(..., 4, 4)`` -> ``(..., 3, 3)`` 2D rigid transform keeping x, y translation and yaw
    (roll and pitch dropped, as BEV fusion does)."""
    m = np.asarray(nbr_to_ego, dtype=np.float64)
    yaw = np.arctan2(m[..., 1, 0], m[..., 0, 0])
    out = np.zeros((*m.shape[:-2], 3, 3))
    out[..., 0, 0], out[..., 0, 1] = np.cos(yaw), -np.sin(yaw)
    out[..., 1, 0], out[..., 1, 1] = np.sin(yaw), np.cos(yaw)
    out[..., 0, 2], out[..., 1, 2] = m[..., 0, 3], m[..., 1, 3]
    out[..., 2, 2] = 1.0
    return out


def _normalised_to_metric(grid: GridSpec) -> NDArray[np.float64]:
    """3x3 map from ``align_corners=False`` normalised coordinates to metres on ``grid``."""
    x0, y0, _, x1, y1, _ = grid.point_range
    sx, sy = (x1 - x0) / 2.0, (y1 - y0) / 2.0
    return np.array([[sx, 0.0, x0 + sx], [0.0, sy, y0 + sy], [0.0, 0.0, 1.0]])


def affine_theta(
    nbr_to_ego: ArrayLike, grid: GridSpec, target: GridSpec | None = None
) -> torch.Tensor:
    """``(B, 2, 3)`` float32 ``theta`` for ``F.affine_grid``: ego (``target``, default
    ``grid``) normalised coordinates -> neighbour (``grid``) normalised coordinates, from
    ``(B, 4, 4)`` or ``(4, 4)`` neighbour->ego transforms.

    Composed in float64 so that whole-cell shifts stay exact after the cast.
    """
    g = planar_transform(nbr_to_ego).reshape(-1, 3, 3)
    a_target = _normalised_to_metric(grid if target is None else target)
    theta = np.linalg.inv(_normalised_to_metric(grid)) @ np.linalg.inv(g) @ a_target
    return torch.from_numpy(theta[:, :2, :]).float()


def warp_bev(
    features: torch.Tensor, nbr_to_ego: ArrayLike, grid: GridSpec, target: GridSpec | None = None
) -> Warped:
    """Warp ``(C, H, W)`` or ``(B, C, H, W)`` neighbour features on ``grid`` (the sender's
    window) with ``(4, 4)`` or ``(B, 4, 4)`` neighbour-LiDAR -> ego-LiDAR transforms into the
    ego grid ``target`` (default: ``grid``), which must have the same cell size."""
    target = grid if target is None else target
    if not np.isclose(target.cell_size, grid.cell_size, rtol=0, atol=1e-9):
        raise ValueError(
            f"warp: target cell size {target.cell_size:g} m != source cell size "
            f"{grid.cell_size:g} m"
        )
    x = features if features.dim() == 4 else features.unsqueeze(0)
    if x.dim() != 4 or tuple(x.shape[-2:]) != grid.bev_shape:
        raise ValueError(
            f"warp: features must be (B, C, {grid.bev_shape[0]}, {grid.bev_shape[1]}), "
            f"got {tuple(features.shape)}"
        )
    theta = affine_theta(nbr_to_ego, grid, target).to(device=x.device, dtype=x.dtype)
    if theta.shape[0] == 1 and x.shape[0] > 1:
        theta = theta.expand(x.shape[0], 2, 3)
    if theta.shape[0] != x.shape[0]:
        raise ValueError(f"warp: {theta.shape[0]} transforms for {x.shape[0]} feature maps")
    size = [x.shape[0], x.shape[1], *target.bev_shape]
    sample = F.affine_grid(theta, size, align_corners=False)
    warped = F.grid_sample(x, sample, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = (sample.abs() <= 1.0).all(dim=-1, keepdim=True).permute(0, 3, 1, 2)
    return Warped(warped, inside.to(x.dtype))


def warp_to_ego(
    features: torch.Tensor,
    nbr_pose: ArrayLike,
    ego_pose: ArrayLike,
    grid: GridSpec,
    target: GridSpec | None = None,
) -> Warped:
    """Warp with the two ``world <- lidar`` poses (``(4, 4)`` or batched ``(B, 4, 4)``):
    the transform is ``inv(T_ego) @ T_nbr``."""
    return warp_bev(features, relative_transform(nbr_pose, ego_pose), grid, target)
