"""The feature half of a detector as a declared sequence of stages, built from one config.

``points -> voxelize -> encoder (pointpillars | sparse_voxel) -> BEV backbone -> (B, C, H, W)``
with ``(H, W) = grid.bev_shape``. Each stage reports the channels it produces and the next one is
built from that number, so the whole topology reads off the config (shape propagation, as in
OpenPCDet), while the values passed between stages are typed (:class:`~models.types.Voxels`,
tensors) rather than one shared dict. The detection head is built on
:attr:`FeatureNet.out_channels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import field
from typing import Any, Literal

import torch
from torch import nn

from configkit import config_dataclass, validate
from models.backbone import BackboneConfig, BEVBackbone
from models.encoders import ENCODERS
from models.encoders.pointpillars import PillarConfig, PointPillarsEncoder
from models.encoders.sparse_voxel import SparseVoxelConfig, SparseVoxelEncoder
from models.grid import CPU_GRID, OPV2V_GRID, GridSpec
from models.types import Voxels
from models.voxelize import PointsLike, VoxelizeConfig, voxelize_batch

#: The ``encoder`` names: the keys of the explicit ``ENCODERS`` registry.
EncoderName = Literal[tuple(ENCODERS)]  # type: ignore[valid-type]


@config_dataclass
class FeatureConfig:
    """Which encoder (a key of ``ENCODERS``) and each stage's section."""

    encoder: EncoderName = "pointpillars"
    voxelize: VoxelizeConfig = field(default_factory=VoxelizeConfig)
    pillar: PillarConfig = field(default_factory=PillarConfig)
    sparse_voxel: SparseVoxelConfig = field(default_factory=SparseVoxelConfig)
    backbone: BackboneConfig = field(default_factory=BackboneConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder,
            "voxelize": self.voxelize.to_dict(),
            "pillar": self.pillar.to_dict(),
            "sparse_voxel": self.sparse_voxel.to_dict(),
            "backbone": self.backbone.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "features") -> FeatureConfig:
        """Validate a mapping; errors name ``where`` and the key path."""
        return validate(cls, data, where)

    def with_encoder(self, encoder: str) -> FeatureConfig:
        """The same sizes with another encoder."""
        return FeatureConfig(encoder, self.voxelize, self.pillar, self.sparse_voxel, self.backbone)


# Small enough to train in minutes on two CPU cores (see bench/bench_models.py).
CPU_FEATURES = FeatureConfig(
    encoder="pointpillars",
    voxelize=VoxelizeConfig(max_points_per_voxel=20, max_voxels=16000),
    pillar=PillarConfig(num_filters=(32,)),
    sparse_voxel=SparseVoxelConfig(z_voxel_size=0.5, channels=(16, 32, 32), blocks=1),
    backbone=BackboneConfig(
        layer_nums=(1, 2, 2),
        layer_strides=(2, 2, 2),
        num_filters=(32, 64, 128),
        upsample_strides=(1, 2, 4),
        num_upsample_filters=(32, 32, 32),
    ),
)
# OpenCOOD's point_pillar.yaml sizes: PFN 64, [3,5,8] x [64,128,256], 3 x 128 up -> 384 channels.
OPV2V_FEATURES = FeatureConfig(
    encoder="pointpillars",
    voxelize=VoxelizeConfig(max_points_per_voxel=32, max_voxels=32000),
    pillar=PillarConfig(num_filters=(64,)),
    sparse_voxel=SparseVoxelConfig(z_voxel_size=0.25, channels=(16, 32, 64, 64), blocks=2),
    backbone=BackboneConfig(
        layer_nums=(3, 5, 8),
        layer_strides=(2, 2, 2),
        num_filters=(64, 128, 256),
        upsample_strides=(1, 2, 4),
        num_upsample_filters=(128, 128, 128),
    ),
)
FEATURE_PRESETS: dict[str, tuple[GridSpec, FeatureConfig]] = {
    "cpu": (CPU_GRID, CPU_FEATURES),
    "opv2v": (OPV2V_GRID, OPV2V_FEATURES),
}


def build_encoder(
    grid: GridSpec, config: FeatureConfig
) -> PointPillarsEncoder | SparseVoxelEncoder:
    """The encoder named by ``config.encoder`` with its own section."""
    if config.encoder == "pointpillars":
        return PointPillarsEncoder(grid, config.pillar)
    return SparseVoxelEncoder(grid, config.sparse_voxel)


class FeatureNet(nn.Module):
    """Clouds in each agent's own frame -> BEV features ``(B, out_channels, *grid.bev_shape)``."""

    def __init__(self, grid: GridSpec, config: FeatureConfig = CPU_FEATURES) -> None:
        super().__init__()
        self.grid = grid
        self.config = config
        self.encoder = build_encoder(grid, config)
        self.backbone = BEVBackbone(self.encoder.out_channels, config.backbone)
        if self.backbone.output_stride != grid.feature_stride:
            raise ValueError(
                f"features: backbone output stride {self.backbone.output_stride:g} != grid "
                f"feature_stride {grid.feature_stride}"
            )
        if self.backbone.output_shape(grid.ny, grid.nx) != grid.bev_shape:
            raise ValueError(f"features: backbone does not produce bev_shape {grid.bev_shape}")
        self.out_channels = self.backbone.out_channels

    def voxelize(self, clouds: Sequence[PointsLike]) -> Voxels:
        """Group each cloud on the encoder's voxel grid (no gradient: indices only), on the
        CPU, then move the result to the module's device."""
        voxels = voxelize_batch(clouds, self.encoder.voxel_grid, self.config.voxelize)
        return voxels.to(next(self.parameters()).device)

    def encode(self, voxels: Voxels) -> torch.Tensor:
        """Voxels -> BEV features; the differentiable part."""
        return self.backbone(self.encoder(voxels))

    def forward(self, clouds: Sequence[PointsLike]) -> torch.Tensor:
        return self.encode(self.voxelize(clouds))
