"""Centre-based detection head (CenterPoint, Yin et al. 2021) on a BEV feature map.

``CenterHead`` predicts, per cell, one "vehicle" heatmap logit and an 8-value box code
(:mod:`models.center_targets`). Training: CornerNet's penalty-reduced focal loss on the
heatmap against Gaussians drawn at the GT centres, L1 on the codes of the centre cells.
Decoding: sigmoid, 3x3 max-pool peaks, score threshold, the ``pre_nms_top_k`` best peaks, then
the anchor head's rotated NMS and box voting (:func:`models.head.select_detections`), so the
outputs are the same :class:`~models.head.Detections` in the grid's (ego LiDAR) frame.

It has the anchor head's interface (``config``, ``forward``, ``assign``, ``loss``,
``decode``), so the detector, training, ``cosim eval`` and the ego-clearance filter call it
unchanged. Why it is an option: no anchor shapes to tune per vehicle size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from torch import nn

from models.center_targets import CODE_SIZE, CenterTargets, center_targets, decode_center
from models.grid import GridSpec
from models.head import (
    Detections,
    HeadConfig,
    HeadLoss,
    HeadOutput,
    Normaliser,
    select_detections,
)


def heatmap_focal_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float, beta: float
) -> torch.Tensor:
    """Summed CornerNet focal loss of heatmap ``logits`` against a Gaussian ``target`` (same
    shape, 1 at centres): ``-(1-p)^a log p`` at centres, ``-(1-y)^b p^a log(1-p)`` elsewhere,
    so cells near a centre are penalised less for firing. Logs from ``logsigmoid`` (stable)."""
    prob = torch.sigmoid(logits)
    positive = target >= 1.0
    pos = (1.0 - prob).pow(alpha) * F.logsigmoid(logits)
    neg = (1.0 - target).pow(beta) * prob.pow(alpha) * F.logsigmoid(-logits)
    return -torch.where(positive, pos, neg).sum()


class CenterHead(nn.Module):
    """Shared 3x3 convolution (``center.hidden_channels``; 0: none), then 1x1 heatmap and
    box-code outputs."""

    def __init__(self, in_channels: int, grid: GridSpec, config: HeadConfig | None = None) -> None:
        super().__init__()
        self.grid = grid
        self.config = config or HeadConfig(type="center")
        center = self.config.center
        hidden = center.hidden_channels
        self.shared = (
            nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
            if hidden
            else nn.Identity()
        )
        width = hidden or in_channels
        self.heatmap = nn.Conv2d(width, 1, kernel_size=1)
        self.reg = nn.Conv2d(width, CODE_SIZE, kernel_size=1)
        prior = center.heatmap_prior
        nn.init.constant_(self.heatmap.bias, -math.log((1.0 - prior) / prior))
        nn.init.normal_(self.reg.weight, std=0.001)
        nn.init.zeros_(self.reg.bias)

    def forward(self, features: torch.Tensor) -> HeadOutput:
        """``(B, C, H, W)`` BEV features on ``grid.bev_shape`` -> heatmap logits
        ``(B, 1, H, W)`` and box codes ``(B, 8, H, W)``."""
        shape = tuple(features.shape[-2:])
        if shape != self.grid.bev_shape:
            raise ValueError(f"head: feature map is {shape}, grid expects {self.grid.bev_shape}")
        shared = self.shared(features)
        return HeadOutput(self.heatmap(shared), self.reg(shared))

    def assign(self, gt_boxes: Sequence[torch.Tensor | NDArray[np.floating]]) -> CenterTargets:
        """Targets for a batch; ``gt_boxes[b]`` is ``(M_b, 7)`` in the grid's frame."""
        targets = center_targets(self.grid, gt_boxes, self.config.center)
        device = self.heatmap.weight.device
        return CenterTargets(
            targets.heatmap.to(device), targets.positive.to(device), targets.codes.to(device)
        )

    def loss(
        self,
        output: HeadOutput,
        targets: CenterTargets,
        normaliser_of: Normaliser | None = None,
    ) -> HeadLoss:
        """Heatmap focal loss over every cell plus weighted L1 on the centre cells' codes, each
        divided by ``normaliser_of(number of centres)`` (default: the count, at least 1), as
        :meth:`models.head.AnchorHead.loss` divides by its positives."""
        center = self.config.center
        logits = output.cls_logits[:, 0].float()
        pos = targets.positive
        count = pos.sum().to(logits.dtype)
        normaliser = count.clamp(min=1) if normaliser_of is None else normaliser_of(count)
        focal = heatmap_focal_loss(logits, targets.heatmap, center.focal_alpha, center.focal_beta)
        cls_loss = center.heatmap_weight * focal / normaliser
        pred = output.box_preds.float().permute(0, 2, 3, 1)[pos]  # (N, 8)
        weights = torch.tensor(center.code_weights, dtype=pred.dtype, device=pred.device)
        l1 = ((pred - targets.codes[pos]).abs() * weights).sum()
        reg_loss = center.reg_weight * l1 / normaliser
        zero = logits.new_zeros(())
        return HeadLoss(cls_loss + reg_loss, cls_loss, reg_loss, zero, int(pos.sum()))

    @torch.no_grad()
    def decode(
        self,
        output: HeadOutput,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
    ) -> list[Detections]:
        """Per sample: heatmap peaks (a cell equal to its 3x3 max) scoring >= threshold, the
        ``pre_nms_top_k`` best decoded from their codes, then
        :func:`~models.head.select_detections`. Yaw in ``[-pi, pi)``."""
        cfg = self.config
        threshold = cfg.score_threshold if score_threshold is None else score_threshold
        iou = cfg.nms_iou if nms_iou is None else nms_iou
        heat = torch.sigmoid(output.cls_logits.float())
        peaks = heat * (heat == F.max_pool2d(heat, 3, stride=1, padding=1))
        codes_all = output.box_preds.float()
        width = heat.shape[-1]
        results = []
        for b in range(heat.shape[0]):
            scores = peaks[b, 0].flatten()
            idx = torch.nonzero(scores >= threshold, as_tuple=True)[0]
            if len(idx) > cfg.pre_nms_top_k:
                idx = idx[torch.topk(scores[idx], cfg.pre_nms_top_k).indices]
            cells = torch.stack([idx // width, idx % width], -1)
            codes = codes_all[b].flatten(1)[:, idx].T
            boxes = decode_center(self.grid, cells, codes, self.config.center.axis_yaw)
            boxes[:, 6] = torch.remainder(boxes[:, 6] + math.pi, 2.0 * math.pi) - math.pi
            results.append(select_detections(boxes, scores[idx], cfg, iou))
        return results
