"""Training augmentation of a CooperativeSample: flip, rotate and scale, seeded.

Each op is a rigid (or uniformly scaled) change of the ego frame, applied so that every agent's
cloud, every neighbour -> ego transform and every box stay consistent: a neighbour's points
mapped into the ego frame with the new transform equal the augmented mapped points. With
``F = diag(1, -1, 1, 1)``, ``R`` a rotation about the ego z and ``S = diag(s, s, s, 1)``:

- flip: all clouds y -> -y in their own frames, ``T' = F T F``, boxes y -> -y, yaw -> -yaw;
- rotate: the ego cloud and boxes by ``R``, neighbour clouds unchanged, ``T' = R T``,
  yaw += theta;
- scale: all clouds' xyz by s in their own frames, ``T' = S T S^-1`` (translation times s),
  box centres and sizes by s.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from models.batch import CooperativeSample
from scenarios.geometry import wrap_angle

FLIP_Y = np.diag([1.0, -1.0, 1.0, 1.0])


def _rotation(theta: float) -> NDArray[np.float64]:
    c, s = math.cos(theta), math.sin(theta)
    out = np.eye(4)
    out[:2, :2] = [[c, -s], [s, c]]
    return out


def _map_cloud(points: NDArray[np.float32], matrix: NDArray[np.float64]) -> NDArray[np.float32]:
    """Apply a 4x4 (linear part + translation) to xyz; intensity unchanged."""
    out = np.array(points, dtype=np.float32, copy=True)
    if len(out):
        xyz = points[:, :3].astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
        out[:, :3] = xyz.astype(np.float32)
    return out


def flip_y(sample: CooperativeSample) -> CooperativeSample:
    """Mirror the scene across the ego x-z plane (see the module docstring)."""
    boxes = np.array(sample.gt_boxes, dtype=np.float32, copy=True)
    boxes[:, 1] = -boxes[:, 1]
    boxes[:, 6] = wrap_angle(-boxes[:, 6].astype(np.float64))
    return dataclasses.replace(
        sample,
        ego_points=_map_cloud(sample.ego_points, FLIP_Y),
        neighbour_points=tuple(_map_cloud(p, FLIP_Y) for p in sample.neighbour_points),
        neighbour_to_ego=FLIP_Y @ sample.neighbour_to_ego @ FLIP_Y,
        gt_boxes=boxes,
    )


def rotate_z(sample: CooperativeSample, theta: float) -> CooperativeSample:
    """Rotate the scene about the ego z axis by ``theta`` radians (see the module docstring)."""
    rotation = _rotation(theta)
    boxes = np.array(sample.gt_boxes, dtype=np.float32, copy=True)
    centres = boxes[:, :3].astype(np.float64) @ rotation[:3, :3].T
    boxes[:, :3] = centres.astype(np.float32)
    boxes[:, 6] = wrap_angle(boxes[:, 6].astype(np.float64) + theta)
    return dataclasses.replace(
        sample,
        ego_points=_map_cloud(sample.ego_points, rotation),
        neighbour_to_ego=rotation @ sample.neighbour_to_ego,
        gt_boxes=boxes,
    )


def scale(sample: CooperativeSample, factor: float) -> CooperativeSample:
    """Scale the scene about every sensor by ``factor`` (see the module docstring)."""
    if factor <= 0:
        raise ValueError(f"scale factor must be > 0, got {factor}")
    matrix = np.diag([factor, factor, factor, 1.0])
    transforms = np.array(sample.neighbour_to_ego, copy=True)
    transforms[:, :3, 3] *= factor
    boxes = np.array(sample.gt_boxes, dtype=np.float32, copy=True)
    boxes[:, :6] = (boxes[:, :6].astype(np.float64) * factor).astype(np.float32)
    return dataclasses.replace(
        sample,
        ego_points=_map_cloud(sample.ego_points, matrix),
        neighbour_points=tuple(_map_cloud(p, matrix) for p in sample.neighbour_points),
        neighbour_to_ego=transforms,
        gt_boxes=boxes,
    )


@dataclass(frozen=True)
class Augmentation:
    """Random flip (probability ``flip_prob``), rotation ``U(rotation)`` and scale ``U(scale)``,
    applied in that order; call as ``augment(sample, rng)`` (the CooperativeDataset hook).

    The draws are taken in a fixed order whether or not an op is enabled, so the same generator
    state gives the same result.
    """

    flip_prob: float = 0.5
    rotation: tuple[float, float] = (-math.pi / 4, math.pi / 4)
    scale: tuple[float, float] = (0.95, 1.05)

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"augment.flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.rotation[0] > self.rotation[1] or self.scale[0] > self.scale[1]:
            raise ValueError(
                f"augment: ranges must be (low, high), got {self.rotation}, {self.scale}"
            )
        if self.scale[0] <= 0:
            raise ValueError(f"augment.scale must be positive, got {self.scale}")

    def __call__(self, sample: CooperativeSample, rng: np.random.Generator) -> CooperativeSample:
        flip = rng.random() < self.flip_prob
        theta = float(rng.uniform(*self.rotation))
        factor = float(rng.uniform(*self.scale))
        return self.apply(sample, flip, theta, factor)

    def apply(
        self, sample: CooperativeSample, flip: bool, theta: float, factor: float
    ) -> CooperativeSample:
        """The ops with these draws; a Diff-KD sample's clean view gets the very same ones."""
        if sample.clean is not None:
            sample = dataclasses.replace(
                sample, clean=self.apply(sample.clean, flip, theta, factor)
            )
        if flip:
            sample = flip_y(sample)
        if self.rotation != (0.0, 0.0):
            sample = rotate_z(sample, theta)
        if self.scale != (1.0, 1.0):
            sample = scale(sample, factor)
        return sample
