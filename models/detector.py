"""The cooperative detector: one ego plus up to K neighbours -> vehicle boxes in the ego frame.

Declared stages (each a method with typed inputs and outputs, so training, evaluation, the
robustness benchmark, the benches and the simulation actors call exactly the same code)::

    encode  clouds, each in its own LiDAR frame         -> message map (B, C, H', W')
    own_map message maps (B, C, H', W')                 -> the ego's own maps (B, C, H, W)
    refine  message maps (B, C, H, W)                   -> RefineOutput   models.refiner (PKD)
    warp    nbr maps (K, C, H', W'), nbr->ego (K, 4, 4)  -> Warped(features, mask)
    fuse    ego (B,C,H,W), nbrs (B,K,C,H,W), masks, cues -> (B, C, H, W)       FUSION_STRATEGIES
    bev     fused map (B, C, H, W)                       -> head input (the 2D backbone, or as is)
    head    head input                                   -> HeadOutput
    detect  HeadOutput                                   -> list[Detections], ego LiDAR frame

This module assembles the model from its config and holds the stages and the training forward;
:func:`models.inference.detect_features` chains refine -> warp -> fuse -> bev -> head -> detect
for maps that are already encoded: the one inference path, used by
:func:`models.inference.predict` (``cosim eval``, ``cosim robustness``) and by the ego of
``cosim run`` (:mod:`agents.payloads`).

``config.fuse_at`` splits the FeatureNet between ``encode`` and ``bev``: with ``backbone`` the
message map is the backbone's output (feature stride) and ``bev`` is the identity; with
``encoder`` it is the encoder's pseudo-image at voxel resolution (``message_grid``, stride 1)
and ``bev`` runs the 2D backbone on the fused map. The message map covers ``message_range`` (the
sender's window, ``(H', W')``; by default the grid itself): every vehicle encodes that window
once, sends it, and keeps the part on the detection grid (``own_map``, a crop) as its own map,
so a neighbour's map reaches the part of the ego's grid its LiDAR sees and the ego's map is
what encoding the grid alone gives (PointPillars: up to float32 rounding).

Fusing before the backbone lets its convolutions read a neighbour's evidence in the ego's
orientation: after the backbone, a feature's channels describe boxes in the *sender's* heading,
which a per-cell head cannot rotate (measured in models/checkpoints/README.md).

Fusion (``config.fusion``): ``none`` ego only; ``early`` neighbour points merged into the ego
frame, one encode; intermediate (``max``, ``attention``, ``agf``) ego and neighbours encoded in
one batch, neighbours warped and fused with masks; ``late`` trains as a single-agent detector
and, at inference, merges every agent's boxes in the ego frame by rotated NMS
(:func:`models.late_fusion.detect_late`). ``config.refiner`` adds the PKD diffusion refiner,
which repairs the ego's own map (and, on request, each received map) before fusion.

Devices: the parameters' device is the model's device. Voxelization runs on the CPU (index
arithmetic only, no gradient) and the voxels move to the model's device; transforms are numpy
float64 and become float32 warp matrices on that device; Detections are numpy on the CPU.
Gradients flow through encode, refine, warp (``grid_sample``), fusion and head.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from models.batch import CooperativeSample
from models.center_head import CenterHead
from models.cues import NUM_CUES, PROFILE_SIZE, occupancy_profile
from models.detector_config import DetectorConfig, load_detector_config
from models.early_fusion import merge_points_to_ego
from models.encoders.feature_net import FeatureNet
from models.fusion import build_fusion
from models.head import AnchorHead, Detections, HeadLoss, HeadOutput, Normaliser
from models.received import (
    ForwardPass,
    FusedMaps,
    NeighbourFeature,
    NeighbourInput,
    as_neighbour,
)
from models.refiner import FeatureRefiner, RefineOutput
from models.voxelize import PointsLike
from models.warp import Warped, warp_bev


class CooperativeDetector(nn.Module):
    """Feature net + optional refiner + fusion strategy + head (anchor or centre), from a
    DetectorConfig."""

    def __init__(self, config: DetectorConfig) -> None:
        super().__init__()
        self.config = config
        self.grid = config.grid
        window = config.message_window
        self.features = FeatureNet(window, config.features)
        self.fuse_at = config.fuse_at
        at_encoder = self.fuse_at == "encoder"
        self.message_grid = replace(window, feature_stride=1) if at_encoder else window
        self.map_grid = replace(config.grid, feature_stride=1) if at_encoder else config.grid
        self.message_channels = (
            self.features.encoder.out_channels if at_encoder else self.features.out_channels
        )
        strategy = config.fusion if config.is_feature_fusion else "none"
        options = config.fusion_options if config.is_feature_fusion else None
        self.fusion = build_fusion(strategy, self.message_channels, options)
        self.refiner = (
            FeatureRefiner(self.message_channels, config.refiner)
            if config.refiner is not None
            else None
        )
        # ``anchor_head`` holds either head (``head.type``): the name is what the shipped
        # checkpoints' parameters and ``init_skip: [anchor_head.]`` refer to.
        head_class = CenterHead if config.head.type == "center" else AnchorHead
        self.anchor_head = head_class(self.features.out_channels, config.grid, config.head)

    @property
    def message_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the map one vehicle encodes and sends (what ``encode`` returns)."""
        return (self.message_channels, *self.message_grid.bev_shape)

    @property
    def map_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the ego's own map and the fused map (``map_grid``, the detection
        grid at the fuse point's stride)."""
        return (self.message_channels, *self.map_grid.bev_shape)

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

    def own_map(self, maps: torch.Tensor) -> torch.Tensor:
        """Message maps ``(..., *message_grid.bev_shape)`` -> the part on the detection grid
        ``(..., *map_grid.bev_shape)``: what a vehicle keeps of its own map (a view)."""
        cell = self.map_grid.cell_size
        col = round((self.map_grid.point_range[0] - self.message_grid.point_range[0]) / cell)
        row = round((self.map_grid.point_range[1] - self.message_grid.point_range[1]) / cell)
        if tuple(maps.shape[-2:]) != self.message_grid.bev_shape:
            raise ValueError(
                f"detector.own_map: maps must end in {self.message_grid.bev_shape}, "
                f"got {tuple(maps.shape)}"
            )
        h, w = self.map_grid.bev_shape
        return maps[..., row : row + h, col : col + w]

    def refine(self, maps: torch.Tensor, steps: int | None = None) -> RefineOutput | None:
        """The PKD refiner on maps ``(B, C, H, W)`` (the ego's, or received ones) with ``steps``
        DDIM steps (None: the config's; 0: off); None when the model has no refiner."""
        if self.refiner is None:
            return None
        return self.refiner(maps, steps)

    def set_refine_skip(self, skip_above: float | None) -> None:
        """Adaptive steps at run time: refine only maps whose noise-adapter ``gamma`` is below
        ``skip_above`` (None: refine every map); the model's config records it."""
        if self.refiner is None:
            raise ValueError(f"detector {self.config.name!r} has no refiner to skip")
        refiner = replace(self.refiner.config, skip_above=skip_above)
        self.refiner.config = refiner
        self.config = replace(self.config, refiner=refiner)

    def warp(
        self,
        features: torch.Tensor,
        neighbour_to_ego: ArrayLike,
        sent_masks: torch.Tensor | NDArray[np.bool_] | None = None,
    ) -> Warped:
        """Neighbour message maps ``(K, *message_shape)`` -> the ego's ``map_grid``, with masks
        ``(K, 1, H, W)``.

        ``sent_masks`` ``(K, H', W')`` (neighbour grid, True = cell sent) is warped the same way
        and multiplied into the validity mask (a cell counts when its sample is >= 0.5 sent).
        """
        grid, target = self.message_grid, self.map_grid
        warped = warp_bev(features, neighbour_to_ego, grid, target)
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
        sent_in_ego = warp_bev(sent.unsqueeze(1), neighbour_to_ego, grid, target).features
        return Warped(warped.features, warped.mask * (sent_in_ego >= 0.5).to(warped.mask))

    def fuse(
        self,
        ego: torch.Tensor,
        neighbours: torch.Tensor,
        masks: torch.Tensor,
        cues: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``ego (B, C, H, W)``, warped ``neighbours (B, K, C, H, W)``, ``masks
        (B, K, 1, H, W)``, ``cues (B, K, NUM_CUES)`` -> fused ``(B, C, H, W)`` (the configured
        strategy; ego-only for none/early/late)."""
        return self.fusion(ego, neighbours, masks, cues)

    def bev(self, fused: torch.Tensor) -> torch.Tensor:
        """The slot between fusion and head: the 2D backbone when ``fuse_at`` is ``encoder``
        (the fused map is a pillar pseudo-image), the identity when it is ``backbone``."""
        return self.features.backbone(fused) if self.fuse_at == "encoder" else fused

    def head(self, features: torch.Tensor) -> HeadOutput:
        """Head input ``(B, C', *grid.bev_shape)`` (what :meth:`bev` returns) -> raw
        predictions."""
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

    # ---- fusion of received maps ---------------------------------------------------------

    def fuse_neighbours(
        self,
        ego: torch.Tensor,
        neighbours: Sequence[Sequence[NeighbourInput]],
        neighbour_steps: int | None = None,
    ) -> FusedMaps:
        """Ego maps ``(B, *map_shape)`` and each ego's received neighbour maps (each
        ``message_shape``) -> fused maps.

        Per ego, the neighbours within ``comm_range`` / the nearest ``max_neighbours`` are
        chosen (none for a non-feature fusion), refined with ``neighbour_steps`` DDIM steps
        when given and the model has a refiner (None: not refined), warped with their sent
        masks in one batch, padded to the batch's largest set with zero masks (a zero mask
        contributes nothing) and fused.
        """
        b, c, h, w = ego.shape
        if len(neighbours) != b:
            raise ValueError(f"detector: {b} ego maps but {len(neighbours)} neighbour lists")
        picked: list[list[NeighbourFeature]] = []
        chosen: list[NDArray[np.int64]] = []
        for items in neighbours:
            nbrs = [as_neighbour(n) for n in items] if self.config.is_feature_fusion else []
            transforms = (
                np.stack([n.neighbour_to_ego for n in nbrs]) if nbrs else np.zeros((0, 4, 4))
            )
            idx = self.select_neighbours(transforms)
            chosen.append(idx)
            picked.append([nbrs[i] for i in idx])
        counts = [len(p) for p in picked]
        k = max(counts, default=0)
        if k == 0:
            fused = self.fuse(ego, ego.new_zeros(b, 0, c, h, w), ego.new_zeros(b, 0, 1, h, w))
            return FusedMaps(fused, chosen, torch.zeros(b, h, w, dtype=torch.uint8))
        flat = [n for p in picked for n in p]
        feats = [n.feature.to(ego) for n in flat]
        slots = [(j, i) for j, n in enumerate(counts) for i in range(n)]
        profiles = ego.new_zeros(b, k, PROFILE_SIZE)
        if self.fusion.reads_profiles:  # of the maps as received, before any refinement
            for (j, i), f, n in zip(slots, feats, flat, strict=True):
                profiles[j, i] = occupancy_profile(f, n.sent_mask)
        if neighbour_steps is not None and self.refiner is not None:
            feats = list(self.refiner(torch.stack(feats), neighbour_steps).feature)
        # One warp per map, written into its ego's slot (padding slots zero: a zero mask adds
        # nothing). Stacking the message maps first copied every sent window whole (3 x 20 MB
        # on the CPU preset) to read a crop of each, and the padding copied the result twice
        # (bench/bench_cosim.py, diffkd.pt: the fuse stage 108 -> 63 ms a tick without them).
        nbr_maps = ego.new_empty(b, k, c, h, w)
        stacked_masks = ego.new_empty(b, k, 1, h, w)
        cues = ego.new_zeros(b, k, NUM_CUES)
        for (j, i), f, n in zip(slots, feats, flat, strict=True):
            part = self.warp(f.unsqueeze(0), n.neighbour_to_ego[None], n.sent_mask)
            nbr_maps[j, i], stacked_masks[j, i] = part.features[0], part.mask[0]
            cues[j, i] = torch.tensor(n.cues, dtype=ego.dtype)
        for j, n in enumerate(counts):
            nbr_maps[j, n:], stacked_masks[j, n:] = 0.0, 0.0
        fused, scores = self.fusion.scored(ego, nbr_maps, stacked_masks, cues, profiles)
        coverage = stacked_masks[:, :, 0].sum(dim=1).to(torch.uint8).cpu()
        inputs = (nbr_maps, stacked_masks, cues, profiles)
        return FusedMaps(fused, chosen, coverage, scores, inputs)

    # ---- training ------------------------------------------------------------------------

    def forward(self, samples: Sequence[CooperativeSample]) -> HeadOutput:
        """Training forward for a batch of samples (see the module docstring per fusion)."""
        return self.head(self.bev(self.forward_pass(samples).fused.features))

    def loss(
        self,
        samples: Sequence[CooperativeSample],
        output: HeadOutput,
        normaliser_of: Normaliser | None = None,
    ) -> HeadLoss:
        """Head loss against each sample's ``gt_boxes`` (ego LiDAR frame); ``normaliser_of``
        as in :meth:`AnchorHead.loss`."""
        targets = self.anchor_head.assign([s.gt_boxes for s in samples])
        return self.anchor_head.loss(output, targets, normaliser_of)

    def forward_pass(
        self, samples: Sequence[CooperativeSample], refine_steps: int | None = None
    ) -> ForwardPass:
        """Encode the batch, refine the ego maps (``refine_steps`` as in :meth:`refine`) and
        fuse the chosen neighbours: what the head reads in training."""
        ego_maps, neighbours = self.encode_samples(samples)
        refined = self.refine(ego_maps, refine_steps)
        ego = ego_maps if refined is None else refined.feature
        return ForwardPass(ego_maps, refined, self.fuse_neighbours(ego, neighbours))

    def encode_samples(
        self, samples: Sequence[CooperativeSample]
    ) -> tuple[torch.Tensor, list[list[NeighbourFeature]]]:
        """Every cloud of the batch encoded in one pass -> the ego maps ``(B, *map_shape)``
        (:meth:`own_map`) and, per ego, its chosen neighbours' maps (``message_shape``) with
        their transforms and pose cues. Early fusion encodes the merged cloud as the ego's;
        none/late/early send no neighbour."""
        if not samples:
            raise ValueError("detector: need at least one sample")
        early = self.config.fusion == "early"
        clouds = [self.merged_cloud(s) if early else s.ego_points for s in samples]
        chosen = [
            self.select_neighbours(s.neighbour_to_ego)
            if self.config.is_feature_fusion
            else np.zeros(0, np.int64)
            for s in samples
        ]
        clouds += [
            s.neighbour_points[i] for s, idx in zip(samples, chosen, strict=True) for i in idx
        ]
        maps = self.encode(clouds)
        # One split and one unbind, not a select per map: each select's backward would write
        # a zero tensor the size of the whole batch of message maps (a second per step).
        ego_maps, sent_maps = maps.split([len(samples), len(maps) - len(samples)])
        sent = sent_maps.unbind(0)
        neighbours: list[list[NeighbourFeature]] = []
        start = 0
        for s, idx in zip(samples, chosen, strict=True):
            sigmas, ages = s.neighbour_pose_sigma, s.neighbour_age_s
            neighbours.append(
                [
                    NeighbourFeature(
                        sent[start + j],
                        s.neighbour_to_ego[i],
                        age_s=float(ages[i]),
                        stale=bool(ages[i] > 0),
                        pose_sigma=float(sigmas[i]),
                    )
                    for j, i in enumerate(idx)
                ]
            )
            start += len(idx)
        return self.own_map(ego_maps), neighbours

    def merged_cloud(self, sample: CooperativeSample) -> NDArray[np.float32]:
        """Early fusion input: ego points first, then the selected neighbours', ego frame."""
        idx = self.select_neighbours(sample.neighbour_to_ego)
        clouds = [sample.ego_points, *(sample.neighbour_points[i] for i in idx)]
        poses = [np.eye(4), *sample.neighbour_to_ego[idx]]
        return merge_points_to_ego(clouds, poses, np.eye(4))


def build_detector(config: DetectorConfig | str) -> CooperativeDetector:
    """A detector from a config or a preset name / YAML path."""
    cfg = config if isinstance(config, DetectorConfig) else load_detector_config(config)
    return CooperativeDetector(cfg)
