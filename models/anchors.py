"""Anchors on a :class:`~models.grid.GridSpec` and their assignment to ground truth.

Anchors are laid out ``(A, H, W, 7)`` and flattened in that order to ``(A*H*W, 7)``: anchor
``a`` of cell ``(i, j)`` has flat index ``(a * H + i) * W + j``. The head's outputs
``(B, A, H, W)`` / ``(B, A*7, H, W)`` flatten to the same order.

An anchor *set* is one or more :class:`AnchorConfig` size classes (OpenPCDet's multi-anchor
head: car, van, truck/bus), each with its own yaws and, optionally, its own matching
thresholds; ``A`` is the sum of their yaw counts, class by class in the order given. Every
anchor predicts the one class "vehicle" (OPV2V): a GT box is matched to whichever anchors fit
it by IoU, so a truck's interior is positive for the truck anchors and negative for the car
anchors (a car-sized anchor covers at most ~0.3 of a truck), and NMS merges across classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import torch
from pydantic import Field

from configkit import Bool, Float, Str, config_dataclass, validate
from models.box_ops import encode_boxes, nearest_bev_boxes, nearest_bev_iou
from models.grid import GridSpec

Positive = Annotated[Float, Field(gt=0.0)]
Probability = Annotated[Float, Field(ge=0.0, le=1.0)]


@config_dataclass
class AnchorConfig:
    """One anchor class: size ``(l, w, h)`` in metres, centre height ``z`` in the LiDAR frame,
    and the yaws (radians) placed at every cell. Defaults: OPV2V's car anchor.

    ``name`` labels the class (reports only); ``pos_iou`` / ``neg_iou``, when given, replace
    the head's :class:`AssignConfig` thresholds for this class's anchors (OpenPCDet's
    per-class ``matched_threshold`` / ``unmatched_threshold``: a long, narrow truck anchor one
    cell off sideways keeps less IoU than a car anchor one cell off lengthwise).
    """

    size: tuple[Positive, Positive, Positive] = (3.9, 1.6, 1.56)
    z_center: Float = -1.0
    yaws: tuple[Float, ...] = Field((0.0, math.pi / 2), min_length=1)
    name: Str = "car"
    pos_iou: Probability | None = None
    neg_iou: Probability | None = None

    def __post_init__(self) -> None:
        pos, neg = self.pos_iou, self.neg_iou
        if pos is not None and neg is not None and neg > pos:
            raise ValueError(
                f"anchor {self.name!r}: need 0 <= neg_iou <= pos_iou <= 1, got {neg}, {pos}"
            )

    @property
    def num_per_cell(self) -> int:
        return len(self.yaws)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "anchor") -> AnchorConfig:
        return validate(cls, data, where)


AnchorSet = AnchorConfig | Sequence[AnchorConfig]


def anchor_classes(config: AnchorSet) -> tuple[AnchorConfig, ...]:
    """One anchor class or several -> a tuple of classes."""
    return (config,) if isinstance(config, AnchorConfig) else tuple(config)


def num_anchors_per_cell(config: AnchorSet) -> int:
    """``A``: the yaws of every class, summed."""
    return sum(c.num_per_cell for c in anchor_classes(config))


def generate_anchors(grid: GridSpec, config: AnchorSet) -> torch.Tensor:
    """``(A, H, W, 7)`` float32 anchors centred on the grid's feature-map cells; with several
    classes, the first class's yaws come first."""
    classes = anchor_classes(config)
    if len(classes) != 1:
        return torch.cat([generate_anchors(grid, c) for c in classes])
    config = classes[0]
    height, width = grid.bev_shape
    x0, y0 = grid.point_range[0], grid.point_range[1]
    cell = grid.cell_size
    xs = x0 + (torch.arange(width, dtype=torch.float64) + 0.5) * cell
    ys = y0 + (torch.arange(height, dtype=torch.float64) + 0.5) * cell
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    per_yaw = []
    const = torch.tensor([config.z_center, *config.size], dtype=torch.float64)
    for yaw in config.yaws:
        per_yaw.append(
            torch.cat(
                [
                    xx[..., None],
                    yy[..., None],
                    const.expand(height, width, 4),
                    torch.full((height, width, 1), yaw, dtype=torch.float64),
                ],
                dim=-1,
            )
        )
    return torch.stack(per_yaw).to(torch.float32)


@config_dataclass
class AssignConfig:
    """IoU thresholds for target assignment (BEV IoU, nearest axis-aligned)."""

    pos_iou: Probability = 0.6
    neg_iou: Probability = 0.45
    match_best_anchor: Bool = True  # each GT's best anchor is positive even below pos_iou

    def __post_init__(self) -> None:
        if not 0.0 <= self.neg_iou <= self.pos_iou <= 1.0:
            raise ValueError(
                f"assign: need 0 <= neg_iou <= pos_iou <= 1, got {self.neg_iou}, {self.pos_iou}"
            )

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "assign") -> AssignConfig:
        return validate(cls, data, where)


def anchor_thresholds(
    grid: GridSpec, config: AnchorSet, assign: AssignConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per flat anchor ``(A*H*W,)`` positive and negative IoU thresholds: each class's own
    ``pos_iou`` / ``neg_iou`` where it gives them, else ``assign``'s."""
    cells = grid.bev_shape[0] * grid.bev_shape[1]
    pos, neg = [], []
    for c in anchor_classes(config):
        count = c.num_per_cell * cells
        pos.append(torch.full((count,), assign.pos_iou if c.pos_iou is None else c.pos_iou))
        neg.append(torch.full((count,), assign.neg_iou if c.neg_iou is None else c.neg_iou))
    return torch.cat(pos), torch.cat(neg)


@dataclass
class AnchorTargets:
    """Targets of one sample over ``K`` flat anchors.

    ``labels``: int64 1 positive, 0 negative, -1 ignored; ``gt_index``: matched GT per anchor
    (-1 when not positive); ``box_targets``: residuals (zero where not positive); ``gt_yaw``: the
    matched GT yaw (for the direction classifier; zero where not positive).
    """

    labels: torch.Tensor
    gt_index: torch.Tensor
    box_targets: torch.Tensor
    gt_yaw: torch.Tensor

    @property
    def num_positive(self) -> int:
        return int((self.labels == 1).sum())


def assign_targets(
    anchors: torch.Tensor,
    gt_boxes: torch.Tensor,
    config: AssignConfig,
    candidates: torch.Tensor | None = None,
    thresholds: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> AnchorTargets:
    """Label ``(K, 7)`` anchors against ``(M, 7)`` GT boxes (same frame) by nearest BEV IoU.

    Positive: IoU >= ``pos_iou`` with some GT, or (``match_best_anchor``) an anchor whose IoU
    with a GT equals that GT's best IoU (> 0), ties included. Negative: max IoU < ``neg_iou``
    and not positive. Everything else is ignored. ``thresholds`` (optional ``(K,)`` positive
    and negative thresholds, :func:`anchor_thresholds`) replace ``config``'s per anchor.

    ``candidates`` (optional anchor indices) must hold every anchor with a non-zero IoU to some
    GT (see :func:`grid_candidates`); only those are compared, the rest get IoU 0.
    """
    if thresholds is None:
        thresholds = (
            anchors.new_full((len(anchors),), config.pos_iou),
            anchors.new_full((len(anchors),), config.neg_iou),
        )
    pos_iou, neg_iou = (t.to(anchors) for t in thresholds)
    if candidates is not None:
        sub = assign_targets(
            anchors[candidates], gt_boxes, config, None, (pos_iou[candidates], neg_iou[candidates])
        )
        labels = torch.where(neg_iou > 0, 0, -1).to(device=anchors.device, dtype=torch.int64)
        gt_index = torch.full_like(labels, -1)
        box_targets = anchors.new_zeros((len(anchors), 7))
        gt_yaw = anchors.new_zeros((len(anchors),))
        labels[candidates], gt_index[candidates] = sub.labels, sub.gt_index
        box_targets[candidates], gt_yaw[candidates] = sub.box_targets, sub.gt_yaw
        return AnchorTargets(labels, gt_index, box_targets, gt_yaw)
    num = anchors.shape[0]
    labels = torch.full((num,), -1, dtype=torch.int64, device=anchors.device)
    gt_index = torch.full((num,), -1, dtype=torch.int64, device=anchors.device)
    box_targets = anchors.new_zeros((num, 7))
    gt_yaw = anchors.new_zeros((num,))
    gt = gt_boxes.to(anchors).reshape(-1, 7)
    if len(gt) == 0 or num == 0:
        labels = torch.where(neg_iou > 0, 0, -1).to(labels)
        return AnchorTargets(labels, gt_index, box_targets, gt_yaw)
    # (M, K): the anchors on the inner axis make the broadcasts and reductions ~3x faster.
    iou = nearest_bev_iou(gt, anchors)
    best_iou, best_gt = iou.max(dim=0)
    labels[best_iou < neg_iou] = 0
    positive = best_iou >= pos_iou
    matched = best_gt.clone()
    if config.match_best_anchor:
        gt_best = iou.max(dim=1, keepdim=True).values  # (M, 1)
        forced_gt, forced_anchor = torch.nonzero((iou == gt_best) & (gt_best > 0), as_tuple=True)
        positive[forced_anchor] = True
        matched[forced_anchor] = forced_gt
    labels[positive] = 1
    gt_index[positive] = matched[positive]
    pos_idx = torch.nonzero(positive, as_tuple=True)[0]
    box_targets[pos_idx] = encode_boxes(gt[matched[pos_idx]], anchors[pos_idx])
    gt_yaw[pos_idx] = gt[matched[pos_idx], 6]
    return AnchorTargets(labels, gt_index, box_targets, gt_yaw)


def grid_candidates(grid: GridSpec, config: AnchorSet, gt_boxes: torch.Tensor) -> torch.Tensor:
    """Flat indices of the anchors of :func:`generate_anchors` whose BEV extent can overlap a
    GT box's nearest axis-aligned box: the few cells around each GT, all yaws. Turns target
    assignment from ``K x M`` into ``(cells near GT) x M`` on large grids."""
    height, width = grid.bev_shape
    mask = torch.zeros((height, width), dtype=torch.bool)
    gt = gt_boxes.detach().reshape(-1, 7).to(device="cpu", dtype=torch.float64)
    if len(gt):
        reach = max(max(c.size[0], c.size[1]) for c in anchor_classes(config)) / 2.0
        bounds = nearest_bev_boxes(gt)
        cell, x0, y0 = grid.cell_size, grid.point_range[0], grid.point_range[1]
        # Cell centre c = origin + (k + 0.5) * cell overlaps when lo - reach < c < hi + reach.
        c0 = torch.floor((bounds[:, 0] - reach - x0) / cell - 0.5).long().clamp(0, width)
        c1 = torch.ceil((bounds[:, 2] + reach - x0) / cell - 0.5).long().clamp(-1, width - 1)
        r0 = torch.floor((bounds[:, 1] - reach - y0) / cell - 0.5).long().clamp(0, height)
        r1 = torch.ceil((bounds[:, 3] + reach - y0) / cell - 0.5).long().clamp(-1, height - 1)
        for a, b, c, d in zip(r0.tolist(), r1.tolist(), c0.tolist(), c1.tolist(), strict=True):
            mask[a : b + 1, c : d + 1] = True
    cells = torch.nonzero(mask.reshape(-1), as_tuple=True)[0]
    per_yaw = torch.arange(num_anchors_per_cell(config))[:, None] * (height * width)
    return (per_yaw + cells[None, :]).reshape(-1).to(gt_boxes.device)
