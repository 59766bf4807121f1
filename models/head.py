"""Anchor-based detection head on a BEV feature map: outputs, targets, losses and decoding.

``AnchorHead`` takes the backbone's ``(B, C, H, W)`` map on a :class:`GridSpec`'s ``bev_shape``
and predicts, per cell and anchor, a class logit and seven box residuals (SECOND / OpenCOOD
PointPillars style). Boxes come back in the grid's frame (the ego LiDAR frame).

The anchors are one size class (``anchor``: OPV2V's single car anchor, what the shipped
checkpoints use) or several (``anchors``: a list of size classes such as car / van / truck,
OpenPCDet's multi-anchor head), each with its yaws and optional matching thresholds. Every
anchor scores the one class "vehicle"; see :mod:`models.anchors`.

``HeadConfig.type`` picks the head: ``anchor`` (this module's :class:`AnchorHead`, the
default every shipped checkpoint uses) or ``center`` (:class:`models.center_head.CenterHead`,
CenterPoint's heatmap of centres). Both end in :func:`select_detections` (NMS, box voting).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from pydantic import Field, model_validator
from torch import nn

from configkit import Bool, Float, Int, config_dataclass, validate
from models.anchors import (
    AnchorConfig,
    AssignConfig,
    anchor_thresholds,
    assign_targets,
    generate_anchors,
    grid_candidates,
    num_anchors_per_cell,
)
from models.box_ops import decode_boxes
from models.box_voting import vote_boxes
from models.center_targets import CenterConfig
from models.grid import GridSpec
from models.losses import (
    apply_direction,
    direction_labels,
    sigmoid_focal_loss,
    sine_yaw_residuals,
    smooth_l1,
)
from models.nms import rotated_nms


@config_dataclass
class HeadConfig:
    """Everything the head needs besides the grid and the input channels.

    ``anchors`` (several size classes) replaces ``anchor`` (one) when given; a config may set
    one of the two, not both. ``type: center`` selects the centre head instead, configured by
    ``center``; it has no anchors, so it refuses ``anchor``, ``anchors`` and ``assign``. The
    decoding keys (``score_threshold`` to ``max_detections``) serve both heads.
    """

    type: Literal["anchor", "center"] = "anchor"
    center: CenterConfig = field(default_factory=CenterConfig)
    anchor: AnchorConfig = field(default_factory=AnchorConfig)
    assign: AssignConfig = field(default_factory=AssignConfig)
    anchors: tuple[AnchorConfig, ...] = ()
    focal_alpha: Float = 0.25
    focal_gamma: Float = 2.0
    cls_prior: Float = Field(0.01, gt=0.0, lt=1.0)  # initial foreground probability (cls bias)
    cls_weight: Float = 1.0
    reg_weight: Float = 2.0
    smooth_l1_beta: Float = 1.0 / 9.0
    use_direction_classifier: Bool = False  # BEV IoU ignores a flip by pi; headings do not
    dir_weight: Float = 0.2
    dir_offset: Float = math.pi / 4
    score_threshold: Float = Field(0.2, ge=0.0, le=1.0)
    nms_iou: Float = Field(0.15, gt=0.0, le=1.0)
    # > 0: box voting after NMS over candidates this close (box_voting); 0: off
    vote_iou: Float = Field(0.0, ge=0.0, le=1.0)
    pre_nms_top_k: Int = Field(1000, ge=1)
    max_detections: Int = Field(100, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _one_anchor_form(cls, data: Any) -> Any:
        """A section gives ``anchor`` (one class) or ``anchors`` (a list), not both."""
        if isinstance(data, dict) and data.get("anchors") and "anchor" in data:
            raise ValueError("give 'anchor' (one class) or 'anchors' (a list), not both")
        if isinstance(data, dict) and data.get("type") == "center":
            given = [k for k in ("anchor", "anchors", "assign") if k in data]
            if given:
                raise ValueError(f"type 'center' has no anchors; remove {given}")
        elif isinstance(data, dict) and "center" in data:
            raise ValueError("'center' configures type 'center'; set type: center or remove it")
        return data

    def __post_init__(self) -> None:
        names = [a.name for a in self.anchors]
        if len(set(names)) != len(names):
            raise ValueError(f"head: anchor class names must be unique, got {names}")

    @property
    def anchor_set(self) -> tuple[AnchorConfig, ...]:
        """The anchor size classes in use: ``anchors``, else the single ``anchor``."""
        return self.anchors or (self.anchor,)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "head") -> HeadConfig:
        """Build from a config section (nested ``anchor`` / ``anchors`` / ``assign``
        mappings); errors name ``where`` and the key path."""
        return validate(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """What :meth:`from_dict` reads back; an anchor head's dict is what it was before the
        centre head existed (no ``type`` / ``center``), so its checkpoints store the same."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.type == "center":
            for key in ("anchor", "anchors", "assign"):
                del out[key]
            out["center"] = self.center.to_dict()
            return out
        del out["type"], out["center"]
        out["anchor"] = self.anchor.to_dict()
        out["assign"] = {f.name: getattr(self.assign, f.name) for f in fields(self.assign)}
        out["anchors"] = [a.to_dict() for a in self.anchors]
        if self.anchors:  # the single anchor is unused then; from_dict takes one or the other
            del out["anchor"]
        return out


@dataclass
class HeadOutput:
    """Raw head predictions: ``cls_logits (B, A, H, W)``, ``box_preds (B, A*7, H, W)``,
    ``dir_logits (B, A*2, H, W)`` or ``None`` without the direction classifier. The centre
    head fills ``cls_logits (B, 1, H, W)`` (heatmap logits) and ``box_preds (B, 8, H, W)``
    (box codes, :mod:`models.center_targets`); the ``flat_*`` views are the anchor head's."""

    cls_logits: torch.Tensor
    box_preds: torch.Tensor
    dir_logits: torch.Tensor | None = None

    def flat_cls(self) -> torch.Tensor:
        """``(B, K)`` logits in anchor order (``K = A*H*W``)."""
        return self.cls_logits.flatten(1)

    def flat_boxes(self) -> torch.Tensor:
        """``(B, K, 7)`` residuals in anchor order."""
        b, a7, h, w = self.box_preds.shape
        return self.box_preds.view(b, a7 // 7, 7, h, w).permute(0, 1, 3, 4, 2).reshape(b, -1, 7)

    def flat_dir(self) -> torch.Tensor | None:
        """``(B, K, 2)`` direction logits in anchor order, or ``None``."""
        if self.dir_logits is None:
            return None
        b, a2, h, w = self.dir_logits.shape
        return self.dir_logits.view(b, a2 // 2, 2, h, w).permute(0, 1, 3, 4, 2).reshape(b, -1, 2)


# The count of positives -> what every loss term is divided by (see AnchorHead.loss).
Normaliser = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class HeadTargets:
    """Batched targets: ``labels (B, K)`` (1/0/-1), ``box_targets (B, K, 7)``,
    ``dir_labels (B, K)``."""

    labels: torch.Tensor
    box_targets: torch.Tensor
    dir_labels: torch.Tensor

    @property
    def num_positive(self) -> int:
        return int((self.labels == 1).sum())


@dataclass
class HeadLoss:
    """Weighted loss terms (scalars) and their sum, which is what to backpropagate."""

    total: torch.Tensor
    cls: torch.Tensor
    reg: torch.Tensor
    direction: torch.Tensor
    num_positive: int


@dataclass
class Detections:
    """One sample's detections in the grid's (ego LiDAR) frame: ``boxes`` float32 ``(N, 7)``,
    ``scores`` float32 ``(N,)``, highest score first."""

    boxes: NDArray[np.float32]
    scores: NDArray[np.float32]

    def __len__(self) -> int:
        return len(self.scores)


class AnchorHead(nn.Module):
    """1x1-conv classification, regression (and optional direction) branches over anchors."""

    def __init__(self, in_channels: int, grid: GridSpec, config: HeadConfig | None = None) -> None:
        super().__init__()
        self.grid = grid
        self.config = config or HeadConfig()
        anchor_set = self.config.anchor_set
        self.num_anchors = num_anchors_per_cell(anchor_set)
        a = self.num_anchors
        self.cls = nn.Conv2d(in_channels, a, kernel_size=1)
        self.reg = nn.Conv2d(in_channels, a * 7, kernel_size=1)
        self.dir = (
            nn.Conv2d(in_channels, a * 2, kernel_size=1)
            if self.config.use_direction_classifier
            else None
        )
        prior = self.config.cls_prior
        nn.init.constant_(self.cls.bias, -math.log((1.0 - prior) / prior))
        nn.init.normal_(self.reg.weight, std=0.001)
        nn.init.zeros_(self.reg.bias)
        anchors = generate_anchors(grid, anchor_set).reshape(-1, 7)
        self.register_buffer("anchors", anchors, persistent=False)
        pos_iou, neg_iou = anchor_thresholds(grid, anchor_set, self.config.assign)
        self.register_buffer("pos_iou", pos_iou, persistent=False)
        self.register_buffer("neg_iou", neg_iou, persistent=False)

    def forward(self, features: torch.Tensor) -> HeadOutput:
        """``(B, C, H, W)`` BEV features on ``grid.bev_shape`` -> :class:`HeadOutput`."""
        shape = tuple(features.shape[-2:])
        if shape != self.grid.bev_shape:
            raise ValueError(f"head: feature map is {shape}, grid expects {self.grid.bev_shape}")
        dir_logits = self.dir(features) if self.dir is not None else None
        return HeadOutput(self.cls(features), self.reg(features), dir_logits)

    def assign(self, gt_boxes: Sequence[torch.Tensor | NDArray[np.floating]]) -> HeadTargets:
        """Targets for a batch; ``gt_boxes[b]`` is ``(M_b, 7)`` in the grid's frame."""
        labels, box_targets, dir_labels = [], [], []
        for gt in gt_boxes:
            gt_t = torch.as_tensor(gt).to(self.anchors).reshape(-1, 7)
            near = grid_candidates(self.grid, self.config.anchor_set, gt_t)
            t = assign_targets(
                self.anchors, gt_t, self.config.assign, near, (self.pos_iou, self.neg_iou)
            )
            labels.append(t.labels)
            box_targets.append(t.box_targets)
            dir_labels.append(direction_labels(t.gt_yaw, self.config.dir_offset))
        return HeadTargets(torch.stack(labels), torch.stack(box_targets), torch.stack(dir_labels))

    def loss(
        self,
        output: HeadOutput,
        targets: HeadTargets,
        normaliser_of: Normaliser | None = None,
    ) -> HeadLoss:
        """Focal loss over non-ignored anchors, smooth-L1 (sine yaw) and direction CE over
        positives; every term is divided by ``normaliser_of(number of positives)``, by default
        the batch's positives (at least 1). Data-parallel training passes the global batch's
        count over the workers, so the averaged gradients equal one big batch's."""
        cfg = self.config
        labels = targets.labels
        pos = labels == 1
        count = pos.sum().to(output.cls_logits.dtype)
        normaliser = count.clamp(min=1) if normaliser_of is None else normaliser_of(count)
        logits = output.flat_cls()
        cared = labels >= 0
        focal = sigmoid_focal_loss(logits, pos.to(logits.dtype), cfg.focal_alpha, cfg.focal_gamma)
        cls_loss = (focal * cared).sum() / normaliser
        pred_s, target_s = sine_yaw_residuals(output.flat_boxes()[pos], targets.box_targets[pos])
        reg_loss = smooth_l1(pred_s, target_s, cfg.smooth_l1_beta).sum() / normaliser
        dir_loss = logits.new_zeros(())
        dir_flat = output.flat_dir()
        if dir_flat is not None and bool(pos.any()):
            dir_loss = (
                F.cross_entropy(dir_flat[pos], targets.dir_labels[pos], reduction="sum")
                / normaliser
            )
        cls_w, reg_w, dir_w = (
            cfg.cls_weight * cls_loss,
            cfg.reg_weight * reg_loss,
            cfg.dir_weight * dir_loss,
        )
        return HeadLoss(cls_w + reg_w + dir_w, cls_w, reg_w, dir_w, int(pos.sum()))

    @torch.no_grad()
    def decode(
        self,
        output: HeadOutput,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
    ) -> list[Detections]:
        """Per sample: sigmoid scores >= threshold, the ``pre_nms_top_k`` best decoded against
        their anchors, rotated NMS, at most ``max_detections``, then (``vote_iou`` > 0) box
        voting over the candidates (:mod:`models.box_voting`). Yaw wrapped to ``[-pi, pi)``."""
        cfg = self.config
        threshold = cfg.score_threshold if score_threshold is None else score_threshold
        iou = cfg.nms_iou if nms_iou is None else nms_iou
        scores_all = torch.sigmoid(output.flat_cls().float())
        residuals_all = output.flat_boxes().float()
        dir_all = output.flat_dir()
        results = []
        for b in range(scores_all.shape[0]):
            scores = scores_all[b]
            idx = torch.nonzero(scores >= threshold, as_tuple=True)[0]
            if len(idx) > cfg.pre_nms_top_k:
                idx = idx[torch.topk(scores[idx], cfg.pre_nms_top_k).indices]
            boxes = decode_boxes(residuals_all[b, idx], self.anchors[idx].float())
            if dir_all is not None:
                bins = dir_all[b, idx].argmax(dim=-1)
                boxes[:, 6] = apply_direction(boxes[:, 6], bins, cfg.dir_offset)
            else:
                boxes[:, 6] = torch.remainder(boxes[:, 6] + math.pi, 2.0 * math.pi) - math.pi
            results.append(select_detections(boxes, scores[idx], cfg, iou))
        return results


def select_detections(
    boxes: torch.Tensor, scores: torch.Tensor, config: HeadConfig, nms_iou: float
) -> Detections:
    """Candidate ``boxes (N, 7)`` and ``scores (N,)`` of one sample -> rotated NMS at
    ``nms_iou``, at most ``max_detections``, then (``vote_iou`` > 0) box voting over the
    candidates (:mod:`models.box_voting`); what every head's decode ends in."""
    boxes_np = boxes.cpu().numpy().astype(np.float32)
    scores_np = scores.cpu().numpy().astype(np.float32)
    keep = rotated_nms(boxes_np, scores_np, nms_iou, post_max_size=config.max_detections)
    kept = boxes_np[keep]
    if config.vote_iou > 0.0 and len(keep):
        kept = vote_boxes(kept, boxes_np, scores_np, config.vote_iou)
        kept[:, 6] = np.remainder(kept[:, 6] + math.pi, 2.0 * math.pi) - math.pi
    return Detections(kept, scores_np[keep])
