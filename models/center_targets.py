"""Centre-based (CenterPoint) targets on a :class:`~models.grid.GridSpec`: heatmap, box code.

A vehicle of any size is one peak on a single-class "vehicle" heatmap at the feature-map cell
holding its centre, with a Gaussian around it whose radius grows with the box's BEV size
(CenterNet's ``gaussian_radius``, as CenterPoint draws it): no anchor shapes to choose, so a
truck is found by the same output as a car. At the centre cell the head regresses an 8-value
box code::

    (dx, dy)            sub-cell offset of the centre from the cell's corner, in cells, [0, 1)
    z                   centre height, metres (LiDAR frame)
    log l, log w, log h sizes, metres
    sin yaw, cos yaw    the heading without a seam at +-pi; with ``axis_yaw`` sin 2yaw,
                        cos 2yaw: the heading modulo pi, as BEV IoU and the anchor head's
                        sine loss see it

Cell ``(i, j)`` (row along +y, column along +x) covers ``x in [x_min + j c, x_min + (j+1) c)``
with ``c = grid.cell_size`` (see :mod:`models.grid`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import Field

from configkit import Bool, Float, Int, config_dataclass, validate
from models.grid import GridSpec

CODE_SIZE = 8  # dx, dy, z, log l, log w, log h, sin yaw, cos yaw
Positive = Annotated[Float, Field(gt=0.0)]


@config_dataclass
class CenterConfig:
    """The centre head's own settings (``head.center``); defaults are CenterPoint's.

    ``min_overlap``: the IoU a box shifted by the Gaussian radius still keeps with the truth
    (CenterNet's radius formula); ``min_radius`` (cells) keeps small boxes' peaks wide enough
    to learn. ``hidden_channels``: a shared 3x3 convolution before the 1x1 outputs (0: the 1x1
    outputs read the input directly). ``heatmap_prior``: initial peak probability (CenterPoint's
    bias -2.19). Focal loss ``(alpha, beta)``: CornerNet's penalty-reduced form. The loss is
    ``heatmap_weight * focal + reg_weight * sum(code_weights * L1)``, both per positive.
    ``axis_yaw``: regress ``(sin 2yaw, cos 2yaw)`` (yaw decoded in ``[-pi/2, pi/2]``): cars
    seen front or back alike have targets ``(0, +-1)`` / ``(+-1, 0)`` that an L1 fit averages
    to ``(0, 0)``, a random heading (measured in models/checkpoints/README.md).
    """

    min_overlap: Float = Field(0.1, gt=0.0, lt=1.0)
    min_radius: Int = Field(2, ge=0)
    hidden_channels: Int = Field(64, ge=0)
    heatmap_prior: Float = Field(0.1, gt=0.0, lt=1.0)
    focal_alpha: Positive = 2.0
    focal_beta: Positive = 4.0
    heatmap_weight: Positive = 1.0
    reg_weight: Positive = 0.25
    code_weights: tuple[Float, Float, Float, Float, Float, Float, Float, Float] = (1.0,) * 8
    axis_yaw: Bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "center") -> CenterConfig:
        return validate(cls, data, where)


def gaussian_radius(length_cells: float, width_cells: float, min_overlap: float) -> float:
    """CenterNet's radius (cells) for a ``length x width`` box (cells): the largest centre
    shift, over its three corner cases, that keeps IoU >= ``min_overlap`` with the truth."""
    h, w = length_cells, width_cells
    b1, c1 = h + w, w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (h + w), (1 - min_overlap) * w * h
    r2 = (b2 + math.sqrt(b2**2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (h + w), (min_overlap - 1) * w * h
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: torch.Tensor, row: int, col: int, radius: int) -> None:
    """In place: ``heatmap (H, W) = max(heatmap, exp(-d^2 / 2 sigma^2))`` around ``(row, col)``
    within ``radius`` cells, ``sigma = (2 radius + 1) / 6``; the centre cell becomes 1."""
    height, width = heatmap.shape
    sigma = (2 * radius + 1) / 6.0
    r0, r1 = max(0, row - radius), min(height, row + radius + 1)
    c0, c1 = max(0, col - radius), min(width, col + radius + 1)
    dy = torch.arange(r0, r1, dtype=heatmap.dtype) - row
    dx = torch.arange(c0, c1, dtype=heatmap.dtype) - col
    patch = torch.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2 * sigma * sigma))
    heatmap[r0:r1, c0:c1] = torch.maximum(heatmap[r0:r1, c0:c1], patch)


@dataclass
class CenterTargets:
    """Batched targets: ``heatmap (B, H, W)`` in [0, 1], ``positive (B, H, W)`` bool (centre
    cells), ``codes (B, H, W, 8)`` (zero off the centre cells)."""

    heatmap: torch.Tensor
    positive: torch.Tensor
    codes: torch.Tensor

    @property
    def num_positive(self) -> int:
        return int(self.positive.sum())


def encode_center(
    grid: GridSpec, boxes: torch.Tensor, axis_yaw: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(M, 7)`` boxes (grid frame) -> centre cells ``(M, 2)`` long ``(row, col)`` and box
    codes ``(M, 8)`` (yaw doubled with ``axis_yaw``); cells may lie outside the map (the
    caller drops those)."""
    cell = grid.cell_size
    fx = (boxes[:, 0] - grid.point_range[0]) / cell
    fy = (boxes[:, 1] - grid.point_range[1]) / cell
    col, row = torch.floor(fx), torch.floor(fy)
    sizes = torch.log(boxes[:, 3:6].clamp(min=1e-3))
    yaw = boxes[:, 6] * (2.0 if axis_yaw else 1.0)
    codes = torch.stack(
        [fx - col, fy - row, boxes[:, 2], *sizes.unbind(-1), torch.sin(yaw), torch.cos(yaw)], -1
    )
    return torch.stack([row, col], -1).long(), codes


def decode_center(
    grid: GridSpec, cells: torch.Tensor, codes: torch.Tensor, axis_yaw: bool = False
) -> torch.Tensor:
    """Inverse of :func:`encode_center`: ``(N, 2)`` ``(row, col)`` and ``(N, 8)`` codes ->
    ``(N, 7)`` boxes, yaw in ``[-pi, pi]`` (``atan2`` of the unnormalised sine and cosine;
    halved, ``[-pi/2, pi/2]``, with ``axis_yaw``)."""
    cell = grid.cell_size
    x = grid.point_range[0] + (cells[:, 1].to(codes) + codes[:, 0]) * cell
    y = grid.point_range[1] + (cells[:, 0].to(codes) + codes[:, 1]) * cell
    sizes = torch.exp(codes[:, 3:6].clamp(max=6.0))  # at most ~400 m: no overflow untrained
    yaw = torch.atan2(codes[:, 6], codes[:, 7]) / (2.0 if axis_yaw else 1.0)
    return torch.cat([x[:, None], y[:, None], codes[:, 2:3], sizes, yaw[:, None]], -1)


def center_targets(
    grid: GridSpec,
    gt_boxes: Sequence[torch.Tensor | NDArray[np.floating]],
    config: CenterConfig,
) -> CenterTargets:
    """Targets for a batch; ``gt_boxes[b]`` is ``(M_b, 7)`` in the grid's frame. A box whose
    centre lies off the map draws nothing; two centres in one cell keep the later's code."""
    height, width = grid.bev_shape
    heatmaps, positives, all_codes = [], [], []
    for gt in gt_boxes:
        boxes = torch.as_tensor(gt, dtype=torch.float32).reshape(-1, 7)
        heatmap = torch.zeros(height, width)
        positive = torch.zeros(height, width, dtype=torch.bool)
        codes = torch.zeros(height, width, CODE_SIZE)
        cells, box_codes = encode_center(grid, boxes, config.axis_yaw)
        for (row, col), code, box in zip(cells.tolist(), box_codes, boxes, strict=True):
            if not (0 <= row < height and 0 <= col < width):
                continue
            length, width_m = float(box[3]) / grid.cell_size, float(box[4]) / grid.cell_size
            radius = gaussian_radius(length, width_m, config.min_overlap)
            draw_gaussian(heatmap, row, col, max(config.min_radius, int(radius)))
            positive[row, col] = True
            codes[row, col] = code
        heatmaps.append(heatmap)
        positives.append(positive)
        all_codes.append(codes)
    return CenterTargets(torch.stack(heatmaps), torch.stack(positives), torch.stack(all_codes))
