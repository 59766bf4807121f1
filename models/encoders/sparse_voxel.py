"""SECOND-style 3D sparse-convolution encoder on spconv, ending in a BEV map.

Points are voxelized on the BEV grid's x/y voxels with finer z bins (``z_voxel_size``); a mean
voxel feature encoder (VFE) averages each voxel's points; stage 0 is submanifold convolutions,
each later stage opens with a strided sparse convolution that halves z only (stride ``(2, 1, 1)``)
followed by submanifold convolutions. The downsampling kernel is ``(3, 1, 1)``: a 3x3x3 one would
dilate the active set in x/y at every stage (30k voxels became 470k on an OPV2V-sized cloud,
14 s per forward on two cores); x/y context comes from the 3x3x3 submanifold convolutions.
Height compression folds the remaining z bins into channels, so the output
``(B, C_last * D_last, ny, nx)`` has the same BEV stride as the PointPillars pseudo-image and
feeds the same 2D backbone.
"""

from __future__ import annotations

import functools
from dataclasses import asdict
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from configkit import Float, Int, config_dataclass, validate
from models.grid import GridSpec
from models.types import Voxels

POINT_FEATURES = 4  # x, y, z, intensity


@functools.cache
def _spconv() -> Any:
    """``spconv.pytorch``, imported when a sparse-voxel encoder is built: spconv comes from the
    ``cpu`` extra (``spconv``) or the ``gpu`` extra (``spconv-cu120``), which both install the
    same module, so only one of them may be installed."""
    try:
        import spconv.pytorch as spconv
        import spconv.pytorch.ops as spconv_ops
    except ImportError as err:
        raise ImportError(
            "the sparse-voxel encoder needs spconv: pip install -e '.[cpu]' "
            "(or '.[gpu]' on a CUDA machine)"
        ) from err
    if not torch.cuda.is_available():
        # spconv 2.3.8's CPU backward (ops.indice_conv_backward) asks torch.cuda for a stream it
        # never uses on CPU, which raises on CPU-only torch (same bug class as
        # traveller59/spconv#366). The stream only goes to CUDA kernels: 0 is safe without CUDA.
        spconv_ops.get_current_stream = lambda: 0
    return spconv


@config_dataclass
class SparseVoxelConfig:
    """``z_voxel_size`` metres per z bin; ``channels`` per stage (one z-halving per stage after
    the first); ``blocks`` submanifold convolutions per stage."""

    z_voxel_size: Float = Field(0.5, gt=0)
    channels: tuple[Annotated[Int, Field(ge=1)], ...] = Field((16, 32, 32), min_length=1)
    blocks: Int = Field(1, ge=0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "sparse_voxel") -> SparseVoxelConfig:
        return validate(cls, data, where)


def _halved(depth: int) -> int:
    """Output length of a kernel-3, stride-2, padding-1 convolution."""
    return (depth - 1) // 2 + 1


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm1d(channels, eps=1e-3, momentum=0.01), nn.ReLU()]


class SparseVoxelEncoder(nn.Module):
    """:class:`Voxels` on :attr:`voxel_grid` -> BEV map ``(B, out_channels, ny, nx)``."""

    def __init__(
        self,
        grid: GridSpec,
        config: SparseVoxelConfig = SparseVoxelConfig(),  # noqa: B008
    ) -> None:
        super().__init__()
        spconv = _spconv()
        self.grid = grid
        self.config = config
        x0, y0, z0, x1, y1, z1 = grid.point_range
        self._voxel_grid = GridSpec(
            grid.point_range, (*grid.voxel_size[:2], config.z_voxel_size), grid.feature_stride
        )
        depth = self._voxel_grid.nz
        stages: list[nn.Module] = []
        in_c = POINT_FEATURES
        for s, out_c in enumerate(config.channels):
            layers: list[nn.Module] = []
            if s == 0:
                layers += [
                    spconv.SubMConv3d(in_c, out_c, 3, padding=1, bias=False, indice_key="subm0"),
                    *_norm_act(out_c),
                ]
            else:
                layers += [
                    spconv.SparseConv3d(
                        in_c,
                        out_c,
                        (3, 1, 1),
                        stride=(2, 1, 1),
                        padding=(1, 0, 0),
                        bias=False,
                        indice_key=f"down{s}",
                    ),
                    *_norm_act(out_c),
                ]
                depth = _halved(depth)
            for _ in range(config.blocks):
                layers += [
                    spconv.SubMConv3d(
                        out_c, out_c, 3, padding=1, bias=False, indice_key=f"subm{s}"
                    ),
                    *_norm_act(out_c),
                ]
            stages.append(spconv.SparseSequential(*layers))
            in_c = out_c
        self.stages = nn.ModuleList(stages)
        self.out_depth = depth
        self.out_channels = config.channels[-1] * depth

    @property
    def voxel_grid(self) -> GridSpec:
        """The grid the points must be voxelized on: BEV x/y voxels, ``z_voxel_size`` bins."""
        return self._voxel_grid

    @staticmethod
    def mean_vfe(voxels: Voxels) -> torch.Tensor:
        """``(V, 4)`` mean of each voxel's real points (padding rows are zero)."""
        total = voxels.features[..., :POINT_FEATURES].sum(dim=1)
        return total / voxels.num_points.clamp(min=1).to(total.dtype)[:, None]

    def forward(self, voxels: Voxels) -> torch.Tensor:
        x = _spconv().SparseConvTensor(
            self.mean_vfe(voxels),
            voxels.coords.int(),
            list(self._voxel_grid.voxel_shape),
            voxels.batch_size,
        )
        for stage in self.stages:
            x = stage(x)
        dense = x.dense()  # (B, C, D, ny, nx)
        b, c, d, h, w = dense.shape
        return dense.reshape(b, c * d, h, w)
