"""Small typed values passed between the feature stages.

Stages hand each other these dataclasses (never a shared mutable dict), so a reader can see what
crosses every boundary: points -> :class:`Voxels` -> pseudo-image / BEV tensor ``(B, C, H, W)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Voxels:
    """Points grouped into voxels (pillars when the grid has one z bin).

    ``features`` ``(V, P, 4)`` float32 holds up to ``P`` points per voxel (x, y, z, intensity),
    zero-padded; ``num_points`` ``(V,)`` int64 how many rows of each voxel are real;
    ``coords`` ``(V, 4)`` int64 = ``(batch, z, y, x)`` voxel indices, the order spconv and the
    pillar scatter use; ``batch_size`` the number of samples (some may have no voxel).
    """

    features: torch.Tensor
    num_points: torch.Tensor
    coords: torch.Tensor
    batch_size: int

    def __post_init__(self) -> None:
        v = self.features.shape[0]
        if self.features.dim() != 3 or self.num_points.shape != (v,) or self.coords.shape != (v, 4):
            raise ValueError(
                "voxels: need features (V,P,C), num_points (V,), coords (V,4); got "
                f"{tuple(self.features.shape)}, {tuple(self.num_points.shape)}, "
                f"{tuple(self.coords.shape)}"
            )

    @property
    def num_voxels(self) -> int:
        return int(self.features.shape[0])

    def to(self, device: torch.device | str) -> Voxels:
        """The same voxels on ``device`` (voxelization runs on the CPU)."""
        return Voxels(
            self.features.to(device),
            self.num_points.to(device),
            self.coords.to(device),
            self.batch_size,
        )
