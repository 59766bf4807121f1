"""Points -> voxels (pillars when the grid has one z bin) on a :class:`GridSpec`.

Deterministic and first-come, like spconv's ``PointToVoxel`` and mmcv's hard voxelization:
voxels are numbered in the order their first point appears in the cloud, points keep their cloud
order inside a voxel, voxels past ``max_voxels`` and points past ``max_points_per_voxel`` are
dropped. Fully vectorised (sort + scatter), no Python loop over points.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from pydantic import Field

from configkit import Int, config_dataclass, validate
from models.grid import GridSpec
from models.types import Voxels

PointsLike = np.ndarray | torch.Tensor


@config_dataclass
class VoxelizeConfig:
    """Caps per sample: points kept per voxel and voxels kept per cloud."""

    max_points_per_voxel: Int = Field(32, ge=1)
    max_voxels: Int = Field(16000, ge=1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "voxelize") -> VoxelizeConfig:
        return validate(cls, data, where)


def _as_tensor(points: PointsLike) -> torch.Tensor:
    if isinstance(points, np.ndarray) and not points.flags.writeable:
        points = points.copy()  # torch cannot share memory with a read-only buffer
    pts = torch.as_tensor(points, dtype=torch.float32)
    if pts.dim() != 2 or pts.shape[1] < 3:
        raise ValueError(f"voxelize: points must be (N, >=3), got {tuple(pts.shape)}")
    return pts


def voxel_indices(points: torch.Tensor, grid: GridSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, 3)`` int64 voxel indices ``(z, y, x)`` of every point and the in-range mask.

    Index arithmetic runs in float64 so a point just below ``x_max`` never rounds into the
    voxel past the edge.
    """
    lo = torch.tensor(grid.point_range[:3], dtype=torch.float64)
    size = torch.tensor(grid.voxel_size, dtype=torch.float64)
    xyz_idx = torch.floor((points[:, :3].double() - lo) / size).long()
    upper = torch.tensor([grid.nx, grid.ny, grid.nz], dtype=torch.long)
    inside = ((xyz_idx >= 0) & (xyz_idx < upper)).all(dim=1)
    return xyz_idx.flip(1), inside


def voxelize(
    points: PointsLike,
    grid: GridSpec,
    config: VoxelizeConfig = VoxelizeConfig(),  # noqa: B008 - frozen dataclass
    batch_index: int = 0,
) -> Voxels:
    """Group one cloud ``(N, C>=3)`` in the grid's frame into voxels (see module docstring).

    Points outside ``grid.point_range`` (half-open ``[min, max)``) are dropped.
    """
    pts = _as_tensor(points)
    zyx, inside = voxel_indices(pts, grid)
    pts, zyx = pts[inside], zyx[inside]
    nz, ny, nx = grid.voxel_shape
    linear = (zyx[:, 0] * ny + zyx[:, 1]) * nx + zyx[:, 2]
    m = linear.shape[0]
    cap_p, channels = config.max_points_per_voxel, pts.shape[1]
    if m == 0:
        return Voxels(
            torch.zeros(0, cap_p, channels),
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, 4, dtype=torch.long),
            batch_index + 1,
        )
    unique, inverse = torch.unique(linear, return_inverse=True)
    order_of_points = torch.arange(m)
    first = torch.full((unique.shape[0],), m, dtype=torch.long)
    first.scatter_reduce_(0, inverse, order_of_points, reduce="amin")
    by_first = torch.argsort(first)  # voxel ids in first-come order
    rank = torch.empty_like(by_first)
    rank[by_first] = torch.arange(unique.shape[0])
    voxel_id = rank[inverse]
    # Slot of each point inside its voxel: position after a stable sort by voxel id.
    sorted_id, perm = torch.sort(voxel_id, stable=True)
    counts = torch.bincount(voxel_id, minlength=unique.shape[0])
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.empty_like(voxel_id)
    slot[perm] = order_of_points - starts[sorted_id]

    n_vox = min(unique.shape[0], config.max_voxels)
    keep = (voxel_id < n_vox) & (slot < cap_p)
    features = torch.zeros(n_vox, cap_p, channels)
    features[voxel_id[keep], slot[keep]] = pts[keep]
    lin_kept = unique[by_first[:n_vox]]
    coords = torch.stack(
        [
            torch.full_like(lin_kept, batch_index),
            lin_kept // (ny * nx),
            (lin_kept // nx) % ny,
            lin_kept % nx,
        ],
        dim=1,
    )
    return Voxels(features, counts[:n_vox].clamp(max=cap_p), coords, batch_index + 1)


def voxelize_batch(
    clouds: Sequence[PointsLike],
    grid: GridSpec,
    config: VoxelizeConfig = VoxelizeConfig(),  # noqa: B008 - frozen dataclass
) -> Voxels:
    """Voxelize several clouds; ``coords[:, 0]`` is the sample index; caps apply per sample."""
    if not clouds:
        raise ValueError("voxelize_batch: need at least one cloud")
    parts = [voxelize(c, grid, config, batch_index=b) for b, c in enumerate(clouds)]
    return Voxels(
        torch.cat([p.features for p in parts]),
        torch.cat([p.num_points for p in parts]),
        torch.cat([p.coords for p in parts]),
        len(clouds),
    )
