"""Multi-scale 2D BEV backbone (PointPillars / SECOND / OpenCOOD ``BaseBEVBackbone`` layout).

Level ``i`` downsamples by ``layer_strides[i]`` (3x3 conv), refines with ``layer_nums[i]`` 3x3
convs of ``num_filters[i]`` channels, and is brought back to a common resolution by an
upsampling block (``ConvTranspose2d`` for strides >= 1, a strided conv for strides < 1) with
``num_upsample_filters[i]`` channels; the levels are concatenated. Every level must land on the
same output stride, which :attr:`BEVBackbone.output_stride` reports so the assembly can check it
against ``GridSpec.feature_stride``.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn

from configkit import Float, Int, config_dataclass, validate


@config_dataclass
class BackboneConfig:
    """Per-level depth, stride and width, and the upsampling stride and width of each level."""

    layer_nums: tuple[Annotated[Int, Field(ge=0)], ...] = (1, 2, 2)
    layer_strides: tuple[Annotated[Int, Field(ge=1)], ...] = (2, 2, 2)
    num_filters: tuple[Annotated[Int, Field(ge=1)], ...] = (32, 64, 128)
    upsample_strides: tuple[Annotated[Float, Field(gt=0)], ...] = (1.0, 2.0, 4.0)
    num_upsample_filters: tuple[Annotated[Int, Field(ge=1)], ...] = (32, 32, 32)

    def __post_init__(self) -> None:
        lengths = {len(getattr(self, n)) for n in self.__dataclass_fields__}
        if len(lengths) != 1 or 0 in lengths:
            raise ValueError(f"backbone: all five lists need the same non-zero length, got {self}")
        strides = {
            math.prod(self.layer_strides[: i + 1]) / up
            for i, up in enumerate(self.upsample_strides)
        }
        if len(strides) != 1:
            raise ValueError(
                f"backbone: levels end at different strides {sorted(strides)}; "
                "prod(layer_strides[:i+1]) / upsample_strides[i] must be equal"
            )

    @property
    def output_stride(self) -> float:
        """Output cell size in input cells (2 for OpenCOOD's PointPillar sizes)."""
        return self.layer_strides[0] / self.upsample_strides[0]

    @property
    def input_multiple(self) -> int:
        """Input height and width must divide by this for the levels to line up."""
        return math.prod(self.layer_strides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "backbone") -> BackboneConfig:
        return validate(cls, data, where)


def _conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out, eps=1e-3, momentum=0.01),
        nn.ReLU(),
    ]


class BEVBackbone(nn.Module):
    """``(B, in_channels, H, W)`` -> ``(B, out_channels, H / s, W / s)``, ``s = output_stride``."""

    def __init__(self, in_channels: int, config: BackboneConfig = BackboneConfig()) -> None:  # noqa: B008
        super().__init__()
        self.config = config
        self.in_channels = in_channels
        self.blocks = nn.ModuleList()
        self.deblocks = nn.ModuleList()
        c_in = in_channels
        for i, c in enumerate(config.num_filters):
            layers = _conv_bn_relu(c_in, c, config.layer_strides[i])
            for _ in range(config.layer_nums[i]):
                layers += _conv_bn_relu(c, c)
            self.blocks.append(nn.Sequential(*layers))
            up, c_up = config.upsample_strides[i], config.num_upsample_filters[i]
            if up >= 1:
                k = round(up)
                resample: nn.Module = nn.ConvTranspose2d(c, c_up, k, stride=k, bias=False)
            else:
                k = round(1 / up)
                resample = nn.Conv2d(c, c_up, k, stride=k, bias=False)
            self.deblocks.append(
                nn.Sequential(resample, nn.BatchNorm2d(c_up, eps=1e-3, momentum=0.01), nn.ReLU())
            )
            c_in = c
        self.out_channels = sum(config.num_upsample_filters)
        self.output_stride = config.output_stride

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """``(H, W)`` produced from an input of ``height x width``."""
        m = self.config.input_multiple
        if height % m or width % m:
            raise ValueError(f"backbone: input {height}x{width} must divide by {m}")
        return round(height / self.output_stride), round(width / self.output_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.output_shape(x.shape[-2], x.shape[-1])
        ups = []
        for block, deblock in zip(self.blocks, self.deblocks, strict=True):
            x = block(x)
            ups.append(deblock(x))
        return torch.cat(ups, dim=1)
