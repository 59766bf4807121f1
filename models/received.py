"""What crosses the ego's inference boundary: the neighbour maps it receives (with the cues it
knows about each message) and what one ego's detection returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from models.cues import cue_vector
from models.head import Detections
from models.refiner import RefineOutput


@dataclass(frozen=True)
class NeighbourFeature:
    """A neighbour's BEV feature as the ego receives it: ``feature`` ``(C, H, W)`` in the
    neighbour's own grid, ``neighbour_to_ego`` 4x4 (from the *reported* poses), optionally
    ``sent_mask`` ``(H, W)`` bool in the neighbour's grid, True where the cell was sent
    (sparsified messages; cells not sent are no data), and the cues the ego knows about the
    message (:data:`models.cues.CUE_NAMES`): its ``age_s`` at fusion time, whether it is
    ``stale`` (sent before this tick, so warped with an old pose) and the sender's reported
    ``pose_sigma`` (pose-error level, m and degrees)."""

    feature: torch.Tensor
    neighbour_to_ego: NDArray[np.float64]
    sent_mask: torch.Tensor | NDArray[np.bool_] | None = None
    age_s: float = 0.0
    stale: bool = False
    pose_sigma: float = 0.0

    @property
    def cues(self) -> list[float]:
        return cue_vector(self.age_s, self.stale, self.pose_sigma)


NeighbourInput = (
    NeighbourFeature
    | tuple[torch.Tensor, ArrayLike]
    | tuple[torch.Tensor, ArrayLike, torch.Tensor | NDArray[np.bool_] | None]
)


def as_neighbour(item: NeighbourInput) -> NeighbourFeature:
    """A :class:`NeighbourFeature` from itself or a ``(feature, transform[, sent_mask])``."""
    if isinstance(item, NeighbourFeature):
        return item
    return NeighbourFeature(item[0], np.asarray(item[1], np.float64), *item[2:])


@dataclass(frozen=True)
class FusedMaps:
    """What :meth:`CooperativeDetector.fuse_neighbours` returns: ``features`` ``(B, C, H, W)``,
    per ego the indices of the neighbours it used (``chosen``), how many of them cover each
    cell (``coverage`` ``(B, H, W)`` uint8) and, from a fusion that scores its neighbours
    (AGF with a reliability score), their logits ``(B, K)`` by slot (slot ``i`` of ego ``j``
    is neighbour ``chosen[j][i]``; slots past ``len(chosen[j])`` are padding)."""

    features: torch.Tensor
    chosen: list[NDArray[np.int64]]
    coverage: torch.Tensor
    reliability: torch.Tensor | None = None
    #: What the fusion read: the warped neighbour maps ``(B, K, C, H, W)``, their masks
    #: ``(B, K, 1, H, W)``, cues ``(B, K, NUM_CUES)`` and profiles ``(B, K, PROFILE_SIZE)``
    #: (None when nothing was fused), for a second look at them (:mod:`models.harm`).
    inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None


@dataclass(frozen=True)
class EgoDetections:
    """One ego's result from :func:`models.inference.detect_features`: detections (ego
    LiDAR frame), the neighbours used, coverage ``(H, W)`` uint8, the refiner's ``gamma`` and
    ``steps_run`` for the ego map (NaN / 0 without refinement) and wall seconds per stage
    (``refine``, ``fuse``, ``head``; batch totals split evenly over the egos)."""

    detections: Detections
    chosen: NDArray[np.int64]
    coverage: NDArray[np.uint8]
    gamma: float = float("nan")
    steps_run: int = 0
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ForwardPass:
    """A batch's intermediate maps: the ego message maps as encoded, the refiner's output on
    them (None without a refiner) and the fused maps the head reads."""

    ego_maps: torch.Tensor
    refined: RefineOutput | None
    fused: FusedMaps
