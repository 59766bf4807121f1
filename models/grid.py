"""The BEV grid every feature map is defined on.

A feature map is ``(C, H, W)`` with rows along +y and columns along +x: cell ``(i, j)`` has its
centre at ``x = x_min + (j + 0.5) * cell_size``, ``y = y_min + (i + 0.5) * cell_size``, where
``cell_size = voxel_size[0] * feature_stride``. Pillars/voxels use ``voxel_size`` directly.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Annotated, Any

from pydantic import Field

from configkit import Float, Int, config_dataclass, validate

Positive = Annotated[Float, Field(gt=0)]


@config_dataclass
class GridSpec:
    """Point-cloud range ``[x_min, y_min, z_min, x_max, y_max, z_max]`` (metres, ego LiDAR
    frame), voxel size ``(vx, vy, vz)`` and the stride from voxels to feature-map cells."""

    point_range: tuple[Float, Float, Float, Float, Float, Float]
    voxel_size: tuple[Positive, Positive, Positive]
    feature_stride: Int = Field(2, ge=1)

    def __post_init__(self) -> None:
        if self.voxel_size[0] != self.voxel_size[1]:
            raise ValueError(f"grid: voxels must be square in BEV, got {self.voxel_size[:2]}")
        for axis, name in enumerate("xyz"):
            extent = self.point_range[axis + 3] - self.point_range[axis]
            count = extent / self.voxel_size[axis]
            if extent <= 0 or abs(count - round(count)) > 1e-6:
                raise ValueError(
                    f"grid: {name} range {extent:g} m is not a whole number of "
                    f"{self.voxel_size[axis]:g} m voxels"
                )
        for count, name in ((self.nx, "x"), (self.ny, "y")):
            if count % self.feature_stride:
                raise ValueError(
                    f"grid: {count} voxels along {name} do not divide by "
                    f"feature_stride {self.feature_stride}"
                )

    @property
    def nx(self) -> int:
        return round((self.point_range[3] - self.point_range[0]) / self.voxel_size[0])

    @property
    def ny(self) -> int:
        return round((self.point_range[4] - self.point_range[1]) / self.voxel_size[1])

    @property
    def nz(self) -> int:
        return round((self.point_range[5] - self.point_range[2]) / self.voxel_size[2])

    @property
    def voxel_shape(self) -> tuple[int, int, int]:
        """``(nz, ny, nx)``, the order spconv and scatter use."""
        return (self.nz, self.ny, self.nx)

    @property
    def bev_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the feature map."""
        return (self.ny // self.feature_stride, self.nx // self.feature_stride)

    @property
    def cell_size(self) -> float:
        """Metres per feature-map cell."""
        return self.voxel_size[0] * self.feature_stride

    @property
    def max_range(self) -> float:
        """Distance from the sensor to the farthest BEV corner."""
        x0, y0, _, x1, y1, _ = self.point_range
        return math.hypot(max(abs(x0), abs(x1)), max(abs(y0), abs(y1)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "grid") -> GridSpec:
        """Validate a mapping (unknown keys, wrong types and bad ranges name ``where``)."""
        return validate(cls, data, where)


# The CPU preset trains in minutes on two cores: 96 m x 64 m around the ego, 0.4 m pillars and
# 0.8 m feature cells (80 x 120 map), so a 4.5 x 1.8 m car covers about 6 x 2 cells.
CPU_GRID = GridSpec((-48.0, -32.0, -3.0, 48.0, 32.0, 1.0), (0.4, 0.4, 4.0), feature_stride=2)
# OPV2V / OpenCOOD PointPillars range and voxel size.
OPV2V_GRID = GridSpec((-140.8, -40.0, -3.0, 140.8, 40.0, 1.0), (0.4, 0.4, 4.0), feature_stride=2)

GRID_PRESETS: dict[str, GridSpec] = {"cpu": CPU_GRID, "opv2v": OPV2V_GRID}
