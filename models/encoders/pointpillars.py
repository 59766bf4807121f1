"""PointPillars encoder: pillar feature net (PFN) and scatter to a BEV pseudo-image.

Each point is decorated with its offsets to the pillar's point mean (x_c, y_c, z_c) and to the
pillar's BEV centre (x_p, y_p), giving 9 features from (x, y, z, intensity); PFN layers are
linear + BatchNorm + ReLU with a max over the pillar's points (Lang et al., 2019). The pillar
vectors are scattered into a ``(B, C, ny, nx)`` pseudo-image at voxel resolution.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from configkit import Int, config_dataclass, validate
from models.grid import GridSpec
from models.types import Voxels

POINT_FEATURES = 4  # x, y, z, intensity
DECORATIONS = 5  # x_c, y_c, z_c, x_p, y_p


@config_dataclass
class PillarConfig:
    """PFN widths: every layer but the last concatenates its per-point output with the pillar
    max (so emits ``n`` channels from ``n // 2`` units); the last emits the pillar max."""

    num_filters: tuple[Annotated[Int, Field(ge=2)], ...] = Field((64,), min_length=1)

    def __post_init__(self) -> None:
        if any(n % 2 for n in self.num_filters[:-1]):
            raise ValueError(f"pillar: inner num_filters must be even, got {self.num_filters}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "pillar") -> PillarConfig:
        return validate(cls, data, where)


class PFNLayer(nn.Module):
    """Linear + BN + ReLU per point, then max over the pillar; BN sees real points only."""

    def __init__(self, in_channels: int, out_channels: int, last: bool) -> None:
        super().__init__()
        self.last = last
        units = out_channels if last else out_channels // 2
        self.linear = nn.Linear(in_channels, units, bias=False)
        self.norm = nn.BatchNorm1d(units, eps=1e-3, momentum=0.01)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``(V, P, C_in)``, ``mask`` ``(V, P)`` bool -> ``(V, C)`` or ``(V, P, C)``."""
        y = x.new_zeros(x.shape[0], x.shape[1], self.linear.out_features)
        y[mask] = torch.relu(self.norm(self.linear(x[mask])))
        # ReLU output is >= 0, so the zero padding rows never win the max.
        pooled = y.max(dim=1).values
        if self.last:
            return pooled
        return torch.cat([y, pooled[:, None, :].expand_as(y)], dim=2) * mask[..., None]


class PointPillarsEncoder(nn.Module):
    """:class:`Voxels` (pillars) -> pseudo-image ``(B, out_channels, ny, nx)``."""

    def __init__(self, grid: GridSpec, config: PillarConfig = PillarConfig()) -> None:  # noqa: B008
        super().__init__()
        if grid.nz != 1:
            raise ValueError(f"pointpillars: grid must have one z bin (pillars), has {grid.nz}")
        self.grid = grid
        self.config = config
        widths = (POINT_FEATURES + DECORATIONS, *config.num_filters)
        self.layers = nn.ModuleList(
            PFNLayer(widths[i], widths[i + 1], last=i == len(config.num_filters) - 1)
            for i in range(len(config.num_filters))
        )
        self.out_channels = config.num_filters[-1]

    @property
    def voxel_grid(self) -> GridSpec:
        """The grid the points must be voxelized on: the BEV grid itself (one z bin)."""
        return self.grid

    def decorate(self, voxels: Voxels) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V, P, 9)`` decorated points (zero on padding rows) and the ``(V, P)`` mask."""
        pts = voxels.features[..., :POINT_FEATURES]
        p = pts.shape[1]
        mask = torch.arange(p, device=pts.device)[None, :] < voxels.num_points[:, None]
        count = voxels.num_points.clamp(min=1).to(pts.dtype)[:, None]
        mean = (pts[..., :3] * mask[..., None]).sum(dim=1) / count
        x_min, y_min = self.grid.point_range[0], self.grid.point_range[1]
        size = self.grid.voxel_size[0]
        centre_x = x_min + (voxels.coords[:, 3].to(pts.dtype) + 0.5) * size
        centre_y = y_min + (voxels.coords[:, 2].to(pts.dtype) + 0.5) * size
        to_centre = torch.stack(
            [pts[..., 0] - centre_x[:, None], pts[..., 1] - centre_y[:, None]], dim=2
        )
        decorated = torch.cat([pts, pts[..., :3] - mean[:, None, :], to_centre], dim=2)
        return decorated * mask[..., None], mask

    def scatter(self, pillar_features: torch.Tensor, voxels: Voxels) -> torch.Tensor:
        """Place ``(V, C)`` pillar vectors at their ``(y, x)`` cells; empty cells are zero.

        Written channel-major, so a single map needs no transposing copy (a wide sender window
        is mostly empty cells: 4.2x the grid's area cost 46 ms more when transposed)."""
        _, ny, nx = self.grid.voxel_shape
        b, c = voxels.batch_size, pillar_features.shape[1]
        canvas = pillar_features.new_zeros(c, b * ny * nx)
        flat = (voxels.coords[:, 0] * ny + voxels.coords[:, 2]) * nx + voxels.coords[:, 3]
        canvas[:, flat] = pillar_features.t()
        return canvas.view(c, b, ny, nx).transpose(0, 1).contiguous()

    def forward(self, voxels: Voxels) -> torch.Tensor:
        x, mask = self.decorate(voxels)
        for layer in self.layers:
            x = layer(x, mask)
        return self.scatter(x, voxels)
