"""Voxel/pillar encoders: points grouped on a grid -> BEV map at voxel resolution.

``ENCODERS`` is the explicit registry the feature-net config's ``encoder`` name selects from.
Every encoder has ``voxel_grid`` (the grid to voxelize on), ``out_channels`` and
``forward(voxels) -> (B, out_channels, ny, nx)``.
"""

from __future__ import annotations

from models.encoders.pointpillars import PillarConfig, PointPillarsEncoder
from models.encoders.sparse_voxel import SparseVoxelConfig, SparseVoxelEncoder

ENCODERS: dict[str, type[PointPillarsEncoder] | type[SparseVoxelEncoder]] = {
    "pointpillars": PointPillarsEncoder,
    "sparse_voxel": SparseVoxelEncoder,
}

__all__ = [
    "ENCODERS",
    "PillarConfig",
    "PointPillarsEncoder",
    "SparseVoxelConfig",
    "SparseVoxelEncoder",
]
