"""The cooperative detector: one ego plus up to K neighbours -> vehicle boxes in the ego frame.

Declared stages (each a method with typed inputs and outputs, so training, the benches and the
simulation actors call exactly the same code)::

    encode  clouds, each in its own LiDAR frame         -> message map (B, C, H, W)
    warp    nbr maps (K, C, H, W), nbr->ego (K, 4, 4)    -> Warped(features, mask)
    fuse    ego (B,C,H,W), nbrs (B,K,C,H,W), masks       -> (B, C, H, W)       FUSION_STRATEGIES
    head    fused map (B, C, H, W)                       -> HeadOutput
    detect  HeadOutput                                   -> list[Detections], ego LiDAR frame

``config.fuse_at`` splits the FeatureNet between ``encode`` and ``head``: with ``backbone`` the
message map is the backbone's output on ``grid.bev_shape`` and ``head`` is the anchor head;
with ``encoder`` it is the encoder's pseudo-image at voxel resolution (``message_grid``, stride
1) and ``head`` runs the 2D backbone, then the anchor head, on the fused map. Fusing before the
backbone lets its convolutions read a neighbour's evidence in the ego's orientation: after the
backbone, a feature's channels describe boxes in the *sender's* heading, which a per-cell head
cannot rotate (measured in models/checkpoints/README.md).

Fusion (``config.fusion``): ``none`` ego only; ``early`` neighbour points merged into the ego
frame, one encode; intermediate (``max``, ``attention``, later ``agf``) ego and neighbours encoded
in one batch, neighbours warped and fused with masks; ``late`` trains as a single-agent detector
and, at inference, merges every agent's boxes in the ego frame by rotated NMS.

Devices: the parameters' device is the model's device. Voxelization runs on the CPU (index
arithmetic only, no gradient) and the voxels move to the model's device; transforms are numpy
float64 and become float32 warp matrices on that device; Detections are numpy on the CPU.
Gradients flow through encode, warp (``grid_sample``), fusion and head.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from models.batch import CooperativeSample
from models.detector_config import DetectorConfig, load_detector_config
from models.early_fusion import merge_points_to_ego
from models.encoders.feature_net import FeatureNet
from models.fusion import build_fusion
from models.head import AnchorHead, Detections, HeadLoss, HeadOutput
from models.nms import rotated_nms
from models.voxelize import PointsLike
from models.warp import Warped, warp_bev
from scenarios.geometry import boxes_to_frame


@dataclass(frozen=True)
class NeighbourFeature:
    """A neighbour's BEV feature as the ego receives it: ``feature`` ``(C, H, W)`` in the
    neighbour's own grid, ``neighbour_to_ego`` 4x4 (from the *reported* poses), and optionally
    ``sent_mask`` ``(H, W)`` bool in the neighbour's grid, True where the cell was sent
    (sparsified messages); cells not sent are treated as no data."""

    feature: torch.Tensor
    neighbour_to_ego: NDArray[np.float64]
    sent_mask: torch.Tensor | NDArray[np.bool_] | None = None


NeighbourInput = (
    NeighbourFeature
    | tuple[torch.Tensor, ArrayLike]
    | tuple[torch.Tensor, ArrayLike, torch.Tensor | NDArray[np.bool_] | None]
)


def _as_neighbour(item: NeighbourInput) -> NeighbourFeature:
    if isinstance(item, NeighbourFeature):
        return item
    return NeighbourFeature(item[0], np.asarray(item[1], np.float64), *item[2:])


class CooperativeDetector(nn.Module):
    """Feature net + fusion strategy + anchor head, built from a :class:`DetectorConfig`."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        self.grid = config.grid
        self.features = FeatureNet(config.grid, config.features)
        self.fuse_at = config.fuse_at
        at_encoder = self.fuse_at == "encoder"
        self.message_grid = replace(config.grid, feature_stride=1) if at_encoder else config.grid
        self.message_channels = (
            self.features.encoder.out_channels if at_encoder else self.features.out_channels
        )
        strategy = config.fusion if config.is_feature_fusion else "none"
        self.fusion = build_fusion(strategy, self.message_channels)
        self.anchor_head = AnchorHead(self.features.out_channels, config.grid, config.head)

    @property
    def message_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the map one vehicle encodes and sends (what ``encode`` returns)."""
        return (self.message_channels, *self.message_grid.bev_shape)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ---- neighbour selection -------------------------------------------------------------

    def select_neighbours(self, neighbour_to_ego: ArrayLike) -> NDArray[np.int64]:
        """Indices of the neighbours used: within ``comm_range`` (planar distance to the ego),
        the ``max_neighbours`` nearest, returned in their input order."""
        t = np.asarray(neighbour_to_ego, dtype=np.float64).reshape(-1, 4, 4)
        dist = np.hypot(t[:, 0, 3], t[:, 1, 3])
        near = np.nonzero(dist <= self.config.comm_range)[0]
        near = near[np.argsort(dist[near], kind="stable")][: self.config.max_neighbours]
        return np.sort(near).astype(np.int64)

    # ---- stages --------------------------------------------------------------------------

    def encode(self, clouds: Sequence[PointsLike]) -> torch.Tensor:
        """``(N_i, 4)`` clouds, each in its own sensor frame -> message maps
        ``(B, *message_shape)``.

        What a vehicle actor runs on its own points before compressing and sending.
        """
        if len(clouds) == 0:
            raise ValueError("detector.encode: need at least one cloud")
        if self.fuse_at == "encoder":
            return self.features.encoder(self.features.voxelize(clouds))
        return self.features(clouds)

    def warp(
        self,
        features: torch.Tensor,
        neighbour_to_ego: ArrayLike,
        sent_masks: torch.Tensor | NDArray[np.bool_] | None = None,
    ) -> Warped:
        """Neighbour message maps ``(K, C, H, W)`` -> ego grid, with masks ``(K, 1, H, W)``.

        ``sent_masks`` ``(K, H, W)`` (neighbour grid, True = cell sent) is warped the same way
        and multiplied into the validity mask (a cell counts when its sample is >= 0.5 sent).
        """
        grid = self.message_grid
        warped = warp_bev(features, neighbour_to_ego, grid)
        if sent_masks is None:
            return warped
        sent = torch.as_tensor(sent_masks).to(device=features.device, dtype=features.dtype)
        if sent.dim() == 2:
            sent = sent.unsqueeze(0)
        if tuple(sent.shape) != (warped.mask.shape[0], *grid.bev_shape):
            raise ValueError(
                f"detector.warp: sent masks must be (K, {grid.bev_shape[0]}, "
                f"{grid.bev_shape[1]}), got {tuple(sent.shape)}"
            )
        sent_in_ego = warp_bev(sent.unsqueeze(1), neighbour_to_ego, grid).features
        return Warped(warped.features, warped.mask * (sent_in_ego >= 0.5).to(warped.mask))

    def fuse(
        self, ego: torch.Tensor, neighbours: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor:
        """``ego (B, C, H, W)``, warped ``neighbours (B, K, C, H, W)``, ``masks
        (B, K, 1, H, W)`` -> fused ``(B, C, H, W)`` (the configured strategy; ego-only for
        none/early/late)."""
        return self.fusion(ego, neighbours, masks)

    def head(self, features: torch.Tensor) -> HeadOutput:
        """A (fused) message map ``(B, *message_shape)`` in the ego grid -> raw predictions
        (the 2D backbone first when ``fuse_at`` is ``encoder``)."""
        if self.fuse_at == "encoder":
            features = self.features.backbone(features)
        return self.anchor_head(features)

    def detect(
        self,
        output: HeadOutput,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
    ) -> list[Detections]:
        """Decode + rotated NMS per sample; boxes in the grid's (ego LiDAR) frame, minus boxes
        of the ego vehicle itself (``config.ego_clearance``)."""
        return [
            Detections(d.boxes[keep], d.scores[keep])
            for d in self.anchor_head.decode(output, score_threshold, nms_iou)
            for keep in [self.clear_of_ego(d.boxes)]
        ]

    def clear_of_ego(self, boxes: NDArray[np.floating]) -> NDArray[np.bool_]:
        """True for ego-frame boxes whose centre is at least ``ego_clearance`` from the ego
        LiDAR (planar): closer ones can only be the ego, which its neighbours see."""
        boxes = np.asarray(boxes).reshape(-1, 7)
        return np.hypot(boxes[:, 0], boxes[:, 1]) >= self.config.ego_clearance

    # ---- training ------------------------------------------------------------------------

    def forward(self, samples: Sequence[CooperativeSample]) -> HeadOutput:
        """Training forward for a batch of samples (see the module docstring per fusion)."""
        return self.head(self.fused_features(samples))

    def loss(self, samples: Sequence[CooperativeSample], output: HeadOutput) -> HeadLoss:
        """Head loss against each sample's ``gt_boxes`` (ego LiDAR frame)."""
        targets = self.anchor_head.assign([s.gt_boxes for s in samples])
        return self.anchor_head.loss(output, targets)

    def fused_features(self, samples: Sequence[CooperativeSample]) -> torch.Tensor:
        """The ego-grid BEV ``(B, C, H, W)`` the head sees, per the configured fusion."""
        if not samples:
            raise ValueError("detector: need at least one sample")
        fusion = self.config.fusion
        if fusion in ("none", "late"):
            return self.encode([s.ego_points for s in samples])
        if fusion == "early":
            return self.encode([self.merged_cloud(s) for s in samples])
        chosen = [self.select_neighbours(s.neighbour_to_ego) for s in samples]
        clouds = [s.ego_points for s in samples]
        clouds += [
            s.neighbour_points[i] for s, idx in zip(samples, chosen, strict=True) for i in idx
        ]
        bev = self.encode(clouds)
        transforms = [s.neighbour_to_ego[idx] for s, idx in zip(samples, chosen, strict=True)]
        b = len(samples)
        return self._fuse_flat(
            bev[:b], bev[b:], np.concatenate(transforms), [len(i) for i in chosen]
        )

    def merged_cloud(self, sample: CooperativeSample) -> NDArray[np.float32]:
        """Early fusion input: ego points first, then the selected neighbours', ego frame."""
        idx = self.select_neighbours(sample.neighbour_to_ego)
        clouds = [sample.ego_points, *(sample.neighbour_points[i] for i in idx)]
        poses = [np.eye(4), *sample.neighbour_to_ego[idx]]
        return merge_points_to_ego(clouds, poses, np.eye(4))

    def _fuse_flat(
        self,
        ego: torch.Tensor,
        neighbours: torch.Tensor,
        transforms: NDArray[np.float64],
        counts: list[int],
        sent_masks: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Warp ``(N, C, H, W)`` neighbours (``counts[b]`` of them for ego ``b``, in order), pad
        each ego's set to the batch's largest with zero masks (a zero mask contributes nothing,
        so this equals padding to ``max_neighbours``), and fuse."""
        b, c, h, w = ego.shape
        k = max(counts, default=0)
        if k == 0:
            empty = ego.new_zeros(b, 0, c, h, w)
            return self.fuse(ego, empty, ego.new_zeros(b, 0, 1, h, w))
        warped = self.warp(neighbours, transforms, sent_masks)
        feats, masks, start = [], [], 0
        for n in counts:
            pad = k - n
            feats.append(
                torch.cat([warped.features[start : start + n], ego.new_zeros(pad, c, h, w)])
            )
            masks.append(torch.cat([warped.mask[start : start + n], ego.new_zeros(pad, 1, h, w)]))
            start += n
        return self.fuse(ego, torch.stack(feats), torch.stack(masks))

    # ---- inference -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """Eval mode and no grad for the duration; the previous mode is restored."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def predict(
        self,
        samples: Sequence[CooperativeSample],
        score_threshold: float | None = None,
        nms_iou: float | None = None,
    ) -> list[Detections]:
        """Detections per sample in the ego LiDAR frame, for every fusion strategy."""
        with self._inference():
            if self.config.fusion != "late":
                return self.detect(self.forward(samples), score_threshold, nms_iou)
            chosen = [self.select_neighbours(s.neighbour_to_ego) for s in samples]
            clouds = [s.ego_points for s in samples]
            clouds += [
                s.neighbour_points[i] for s, idx in zip(samples, chosen, strict=True) for i in idx
            ]
            per_agent = self.detect(self.head(self.encode(clouds)), score_threshold, nms_iou)
            results, start = [], len(samples)
            for b, (s, idx) in enumerate(zip(samples, chosen, strict=True)):
                theirs = [(per_agent[start + j], s.neighbour_to_ego[i]) for j, i in enumerate(idx)]
                start += len(idx)
                results.append(self.detect_late(per_agent[b], theirs, nms_iou))
            return results

    def detect_from_features(
        self,
        ego_feature: torch.Tensor,
        neighbour_features: Sequence[NeighbourInput],
        score_threshold: float | None = None,
        nms_iou: float | None = None,
    ) -> Detections:
        """The ego actor's path in the co-simulation: its own BEV ``(C, H, W)`` (possibly
        refined) and the neighbours' decoded features -> warp -> fuse -> head -> Detections.

        ``neighbour_features``: :class:`NeighbourFeature` or ``(feature, neighbour_to_ego)`` /
        ``(feature, neighbour_to_ego, sent_mask)`` tuples. Neighbours beyond ``comm_range`` or
        past the nearest ``max_neighbours`` are ignored, as in :meth:`predict`.
        """
        if self.config.fusion in ("early", "late"):
            raise ValueError(
                f"detector: detect_from_features needs feature fusion, config is "
                f"{self.config.fusion!r} (late fusion: use detect_late)"
            )
        with self._inference():
            device = self.device
            ego = ego_feature.to(device)
            ego = ego.unsqueeze(0) if ego.dim() == 3 else ego
            nbrs = [_as_neighbour(n) for n in neighbour_features]
            if not self.config.is_feature_fusion:
                nbrs = []
            transforms = (
                np.stack([n.neighbour_to_ego for n in nbrs]) if nbrs else np.zeros((0, 4, 4))
            )
            chosen = self.select_neighbours(transforms)
            nbrs, trans = [nbrs[i] for i in chosen], transforms[chosen]
            sent = None
            if any(n.sent_mask is not None for n in nbrs):
                ones = torch.ones(self.message_grid.bev_shape, dtype=torch.bool)
                sent = torch.stack(
                    [
                        ones if n.sent_mask is None else torch.as_tensor(n.sent_mask).cpu()
                        for n in nbrs
                    ]
                )
            feats = (
                torch.stack([n.feature.to(device) for n in nbrs])
                if nbrs
                else ego.new_zeros(0, *ego.shape[1:])
            )
            fused = self._fuse_flat(ego, feats, trans, [len(nbrs)], sent)
            return self.detect(self.head(fused), score_threshold, nms_iou)[0]

    def detect_late(
        self,
        own: Detections,
        neighbour_detections: Sequence[tuple[Detections, ArrayLike]],
        nms_iou: float | None = None,
    ) -> Detections:
        """Late fusion: each neighbour's boxes (its LiDAR frame) projected to the ego frame,
        pooled with the ego's, boxes whose centre leaves the ego grid (x, y) or lands on the
        ego itself (``ego_clearance``) dropped, then rotated NMS by score (``nms_iou``, default
        the head's; at most ``max_detections``).
        Neighbours beyond ``comm_range`` / past the nearest ``max_neighbours`` are ignored."""
        transforms = (
            np.stack([np.asarray(t, np.float64) for _, t in neighbour_detections])
            if neighbour_detections
            else np.zeros((0, 4, 4))
        )
        boxes = [np.asarray(own.boxes, np.float32).reshape(-1, 7)]
        scores = [np.asarray(own.scores, np.float32).reshape(-1)]
        for i in self.select_neighbours(transforms):
            dets, _ = neighbour_detections[i]
            boxes.append(boxes_to_frame(dets.boxes, transforms[i]))
            scores.append(np.asarray(dets.scores, np.float32).reshape(-1))
        all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
        x0, y0, _, x1, y1, _ = self.grid.point_range
        inside = (
            (all_boxes[:, 0] >= x0)
            & (all_boxes[:, 0] < x1)
            & (all_boxes[:, 1] >= y0)
            & (all_boxes[:, 1] < y1)
            & self.clear_of_ego(all_boxes)
        )
        all_boxes, all_scores = all_boxes[inside], all_scores[inside]
        cfg = self.config.head
        keep = rotated_nms(
            all_boxes,
            all_scores,
            cfg.nms_iou if nms_iou is None else nms_iou,
            post_max_size=cfg.max_detections,
        )
        return Detections(all_boxes[keep], all_scores[keep])


def build_detector(config: DetectorConfig | str) -> CooperativeDetector:
    """A detector from a config or a preset name / YAML path."""
    cfg = config if isinstance(config, DetectorConfig) else load_detector_config(config)
    return CooperativeDetector(cfg)
